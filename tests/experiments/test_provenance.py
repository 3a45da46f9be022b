"""provenance.py: the build that made a run (lowp and torch versions, a digest of lowp's sources)."""
import torch

import lowp
from lowp.experiments import provenance


def test_made_by_names_this_build():
    m = provenance.made_by()
    assert m == {"lowp": lowp.__version__, "torch": torch.__version__, "source": provenance.source_digest()}
    assert len(m["source"]) == 12 and int(m["source"], 16) >= 0
    assert provenance.same_build(dict(m))
    assert not provenance.same_build({**m, "torch": "0.0"}) and not provenance.same_build(None)


def test_source_digest_sees_every_edit_and_only_sources(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "t.json").write_text("{}")
    first = provenance.source_digest(str(pkg))
    assert provenance.source_digest(str(pkg)) == first  # deterministic
    (pkg / "notes.txt").write_text("not a source")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "a.py").write_text("cached")
    assert provenance.source_digest(str(pkg)) == first
    (pkg / "a.py").write_text("x = 1  # a comment\n")
    edited = provenance.source_digest(str(pkg))
    assert edited != first
    (pkg / "a.py").rename(pkg / "b.py")  # the same bytes under another name
    assert provenance.source_digest(str(pkg)) not in (first, edited)


def test_describe():
    assert provenance.describe(None) == "a lowp that did not record its build"
    assert provenance.describe({"lowp": "1", "torch": "2", "source": "abc"}) == "lowp 1, torch 2, source abc"
