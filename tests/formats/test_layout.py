"""formats/layout.py: an axis moved last as a contiguous copy, the same values as ``movedim(...).contiguous()``,
through the compiled transposition where the move is a transpose of a contiguous tensor; the in-place block view, its
moved-layout random-bit index and the layouts it accepts."""
import pytest
import torch

from lowp.formats import compiling, layout


def expected(x, axis):
    return x.movedim(axis, -1).contiguous()


@pytest.mark.parametrize("case", ["rows", "transposed-view", "3d-middle", "3d-batch", "last", "float64", "small"])
def test_axis_last_equals_movedim_contiguous(case):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(300, 260, generator=g)
    base[7, 9], base[8, 1] = float("nan"), -0.0  # moved as bits
    x, axis = {"rows": (base, 0), "transposed-view": (base.t(), -1), "3d-middle": (torch.randn(4, 70, 300), 1),
               "3d-batch": (torch.randn(70, 4, 300).transpose(0, 1), 1), "last": (base, -1),
               "float64": (base.double(), 0), "small": (torch.randn(3, 5), 0)}[case]
    with compiling.compiled_at_any_size():
        y = layout.axis_last(x, axis)
    assert y.is_contiguous()
    assert torch.equal(y.view(-1).view(torch.int64 if y.dtype == torch.float64 else torch.int32),
                       expected(x, axis).view(-1).view(torch.int64 if y.dtype == torch.float64 else torch.int32))


def test_a_transpose_of_a_contiguous_tensor_takes_the_compiled_kernel():
    x = torch.randn(512, 384)
    x[3, 5] = float("nan")
    with compiling.compiled_at_any_size():
        y = layout.axis_last(x, 0)
    c = compiling.cached(layout._transposed)
    assert c is not None and c.ok  # made, called and not fallen back to eager
    before = compiling.graphs_compiled()
    with compiling.compiled_at_any_size():
        for shape in ((256, 640), (1000, 33), (70, 65)):  # other sizes (not square: a pattern of its own): one graph
            z = torch.randn(*shape)
            assert torch.equal(layout.axis_last(z, 0), z.t().contiguous())
            assert torch.equal(layout.axis_last(z.t(), -1), z.t().contiguous())
    assert compiling.graphs_compiled() == before
    assert torch.equal(y.view(torch.int32), x.t().contiguous().view(torch.int32))


def test_compilation_off_gives_the_same_values():
    x = torch.randn(300, 200)
    with compiling.eager_only():
        assert torch.equal(layout.axis_last(x, 0), x.t().contiguous())
    assert layout.axis_last(torch.tensor(3.0), 0).item() == 3.0


def test_moved_index_is_the_moved_layouts_flat_index_and_its_cache_is_bounded(monkeypatch):
    """The random-bit index of an element of ``blocks(x, axis, block)`` is its flat index in x.movedim(axis, -1);
    the cached index tensors stay within ``IDX_CACHE_BYTES`` (least recently used dropped)."""
    x = torch.arange(3 * 64 * 5, dtype=torch.float32).view(3, 64, 5)
    g = layout.blocks(x, 1, 32)
    assert g.shape == (3, 2, 32, 5) and g.data_ptr() == x.data_ptr()
    moved = torch.arange(x.numel(), dtype=torch.int32).view(3, 5, 64).movedim(-1, 1)  # x.movedim(1, -1)'s order
    assert torch.equal(layout.moved_index(g).view(3, 64, 5), moved)
    monkeypatch.setattr(layout, "_IDX", type(layout._IDX)())
    monkeypatch.setattr(layout, "IDX_CACHE_BYTES", 5 * 4096 * 4)  # (1, 4, 32, 32c) takes c·16 KiB
    for cols in (1, 2, 3, 4):
        layout.moved_index(torch.empty(1, 4, 32, 32 * cols))
    assert sum(t.numel() * 4 for t in layout._IDX.values()) <= layout.IDX_CACHE_BYTES
    assert (1, 4, 32, 128, torch.device("cpu")) in layout._IDX  # the newest kept
    assert (1, 4, 32, 32, torch.device("cpu")) not in layout._IDX  # the oldest dropped


def test_in_place_ok_names_the_layouts_rounded_where_they_lie():
    x = torch.randn(64, 48)
    assert layout.in_place_ok(x, 0, 32) and layout.in_place_ok(x, -1, 16)
    assert not layout.in_place_ok(x, -1, 32)  # 48 is not a multiple of 32
    assert not layout.in_place_ok(x.t(), 0, 16)  # not contiguous
    assert not layout.in_place_ok(x.double(), 0, 32) and not layout.in_place_ok(torch.empty(0, 32), -1, 32)
