"""GEMM accumulation lengths of a model, and per-layer sensitivity."""
import torch
from torch import nn

from lowp.analysis.gemm_shapes import gemm_shapes, model_accum_bits
from lowp.analysis.sensitivity import layer_sensitivity


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1d = nn.Conv1d(8, 4, 5, groups=2)
        self.fc = nn.Linear(4 * 60, 10)

    def forward(self, x):
        y = torch.relu(self.conv(x))                 # (B, 8, 10, 12)
        y = self.conv1d(y.flatten(2)[..., :64])      # (B, 4, 60)
        return self.fc(y.flatten(1))


def test_forward_backward_weight_grad_lengths():
    g = {s.layer: s for s in gemm_shapes(Net(), torch.randn(6, 3, 10, 12))}
    assert (g["conv"].forward, g["conv"].backward, g["conv"].weight_grad) == (27, 72, 6 * 10 * 12)
    assert (g["conv1d"].forward, g["conv1d"].backward, g["conv1d"].weight_grad) == (20, 10, 6 * 60)
    assert (g["fc"].forward, g["fc"].backward, g["fc"].weight_grad) == (240, 10, 6)
    rows = model_accum_bits(Net(), torch.randn(6, 3, 10, 12), 5, chunk=16)
    assert len(rows) == 9 and all(r["min_acc_bits_chunked"] <= r["min_acc_bits"] for r in rows)


def test_sensitivity_finds_the_layer_that_breaks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():
        model[0].weight[0] = 0.0
        model[0].bias[0] = -1.0                     # hidden unit 0 is always 0 ...
        model[2].weight[:, 0] = 100.0               # ... so this weight only sets layer 2's MX block scales:
        model[4].weight.mul_(20)                    # MXFP4 flushes the rest of layer 2; confident predictions
    x = torch.randn(64, 16)
    y = model(x).argmax(1)
    rep = layer_sensitivity(model, "mxfp4", x, y)
    names = [r.layer for r in rep.layers]
    assert sorted(names) == ["0", "2", "4"]
    assert rep.layers[0].layer == "2" and abs(rep.layers[0].delta) > 5 * abs(rep.layers[1].delta)
    assert rep.keep_high_precision and rep.keep_high_precision[0] == rep.layers[0].layer
    assert "keep" in rep.table()
    assert type(model[0]) is nn.Linear              # the model itself is untouched
