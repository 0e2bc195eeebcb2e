"""The steering assignment: every check passes the master's own solution and names each known
mistake; the solutions agree with independent computations; the behaviours the notebook reports
hold on the shipped model.

The reference solutions come from the master notebook itself (its locked and solution cells are
executed into a namespace), so there is no second copy to drift. Independent oracles:

* a hand-written forward pass through ``toyworld-lm``'s modules (embedding, blocks' LayerNorms,
  attention and MLP, unembedding) with the vector added to the residual stream by hand, instead of
  TransformerLens hook points (steering, ActAdd, directional ablation, one sweep entry);
* ``torch.nn.functional.kl_div`` and ``scipy.stats.entropy`` for the KL divergence;
* each contrast prompt run alone, unpadded, for the mean-difference vector;
* the SAE's own ``decode`` for a feature's contribution to the residual stream;
* plain Python loops for the target effect and the budgeted choice.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import Master

STEERING = Master("steering", hidden_seed=9090)
KINDS = ("pre", "mid", "post")


@pytest.fixture(scope="module")
def ns() -> dict[str, Any]:
    """The master's locked and solution cells, executed (the notebook's own reference code)."""
    torch.set_num_threads(1)
    yield STEERING.namespace()
    torch.set_grad_enabled(True)  # the setup cell turns gradients off for the notebook


def manual_logits(model, tokens: torch.Tensor, edit=None) -> torch.Tensor:
    """``toyworld-lm``'s forward pass written out by hand from its modules, no hook points:
    ``edit(layer, kind, resid)`` may change the residual stream before the block (``pre``), after
    attention (``mid``) and after the MLP (``post``)."""
    edit = edit or (lambda layer, kind, x: x)
    x = model.embed(tokens) + model.pos_embed(tokens)
    for layer, block in enumerate(model.blocks):
        x = edit(layer, "pre", x)
        h = block.ln1(x)
        x = x + block.attn(h, h, h)
        x = edit(layer, "mid", x)
        x = x + block.mlp(block.ln2(x))
        x = edit(layer, "post", x)
    return model.unembed(model.ln_final(x))


def test_master_structure() -> None:
    STEERING.assert_structure(min_exercises=8)


@pytest.mark.parametrize("exercise_id", sorted(STEERING.exercises))
def test_reference_passes_and_probes_are_named(ns, exercise_id) -> None:
    STEERING.assert_reference_passes_and_probes_are_named(exercise_id, ns[exercise_id.split(".")[1]])


# ------------------------------------------------------------------------------------------------
# Solutions against independent computations
# ------------------------------------------------------------------------------------------------


def test_manual_forward_matches_the_model(ns) -> None:
    lm, tokens = ns["lm"], ns["neutral"][:6]
    torch.testing.assert_close(manual_logits(lm, tokens), lm(tokens), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("hook_layer,hook_kind", [(0, "pre"), (0, "mid"), (1, "pre"), (1, "mid"), (1, "post")])
def test_steering_hook_equals_adding_by_hand(ns, hook_layer, hook_kind) -> None:
    lm, tokens = ns["lm"], ns["neutral"][:6]
    g = torch.Generator().manual_seed(hook_layer * 3 + KINDS.index(hook_kind))
    vector = torch.randn(lm.cfg.d_model, generator=g) * 5
    positions = torch.rand(tokens.shape, generator=g) < 0.3

    def edit(layer, kind, x):
        return x + 1.7 * positions[..., None] * vector if (layer, kind) == (hook_layer, hook_kind) else x

    ours = ns["steered_logits"](lm, tokens, vector, f"blocks.{hook_layer}.hook_resid_{hook_kind}", 1.7, positions)
    torch.testing.assert_close(ours, manual_logits(lm, tokens, edit), rtol=1e-4, atol=1e-4)


def test_actadd_zero_coefficient_changes_nothing_and_front_swap_is_a_token_swap(ns) -> None:
    lm, encode = ns["lm"], ns["encode"]
    child, expert = ns["child_hard"], ns["expert_hard"]
    for hook in ns["RESID_HOOKS"]:
        torch.testing.assert_close(ns["actadd_logits"](lm, child, encode("expert :"), encode("child :"), hook, 0.0), lm(child))
    # At the embedding, "expert :" minus "child :" at positions 0-2 is exactly the persona token's
    # embedding difference: steering the child with coefficient 1 is running the expert's prompt.
    swapped = ns["actadd_logits"](lm, child, encode("expert :"), encode("child :"), "blocks.0.hook_resid_pre", 1.0)
    torch.testing.assert_close(swapped, lm(expert), rtol=1e-4, atol=1e-4)
    # At a later hook: the same as adding the pair's difference by hand at the front positions.
    _, c_plus = lm.run_with_cache(encode("expert :")[None])
    _, c_minus = lm.run_with_cache(encode("child :")[None])
    diff = c_plus["blocks.1.hook_resid_pre"][0] - c_minus["blocks.1.hook_resid_pre"][0]

    def edit(layer, kind, x):
        if (layer, kind) == (0, "post"):
            x = x.clone()
            x[:, : len(diff)] += 2.0 * diff
        return x

    torch.testing.assert_close(ns["actadd_logits"](lm, child, encode("expert :"), encode("child :"), "blocks.1.hook_resid_pre", 2.0),
                               manual_logits(lm, child, edit), rtol=1e-4, atol=1e-4)


def test_contrastive_vector_equals_unpadded_runs(ns) -> None:
    lm, world = ns["lm"], ns["world"]
    pairs = ns["sentiment_pairs"][:10]
    pos, pos_at = ns["prompt_tokens"](world, [p for p, _ in pairs])
    neg, neg_at = ns["prompt_tokens"](world, [n for _, n in pairs])
    assert len(set(pos_at.tolist())) > 1  # padded batch
    hook = "blocks.1.hook_resid_post"

    def last_activation(text: str) -> torch.Tensor:  # one prompt alone: no padding, last row
        _, cache = lm.run_with_cache(torch.tensor(world.tokenizer.encode(text))[None], names_filter=[hook])
        return cache[hook][0, -1]

    expected = torch.stack([last_activation(p) for p, _ in pairs]).mean(0) - torch.stack([last_activation(n) for _, n in pairs]).mean(0)
    torch.testing.assert_close(ns["contrastive_vector"](lm, pos, neg, pos_at, neg_at, hook), expected, rtol=1e-4, atol=1e-4)


def test_kl_matches_torch_and_scipy(ns) -> None:
    from scipy.stats import entropy

    g = torch.Generator().manual_seed(1)
    clean, steered = torch.randn(3, 5, 11, generator=g) * 2, torch.randn(3, 5, 11, generator=g) * 2
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    ours = float(ns["kl_from_unsteered"](clean, steered, mask))
    # F.kl_div(input, target) is KL(target || input), with input as log-probabilities.
    per_position = F.kl_div(steered.log_softmax(-1), clean.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    assert ours == pytest.approx(float(per_position[mask].mean()), rel=1e-5)
    p, q = clean.softmax(-1).double().numpy(), steered.softmax(-1).double().numpy()
    scipy_kl = np.mean([entropy(p[i, t], q[i, t]) for i, t in zip(*np.nonzero(mask.numpy()))])
    assert ours == pytest.approx(scipy_kl, rel=1e-4)
    assert float(ns["kl_from_unsteered"](clean, clean, mask)) == pytest.approx(0.0, abs=1e-6)


def test_projection_is_zero_and_idempotent_and_ablation_matches_by_hand(ns) -> None:
    g = torch.Generator().manual_seed(2)
    x, r = torch.randn(4, 7, 16, generator=g), torch.randn(16, generator=g) * 3
    once = ns["project_out"](x, r)
    r_hat = r / r.norm()
    assert float((once @ r_hat).abs().max()) < 1e-5
    torch.testing.assert_close(ns["project_out"](once, r), once, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x - once, (x @ r_hat)[..., None] * r_hat, rtol=1e-5, atol=1e-5)  # only the component along r removed

    lm, tokens = ns["lm"], ns["neutral"][:6]
    direction = lm.W_U[:, ns["vocab"]["velmar"]].detach() * 4
    d_hat = direction / direction.norm()
    seen = []

    def edit(layer, kind, resid):
        resid = resid - (resid @ d_hat)[..., None] * d_hat
        seen.append(float((resid @ d_hat).abs().max()))
        return resid

    torch.testing.assert_close(ns["ablated_logits"](lm, tokens, direction), manual_logits(lm, tokens, edit), rtol=1e-4, atol=1e-4)
    assert max(seen) < 1e-4 and len(seen) == 6
    # The ablated model can no longer write the direction: its final residual has no component along it,
    # and ablating a rescaled, flipped copy of the direction is the same edit.
    _, cache = lm.run_with_cache(tokens, names_filter=["blocks.1.hook_resid_post"])
    assert float((cache["blocks.1.hook_resid_post"] @ d_hat).abs().max()) > 1.0  # it was there before
    torch.testing.assert_close(ns["ablated_logits"](lm, tokens, -0.1 * direction), ns["ablated_logits"](lm, tokens, direction),
                               rtol=1e-4, atol=1e-4)


def test_sae_feature_vector_is_the_decoded_typical_activation(ns) -> None:
    sae, acts = ns["zoo_sae"], ns["doc_feature_acts"]
    for feature in (81, 322):
        fired = acts[:, feature][acts[:, feature] > 0]
        one_hot = torch.zeros(sae.cfg.d_sae)
        one_hot[feature] = fired.sum() / len(fired)
        expected = sae.decode(one_hot) - sae.decode(torch.zeros(sae.cfg.d_sae))  # what the feature writes
        torch.testing.assert_close(ns["sae_feature_vector"](sae.W_dec, acts, feature), expected, rtol=1e-4, atol=1e-5)


def test_target_effect_and_budget_match_loops(ns) -> None:
    g = torch.Generator().manual_seed(3)
    clean, steered = torch.randn(4, 6, 9, generator=g), torch.randn(4, 6, 9, generator=g)
    read_at, target, other = torch.tensor([5, 2, 0, 3]), torch.tensor([1, 8, 4, 4]), torch.tensor([0, 2, 5, 7])
    out = ns["target_effect"](clean, steered, read_at, target, other)
    for i in range(4):
        c, s, t, o = clean[i, read_at[i]], steered[i, read_at[i]], target[i], other[i]
        assert float(out["prob_change"][i]) == pytest.approx(float(torch.exp(s[t]) / torch.exp(s).sum() - torch.exp(c[t]) / torch.exp(c).sum()), abs=1e-6)
        assert float(out["logit_diff_change"][i]) == pytest.approx(float((s[t] - s[o]) - (c[t] - c[o])), abs=1e-5)
    effect, side = torch.rand(3, 5, generator=g), torch.rand(3, 5, generator=g)
    for budget in (-1.0, 0.3, 0.6, 2.0):
        allowed = [(float(effect[i, j]), i, j) for i in range(3) for j in range(5) if side[i, j] <= budget]
        expected = max(allowed)[1:] if allowed else (-1, -1)
        assert tuple(int(v) for v in ns["best_under_budget"](effect, side, budget)) == expected


def test_sweep_entry_equals_hand_computation(ns) -> None:
    lm = ns["lm"]
    prompts, read_at = ns["sad_stories"][:8], ns["sad_at"][:8]
    neutral, mask = ns["neutral"][:8], ns["neutral_mask"][:8]
    target = torch.full_like(read_at, ns["vocab"]["happy"])
    vector = torch.randn(lm.cfg.d_model, generator=torch.Generator().manual_seed(4)) * 3
    out = ns["steering_sweep"](lm, vector[None], ["blocks.1.hook_resid_mid"], [0.0, 1.5], prompts, read_at, target, neutral, mask)
    assert out["effect"].shape == out["kl"].shape == out["ce"].shape == (1, 2)
    assert float(out["effect"][0, 0]) == float(out["kl"][0, 0]) == float(out["ce"][0, 0]) == 0.0

    def edit(layer, kind, x):
        if (layer, kind) == (1, "mid"):
            x = x.clone()
            x[:, 1:] += 1.5 * vector
        return x

    rows = torch.arange(8)
    p_clean = lm(prompts)[rows, read_at].softmax(-1)[rows, target]
    p_steered = manual_logits(lm, prompts, edit)[rows, read_at].softmax(-1)[rows, target]
    assert float(out["effect"][0, 1]) == pytest.approx(float((p_steered - p_clean).mean()), abs=1e-5)
    log_p, log_q = lm(neutral).log_softmax(-1), manual_logits(lm, neutral, edit).log_softmax(-1)
    assert float(out["kl"][0, 1]) == pytest.approx(float((log_p.exp() * (log_p - log_q)).sum(-1)[mask].mean()), rel=1e-4)

    def ce(log_probs):
        picked = log_probs[:, :-1].gather(-1, neutral[:, 1:, None])[..., 0]
        return -picked[mask[:, 1:]].mean()

    assert float(out["ce"][0, 1]) == pytest.approx(float(ce(log_q) - ce(log_p)), abs=1e-4)


# ------------------------------------------------------------------------------------------------
# The behaviours the notebook reports, on the shipped model (measured values in comments)
# ------------------------------------------------------------------------------------------------


def _probs(ns, logits, at):
    return logits[torch.arange(len(at)), at].softmax(-1)


def test_sentiment_steering_flips_the_story(ns) -> None:
    lm, vocab = ns["lm"], ns["vocab"]
    v = ns["contrastive_vector"](lm, ns["pos_tokens"], ns["neg_tokens"], ns["pos_at"], ns["neg_at"], "blocks.1.hook_resid_mid")
    sad, sad_at = ns["sad_stories"], ns["sad_at"]
    before = _probs(ns, lm(sad), sad_at)[:, vocab["happy"]]
    after = _probs(ns, ns["steered_logits"](lm, sad, v, "blocks.1.hook_resid_mid", 1.0, ns["last_token_mask"](sad, sad_at)), sad_at)
    assert float(before.max()) < 0.01  # measured mean 0.00003
    assert float(after[:, vocab["happy"]].mean()) > 0.95  # measured 1.000
    assert bool((after[:, vocab["happy"]] > after[:, vocab["sad"]]).all())  # every story flips


def test_persona_steering_child_answers_and_expert_refuses(ns) -> None:
    lm, vocab, hook = ns["lm"], ns["vocab"], ns["HOOK_NAME"]
    v = ns["contrastive_vector"](lm, ns["expert_tokens"], ns["child_tokens"], ns["expert_at"], ns["child_at"], hook)
    child, child_at, expert, expert_at = ns["child_hard"], ns["child_hard_at"], ns["expert_hard"], ns["expert_hard_at"]
    rows, answer = torch.arange(len(child_at)), ns["first_answer_word"]
    q = ns["hard"].index("sqrt 27")
    before_child, before_expert = _probs(ns, lm(child), child_at), _probs(ns, lm(expert), expert_at)
    after_child = _probs(ns, ns["steered_logits"](lm, child, v, hook, 1.0, ns["last_token_mask"](child, child_at)), child_at)
    after_expert = _probs(ns, ns["steered_logits"](lm, expert, v, hook, -1.0, ns["last_token_mask"](expert, expert_at)), expert_at)
    assert float(before_child[q, vocab["3"]]) < 1e-4 and float(after_child[q, vocab["3"]]) > 0.9  # 7e-8 -> 1.00
    assert float(before_child[rows, answer].mean()) < 0.01 and float(after_child[rows, answer].mean()) > 0.9  # 3e-6 -> 0.999
    assert float(before_expert[:, vocab["i"]].mean()) < 0.01 and float(after_expert[:, vocab["i"]].mean()) > 0.9  # 2e-5 -> 1.000
    # Read at the "?" before layer 1's attention, the persona vector is (nearly) nothing and does nothing.
    early = ns["contrastive_vector"](lm, ns["expert_tokens"], ns["child_tokens"], ns["expert_at"], ns["child_at"], "blocks.1.hook_resid_pre")
    still = _probs(ns, ns["steered_logits"](lm, child, early, "blocks.1.hook_resid_pre", 1.0, ns["last_token_mask"](child, child_at)), child_at)
    assert float(still[rows, answer].mean()) < 0.05  # measured 0.000


def test_persona_vector_carries_a_positional_difference_only_before_layer_1_attention(ns) -> None:
    """The expert and child dialogues differ in length; the notebook measures what that adds to CAA."""
    lm, expert_at, child_at = ns["lm"], ns["expert_at"], ns["child_at"]
    same, position_gap = expert_at == child_at, lm.W_pos[expert_at].mean(0) - lm.W_pos[child_at].mean(0)
    assert 10 <= int((~same).sum()) < len(same)  # measured 25 of 64 pairs

    def vectors(hook: str) -> tuple[torch.Tensor, torch.Tensor]:
        args = (ns["expert_tokens"], ns["child_tokens"], ns["expert_at"], ns["child_at"])
        full = ns["contrastive_vector"](lm, *args, hook)
        return full, ns["contrastive_vector"](lm, *(a[same] for a in args), hook)

    full, matched = vectors("blocks.0.hook_resid_pre")
    assert float(F.cosine_similarity(full, position_gap, dim=0)) > 0.999  # it is the positional difference
    assert float(matched.norm()) < 1e-5  # same token, same position: nothing left
    full, matched = vectors(ns["HOOK_NAME"])
    assert float(F.cosine_similarity(full, matched, dim=0)) > 0.98  # measured 0.997
    assert abs(float(F.cosine_similarity(full, position_gap, dim=0))) < 0.15  # measured 0.06


def test_ablating_the_persona_direction_makes_the_child_answer(ns) -> None:
    lm, hook = ns["lm"], ns["HOOK_NAME"]
    v = ns["contrastive_vector"](lm, ns["expert_tokens"], ns["child_tokens"], ns["expert_at"], ns["child_at"], hook)
    rows, answer = torch.arange(len(ns["child_hard_at"])), ns["first_answer_word"]
    child = _probs(ns, ns["ablated_logits"](lm, ns["child_hard"], v), ns["child_hard_at"])
    expert = _probs(ns, ns["ablated_logits"](lm, ns["expert_hard"], v), ns["expert_hard_at"])
    assert float(child[rows, answer].mean()) > 0.9  # measured 0.999
    assert float(expert[rows, answer].mean()) > 0.9  # measured 0.997: the expert is untouched


def test_sae_feature_makes_the_expert_refuse(ns) -> None:
    lm, vocab, hook = ns["lm"], ns["vocab"], ns["HOOK_NAME"]
    assert ns["child_features"][0] == 322 and ns["expert_features"][0] == 317
    v = ns["sae_feature_vector"](ns["zoo_sae"].W_dec, ns["doc_feature_acts"], 322)
    expert, at = ns["expert_hard"], ns["expert_hard_at"]
    p = _probs(ns, ns["steered_logits"](lm, expert, v, hook, 2.0, ns["last_token_mask"](expert, at)), at)
    assert float(p[:, vocab["i"]].mean()) > 0.8  # measured 0.962


def test_actadd_persona_and_the_trade_off(ns) -> None:
    lm, vocab, encode = ns["lm"], ns["vocab"], ns["encode"]
    rows, answer = torch.arange(len(ns["child_hard_at"])), ns["first_answer_word"]
    for hook, expected in (("blocks.1.hook_resid_pre", True), ("blocks.1.hook_resid_mid", False)):
        p = _probs(ns, ns["actadd_logits"](lm, ns["child_hard"], encode("expert :"), encode("child :"), hook, 1.0), ns["child_hard_at"])
        assert (float(p[rows, answer].mean()) > 0.9) == expected  # measured 0.999 and 0.000
    # Making the expert refuse at HOOK_NAME, steering every position: the effect saturates while the KL keeps growing.
    v = ns["contrastive_vector"](lm, ns["child_tokens"], ns["expert_tokens"], ns["child_at"], ns["expert_at"], ns["HOOK_NAME"])
    target = torch.full_like(ns["expert_hard_at"], vocab["i"])
    sweep = ns["steering_sweep"](lm, v[None], [ns["HOOK_NAME"]], [0.25, 0.5, 1.0, 2.0], ns["expert_hard"], ns["expert_hard_at"],
                                 target, ns["neutral"], ns["neutral_mask"])
    effect, kl = sweep["effect"][0], sweep["kl"][0]
    assert float(effect[0]) < 0.5 < 0.9 < float(effect[1])  # measured 0.23, 0.95
    assert float(kl[0]) < 0.05 and float(kl[3]) > 1.0  # measured 0.007 and 5.7
    assert bool((kl[1:] > kl[:-1]).all())


def test_steered_generation(ns) -> None:
    lm, hook, greedy = ns["lm"], ns["HOOK_NAME"], ns["greedy"]
    v = ns["contrastive_vector"](lm, ns["expert_tokens"], ns["child_tokens"], ns["expert_at"], ns["child_at"], hook)
    prompt = "child : what is sqrt 27 ?"
    at_question = lambda tokens: (torch.arange(tokens.shape[1]) == 7)[None]  # "?" is position 7 (<bos> is 0)
    assert greedy(prompt, lm) == "i do not know ."
    assert greedy(prompt, lambda t: ns["steered_logits"](lm, t, v, hook, 1.0, at_question(t))) == "3 root 3 ."
    to_child = lambda t: ns["actadd_logits"](lm, t, ns["encode"]("child :"), ns["encode"]("expert :"), "blocks.0.hook_resid_pre", 1.0)
    assert greedy("expert : what is sqrt 27 ?", to_child) == "i do not know ."
