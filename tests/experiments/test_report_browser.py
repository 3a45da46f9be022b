"""The report in a real browser (headless Chromium): every image loads, nothing is fetched from the network, and the
page's summary table matches results.json. Without a browser the test is skipped locally and fails in CI (CI=true),
where .ci/run installs Chromium."""
import html
import json
import os
import re
import shutil
import subprocess

import pytest

from lowp.experiments.report import render

from .synthetic import comparison

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

HARNESS = """<!doctype html><html><body><iframe id="f" src="{src}" width="1200" height="900"></iframe><script>
const f = document.getElementById('f');
f.onload = () => {{
  const d = f.contentDocument, w = f.contentWindow;
  const out = document.createElement('pre'); out.id = 'result';
  out.textContent = JSON.stringify({{
    imgs: [...d.images].map(i => ({{src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0}})),
    rows: [...d.querySelectorAll('#summary tr')].map(tr => [...tr.children].map(c => c.textContent)),
    resources: w.performance.getEntriesByType('resource').map(e => e.name),
    links: [...d.querySelectorAll('[src],[href]')].map(e => e.getAttribute('src') || e.getAttribute('href'))}});
  document.body.appendChild(out);
}};
</script></body></html>"""


def browser() -> str:
    exe = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if exe is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("no Chromium found in CI: .ci/run installs it (apt-get install -y chromium)")
        pytest.skip("no Chromium/Chrome installed (apt-get install -y chromium)")
    return exe


def open_in_browser(page: str, tmp_path) -> dict:
    """Load ``page`` (a file path) in headless Chromium through a harness frame, network names unresolvable;
    returns what the harness saw: images (loaded or not), the summary table, fetched resources, src/href values."""
    harness = tmp_path / "harness.html"
    harness.write_text(HARNESS.format(src="file://" + os.path.abspath(page)))
    r = subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                        "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=15000",
                        f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", harness.as_uri()],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="result">(.*?)</pre>', r.stdout, flags=re.S)
    assert m, f"the harness did not report (rc {r.returncode}): {r.stderr[-500:]}"
    return json.loads(html.unescape(m.group(1)))


def offline(seen: dict) -> list[str]:
    """What the page fetched or refers to outside the local file system."""
    urls = seen["resources"] + [i["src"] for i in seen["imgs"]] + seen["links"]
    return [u for u in urls if re.match(r"^[a-z][a-z0-9+.-]*://", u or "") and not u.startswith("file://")]


def test_report_in_chromium(tmp_path):
    out = tmp_path / "o"
    comp = comparison(out=str(out))
    os.makedirs(out)
    (out / "results.json").write_text(json.dumps(comp.to_dict()))
    seen = open_in_browser(render(comp, str(out)), tmp_path)
    assert len(seen["imgs"]) >= 5 and all(i["ok"] for i in seen["imgs"]), seen["imgs"]
    assert offline(seen) == []
    res = json.loads((out / "results.json").read_text())
    head, *rows = seen["rows"]
    assert head[:3] == ["recipe", "accuracy % mean ± sd", "Δ fp32 (pts)"]
    agg = {a["recipe"]: a for a in res["aggregate"]}
    assert [r[0] for r in rows] == list(agg)
    for r in rows:
        a = agg[r[0]]
        mean, sd = (float(x) for x in r[1].split(" ± "))
        assert mean == pytest.approx(100 * a["metric"], abs=0.006)
        assert sd == pytest.approx(100 * a["metric_sd"], abs=0.006)
        assert float(r[2]) == pytest.approx(100 * a["delta"]["mean"], abs=0.006)
        if r[0] != "fp32":
            lo, hi = (float(x) for x in r[3].strip("[]").split(", "))
            assert (lo, hi) == pytest.approx((100 * a["delta"]["lo"], 100 * a["delta"]["hi"]), abs=0.006)
            d = a["delta"]
            assert r[4] == ("noise" if not d["significant"] else "better" if d["mean"] > 0 else "worse")


def test_the_check_can_fail(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<html><body><table id='summary'><tr><td>x</td></tr></table><img src='missing.png'>"
                    "<img src='http://example.invalid/a.png'></body></html>")
    seen = open_in_browser(str(page), tmp_path)
    assert [i["ok"] for i in seen["imgs"]] == [False, False]
    assert offline(seen) and set(offline(seen)) == {"http://example.invalid/a.png"} and seen["rows"] == [["x"]]
