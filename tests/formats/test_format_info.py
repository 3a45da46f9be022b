"""The typed format contract (``Format.info``) and self-registration of format classes."""
from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np
import pytest
import torch

import lowp
from lowp.formats import Format, FormatInfo, format_from_dict
from lowp.formats.base import FORMAT_KINDS
from lowp.formats.registry import FORMATS
from lowp.scaled_quantizer import ScaledQuantizer

ML = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2, "e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
      "e5m2fnuz": ml_dtypes.float8_e5m2fnuz, "e3m4": ml_dtypes.float8_e3m4, "e4m3ieee": ml_dtypes.float8_e4m3,
      "e2m3": ml_dtypes.float6_e2m3fn, "e3m2": ml_dtypes.float6_e3m2fn, "e2m1": ml_dtypes.float4_e2m1fn,
      "bf16": ml_dtypes.bfloat16, "fp16": np.float16, "fp32": np.float32}


@pytest.mark.parametrize("name", sorted(ML))
def test_float_info_matches_ml_dtypes(name):
    info, fi = lowp.get_format(name).info, ml_dtypes.finfo(ML[name])
    assert info.bits == fi.bits
    assert info.max == float(fi.max)
    assert info.min_normal == float(fi.smallest_normal)
    assert info.min_subnormal == float(fi.smallest_subnormal)
    assert info.block is None and not info.scaled and not info.oriented


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_registered_format_has_a_consistent_info(name):
    fmt = FORMATS[name]
    info = fmt.info
    assert isinstance(info, FormatInfo) and info.name == fmt.name
    assert info.bits == fmt.describe()["bits"]
    # a format with its own scale has no fixed grid to scale onto; every other one has a finite max
    assert (info.max is None) == info.scaled
    if info.oriented:  # the ops re-orient it by replacing its axis
        assert dataclasses.replace(fmt, axis=0).info.axis == 0
    assert format_from_dict(fmt.to_dict()) == fmt


def test_storage_per_element_counts_the_block_scale():
    assert lowp.get_format("mxfp8_e4m3").info.bits_per_element == 8 + 8 / 32
    assert lowp.get_format("mxfp4_e2m1").info.bits_per_element == 4.25
    assert lowp.get_format("nvfp4").info.bits_per_element == 4 + 8 / 16
    assert lowp.get_format("nvfp4-16x16").info.bits_per_element == 4 + 8 / 256
    assert lowp.get_format("fp8-1x128").info.bits_per_element == 8 + 32 / 128
    assert lowp.get_format("e4m3").info.bits_per_element == 8
    assert lowp.get_format("int8").info.bits_per_element == 8  # one per-tensor scale: not per element


def test_fixed_point_info():
    info = lowp.get_format("fixed<2,14>").info
    assert info.bits == 16 and info.max == 2 - 2.0**-14 and info.min_subnormal == 2.0**-14 and not info.scaled


def test_a_new_format_class_registers_itself_and_round_trips():
    @dataclasses.dataclass(frozen=True)
    class HalvesFormat(Format):  # multiples of 1/2 in [-4, 4]
        name: str = "halves"

        @property
        def info(self) -> FormatInfo:
            return FormatInfo(self.name, 5, 4.0, min_subnormal=0.5)

        def _quantize(self, x, rounding, saturate, rand_bits, generator, out):
            return torch.clamp(torch.round(x * 2) / 2, -4, 4)

        def describe(self):
            return {"name": self.name, "bits": 5}

    try:
        assert FORMAT_KINDS["HalvesFormat"] is HalvesFormat
        f = format_from_dict(HalvesFormat().to_dict())
        assert f == HalvesFormat()
        assert torch.equal(f.quantize(torch.tensor([0.3, 9.0])), torch.tensor([0.5, 4.0]))
        q = ScaledQuantizer(f, scaling="current")  # the contract is all the scaled quantizer needs
        assert torch.equal(q(torch.tensor([1.0, 2.0, 0.3])), torch.tensor([1.0, 2.0, 0.25]))
    finally:
        del FORMAT_KINDS["HalvesFormat"]


def test_unknown_kind_names_the_kind_and_the_valid_ones():
    with pytest.raises(ValueError, match="'Nope'.*FloatFormat"):
        format_from_dict({"kind": "Nope"})
