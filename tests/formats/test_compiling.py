"""The package's one compile switch and cache (``lowp/formats/compiling.py``)."""
from __future__ import annotations

import warnings

import pytest
import torch

from lowp.formats import compiling


def _double_plus_one(x):
    return x * 2 + 1


def _breaks_the_graph(x):
    if x.sum() > 0:  # data-dependent Python branch: no full graph
        return x + 1
    return x - 1


def _raises(x):
    raise ValueError(f"bad input of shape {tuple(x.shape)}")


def test_switch(monkeypatch):
    monkeypatch.setenv("LOWP_COMPILE", "0")
    assert not compiling.compile_enabled()
    assert not compiling.worth_it(1 << 30)
    monkeypatch.setenv("LOWP_COMPILE", "1")
    assert compiling.compile_enabled()
    assert compiling.worth_it(compiling.FAST_MIN_NUMEL) and not compiling.worth_it(compiling.FAST_MIN_NUMEL - 1)
    assert not compiling.at_any_size()
    with compiling.compiled_at_any_size():
        assert compiling.at_any_size() and compiling.worth_it(1) and compiling.worth_it(1, min_size=1 << 40)
    assert not compiling.at_any_size()


def test_switch_off_under_a_user_function_mode(monkeypatch):
    from torch.overrides import TorchFunctionMode

    monkeypatch.delenv("LOWP_COMPILE", raising=False)
    with TorchFunctionMode():
        assert not compiling.compile_enabled()
    assert compiling.compile_enabled()


def test_one_entry_per_key_made_lazily_and_grad_free():
    key = ("test", "double plus one")
    assert compiling.cached(key) is None
    c = compiling.compiled(_double_plus_one, key)
    assert compiling.cached(key) is c and compiling.compiled(_double_plus_one, key) is c
    x = torch.arange(5.0, requires_grad=True)
    y = c(x)
    assert torch.equal(y, x.detach() * 2 + 1) and not y.requires_grad and c.ok


def test_a_function_that_cannot_compile_warns_once_and_runs_eagerly():
    c = compiling.compiled(_breaks_the_graph, ("test", "graph break"), what="test kernel")
    x = torch.arange(4.0)
    with pytest.warns(RuntimeWarning, match="test kernel: torch.compile failed"):
        assert torch.equal(c(x), x + 1)
    assert not c.ok
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(c(-x - 1), -x - 2)  # eager from now on, no second warning


def test_an_error_of_the_call_itself_is_raised_not_swallowed():
    c = compiling.compiled(_raises, ("test", "raises"))
    with pytest.raises(ValueError, match=r"bad input of shape \(3,\)"):
        c(torch.zeros(3))


def test_a_failed_probe_means_eager():
    with pytest.warns(RuntimeWarning, match="differs from eager on the probe"):
        c = compiling.compiled(_double_plus_one, ("test", "probe"), probe=lambda k: False)
    assert not c.ok
    assert torch.equal(c(torch.ones(2)), torch.full((2,), 3.0))


def test_eager_only_turns_the_switch_off_within(monkeypatch):
    """``eager_only()``: compile_enabled() is false inside (no compiled call is taken), as before after."""
    import lowp
    from lowp.formats import dispatch

    monkeypatch.delenv("LOWP_COMPILE", raising=False)
    x = torch.randn(64)
    assert compiling.compile_enabled()
    before = dispatch.compiled_calls
    with compiling.eager_only(), compiling.compiled_at_any_size():
        assert not compiling.compile_enabled()
        lowp.quantize(x, "e4m3", "away")
    assert dispatch.compiled_calls == before and compiling.compile_enabled()
    with compiling.compiled_at_any_size():
        lowp.quantize(x, "e4m3", "away")
    assert dispatch.compiled_calls == before + 1  # the same call outside takes the compiled path


def _scaled_round(out, x):  # a kernel of the package's shape: a pointwise pass written into ``out``
    out.copy_(torch.round(x * 3.0) / 3.0)


def test_a_kernel_first_called_on_a_small_tensor_is_still_parallel():
    """Inductor picks serial or OpenMP-parallel loops from the first call's sizes, and the dynamic-shape graph then
    serves every size (and sits in the on-disk FX cache): ``compiling._OPTIONS`` must give every loop its parallel
    scope even when the first call sees a handful of elements."""
    from torch._inductor.utils import run_and_get_code

    if not torch._C.has_openmp:
        pytest.skip("this torch build has no OpenMP")
    fn = compiling.compiled(_scaled_round, ("test", "parallel after a small first call"))
    x = torch.randn(8)
    out = torch.empty_like(x)
    _, codes = run_and_get_code(fn, out, x)
    assert torch.equal(out, torch.round(x * 3.0) / 3.0)
    code = "\n".join(codes)
    assert "kernel(" in code, "no generated CPU kernel captured"
    assert "#pragma omp parallel" in code, "the kernel compiled on 8 elements runs serially at every size"


def _triple(x):
    return x * 3


def test_first_call_seconds_counts_only_first_calls():
    fn = compiling.compiled(_triple, ("test", "first call seconds"))
    before = compiling.first_call_seconds()
    x = torch.randn(16)
    assert torch.equal(fn(x), x * 3)
    after_first = compiling.first_call_seconds()
    assert after_first > before  # the first call compiled (or loaded) the kernel, and was timed
    fn(x)
    fn(torch.randn(32))
    assert compiling.first_call_seconds() == after_first


def _affine(x, *, a: float = 1.0, b: float = 0.0):
    return x * a + b


def test_with_constants_bakes_keywords_and_caches_per_tag():
    k = compiling.with_constants(_affine, "a2_b1", "test", a=2.0, b=1.0)
    assert compiling.with_constants(_affine, "a2_b1", "test", a=2.0, b=1.0) is k
    x = torch.randn(8)
    assert torch.equal(k(x), x * 2.0 + 1.0)
    other = compiling.with_constants(_affine, "a3", "test", a=3.0)
    assert other is not k and torch.equal(other(x), x * 3.0)
    assert k.fn.__name__ == "_affine_a2_b1" and "test _affine_a2_b1" == k.what


def _pair_into(outs, xs, *, scales):
    for o, x, s in zip(outs, xs, scales):
        o.copy_(x * s)


def _by_length(x):
    if x.shape[0] > 8:  # a size branch: the trace records the guard s0 > 8
        return x * 2
    return x * 3


def _dynamo_graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def test_kernels_run_without_dynamo_one_graph_for_every_size():
    """A kernel is traced and compiled once per argument signature and then called directly: dynamo compiles
    nothing, and tensors of other sizes and equal-size patterns reuse the graph."""
    fn = compiling.compiled(_scaled_round, ("test", "direct"))
    dynamo, graphs = _dynamo_graphs(), compiling.graphs_compiled()
    for n in (8, 1000, 1 << 16, 3):
        x = torch.randn(n)
        out = torch.empty_like(x)
        fn(out, x)
        assert torch.equal(out, torch.round(x * 3.0) / 3.0)
    assert compiling.graphs_compiled() == graphs + 1 and _dynamo_graphs() == dynamo
    x = torch.randn(6, 5).t()  # not contiguous: a signature of its own, the right values
    out = torch.empty(5, 6)
    fn(out, x)
    assert torch.equal(out, torch.round(x * 3.0) / 3.0) and compiling.graphs_compiled() == graphs + 2


def test_nested_arguments_constants_and_size_patterns():
    """Tuples, lists and dict keywords are opened; non-tensor leaves are constants of the graph (a new value, a new
    graph); inputs whose sizes were equal at the first call may differ later (another size pattern)."""
    fn = compiling.compiled(_pair_into, ("test", "direct pair"))
    graphs = compiling.graphs_compiled()
    for (na, nb), scales in [((64, 64), (2.0, 0.5)), ((64, 100), (2.0, 0.5)), ((7, 9), (3.0, 0.25))]:
        xs = (torch.randn(na), torch.randn(nb))
        outs = [torch.empty_like(x) for x in xs]
        fn(outs, xs, scales=list(scales))
        assert all(torch.equal(o, x * s) for o, x, s in zip(outs, xs, scales)), (na, nb, scales)
    assert compiling.graphs_compiled() == graphs + 3  # equal sizes, unequal sizes, other constants


def test_a_call_that_breaks_a_size_guard_of_the_trace_is_still_right():
    fn = compiling.compiled(_by_length, ("test", "size guard"))
    for n in (16, 4, 32, 2):
        x = torch.randn(n)
        assert torch.equal(fn(x), x * (2 if n > 8 else 3)), n
    assert fn.ok


def _times(x, a):
    return x * a


def test_signatures_beyond_the_cap_go_to_dynamo(monkeypatch):
    monkeypatch.setattr(compiling, "_MAX_SIGNATURES", 2)
    fn = compiling.compiled(_times, ("test", "cap"))
    x = torch.randn(32)
    graphs, dynamo = compiling.graphs_compiled(), _dynamo_graphs()
    for a in (2.0, 3.0):
        assert torch.equal(fn(x, a), x * a)
    assert compiling.graphs_compiled() == graphs + 2 and _dynamo_graphs() == dynamo
    assert torch.equal(fn(x, 5.0), x * 5.0) and _dynamo_graphs() > dynamo  # a third constant: dynamo's twin
    assert len(fn._direct.graphs) == 3 and fn.ok
