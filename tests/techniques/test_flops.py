"""FLOPs accounting on a small model counted by hand."""
import math

import pytest
import torch
from torch import nn

from lowp.techniques import autosparse as A
from lowp.techniques import magnitude_prune as M
from lowp.techniques.flops import cumulative_train_flops_ratio, sparsity_report


def _net():
    torch.manual_seed(0)
    # input (B, 2, 10): conv 2->4, k=3, stride 1, no padding -> (B, 4, 8); flatten 32 -> linear 32->5
    return nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 5))


def test_dense_flops_by_hand():
    x = torch.randn(3, 2, 10)
    r = sparsity_report(_net(), x)
    conv = 2 * 3 * (4 * 8) * 2 * 3      # 2 · B · out elements · C_in · k = 1152
    lin = 2 * 3 * 32 * 5                # 2 · B · in · out = 960
    f = {d["name"]: d for d in r["layers"]}
    assert f["0"]["dense_forward_flops"] == conv and f["3"]["dense_forward_flops"] == lin
    # first layer: input is data, no grad-input GEMM
    assert f["0"]["dense_train_flops"] == 2 * conv and f["3"]["dense_train_flops"] == 3 * lin
    assert r["sparsity"] == 0 and r["train_flops_ratio"] == 1 and r["inference_flops_ratio"] == 1


def test_sparse_flops_by_hand():
    x = torch.randn(3, 2, 10)
    m = _net()
    M.magnitude_prune(m, 0.5, scope="layer")  # conv 24 weights -> 12 kept; linear 160 -> 80 kept
    r = sparsity_report(m, x)
    conv, lin = 1152, 960
    assert r["sparsity"] == pytest.approx(0.5)
    assert r["inference_flops_ratio"] == pytest.approx(0.5)
    assert r["train_flops_ratio"] == pytest.approx(0.5)  # everything sparse (no gradient for masked weights)
    assert r["layer_sparsity"] == {"0": pytest.approx(0.5), "3": pytest.approx(0.5)}
    # AutoSparse with alpha > 0: the weight-gradient GEMM stays dense
    m2 = _net()
    A.apply_autosparse(m2, A.AutoSparseConfig(target=None, s0=-20.0))
    with torch.no_grad():
        for (_, l), (_, l1) in zip(M.prunable(m2), M.prunable(m)):
            keep = l1.weight != 0
            # make exactly the same weights fall under a threshold of sigmoid(s) = 0.05
            l.parametrizations.weight.original.copy_(torch.where(keep, l1.weight.sign() + l1.weight, 0.01))
            A.autosparse_layers(l)[""].s.fill_(math.log(0.05 / 0.95))
    A.on_epoch(m2, 0, 10)
    r2 = sparsity_report(m2, x)
    assert r2["sparsity"] == pytest.approx(0.5)
    dense_train = 2 * conv + 3 * lin
    expect = (0.5 * conv + conv) + (0.5 * lin + 0.5 * lin + lin)
    assert r2["train_flops_ratio"] == pytest.approx(expect / dense_train)
    A.on_epoch(m2, 10, 10)  # alpha = 0: sparse weight gradient
    r3 = sparsity_report(m2, x)
    assert r3["train_flops_ratio"] == pytest.approx(0.5)
    assert cumulative_train_flops_ratio([r2, r3]) == pytest.approx((expect + 0.5 * dense_train) / (2 * dense_train))


def test_no_gemm_layer_raises():
    with pytest.raises(ValueError, match="no Linear"):
        sparsity_report(nn.ReLU(), torch.randn(2, 3))
