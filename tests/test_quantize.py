"""The public quantize / quantize_ste: errors, out=, shapes and non-contiguous tensors, NaN, STE gradient."""
import pytest
import torch

import lowp
from lowp.formats import FORMATS, FloatFormat, format_from_dict

ALL = list(FORMATS)


def same(a, b):
    """Same values, NaN equal to NaN, +0 != -0."""
    return a.shape == b.shape and bool(((a.view(torch.int32) == b.view(torch.int32)) |
                                        (torch.isnan(a) & torch.isnan(b))).all())


def sample(shape=(6, 40), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * torch.exp2(torch.randint(-6, 6, shape, generator=g).float())


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match=r"unknown format 'e9m9'.*e4m3.*mxfp8_e4m3.*fixed<IL,FL>"):
        lowp.quantize(torch.zeros(2), "e9m9")
    with pytest.raises(ValueError, match=r"unknown rounding mode 'banker'.*nearest, away, zero, up, down, stochastic"):
        lowp.quantize(torch.zeros(2), "bf16", "banker")
    with pytest.raises(ValueError, match="special-value policy 'ibm'"):
        FloatFormat(5, 2, special="ibm")
    with pytest.raises(TypeError, match="name or a Format"):
        lowp.get_format(3)


@pytest.mark.parametrize("kw,needle", [(dict(exp=9, man=3), "exp must be an int in 1..8, got 9"),
                                       (dict(exp=0, man=3), "got 0"), (dict(exp=4, man=24), "man must be .*got 24"),
                                       (dict(exp=4, man=-1), "got -1"), (dict(exp=1, man=3), "exp >= 2"),
                                       (dict(exp=5, man=2, bias=200), "bias"), (dict(exp=4.0, man=3), "4.0")])
def test_bad_float_format_parameters(kw, needle):
    with pytest.raises(ValueError, match=needle):
        FloatFormat(**kw)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64])
def test_non_float_tensor_is_type_error(dtype):
    with pytest.raises(TypeError, match=str(dtype)):
        lowp.quantize(torch.zeros(3, dtype=dtype), "bf16")
    with pytest.raises(TypeError, match="torch.Tensor"):
        lowp.quantize([1.0, 2.0], "bf16")


@pytest.mark.parametrize("bad", [0, 33, 1.5, True])
def test_bad_rand_bits(bad):
    with pytest.raises(ValueError, match=f"rand_bits .*{bad!r}"):
        lowp.quantize(torch.zeros(3), "e5m2", "stochastic", rand_bits=bad)


def test_bad_parametric_and_scaled_parameters():
    for name, needle in [("fixed<0,4>", "il"), ("fixed<20,20>", "word length"), ("int1", "bits"), ("int40", "bits"),
                         ("dfp1", "bits")]:
        with pytest.raises(ValueError, match=needle):
            lowp.get_format(name)
    with pytest.raises(ValueError, match="block"):
        lowp.MXFormat(lowp.get_format("e4m3"), block=0)
    with pytest.raises(ValueError, match="ternary method 'median'"):
        lowp.TernaryFormat(4, method="median")
    with pytest.raises(ValueError, match="rounding='nearest' only, got 'stochastic'"):
        lowp.quantize(torch.zeros(4), "ternary", "stochastic")


def test_parametric_names_and_dict_round_trip():
    assert lowp.get_format("fixed<2,14>").max == 2 - 2.0**-14
    assert lowp.get_format(" Fixed<2, 14> ") == lowp.get_format("fixed<2,14>")
    assert lowp.get_format("dfp8-b32").block == 32
    assert lowp.get_format("ternary-g4-thr").method == "threshold"
    assert lowp.get_format("int4") == lowp.get_format("int4")
    f = lowp.get_format("fp8-152")
    assert lowp.get_format(f) is f
    for name in ALL:
        fmt = lowp.get_format(name)
        assert format_from_dict(fmt.to_dict()) == fmt, name


@pytest.mark.parametrize("name", ALL)
def test_shapes_noncontiguous_out_and_nan(name):
    fmt = lowp.get_format(name)
    rounding = "nearest"
    x = sample((6, 40, 3))
    ref = lowp.quantize(x, name, rounding)
    assert ref.shape == x.shape and ref.dtype == x.dtype and ref.data_ptr() != x.data_ptr()
    # non-contiguous view: same result as the contiguous copy
    xt = x.transpose(0, 2)
    assert not xt.is_contiguous()
    yt = lowp.quantize(xt, name, rounding)
    assert same(yt, lowp.quantize(xt.contiguous(), name, rounding))
    # out= writes into out and returns it
    out = torch.empty_like(x)
    r = lowp.quantize(x, name, rounding, out=out)
    assert r is out and same(out, ref)
    with pytest.raises(ValueError, match="out must have shape"):
        lowp.quantize(x, name, out=torch.empty(3))
    # empty and 0-d tensors
    assert lowp.quantize(torch.empty(0, 5), name).shape == (0, 5)
    if not name.startswith("ternary"):
        assert lowp.quantize(torch.tensor(0.75), name).shape == ()
    # NaN stays NaN (a ternary group holding a NaN becomes NaN)
    xn = x.clone()
    xn[0, 0, 0] = float("nan")
    assert bool(torch.isnan(lowp.quantize(xn, name)[0, 0, 0]))
    # float64 / float16 / bfloat16 inputs keep their dtype
    for dt in (torch.float64, torch.float16, torch.bfloat16):
        assert lowp.quantize(x.to(dt), name).dtype == dt
    # the input is never modified
    assert torch.equal(x, sample((6, 40, 3)))


@pytest.mark.parametrize("name", ["e4m3", "int8", "mxfp4_e2m1", "fixed<3,4>"])
def test_quantize_ste(name):
    x = sample((4, 64), seed=3).requires_grad_(True)
    y = lowp.quantize_ste(x, name)
    assert torch.equal(y.detach(), lowp.quantize(x.detach(), name))
    w = torch.randn_like(x)
    (y * w).sum().backward()
    assert torch.equal(x.grad, w)  # straight-through: identity gradient
    g = torch.Generator().manual_seed(2)
    ys = lowp.quantize_ste(x.detach(), name, "stochastic", generator=g)
    assert torch.equal(ys, lowp.quantize(x.detach(), name, "stochastic", generator=torch.Generator().manual_seed(2)))
