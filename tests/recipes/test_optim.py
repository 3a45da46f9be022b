"""LowpOptimizer: master weights (nearest stalls, stochastic follows FP32 in expectation), optimizer-state rounding
(SGD momentum, AdamW), loss scaling with skipped steps, reproducibility, FP32 identity."""
import pytest
import torch

import lowp
from lowp.recipes.optim import LowpOptimizer
from lowp.recipes.recipe import LossScaling, Recipe, TensorSpec


def tiny_steps(rounding: str, n_steps: int = 1000, n: int = 4096, rand_bits=None) -> torch.Tensor:
    """w = 1 (FP16 master), plain SGD with lr·grad = -1e-4 per step (< half an FP16 ulp at 1, 2^-11)."""
    w = torch.nn.Parameter(torch.ones(n))
    opt = LowpOptimizer(torch.optim.SGD([w], lr=1.0),
                        Recipe(master=TensorSpec("fp16", rounding, rand_bits=rand_bits)))
    for _ in range(n_steps):
        w.grad = torch.full_like(w, -1e-4)
        assert opt.step()
    return w.detach()


def test_fp16_master_nearest_stalls_stochastic_follows_fp32():
    torch.manual_seed(0)
    w32 = torch.ones(())
    for _ in range(1000):
        w32 = w32 + 1e-4  # the FP32 trajectory: ≈ 1.1
    near = tiny_steps("nearest")
    assert torch.equal(near, torch.ones_like(near))  # every update rounded away
    sto = tiny_steps("stochastic")
    assert torch.equal(lowp.quantize(sto, "fp16"), sto)  # the master stays in FP16
    # each step moves w by one ulp (2^-10) with probability 1e-4 / 2^-10: per-element sd after 1000 steps ≈ 0.0099,
    # sd of the mean over 4096 elements ≈ 1.6e-4; tolerance 1e-3 (≈ 6 sd)
    mean = sto.double().mean().item()
    print(f"\nFP16 master after 1000 steps of +1e-4: FP32 {float(w32):.5f}, nearest {near.mean():.5f}, "
          f"stochastic {mean:.5f} (spread sd {sto.double().std():.4f})")
    assert abs(mean - float(w32)) < 1e-3
    assert 0.005 < sto.double().std() < 0.02
    sto13 = tiny_steps("stochastic", rand_bits=13)  # 13 random bits (the FP8 toolkit's FP16 master): bias ≤ 1.2e-4
    assert abs(sto13.double().mean().item() - float(w32)) < 1.5e-3


def test_stochastic_master_reproducible_under_manual_seed():
    torch.manual_seed(123)
    a = tiny_steps("stochastic", n_steps=20, n=256)
    torch.manual_seed(123)
    b = tiny_steps("stochastic", n_steps=20, n=256)
    torch.manual_seed(124)
    c = tiny_steps("stochastic", n_steps=20, n=256)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sgd_momentum_state_rounding_matches_sequential_oracle():
    """Oracle: buf = μ·buf + g (FP32), w = Q_m(w − lr·buf), stored buf = Q_s(buf) — written out by hand."""
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(50, generator=g)
    grads = [torch.randn(50, generator=g) for _ in range(6)]
    r = Recipe(master="bf16", optim_state="e5m2")
    w = torch.nn.Parameter(w0.clone())
    opt = LowpOptimizer(torch.optim.SGD([w], lr=0.1, momentum=0.9), r)
    ref_w, buf = lowp.quantize(w0, "bf16"), None
    assert torch.equal(w.detach(), ref_w)  # rounded to the master format at construction
    for gr in grads:
        w.grad = gr.clone()
        opt.step()
        buf = gr.clone() if buf is None else buf * 0.9 + gr
        ref_w = lowp.quantize(ref_w - 0.1 * buf, "bf16")
        buf = lowp.quantize(buf, "e5m2")
        state = opt.state[w]["momentum_buffer"]
        assert torch.equal(state, buf)
        assert torch.equal(w.detach(), ref_w)


def test_adamw_state_in_format_step_untouched():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    r = Recipe(master=TensorSpec("fp16", "stochastic"), optim_state="bf16")
    opt = LowpOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-2), r)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.backward(loss)
        assert opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    for p in model.parameters():
        assert torch.equal(lowp.quantize(p.detach(), "fp16"), p.detach())
        st = opt.state[p]
        assert set(st) >= {"exp_avg", "exp_avg_sq", "step"}
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(lowp.quantize(st[k], "bf16"), st[k]) and st[k].abs().sum() > 0
        assert float(st["step"]) == 30.0


def test_skip_on_inf_backoff_and_loss_scaling():
    w = torch.nn.Parameter(torch.ones(4))
    r = Recipe(loss_scaling=LossScaling("dynamic", init_scale=2.0**10, growth_interval=2))
    opt = LowpOptimizer(torch.optim.SGD([w], lr=0.5, momentum=0.9), r)
    opt.zero_grad()
    opt.backward((w * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum())
    assert torch.equal(w.grad, torch.tensor([1.0, 2.0, 3.0, 4.0]) * 2.0**10)  # backward scaled the loss
    assert opt.step() is True
    assert torch.equal(w.grad, torch.tensor([1.0, 2.0, 3.0, 4.0]))  # unscaled before the step
    assert torch.equal(w.detach(), torch.tensor([0.5, 0.0, -0.5, -1.0]))
    before_w, before_buf = w.detach().clone(), opt.state[w]["momentum_buffer"].clone()
    opt.zero_grad()
    opt.backward((w * torch.tensor([1.0, float("inf"), 0.0, 0.0])).sum())
    assert opt.step() is False
    assert torch.equal(w.detach(), before_w) and torch.equal(opt.state[w]["momentum_buffer"], before_buf)
    assert opt.skipped_steps == 1 and opt.loss_scale == 2.0**9
    for _ in range(2):
        opt.zero_grad()
        opt.backward(w.sum())
        assert opt.step()
    assert opt.loss_scale == 2.0**10 and opt.skipped_steps == 1  # grew after 2 clean steps
    d = opt.state_dict()
    opt2 = LowpOptimizer(torch.optim.SGD([torch.nn.Parameter(torch.ones(4))], lr=0.5, momentum=0.9), r)
    opt2.load_state_dict(d)
    assert opt2.loss_scale == 2.0**10 and opt2.skipped_steps == 1
    assert torch.equal(opt2.state_dict()["state"][0]["momentum_buffer"], opt.state[w]["momentum_buffer"])


def test_fp32_recipe_is_plain_pytorch_and_leaves_global_rng():
    torch.manual_seed(0)
    m1 = torch.nn.Linear(5, 3)
    m2 = torch.nn.Linear(5, 3)
    m2.load_state_dict(m1.state_dict())
    x = torch.randn(16, 5)
    plain = torch.optim.AdamW(m1.parameters(), lr=0.1)
    state = torch.get_rng_state()
    wrapped = LowpOptimizer(torch.optim.AdamW(m2.parameters(), lr=0.1), lowp.get_recipe("fp32"))
    assert torch.equal(torch.get_rng_state(), state)
    for _ in range(5):
        plain.zero_grad()
        m1(x).square().mean().backward()
        plain.step()
        wrapped.zero_grad()
        wrapped.backward(m2(x).square().mean())
        wrapped.step()
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    assert wrapped.loss_scale == 1.0 and wrapped.skipped_steps == 0 and wrapped.param_groups is wrapped.optimizer.param_groups


def test_bad_base_optimizer():
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        LowpOptimizer([torch.ones(1)], Recipe())
