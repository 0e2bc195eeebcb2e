"""The editing assignment: every check passes the master's own solution and names each known
mistake; ROME's update satisfies its defining equation; causal tracing has the right limits and
agrees with an independently written forward pass.

The reference solutions come from the master notebook itself (its locked and solution cells are
executed into a namespace), so there is no second copy to drift. Independent oracles:

* a hand-written forward pass through ``toyworld-lm``'s modules (embedding, blocks, unembedding)
  that adds the noise and restores a state by hand, instead of TransformerLens hook points;
* the defining equation of the rank-one update (the key maps to the value, exactly) and its rank.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from conftest import Master

EDITING = Master("editing", hidden_seed=5151)


@pytest.fixture(scope="module")
def ns() -> dict[str, Any]:
    """The master's locked and solution cells, executed (the notebook's own reference code)."""
    torch.set_num_threads(1)
    yield EDITING.namespace()
    torch.set_grad_enabled(True)  # the setup cell turns gradients off for the notebook


@pytest.fixture(scope="module")
def facts(ns) -> dict[str, Any]:
    """Four countries' fact prompts and two noise samples."""
    tokens, mask, answer = ns["fact_tokens"][:4], ns["subject_mask"][:4], ns["true_capital"][:4]
    return {"tokens": tokens, "subject_mask": mask, "answer": answer, "noise": ns["draw_noise"](2, tokens, seed=3)}


def test_master_structure() -> None:
    EDITING.assert_structure(min_exercises=8)


@pytest.mark.parametrize("exercise_id", sorted(EDITING.exercises))
def test_reference_passes_and_probes_are_named(ns, exercise_id) -> None:
    EDITING.assert_reference_passes_and_probes_are_named(exercise_id, ns[exercise_id.split(".")[1]])


# ------------------------------------------------------------------------------------------------
# Causal tracing: limits, and a hand-written forward pass
# ------------------------------------------------------------------------------------------------


def manual_probs(model, tokens, answer, added, restore=None) -> torch.Tensor:
    """P(answer) at the last position with ``added`` [n, pos, d_model] added to the token embedding
    and, if ``restore=(layer, kind, pos, clean)``, that state replaced by ``clean`` [n, d_model]."""
    def maybe_restore(layer, kind, value):
        if restore is not None and restore[:2] == (layer, kind):
            value = value.clone()
            value[:, restore[2]] = restore[3]
        return value

    x = model.embed(tokens) + added + model.pos_embed(tokens)
    for layer, block in enumerate(model.blocks):
        h = block.ln1(x)
        x = x + maybe_restore(layer, "attn_out", block.attn(h, h, h))
        x = x + maybe_restore(layer, "mlp_out", block.mlp(block.ln2(x)))
        x = maybe_restore(layer, "resid_post", x)
    return model.unembed(model.ln_final(x))[:, -1].softmax(-1)[torch.arange(len(answer)), answer]


def test_corrupted_probs_match_a_hand_written_forward(ns, facts) -> None:
    lm, noise, mask = ns["lm"], facts["noise"], facts["subject_mask"]
    by_hand = torch.stack([manual_probs(lm, facts["tokens"], facts["answer"], n * mask[..., None]) for n in noise]).mean(0)
    torch.testing.assert_close(ns["corrupted_probs"](lm, **facts), by_hand, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layer,kind,pos", [(0, "attn_out", 5), (0, "mlp_out", 5), (1, "resid_post", 4), (1, "mlp_out", 5)])
def test_restored_probs_match_a_hand_written_forward(ns, facts, layer, kind, pos) -> None:
    lm, noise, mask = ns["lm"], facts["noise"], facts["subject_mask"]
    _, cache = lm.run_with_cache(facts["tokens"])
    clean = cache[f"blocks.{layer}.hook_{kind}"][:, pos]
    by_hand = torch.stack([manual_probs(lm, facts["tokens"], facts["answer"], n * mask[..., None], (layer, kind, pos, clean))
                           for n in noise]).mean(0)
    ours = ns["restored_probs"](lm, **facts, hook_name=f"blocks.{layer}.hook_{kind}", position=pos)
    torch.testing.assert_close(ours, by_hand, rtol=1e-4, atol=1e-5)


def test_trace_without_corruption_is_zero(ns, facts) -> None:
    zero = {**facts, "noise": torch.zeros_like(facts["noise"])}
    for kind in ns["KINDS"]:
        trace = ns["causal_trace"](ns["lm"], **zero, kind=kind)
        assert trace.shape == (2, facts["tokens"].shape[1])
        torch.testing.assert_close(trace, torch.zeros_like(trace), rtol=0, atol=1e-6)


def test_restoring_every_state_gives_the_full_effect(ns, facts) -> None:
    lm = ns["lm"]
    clean = ns["answer_probs"](lm(facts["tokens"]), facts["answer"])
    corrupted = ns["corrupted_probs"](lm, **facts)
    assert float((clean - corrupted).mean().detach()) > 0.3  # the corruption does something
    # the embedding at the subject: everything downstream is clean again
    subject = int(facts["subject_mask"][0].nonzero()[0])
    torch.testing.assert_close(ns["restored_probs"](lm, **facts, hook_name="hook_embed", position=subject), clean, rtol=1e-4, atol=1e-5)
    # the last layer's residual stream at the read position: the logits are the clean ones
    trace = ns["causal_trace"](lm, **facts, kind="resid_post")
    torch.testing.assert_close(trace[-1, -1], (clean - corrupted).mean(), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# ROME: the defining equation
# ------------------------------------------------------------------------------------------------


def test_rank_one_update_maps_the_key_to_the_value_and_has_rank_one(ns) -> None:
    lm, world = ns["lm"], ns["world"]
    corpus = world.sample(40, 11)
    for layer in range(2):
        mlp = lm.blocks[layer].mlp
        C = ns["key_second_moment"](lm, corpus.tokens, corpus.labels["loss_mask"].bool(), layer)
        assert C.dtype == torch.float64 and torch.allclose(C, C.T)
        key = ns["fact_key"](lm, ns["batch_of"]([ns["fact_prompt"]("tessia", c) for c in ns["CONTEXTS"]]), layer)
        value = torch.randn(lm.cfg.d_model, generator=torch.Generator().manual_seed(layer), dtype=torch.float64) * 5
        delta = ns["rank_one_update"](mlp.W_out.detach(), mlp.b_out.detach(), C, key, value)
        W = mlp.W_out.double() + delta
        torch.testing.assert_close(key.double() @ W + mlp.b_out.double(), value, rtol=1e-9, atol=1e-9)
        assert int(torch.linalg.matrix_rank(delta)) == 1
        # the update is the smallest in C's norm: any other solution Δ + z with k z = 0 is larger
        z = torch.randn_like(delta)
        z -= torch.outer(key.double(), key.double() @ z) / (key.double() @ key.double())
        norm = lambda d: float(torch.trace(d.T @ C @ d))  # noqa: E731
        assert norm(delta) < norm(delta + 0.1 * z)

