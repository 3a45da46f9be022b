"""What bounds the emulated steps and the quantize targets: the pieces timed alone (README, Performance).

1. One compiled call of lowp (the e5m2 rounding with current scaling, a few hundred elements): the whole call, its
   signature lookup (``compiling._signature``), inductor's callable alone (the generated code behind AOTAutograd's
   runtime wrappers), and an ATen add of the same size. Per-call costs, in microseconds.
2. Compiled kernels at 2^19 elements (the size of the language-model task's activations) and 2^24, as ratios to
   ``torch.add(x, 0, out=y)`` timed in the same rounds: a compiled copy and multiply (the fixed cost of any compiled
   call), the amax pass, the e5m2 rounding unscaled and with current scaling.
3. Random bits at 2^24: the counter-based hash alone (``rounding.hash_bits32``), e4m3 rounding to nearest and
   stochastically (32 random bits), as ratios to the add.
4. Attention at the language-model task's shape (batch 32, 4 heads, 64 tokens, head size 16, causal), forward and
   backward, milliseconds: torch's fused SDPA (what the FP32 step runs), torch's math SDPA (the same unfused
   products and softmax that captured attention computes, in FP32 with no rounding), and lowp's captured attention
   under ``fp8-hybrid``.

Medians over interleaved rounds. Timings on a shared machine are noisy: indicative only.

    python benchmarks/bench_bounds.py [--rounds 7] [--threads 2] [--json PATH]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import lowp
from lowp.formats import compiling, get_format, round_short_compiled
from lowp.rounding import hash_bits32

from jsonout import add_json_arg, write_json  # benchmarks/jsonout.py


def timed_rounds(fns: dict, rounds: int, reps: int) -> dict[str, list[float]]:
    """Seconds per call of each function, one list entry per round, the functions interleaved within a round."""
    for f in fns.values():
        for _ in range(3):
            f()
    out = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            out[k].append((time.perf_counter() - t0) / reps)
    return out


def ratios(times: dict[str, list[float]], base: str) -> dict[str, float]:
    return {k: statistics.median(a / b for a, b in zip(v, times[base])) for k, v in times.items() if k != base}


def _hash_only(out, x, key):
    out.copy_(hash_bits32(torch.arange(x.numel(), dtype=torch.int32, device=x.device), key).view(torch.float32))


def call_costs(rounds: int) -> list[dict]:
    n = 256
    kernel = round_short_compiled.kernel(get_format("e5m2"), False, "current")
    x, out, s = torch.randn(n), torch.empty(n), torch.empty(())
    kernel(out, x, s)
    _, call = kernel._direct.lookup((out, x, s), {})
    graph = getattr(call, "graph", None)
    if graph is None:
        raise SystemExit("bench_bounds: the kernel is not served by lowp's direct path (dynamo fallback)")
    fns = {"whole call": lambda: kernel(out, x, s),
           "signature lookup": lambda: compiling._signature((out, x, s), {}),
           "inductor's callable": lambda: graph(out, x, s),
           "ATen add": lambda: torch.add(x, 0, out=out)}
    t = timed_rounds(fns, rounds, 2000)
    return [{"row": "call", "what": k, "elements": n, "us": statistics.median(v) * 1e6} for k, v in t.items()]


def kernel_ratios(rounds: int) -> list[dict]:
    e5m2, e4m3 = get_format("e5m2"), get_format("e4m3")
    copy = compiling.compiled(lambda o, x: o.copy_(x), "bench_bounds.copy")
    mul = compiling.compiled(lambda o, x: o.copy_(x * 3.0), "bench_bounds.mul")
    amax = compiling.compiled(lambda o, x: o.copy_(x.abs().amax()), "bench_bounds.amax")
    hash_only = compiling.compiled(_hash_only, "bench_bounds.hash")
    plain = round_short_compiled.kernel(e5m2, False, "plain")
    current = round_short_compiled.kernel(e5m2, False, "current")
    nearest4 = round_short_compiled.kernel(e4m3, False, "plain")
    stoch4 = round_short_compiled.kernel(e4m3, False, "plain", rounding="stochastic", rand_bits=32)
    key = torch.tensor([123456789, 987654321], dtype=torch.int64)
    recs = []
    for lg in (19, 24):
        n = 1 << lg
        x, y, s = torch.randn(n), torch.empty(n), torch.empty(())
        fns = {"add": lambda: torch.add(x, 0, out=y), "compiled copy": lambda: copy(y, x),
               "compiled multiply": lambda: mul(y, x), "amax": lambda: amax(s, x),
               "e5m2 nearest": lambda: plain(y, x), "e5m2 nearest, current scaling": lambda: current(y, x, s)}
        if lg == 24:
            fns.update({"hash (32 random bits) alone": lambda: hash_only(y, x, key),
                        "e4m3 nearest": lambda: nearest4(y, x),
                        "e4m3 stochastic (32 bits)": lambda: stoch4(y, x, key)})
        with compiling.compiled_at_any_size():
            t = timed_rounds(fns, rounds, 40 if lg < 20 else 3)
        add_us = statistics.median(t["add"]) * 1e6
        recs += [{"row": "kernels", "what": k, "log2n": lg, "x_add": r, "add_us": add_us}
                 for k, r in ratios(t, "add").items()]
    return recs


class _Attention(torch.nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def attention(rounds: int) -> list[dict]:
    torch.manual_seed(0)
    q, k, v = (torch.randn(32, 4, 64, 16, requires_grad=True) for _ in range(3))
    go = torch.randn(32, 4, 64, 16)
    emulated = lowp.emulate(_Attention(), "fp8-hybrid")

    def run(backend=None, mod=None):
        if mod is not None:
            o = mod(q, k, v)
        else:
            with sdpa_kernel(backend):
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        o.backward(go)

    fns = {"fused SDPA (FP32 step)": lambda: run(SDPBackend.FLASH_ATTENTION),
           "math SDPA (FP32, unfused)": lambda: run(SDPBackend.MATH),
           "lowp captured attention, fp8-hybrid": lambda: run(mod=emulated)}
    t = timed_rounds(fns, rounds, 10)
    return [{"row": "attention", "what": k, "shape": "32x4x64x16 causal", "fwd_bwd_ms": statistics.median(v) * 1e3}
            for k, v in t.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    add_json_arg(ap)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians over {a.rounds} interleaved rounds")
    recs = call_costs(a.rounds)
    for r in recs:
        print(f"call, {r['elements']} elements: {r['what']:24s} {r['us']:8.1f} us")
    kr = kernel_ratios(a.rounds)
    for r in kr:
        print(f"kernel at 2^{r['log2n']}: {r['what']:32s} {r['x_add']:6.2f}x add ({r['add_us']:.0f} us)")
    ar = attention(a.rounds)
    for r in ar:
        print(f"attention {r['shape']}, forward+backward: {r['what']:38s} {r['fwd_bwd_ms']:6.2f} ms")
    write_json(a.json, "bounds", a, recs + kr + ar)


if __name__ == "__main__":
    main()
