"""`lowp formats`: runs, lists every named format with its figures, --json parses; --help works."""
import json
import subprocess
import sys

import pytest

from lowp.cli import main
from lowp.formats import FORMATS


def test_table_lists_every_format(capsys):
    assert main(["formats"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:7] == ["name", "bits", "bias", "max", "min_normal", "min_subnormal", "special"]
    first_words = {ln.split()[0] for ln in lines[1:] if ln.strip()}
    assert set(FORMATS) <= first_words
    row = next(ln for ln in lines if ln.startswith("e4m3 "))
    assert "448" in row and " fn " in row
    assert "IEEE-style" in next(ln for ln in lines if ln.startswith("fp8-152 "))  # the IBM choice is visible


def test_json(capsys):
    assert main(["formats", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(FORMATS)
    by = {r["name"]: r for r in rows}
    assert by["bf16"]["bits"] == 16 and by["bf16"]["bias"] == 127 and by["bf16"]["min_subnormal"] == 2.0**-133
    assert by["e5m2"]["max"] == 57344.0 and by["e4m3fnuz"]["special"] == "fnuz" and by["e4m3fnuz"]["bias"] == 8
    assert by["fp16-169"]["bias"] == 31 and by["fp16-169"]["bits"] == 16
    assert by["e2m1"]["max"] == 6.0 and by["e2m1"]["special"] == "none"


def test_help_and_bad_option():
    r = subprocess.run([sys.executable, "-m", "lowp", "formats", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--json" in r.stdout
    with pytest.raises(SystemExit) as e:
        main(["formats", "--nope"])
    assert e.value.code == 2


def test_an_interrupt_wrapped_by_python_still_reads_as_an_interrupt(monkeypatch, capsys):
    """Ctrl-C while a class is created (matplotlib's import during the report) reaches the CLI as the RuntimeError
    of a failed ``__set_name__`` caused by KeyboardInterrupt: still "lowp: interrupted", exit status 130."""
    import lowp.cli.formats as formats_cli

    def interrupted(args):
        class Descriptor:
            def __set_name__(self, owner, name):
                raise KeyboardInterrupt

        type("Owner", (), {"d": Descriptor()})  # Python raises RuntimeError from the KeyboardInterrupt

    monkeypatch.setattr(formats_cli, "run", interrupted)
    assert main(["formats"]) == 130
    assert capsys.readouterr().err == "lowp: interrupted\n"


def test_other_errors_are_not_taken_for_interrupts(monkeypatch):
    import lowp.cli.formats as formats_cli

    def broken(args):
        raise RuntimeError("not an interrupt")

    monkeypatch.setattr(formats_cli, "run", broken)
    with pytest.raises(RuntimeError, match="not an interrupt"):
        main(["formats"])
