"""Fit the K-TanH parameter table (Kundu et al. 2019, "K-TanH: Efficient TanH for Deep Learning") by exhaustive
search over the BF16 inputs, and write ``lowp/ops/ktanh_table.json``.

The approximation (see ``lowp/ops/ktanh.py``), on the positive BF16 bit pattern p (|x|; the sign is copied):
    p <  T1           -> p                      (identity: tanh x ~ x)
    p >= T2           -> 0x3F80                 (1.0)
    otherwise         -> (E_t << 7) + b_t + (M >> r_t),   t = (p >> 4) & 31   (2 low exponent bits, 3 high mantissa)
with M the 7-bit stored mantissa of p, E_t the output exponent, b_t in [0, 127] the bias; the sum is one 16-bit
integer add, so a carry out of the 7-bit mantissa increments the exponent (our reading of the paper; it lets an
entry's output cross a power of two, which tanh does at 0.5 inside the group [0.5, 0.5625)).

Search (exact, all in float64 against numpy's tanh of the BF16 value):
1. For every group g = p >> 4 (16 consecutive patterns sharing an index) and every candidate (E, r, b), with
   E in 120..127, r in 0..4 (r >= 4 already makes the entry constant), b in 0..127, the error at each of the
   16 inputs (infinite where the output would exceed 1.0).
2. Thresholds (T1, T2) over all patterns with 2^-4 <= T1 <= 0.5, 1 <= T2 <= 8, such that the groups in [T1, T2)
   use every table index at most once (span < 32 groups), so each entry serves one run of inputs.
   "max" table: minimise the max abs error over all finite inputs, ties broken by the summed abs error (entries
   restricted to max error <= the minimax); "mean" table: minimise the summed abs error (= mean over all finite
   BF16 inputs, since the rest are fixed by the thresholds).
3. Monotonicity is not automatic (entries are fitted independently), so the entries are finally chosen by dynamic
   programming along the groups in increasing order: minimise the summed error subject to each entry's max error
   <= the bound and each group's first output >= the previous group's last output (and >= the identity output
   below T1, <= 1.0 at T2). The "max" table bound is raised to the next achievable error if the DP is infeasible.

The slope of an entry, in value, is 2^(E_out - E_in - r) <= 2^(E_out - E_in): a right shift can only flatten. Where
tanh' lies between two powers of two over a whole group (e.g. tanh' ~ 0.79 on [0.5, 0.5625), output ulp half the
input ulp) the error grows along the group; that is the floor of the minimax (~8.9e-3 near x = 0.5).

Run:  python scripts/fit_ktanh.py [--out lowp/ops/ktanh_table.json]     (a few seconds)
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

E_RANGE = range(120, 128)
R_RANGE = range(0, 5)
B_RANGE = range(0, 128)
ONE = 0x3F80
INF_P = 0x7F80
T1_RANGE = (0x3D80, 0x3F00)  # 2^-4 .. 0.5
T2_RANGE = (0x3F80, 0x4100)  # 1 .. 8


def bf16_value(p: np.ndarray) -> np.ndarray:
    """Float64 value of positive BF16 bit patterns ``p`` (exact)."""
    return (np.asarray(p, dtype=np.uint32) << 16).view(np.float32).astype(np.float64)


def candidates() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    e, r, b = np.meshgrid(np.array(E_RANGE), np.array(R_RANGE), np.array(B_RANGE), indexing="ij")
    return e.ravel(), r.ravel(), b.ravel()


def group_errors(g: int, ce, cr, cb) -> tuple[np.ndarray, np.ndarray]:
    """(err [P, 16], out patterns [P, 16]) of every candidate on the 16 inputs of group g (err = inf if invalid)."""
    p = (g << 4) + np.arange(16)
    m = p & 0x7F
    out = (ce[:, None] << 7) + cb[:, None] + (m[None, :] >> cr[:, None])  # one 16-bit add: carries into E
    valid = out <= ONE
    y = bf16_value(np.clip(out, 0, 0x7F7F))
    err = np.abs(y - np.tanh(bf16_value(p))[None, :])
    err[~valid] = np.inf
    return err, out


class Fitter:
    def __init__(self):
        self.ce, self.cr, self.cb = candidates()
        self.all_p = np.arange(0, INF_P)  # positive finite patterns (incl. +0 and subnormals)
        x = bf16_value(self.all_p)
        t = np.tanh(x)
        self.ident_err = np.abs(x - t)                  # error if p is in the identity region
        self.sat_err = np.abs(1.0 - t)                  # error if p is in the saturation region
        self.ident_cmax = np.maximum.accumulate(self.ident_err)        # max over p' < P is ident_cmax[P-1]
        self.ident_csum = np.concatenate([[0.0], np.cumsum(self.ident_err)])
        self.sat_rmax = np.maximum.accumulate(self.sat_err[::-1])[::-1]  # max over p' >= P
        self.sat_rsum = np.concatenate([np.cumsum(self.sat_err[::-1])[::-1], [0.0]])
        self.groups = range(T1_RANGE[0] >> 4, T2_RANGE[1] >> 4)
        self.err = {g: group_errors(g, self.ce, self.cr, self.cb) for g in self.groups}

    def score_tables(self, bound=np.inf):
        """For every group: minimax / min-sum of the full group and of every head [0..l] and tail [l..15]."""
        full_max, full_sum, head_max, head_sum, tail_max, tail_sum = {}, {}, {}, {}, {}, {}
        for g in self.groups:
            e = self.err[g][0]
            okb = lambda ee: ee.max(1) <= bound  # noqa: E731
            full_max[g] = e.max(1).min()
            full_sum[g] = np.where(okb(e), e.sum(1), np.inf).min()
            head_max[g] = [e[:, :l + 1].max(1).min() for l in range(16)]
            head_sum[g] = [np.where(okb(e[:, :l + 1]), e[:, :l + 1].sum(1), np.inf).min() for l in range(16)]
            tail_max[g] = [e[:, l:].max(1).min() for l in range(16)]
            tail_sum[g] = [np.where(okb(e[:, l:]), e[:, l:].sum(1), np.inf).min() for l in range(16)]
        return full_max, full_sum, head_max, head_sum, tail_max, tail_sum

    def scan(self, bound=np.inf):
        """Every admissible (T1, T2): (max error, summed error) over the positive finite inputs."""
        fmax, fsum, hmax, hsum, tmax, tsum = self.score_tables(bound)
        out = []
        for t1 in range(T1_RANGE[0], T1_RANGE[1] + 1):
            g1, l1 = t1 >> 4, t1 & 15
            for t2 in range(T2_RANGE[0], T2_RANGE[1] + 1):
                g2, l2 = (t2 - 1) >> 4, (t2 - 1) & 15
                if g2 - g1 >= 32:
                    continue
                mx = max(self.ident_cmax[t1 - 1], self.sat_rmax[t2], tmax[g1][l1], hmax[g2][l2])
                sm = self.ident_csum[t1] + self.sat_rsum[t2] + tsum[g1][l1] + hsum[g2][l2]
                for g in range(g1 + 1, g2):
                    mx = max(mx, fmax[g])
                    sm += fsum[g]
                out.append((mx, sm, t1, t2))
        return out

    def monotone_dp(self, t1, t2, bound):
        """Entries (per group) minimising the summed error with max error <= bound and monotone outputs."""
        g1, g2 = t1 >> 4, (t2 - 1) >> 4
        size = ONE + 1
        cost = np.full(size, np.inf)
        cost[t1 - 1] = 0.0   # last output so far: the identity output just below T1
        choice = []
        for g in range(g1, g2 + 1):
            lo = (t1 & 15) if g == g1 else 0
            hi = ((t2 - 1) & 15) if g == g2 else 15
            e, o = self.err[g]
            e, o = e[:, lo:hi + 1], o[:, lo:hi + 1]
            ok = (e.max(1) <= bound) & (o[:, -1] <= ONE) & (o[:, 0] >= 0)
            prefmin = np.minimum.accumulate(cost)
            argpref = _prefix_argmin(cost)
            first = np.clip(o[:, 0], 0, ONE)
            new_cost = np.where(ok, prefmin[first] + e.sum(1), np.inf)
            last = np.clip(o[:, -1], 0, ONE)
            nxt = np.full(size, np.inf)
            back = np.full(size, -1)
            order = np.argsort(new_cost, kind="stable")[::-1]  # write best last, so it wins per state
            nxt[last[order]] = new_cost[order]
            back[last[order]] = order
            choice.append((g, back.copy(), argpref[first].copy()))
            cost = nxt
        cost[ONE + 1:] = np.inf
        if not np.isfinite(cost.min()):
            return None
        state = int(np.argmin(cost))
        total = cost[state]
        picks = {}
        for g, back, prevstate in reversed(choice):
            c = int(back[state])
            picks[g] = c
            state = int(prevstate[c])
        return picks, total


def _prefix_argmin(a: np.ndarray) -> np.ndarray:
    """best[i] = an index j <= i with a[j] == min(a[:i + 1])."""
    pm = np.minimum.accumulate(a)
    new = np.concatenate([[True], a[1:] < pm[:-1]])
    return np.maximum.accumulate(np.where(new, np.arange(len(a)), 0))


def fit(kind: str, fitter: Fitter) -> dict:
    if kind == "max":
        scan = fitter.scan()
        bstar = min(s[0] for s in scan)
        scan = [s for s in fitter.scan(bound=bstar) if s[0] <= bstar]
        scan.sort(key=lambda s: (s[1], s[0]))
    else:
        scan = sorted(fitter.scan(), key=lambda s: (s[1], s[0]))
    for mx, _sm, t1, t2 in scan[:50]:
        bound = mx if kind == "max" else np.inf
        for _ in range(200):
            res = fitter.monotone_dp(t1, t2, bound)
            if res is not None or kind != "max":
                break
            bound = np.nextafter(bound, np.inf) * 1.0001
        if res is not None:
            return table_dict(fitter, t1, t2, res[0], kind)
    raise RuntimeError("no monotone table found")


def table_dict(fitter, t1, t2, picks, kind) -> dict:
    exp, shift, bias, used = [121] * 32, [7] * 32, [0] * 32, [False] * 32
    for g, c in picks.items():
        i = g & 31
        exp[i], shift[i], bias[i], used[i] = int(fitter.ce[c]), int(fitter.cr[c]), int(fitter.cb[c]), True
    d = {"objective": kind, "t1": t1, "t2": t2, "t1_value": float(bf16_value(t1)), "t2_value": float(bf16_value(t2)),
         "exponent": exp, "shift": shift, "bias": bias, "used": used}
    d.update(evaluate(d))
    return d


def evaluate(d: dict) -> dict:
    """Exhaustive errors of a table over every finite BF16 input (positive half; odd symmetry is exact)."""
    p = np.arange(0, INF_P)
    idx = (p >> 4) & 31
    out = (np.array(d["exponent"])[idx] << 7) + ((p & 0x7F) >> np.array(d["shift"])[idx]) + np.array(d["bias"])[idx]
    out = np.where(p < d["t1"], p, np.where(p >= d["t2"], ONE, out))
    x = bf16_value(p)
    err = np.abs(bf16_value(out) - np.tanh(x))
    band = x < 4.0
    ulp = bf16_value(p + 1) - x   # weight of each input for x ~ U(0, 4): the width of the interval it starts
    return {"max_abs_error": float(err.max()), "mean_abs_error_all_finite": float(err.mean()),
            "mean_abs_error_uniform_0_4": float((err[band] * ulp[band]).sum() / ulp[band].sum()),
            "monotone": bool(np.all(np.diff(out) >= 0))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parents[1] / "lowp/ops/ktanh_table.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    fitter = Fitter()
    tables = {k: fit(k, fitter) for k in ("max", "mean")}
    doc = {"source": "Kundu et al. 2019, K-TanH: Efficient TanH for Deep Learning",
           "generated_by": "scripts/fit_ktanh.py",
           "layout": "BF16 pattern p=|x| bits; t1,t2 are patterns; entry t=(p>>4)&31 gives "
                     "out=(exponent<<7)+((p&0x7F)>>shift)+bias",
           "tables": tables}
    pathlib.Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    for k, d in tables.items():
        print(f"{k:5s} T1={d['t1_value']:.6g} T2={d['t2_value']:.6g} max={d['max_abs_error']:.3e} "
              f"mean(all)={d['mean_abs_error_all_finite']:.3e} mean(U(-4,4))={d['mean_abs_error_uniform_0_4']:.3e} "
              f"monotone={d['monotone']}")
    print(f"wrote {args.out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
