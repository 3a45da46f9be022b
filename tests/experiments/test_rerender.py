"""``lowp report``: re-render a folder identically, merge two folders (seeds of one, seeds of the other), refuse a
folder without results.json with one line and exit status 2; and ``--tensorboard``'s writer."""
import json
import os

import pytest

from lowp.cli import main
from lowp.experiments.compare import load_results
from lowp.experiments.report import render
from lowp.experiments.rerender import merge

from .synthetic import comparison


def write(comp, out):
    os.makedirs(out, exist_ok=True)
    (out / "results.json").write_text(json.dumps(comp.to_dict()))
    render(comp, str(out))


def files(d):
    return {f: (d / f).read_bytes() for f in sorted(os.listdir(d)) if f.endswith((".png", ".html"))}


def test_rerender_is_identical(tmp_path, capsys):
    out = tmp_path / "a"
    write(comparison(out=str(out)), out)
    before = files(out)
    assert main(["report", str(out)]) == 0
    assert "report.html" in capsys.readouterr().out
    assert files(out) == before and len(before) >= 5


def test_merge_two_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write(comparison(seeds=(0, 1), out=str(a)), a)
    write(comparison(seeds=(2,), recipes={"fp32": 0.0, "fp8-hybrid": -0.03}, out=str(b)), b)
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "m")]) == 0
    m = load_results(str(tmp_path / "m"))
    assert m.seeds == (0, 1, 2) and m.recipes == ["fp32", "bf16", "fp8-hybrid"]
    assert [(r.recipe, r.seed) for r in m.runs] == [("fp32", 0), ("fp32", 1), ("fp32", 2), ("bf16", 0), ("bf16", 1),
                                                   ("fp8-hybrid", 0), ("fp8-hybrid", 1), ("fp8-hybrid", 2)]
    by = {s.recipe: s for s in m.summaries()}
    assert by["fp8-hybrid"].delta.n == 3 and by["bf16"].delta.n == 2
    assert (tmp_path / "m" / "report.html").is_file() and (tmp_path / "m" / "delta.png").is_file()
    with pytest.raises(ValueError, match="epochs differs"):
        import dataclasses
        merge([load_results(str(a)), dataclasses.replace(load_results(str(b)), epochs=3)])


def test_refuses_folder_without_results(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no results.json" in err and err.startswith("lowp: error:")
    assert not (tmp_path / "empty" / "report.html").exists()


def test_tensorboard_scalars_or_a_clear_error(tmp_path):
    from lowp.experiments.tboard import check_tensorboard, write_run

    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install tensorboard"):
            check_tensorboard(str(tmp_path))
        return
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = comparison().runs_of("bf16")[1]
    path = write_run(str(tmp_path / "tb"), run)
    assert path.endswith(os.path.join("bf16", "seed1"))
    acc = EventAccumulator(path)
    acc.Reload()
    assert {"train/loss", "test/accuracy"} <= set(acc.Tags()["scalars"])
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("test/accuracy")] == [
        (h["epoch"], round(h["test_metric"], 6)) for h in run.history]
