"""Magnitude pruning: exact sparsity, smallest magnitudes, pruned stay pruned, gradual schedule."""
import pytest
import torch
from torch import nn

from lowp.techniques import magnitude_prune as M


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 10, 7))


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.83, 1.0])
def test_exact_sparsity(scope, sparsity):
    m = _net()
    w0 = {n: l.weight.detach().clone() for n, l in M.prunable(m)}
    per = M.magnitude_prune(m, sparsity, scope)
    zeros = {n: int((l.weight == 0).sum()) for n, l in M.prunable(m)}
    if scope == "layer":
        for n, w in w0.items():
            assert zeros[n] == round(sparsity * w.numel())
    else:
        assert sum(zeros.values()) == round(sparsity * sum(w.numel() for w in w0.values()))
    # the kept weights are unchanged and every pruned |w| <= every kept |w| (within the pruning scope)
    allk, allp = [], []
    for n, l in M.prunable(m):
        keep = l.weight.detach() != 0
        torch.testing.assert_close(l.weight.detach()[keep], w0[n][keep])
        assert per[n] == pytest.approx(1 - keep.float().mean().item())
        allk.append(w0[n][keep].abs()); allp.append(w0[n][~keep].abs())
        if scope == "layer" and keep.any() and (~keep).any():
            assert w0[n][~keep].abs().max() <= w0[n][keep].abs().min()
    k, p = torch.cat(allk), torch.cat(allp)
    if scope == "global" and k.numel() and p.numel():
        assert p.max() <= k.min()


def test_pruned_stay_pruned_and_get_no_gradient():
    m = _net()
    M.magnitude_prune(m, 0.5)
    mask1 = m[3].weight.detach() != 0
    m(torch.randn(4, 1, 12)).sum().backward()
    g = m[3].parametrizations.weight.original.grad
    assert (g[~mask1] == 0).all()
    with torch.no_grad():  # make a pruned weight's latent value large: it must stay pruned
        m[3].parametrizations.weight.original[~mask1] = 100.0
    M.magnitude_prune(m, 0.6)
    assert ((m[3].weight.detach() != 0) <= mask1).all()
    M.remove_masks(m)
    assert type(m[3]) is nn.Linear and int((m[0].weight == 0).sum() + (m[3].weight == 0).sum()) == round(0.6 * (24 + 560))


def test_gradual_schedule():
    assert M.gradual_sparsity(0, 10, 0.8) == 0.0
    assert M.gradual_sparsity(7.5, 10, 0.8) == pytest.approx(0.8)
    assert M.gradual_sparsity(10, 10, 0.8) == pytest.approx(0.8)
    vals = [M.gradual_sparsity(e, 10, 0.9) for e in range(11)]
    assert all(a <= b for a, b in zip(vals, vals[1:]))
    m = _net()
    pr = M.GradualPruner(0.8, end=0.5)
    got = [pr.on_epoch(m, e, 4) for e in range(4)]
    assert got[-1] == pytest.approx(0.8) and got[0] < got[1]
    with pytest.raises(ValueError):
        M.GradualPruner(0.8, start=0.6, end=0.5)
