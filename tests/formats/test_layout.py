"""formats/layout.py: an axis moved last as a contiguous copy, the same values as ``movedim(...).contiguous()``,
through the compiled transposition where the move is a transpose of a contiguous tensor."""
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
