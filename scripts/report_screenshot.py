"""Screenshot of a compare report in headless Chromium, for the README: docs/img/compare-report.png.

    python scripts/report_screenshot.py DIR [--out docs/img/compare-report.png] [--height 2600]

DIR is a `lowp compare` output folder (e.g. the one scripts/readme_compare.py writes). Needs Chromium
(`apt-get install -y chromium`); network names are made unresolvable, so the page must render offline.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "compare-report.png"))
    ap.add_argument("--width", type=int, default=1150)
    ap.add_argument("--height", type=int, default=2600)
    args = ap.parse_args()
    page = pathlib.Path(args.dir, "report.html").resolve()
    if not page.is_file():
        print(f"no report.html in {args.dir}", file=sys.stderr)
        return 2
    exe = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if exe is None:
        print("no Chromium found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}",
                            f"--window-size={args.width},{args.height}", f"--screenshot={os.path.abspath(args.out)}",
                            page.as_uri()], capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or not os.path.isfile(args.out):
        sys.stderr.write(r.stderr[-2000:])
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
