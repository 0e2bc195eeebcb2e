"""The shipped ``toyworld-transcoders``: loadable offline, small, and as good as their card says.

The card's metrics are recomputed here from the shipped weights (same documents, same seeds) and
must match; the thresholds of the module's ``verify`` must hold; and the transcoders spliced into
the model with their error terms must give back the model's own logits.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch

from interplab import zoo
from interplab.attribution import fidelity, mlp_io, spliced_logits
from interplab.toyworld import ToyWorld
from interplab.zoo import toyworld_transcoders as module

NAME = "toyworld-transcoders"


@pytest.fixture(scope="module")
def shipped():
    torch.set_num_threads(1)
    return zoo.load("toyworld-lm"), zoo.load(NAME)


def test_weights_are_small_and_the_card_is_complete() -> None:
    for suffix in ("safetensors", "json"):
        path = zoo.WEIGHTS_DIR / f"{NAME}.{suffix}"
        assert path.is_file() and path.stat().st_size <= 10 * 2**20, path
    card = json.loads((zoo.WEIGHTS_DIR / f"{NAME}.json").read_text())
    assert {"recipe", "config", "training_time_s", "metrics", "metric_definitions"} <= set(card)
    assert zoo.module_for(NAME) is module


def test_card_metrics_reproduce_and_meet_thresholds(shipped) -> None:
    model, transcoders = shipped
    card = zoo.card(NAME)["metrics"]
    metrics = module.evaluate(transcoders, model)
    for layer in ("layer0", "layer1"):
        for key in ("nmse", "explained_variance", "l0"):
            assert metrics[layer][key] == pytest.approx(card[layer][key], abs=2e-3), (layer, key)
    assert metrics["ce_recovered"] == pytest.approx(card["ce_recovered"], abs=2e-3)
    assert all(module.verify(transcoders).values()), module.verify(transcoders)


def test_fidelity_definition_against_a_direct_computation(shipped) -> None:
    model, transcoders = shipped
    batch = ToyWorld().sample(20, 5)
    ins, outs = mlp_io(model, batch.tokens)
    mask = batch.labels["loss_mask"].bool()
    x, y = ins[1][mask].double(), outs[1][mask].double()
    tc = copy.deepcopy(transcoders[1]).double()
    with torch.no_grad():
        f = tc.encode(x)
        y_hat = tc.decode(f)
    # Explained variance as 1 - residual variance / total variance, with numpy-style variances.
    expected = 1 - float(((y - y_hat) ** 2).sum(1).mean()) / float(y.var(0, unbiased=False).sum())
    got = fidelity(y, y_hat, f)
    assert got["explained_variance"] == pytest.approx(expected, abs=1e-9)
    assert got["l0"] == pytest.approx(float((f != 0).sum()) / len(f))


def test_spliced_transcoders_with_errors_are_the_model(shipped) -> None:
    model, transcoders = shipped
    tokens = ToyWorld().sample(4, 9).tokens
    ins, outs = mlp_io(model, tokens)
    with torch.no_grad():
        errors = torch.stack([outs[l] - transcoders[l](ins[l]) for l in range(model.cfg.n_layers)])
        torch.testing.assert_close(spliced_logits(model, transcoders, tokens, errors), model(tokens), atol=1e-4, rtol=1e-4)
        without = spliced_logits(model, transcoders, tokens)
    assert (without - model(tokens)).abs().max() > 1e-2  # the errors are not negligible
