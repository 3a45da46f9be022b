"""NumericsCollector with fake notify calls and with a real emulated model."""
import json
import math

import torch

import lowp
from lowp.analysis import NumericsCollector, numerics_collector
from lowp.ops import observe

E5M2 = lowp.get_format("e5m2")


def test_records_every_n_steps_from_fake_notify_calls():
    x = torch.tensor([1.0, 2.0, 1e-9, 1e6])
    xq = lowp.quantize(x, E5M2)
    with NumericsCollector(every=2) as nc:
        assert nc in observe.OBSERVERS
        for _ in range(5):                       # steps 0..4: recorded at 0, 2, 4
            observe.notify("fc1", "input", x, xq, E5M2)
            observe.notify("fc1", "grad_output", x, xq, E5M2)
            nc.step()
    assert nc not in observe.OBSERVERS
    assert [r["step"] for r in nc.records] == [0, 0, 2, 2, 4, 4]
    r = nc.records[0]
    assert {"layer", "role", "step", "underflow", "overflow", "subnormal", "sqnr_db", "amax", "n"} <= set(r)
    assert (r["layer"], r["role"], r["n"]) == ("fc1", "input", 4)
    assert r["underflow"] == 0.25 and r["overflow"] == 0.25 and r["amax"] == 1e6
    assert r["sqnr_db"] == -math.inf
    assert nc.records() == list(nc.records)      # also callable, as lowp.experiments.train expects
    back = json.loads(nc.to_json())
    assert back[0]["sqnr_db"] == "-inf" and len(back) == 6
    rows = nc.summary()
    assert {(s["layer"], s["role"]) for s in rows} == {("fc1", "input"), ("fc1", "grad_output")}
    assert "fc1" in nc.table() and "grad_output" in nc.table()


def test_nothing_recorded_when_not_registered():
    nc = NumericsCollector(every=1)
    observe.notify("fc1", "input", torch.ones(3), torch.ones(3), E5M2)
    assert nc.records == []


def test_counts_training_forwards_of_an_emulated_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    lowp.emulate(model, lowp.get_recipe("fp8-e5m2").replace(exempt_first_last=False))
    x = torch.randn(32, 8)
    with numerics_collector(model, every=2) as nc:
        for _ in range(3):                       # training steps 0, 1, 2
            model.train()
            model(x).pow(2).mean().backward()
        model.eval()
        with torch.no_grad():
            model(x)                              # evaluation: neither counted nor recorded
    steps = {r["step"] for r in nc.records}
    assert steps == {0, 2}
    roles = {r["role"] for r in nc.records}
    assert {"input", "weight", "grad_output"} <= roles
    assert all(0 <= r["underflow"] <= 1 and r["n"] > 0 for r in nc.records)
    assert not observe.OBSERVERS or nc not in observe.OBSERVERS
