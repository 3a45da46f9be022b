"""The roofline estimator: a GEMM's time is the larger of its compute and memory times, computed by hand here; the
rate class follows the widest operand and falls back to a wider class the hardware has."""
import pytest

from lowp.analysis.roofline import (HARDWARE, Gemm, Hardware, LayerBits, gemm_time, layer_gemms, peak, rate_class,
                                    step_time)

HW = Hardware("toy", {"fp32": 1e12, "bf16": 4e12, "fp8": 8e12}, 1e11, "made up")


def test_rate_class_and_fallback():
    assert [rate_class(*b) for b in ((32, 32), (16, 32), (16, 16), (8, 16), (8, 8), (8.25, 8.25), (4.5, 4.5),
                                     (4.5, 8), (2, 2))] == ["fp32", "fp32", "bf16", "bf16", "fp8", "fp8", "fp4", "fp8",
                                                            "fp4"]
    assert peak(HW, "fp4") == 8e12  # no FP4 units: the FP8 rate
    assert peak(HARDWARE["B200"], "fp4") == 2 * peak(HARDWARE["B200"], "fp8")
    with pytest.raises(ValueError, match="unknown rate class"):
        peak(HW, "fp2")


def test_compute_bound_and_memory_bound_by_hand():
    big = Gemm(4096, 4096, 4096, 16, 16, 16)
    flops = 2 * 4096 ** 3
    nbytes = 3 * 4096 * 4096 * 2
    assert big.flops == flops and big.bytes == nbytes
    assert gemm_time(HW, big) == pytest.approx(max(flops / 4e12, nbytes / 1e11))
    small = Gemm(32, 10, 64, 8, 8, 32)  # memory-bound: 2·32·10·64 FLOPs against (2048 + 640 + 1280) bytes
    assert small.bytes == (32 * 64 * 8 + 64 * 10 * 8 + 32 * 10 * 32) / 8
    assert gemm_time(HW, small) == pytest.approx(small.bytes / 1e11)


def test_layer_step_has_three_gemms_of_equal_flops():
    g = layer_gemms(128, 64, 32, LayerBits.uniform(8))
    assert [x.flops for x in g] == [2 * 128 * 64 * 32] * 3
    assert [(x.m, x.k, x.n) for x in g] == [(128, 64, 32), (128, 32, 64), (64, 128, 32)]
    fp8 = step_time(HW, layer_gemms(4096, 4096, 4096, LayerBits.uniform(8)))
    bf16 = step_time(HW, layer_gemms(4096, 4096, 4096, LayerBits.uniform(16)))
    assert fp8 / bf16 == pytest.approx(0.5)  # compute-bound: the peak ratio


def test_datasheet_peaks_are_dense_and_ordered():
    for hw in HARDWARE.values():
        assert hw.peak["fp32"] < hw.peak["bf16"] < hw.peak["fp8"] and hw.bandwidth > 1e12 and hw.presets
    assert HARDWARE["H100 SXM"].peak["fp8"] == 1979e12 and HARDWARE["MI300X"].bandwidth == 5.3e12
