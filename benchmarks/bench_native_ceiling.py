"""How much faster could hand-written native kernels round than lowp's compiled (inductor) ones? The ceiling of
"option (b)" of the open speed targets (#14, #16), and the gain of "option (a)" (dequantise by multiplying with
fl(1/s), as Transformer Engine's scale_inv does, instead of dividing by s: other bits), measured in one run.

Two kernels are written here in C with GCC/Clang vector extensions (8 float32 lanes, AVX2 with -march=native),
built with the system compiler into a temporary folder and called through ctypes, multithreaded with OpenMP:

  ``mx``    MXFP8 E4M3, blocks of 32 along the last axis, OCP floor scale, round to nearest: the bits of
            ``lowp.quantize(x, "mxfp8_e4m3")`` (lowp/formats/mx_compiled.py's formulas; round to nearest-even by
            one magic-number add per element, c = 2^(max(e(a), emin) + 23 - m): (a + c) - c)
  ``fp8``   per-tensor current scaling, E4M3 saturating: s = fl32((448 / amax) in float64), y = Q(x·s) / s, the
            bits of lowp's ``current`` short path (lowp/formats/round_short_compiled.py); and ``fp8-mul``,
            y = Q(x·s) · fl(1/s), whose bits differ (the share of differing elements is printed)

Each is checked bit for bit against lowp on the benchmark's data (finite values, zeros, NaN and ±Inf for MX;
finite values for FP8: the prototype does not implement the non-finite amax rule) before it is timed: these are
benchmark prototypes, not a lowp code path. Times are medians of interleaved rounds; the ratio to ``clone()`` of
the same tensor is printed for each (the memory-bound floor).

    python benchmarks/bench_native_ceiling.py [--rounds 7] [--calls 200] [--json PATH]

Needs a C compiler (``cc``, or $CC) with OpenMP; without one it says so and exits 0.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import lowp

from jsonout import add_json_arg, write_json  # benchmarks/jsonout.py

C_SOURCE = r"""
#include <stdint.h>
#include <string.h>
#include <math.h>
typedef float v8f __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));
#define SEL(m, a, b) (((a) & (v8u)(m)) | ((b) & ~(v8u)(m)))
#define SPLAT(c) ((v8u){0} + (uint32_t)(c))
/* E4M3 (OCP e4m3fn): 3 mantissa bits, smallest normal 2^-6, largest binade 2^8, max 448 */
#define MAN 3
#define EMIN (-6)
#define EMAX 8
#define MAXBITS 0x43e00000u /* 448.0f */

/* |v| rounded to nearest-even on the E4M3 grid, as bits (|v| <= 2^(EMAX+1) finite; no overflow handling) */
static inline v8u rn_e4m3(v8u mag) {
  v8u e = mag & 0x7f800000u;
  e = SEL(e < (uint32_t)((EMIN + 127) << 23), SPLAT((EMIN + 127) << 23), e);
  v8f c = (v8f)(e + (uint32_t)((23 - MAN) << 23));
  return (v8u)(((v8f)mag + c) - c);
}

void mx_e4m3(const float* restrict x, float* restrict y, int64_t nblocks) {
  #pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < nblocks; ++b) {
    v8u g[4];
    for (int k = 0; k < 4; ++k) memcpy(&g[k], x + 32 * b + 8 * k, 32);
    v8u am = SPLAT(0);
    for (int k = 0; k < 4; ++k) {  /* amax over the finite elements, on the bit patterns */
      v8u m = g[k] & 0x7fffffffu;
      m = m & (v8u)(m < 0x7f800000u);
      am = SEL(m > am, m, am);
    }
    uint32_t a = 0;
    for (int l = 0; l < 8; ++l) a = am[l] > a ? am[l] : a;
    uint32_t pb = a & 0x7f800000u;
    float p; memcpy(&p, &pb, 4);
    float s_up = p * 0x1p-8f;  /* 2^-EMAX */
    s_up = s_up < 0x1p-127f ? 0x1p-127f : (s_up > 0x1p127f ? 0x1p127f : s_up);
    float s_down = 1.0f / s_up;
    for (int k = 0; k < 4; ++k) {
      v8u u = (v8u)((v8f)g[k] * s_down), mag = u & 0x7fffffffu;
      v8u r = rn_e4m3(mag);
      r = SEL(r > MAXBITS, SPLAT(MAXBITS), r);
      v8u out = (v8u)((v8f)(r | (u & 0x80000000u)) * s_up);
      out = SEL((g[k] & 0x7fffffffu) < 0x7f800000u, out, g[k]);
      memcpy(y + 32 * b + 8 * k, &out, 32);
    }
  }
}

float amax(const float* restrict x, int64_t n) {  /* n a multiple of 8 */
  float m = 0.0f;
  #pragma omp parallel for reduction(max:m) schedule(static)
  for (int64_t i = 0; i < n; ++i) { float a = fabsf(x[i]); m = a > m ? a : m; }
  return m;
}

/* y = Q(x·s)/s (mul = 0) or Q(x·s)·fl(1/s) (mul = 1), E4M3 saturating, x finite, n a multiple of 8 */
void fp8_scaled(const float* restrict x, float* restrict y, int64_t n, float s, int mul) {
  const float inv = 1.0f / s;
  #pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i += 8) {
    v8f xv; memcpy(&xv, x + i, 32);
    v8u u = (v8u)(xv * s), mag = u & 0x7fffffffu;
    v8u magc = SEL(mag < 0x44000000u, mag, SPLAT(0x44000000u));  /* clamp at 512 before the grid add */
    v8u r = rn_e4m3(magc);
    r = SEL(r > MAXBITS, SPLAT(MAXBITS), r);
    v8f rs = (v8f)(r | (u & 0x80000000u));
    v8f out = mul ? rs * inv : rs / s;
    memcpy(y + i, &out, 32);
  }
}
"""


def build(workdir: str):
    """The compiled library, or (None, why)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None, "no C compiler (cc, gcc, clang) on PATH"
    src, lib = os.path.join(workdir, "ceiling.c"), os.path.join(workdir, "ceiling.so")
    with open(src, "w", encoding="utf-8") as f:
        f.write(C_SOURCE)
    cmd = [cc, "-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC",
           src, "-o", lib]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        return None, f"{cc} could not be run ({e})"
    if p.returncode != 0:
        return None, f"{' '.join(cmd)} failed:\n{p.stderr.strip()}"
    so = ctypes.CDLL(lib)
    P, I64, F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    so.mx_e4m3.argtypes, so.mx_e4m3.restype = [P, P, I64], None
    so.amax.argtypes, so.amax.restype = [P, I64], F
    so.fp8_scaled.argtypes, so.fp8_scaled.restype = [P, P, I64, F, ctypes.c_int], None
    return so, ""


def native_kernels(so):
    def mx(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        so.mx_e4m3(x.data_ptr(), out.data_ptr(), x.numel() // 32)
        return out

    def fp8(x: torch.Tensor, out: torch.Tensor, mul: int = 0) -> torch.Tensor:
        a = so.amax(x.data_ptr(), x.numel())
        s = min(448.0 / a, 2.0**127) if 0 < a < float("inf") else 1.0  # float64, as lowp's short path
        so.fp8_scaled(x.data_ptr(), out.data_ptr(), x.numel(), ctypes.c_float(s).value, mul)
        return out

    return mx, fp8


def median_us(fns: dict, calls: int, rounds: int) -> dict:
    """Median time per call of each function, the functions interleaved round by round."""
    for f in fns.values():
        for _ in range(5):
            f()
    t: dict = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                f()
            t[k].append((time.perf_counter() - t0) / calls)
    return {k: statistics.median(v) * 1e6 for k, v in t.items()}


def data(shape: tuple, special: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g) * torch.exp(3 * torch.randn(shape[0], 1, generator=g))
    flat = x.view(-1)
    flat[7::2003] = 0.0
    if special:
        flat[::977] = float("nan")
        flat[5::1013] = float("inf")
        flat[11::1409] = -float("inf")
    return x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    ap.add_argument("--calls", type=int, default=200, help="calls per timed round")
    ap.add_argument("--shapes", default="2048x64,2048x256,2048x1024",
                    help="comma-separated RxC (C a multiple of 32); default: the tiny-gpt step's GEMM operands")
    add_json_arg(ap)
    args = ap.parse_args(argv)
    shapes = []
    for spec in args.shapes.split(","):
        try:
            shape = tuple(int(n) for n in spec.lower().split("x"))
        except ValueError:
            shape = ()
        if len(shape) != 2 or min(shape) < 1 or shape[1] % 32:
            ap.error(f"--shapes: {spec!r} is not RxC with C a multiple of 32")
        shapes.append((spec, shape))
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))  # read when the library loads
    with tempfile.TemporaryDirectory(prefix="lowp-ceiling-") as tmp:
        so, why = build(tmp)
        if so is None:
            print(f"bench_native_ceiling: skipped: {why}")
            return 0
        mx_native, fp8_native = native_kernels(so)
        mx_fmt = lowp.get_format("mxfp8_e4m3")
        fp8_q = lowp.ScaledQuantizer("e4m3", saturate=True, scaling="current")
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median µs per call, ratio to clone()")
        records = []
        for spec, shape in shapes:
            xm, xf = data(shape, special=True), data(shape, special=False)
            om, of = torch.empty_like(xm), torch.empty_like(xf)
            ref_m, ref_f = lowp.quantize(xm, mx_fmt), fp8_q(xf)
            same_m = torch.equal(mx_native(xm, om).view(torch.int32), ref_m.view(torch.int32))
            same_f = torch.equal(fp8_native(xf, of).view(torch.int32), ref_f.view(torch.int32))
            if not (same_m and same_f):
                print(f"{spec}: the native kernels do not give lowp's bits (mx {same_m}, fp8 {same_f}): not timed")
                return 1
            differ = (fp8_native(xf, of, 1).view(torch.int32) != ref_f.view(torch.int32)).double().mean().item()
            t = median_us({
                "clone": lambda: xm.clone(),
                "mx lowp": lambda: lowp.quantize(xm, mx_fmt),
                "mx native": lambda: mx_native(xm, torch.empty_like(xm)),
                "fp8 lowp": lambda: fp8_q(xf),
                "fp8 native": lambda: fp8_native(xf, torch.empty_like(xf)),
                "fp8-mul native": lambda: fp8_native(xf, torch.empty_like(xf), 1),
            }, args.calls, args.rounds)
            c = t["clone"]
            print(f"{spec:>10}  clone {c:7.0f}")
            for k in ("mx lowp", "mx native", "fp8 lowp", "fp8 native", "fp8-mul native"):
                print(f"{'':>10}  {k:<15} {t[k]:7.0f} µs  {t[k] / c:6.2f}x clone")
            speed_mx, speed_f = t["mx lowp"] / t["mx native"], t["fp8 lowp"] / t["fp8 native"]
            print(f"{'':>10}  lowp / native: mx {speed_mx:.2f}, fp8 {speed_f:.2f}; fp8 divide / multiply (native) "
                  f"{t['fp8 native'] / t['fp8-mul native']:.2f}; multiply changes {differ:.1%} of the elements")
            records.append({"shape": spec, **{f"{k} us": v for k, v in t.items()},
                            "mx lowp/native": speed_mx, "fp8 lowp/native": speed_f,
                            "fp8 mul differs": differ})
        write_json(args.json, "bench_native_ceiling", args, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
