"""Quantize throughput against the memory-bandwidth bound, measured in the same run (README, Performance).

For each size (default 2^24 and 2^26 float32 elements), format and rounding (nearest, stochastic), prints the
median time of ``lowp.quantize`` allocating a fresh result and writing into a preallocated ``out=``, as ratios to
``torch.add(x, 0, out=y)`` (the bandwidth bound: one read, one write) and to ``x.clone()`` (which also pays for a
fresh allocation), plus GB/s counting 8 bytes (read + write) per element. torch's native round trips
(``x.to(dtype).float()``) run in the same process as the reference. Round-to-nearest of a float format takes the
format's compiled short path (``lowp/formats/round_short_compiled.py``); MX and NVFP4 their compiled kernels
(``mx_compiled.py``, ``nvfp4_compiled.py``). The tensor is 2^k/4096 rows of 4096 (2-D tiles need rows).
Targets: nearest ``out=`` <= 2x add for every float format; stochastic <= 3x; MX and NVFP4 <= 3x; int8 per tensor
<= 2x; allocating <= 1.2x clone.

    python benchmarks/bench_quantize.py [--sizes 24 26] [--repeats 5] [--formats ...] [--device cpu|cuda]
                                        [--json PATH]
With ``--device cuda`` the tensors live on the GPU, every timing is bracketed by ``torch.cuda.synchronize()`` and
the ratios are to the same run's device ``add(out=)`` and ``clone()`` (the GPU's copy bound).
Timings on a shared machine are noisy: read them as indicative.
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import lowp
from lowp.formats import compiling

from jsonout import add_json_arg, write_json  # noqa: E402  (benchmarks/jsonout.py)


def timeit(fn, repeats: int) -> float:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)  # kernels are asynchronous
    fn()  # warm-up (and compilation)
    ts = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[24, 26], help="log2 of the element counts")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--formats", nargs="+", default=["bf16", "fp16", "e4m3", "e5m2", "e2m1", "fp8-152", "mxfp8_e4m3",
                                                     "mxfp4_e2m1", "nvfp4", "nvfp4-torchao", "nvfp4-16x16", "int8"])
    ap.add_argument("--roundings", nargs="+", default=["nearest", "stochastic"])
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (a GPU: ratios to the device's own add/clone)")
    add_json_arg(ap)
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_quantize: --device cuda asked for, but torch sees no CUDA device")
    dev = torch.device(args.device)
    print(f"device {dev}{' (' + torch.cuda.get_device_name(dev) + ')' if dev.type == 'cuda' else ''}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, compile "
          f"{'on' if compiling.compile_enabled() else 'off (LOWP_COMPILE=0)'}")
    records = []
    for lg in args.sizes:
        n = 1 << lg
        x = torch.randn(n // 4096, 4096, device=dev) * 3.0  # rows of 4096: whole blocks and 16x16 tiles
        y = torch.empty_like(x)
        t_add = timeit(lambda: torch.add(x, 0, out=y), args.repeats)
        t_clone = timeit(lambda: x.clone(), args.repeats)
        gbs = lambda t: 8 * n / t / 1e9  # noqa: E731
        print(f"\nn = 2^{lg}: add(out=) {t_add * 1e3:.1f} ms ({gbs(t_add):.1f} GB/s), clone {t_clone * 1e3:.1f} ms "
              f"({gbs(t_clone):.1f} GB/s)")
        records.append({"log2n": lg, "format": "add(out=)", "rounding": "-", "variant": "out=", "ms": t_add * 1e3,
                        "x_add": 1.0, "x_clone": t_add / t_clone, "gbs": gbs(t_add)})
        records.append({"log2n": lg, "format": "clone", "rounding": "-", "variant": "alloc", "ms": t_clone * 1e3,
                        "x_add": t_clone / t_add, "x_clone": 1.0, "gbs": gbs(t_clone)})
        print(f"{'format':<12} {'rounding':<11} {'variant':<6} {'ms':>8} {'x add':>7} {'x clone':>8} {'GB/s':>6}")
        for dt in (torch.bfloat16, torch.float16, torch.float8_e4m3fn, torch.float8_e5m2):
            t = timeit(lambda: x.to(dt).float(), args.repeats)
            print(f"{'torch ' + str(dt).replace('torch.', ''):<24} {'native':<6} {t * 1e3:8.1f} {t / t_add:7.2f} "
                  f"{t / t_clone:8.2f} {gbs(t):6.1f}", flush=True)
            records.append({"log2n": lg, "format": "torch " + str(dt).replace("torch.", ""), "rounding": "native",
                            "variant": "alloc", "ms": t * 1e3, "x_add": t / t_add, "x_clone": t / t_clone,
                            "gbs": gbs(t)})
        for name in args.formats:
            for rnd in args.roundings:
                g = torch.Generator().manual_seed(0)
                for variant, fn in (("alloc", lambda: lowp.quantize(x, name, rnd, generator=g)),
                                    ("out=", lambda: lowp.quantize(x, name, rnd, generator=g, out=y))):
                    t = timeit(fn, args.repeats)
                    print(f"{name:<12} {rnd:<11} {variant:<6} {t * 1e3:8.1f} {t / t_add:7.2f} {t / t_clone:8.2f} "
                          f"{gbs(t):6.1f}", flush=True)
                    records.append({"log2n": lg, "format": name, "rounding": rnd, "variant": variant,
                                    "ms": t * 1e3, "x_add": t / t_add, "x_clone": t / t_clone, "gbs": gbs(t)})
        del x, y
    write_json(args.json, "quantize", args, records, device=str(dev), compile=compiling.compile_enabled())


if __name__ == "__main__":
    main()
