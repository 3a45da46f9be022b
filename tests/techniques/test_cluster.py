"""Cluster ternary / 4-bit: N output filters share one scale."""
import pytest
import torch
from torch import nn

from lowp.techniques.cluster import ClusterConfig, cluster_quantize, cluster_weight
from lowp.techniques.ptq import model_stats
from lowp_refs import brute_ternary_error  # tests/formats (pytest pythonpath)

pytestmark = pytest.mark.usefixtures("one_thread")  # restored after each test


def test_cluster_ternary_is_the_cluster_optimum():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(5, 3, dtype=torch.float64, generator=gen)  # clusters of 2 filters: rows {0,1},{2,3},{4}
    q = cluster_weight(w, 2, "ternary")
    for rows in ([0, 1], [2, 3], [4]):
        g, qq = w[rows].reshape(-1), q[rows].reshape(-1)
        assert float(((g - qq) ** 2).sum()) == pytest.approx(brute_ternary_error(g.tolist()), abs=1e-12)
        mags = qq[qq != 0].abs()
        assert torch.allclose(mags, mags[0].expand_as(mags))


def test_cluster_int4_shares_scale():
    w = torch.tensor([[1.0, -2.0], [0.5, 7.0], [3.0, 0.1], [0.2, 0.3]])
    q = cluster_weight(w, 2, "int4")
    s0, s1 = 7.0 / 7, 3.0 / 7  # amax / qmax per cluster of 2 rows
    assert torch.allclose(q[:2], torch.round(w[:2] / s0) * s0)
    assert torch.allclose(q[2:], torch.round(w[2:] / s1) * s1)


def test_cluster_size_one_finer_than_larger():
    w = torch.randn(16, 32, generator=torch.Generator().manual_seed(2))
    e = [float(((w - cluster_weight(w, n)) ** 2).sum()) for n in (1, 4, 16)]
    assert e == sorted(e)
    e4 = [float(((w - cluster_weight(w, n, "int4")) ** 2).sum()) for n in (1, 4, 16)]
    assert e4 == sorted(e4) and e4[0] < e[0]


def test_cluster_model_stats():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv1d(1, 8, 3), nn.ReLU(), nn.Conv1d(8, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6, 3))
    x = torch.randn(32, 1, 10)
    q = cluster_quantize(m, [x], ClusterConfig(cluster=4, edge_bits=None))
    st = model_stats(q)
    assert st["mult_fraction_replaced"] > 0.8
    assert model_stats(cluster_quantize(m, [x], ClusterConfig(kind="int4")))["mult_fraction_replaced"] == 0
    with pytest.raises(ValueError, match="cluster kind"):
        ClusterConfig(kind="int3")
