"""The circuits assignment: zoo model, reference definitions (the master notebook's own solution
cells) cross-checked against TransformerLens, and every exercise's checks (reference passes, each
known mistake is caught and named).

Independent implementations used as oracles:
- per-token loss: TransformerLens's ``lm_cross_entropy_loss`` (what ``return_type="loss"`` uses);
- head scores: ``transformer_lens.head_detector.detect_head`` (error_measure="mul");
- composition scores: ``HookedTransformer.all_composition_scores``;
- direct logit attribution: ``ActivationCache.stack_head_results`` + ``logit_attrs``;
- per-position patching: ``transformer_lens.patching.get_act_patch_attn_head_out_by_pos``;
- the detector to design: heads planted with ``attn_only_2l.plant_head`` (the truth is known).
"""
from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from transformer_lens.utilities.lm_utils import lm_cross_entropy_loss

from interplab.checking import judge
from interplab.zoo import attn_only_2l

from conftest import Master

CIRCUITS = Master("circuits", hidden_seed=987654321)
with torch.enable_grad():  # the master's setup turns gradients off for the whole process; restored on exit
    sol = SimpleNamespace(**CIRCUITS.namespace())  # the master's own solution cells (and its setup)
SOLUTIONS = {
    "circuits.per_token_loss": sol.per_token_loss,
    "circuits.attention_score": sol.attention_score,
    "circuits.induction_score": sol.induction_score,
    "circuits.ablation_loss_increase": sol.ablation_loss_increase,
    "circuits.logit_diff": sol.logit_diff,
    "circuits.head_patching_effect": sol.head_patching_effect,
    "circuits.full_ov_circuit": sol.full_ov_circuit,
    "circuits.pos_qk_circuit": sol.pos_qk_circuit,
    "circuits.composition_score": sol.composition_score,
    "circuits.composition_scores": sol.composition_scores,
    "circuits.find_offset_heads": sol.find_offset_heads,
    "circuits.head_position_patching_effect": sol.head_position_patching_effect,
    "circuits.head_logit_attribution": sol.head_logit_attribution,
}
EXERCISES = CIRCUITS.exercises


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny tensors: several threads only add overhead, and on a shared machine they oversubscribe.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    return attn_only_2l.load()


# --------------------------------------------------------------------------------------------
# The zoo model
# --------------------------------------------------------------------------------------------


def test_zoo_model_verifies(model):
    results = attn_only_2l.verify(model)
    assert results and all(results.values()), results


def test_load_works_offline(tmp_path):
    # A fresh process with the hub switched off and an empty HF cache: loading must not need either.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    code = ("from interplab.zoo import load; m = load('attn-only-2l'); "
            "print(m.cfg.n_layers, m.cfg.n_heads, m.tokenizer is None)")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "4", "True"]


def test_training_is_seeded(tmp_path):
    # The full recipe takes about a minute (the shipped weights were reproduced bit for bit); a
    # short run twice is enough to show nothing depends on global random state.
    from safetensors.torch import load_file

    short = attn_only_2l.TrainConfig(steps=15, batch=8, eval_batch=8)
    cards = [attn_only_2l.train(tmp_path / run, short) for run in ("a", "b")]
    a, b = (load_file(str(tmp_path / run / f"{attn_only_2l.ZOO_NAME}.safetensors")) for run in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert cards[0]["metrics"] == cards[1]["metrics"]


def test_seed_replaces_the_recipe_seed(tmp_path):
    """``train(..., seed=N)`` (what ``interplab zoo train NAME --seed N`` calls) trains another run
    and says so in the card; the command refuses a new seed without --out (the shipped weights stay)."""
    from safetensors.torch import load_file

    short = attn_only_2l.TrainConfig(steps=15, batch=8, eval_batch=8, log_every=5)
    cards = {seed: attn_only_2l.train(tmp_path / str(seed), short, seed=seed) for seed in (0, 1)}
    assert cards[1]["seed"] == 1 and cards[1]["recipe"]["train_config"]["seed"] == 1
    assert [e["step"] for e in cards[0]["loss_curve"]] == [0, 5, 10, 14]
    a, b = (load_file(str(tmp_path / str(seed) / f"{attn_only_2l.ZOO_NAME}.safetensors")) for seed in (0, 1))
    assert not torch.equal(a["embed.W_E"], b["embed.W_E"])
    refused = subprocess.run([sys.executable, "-m", "interplab.cli", "zoo", "train", "attn-only-2l", "--seed", "3"],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "--seed needs --out" in refused.stderr


def test_data_helpers_are_seeded_and_well_formed():
    a = attn_only_2l.repeated_tokens(3, 7, torch.Generator().manual_seed(1))
    b = attn_only_2l.repeated_tokens(3, 7, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (3, 15)
    assert (a[:, 0] == attn_only_2l.BOS).all() and torch.equal(a[:, 1:8], a[:, 8:])
    assert all(len(set(row[1:8].tolist())) == 7 for row in a)  # distinct within a half
    p = attn_only_2l.induction_prompts(5, 9, torch.Generator().manual_seed(2))
    differ = (p["clean"] != p["corrupted"])
    assert differ.sum(dim=1).tolist() == [1] * 5  # exactly one corrupted position per prompt
    assert torch.equal(p["corrupted"][differ], p["wrong"]) and not (p["correct"] == p["wrong"]).any()


# --------------------------------------------------------------------------------------------
# Reference head scores vs TransformerLens's head detector
# --------------------------------------------------------------------------------------------


def _with_toy_tokenizer(model):
    """detect_head takes strings, so give the model an in-memory word-level tokenizer ("t5" -> 5,
    "<bos>" -> 0). Nothing is downloaded: the vocabulary is built here."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = {"<bos>": attn_only_2l.BOS, **{f"t{i}": i for i in range(1, attn_only_2l.D_VOCAB)}}
    backend = Tokenizer(WordLevel(vocab, unk_token="<bos>"))
    backend.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<bos>",
                                        pad_token="<bos>", add_bos_token=True)
    tokenizer.init_kwargs["name_or_path"] = "interplab-attn-only-2l"  # TL reads it; add_bos_token=True skips any reload
    model.cfg.default_prepend_bos = True
    model.set_tokenizer(tokenizer)
    return model


def test_head_scores_match_transformer_lens_detect_head():
    """Our scores average attention over the query positions where the target key exists; TL's
    "mul" score is sum(pattern * detection) / sum(pattern), i.e. a sum over those positions divided
    by ALL query positions L (each row of the pattern sums to 1), including query 0, which has no
    previous token and in our definitions is excluded because it can only attend to itself. Hence,
    on [BOS] + r + r with n = len(r) and L = 2n + 1:
      TL previous_token = ours * (L - 1) / L
      TL induction      = ours * n / L           (only the n second-half queries can score)
      TL eye pattern    = (1 + ours_current * (L - 1)) / L   (query 0 scores 1 on itself)
      TL column-0       = (1 + ours_first * (L - 1)) / L
    With distinct tokens in each half, TL's induction pattern (shifted duplicate-token pattern) is
    exactly our diagonal at offset -(n - 1) on the second half."""
    from transformer_lens.head_detector import detect_head

    model = _with_toy_tokenizer(attn_only_2l.load())
    g = torch.Generator().manual_seed(7)
    for n in (5, 11, 20):
        tokens = attn_only_2l.repeated_tokens(1, n, g)
        text = " ".join(f"t{t}" for t in tokens[0, 1:].tolist())
        assert torch.equal(model.to_tokens(text), tokens)
        _, cache = model.run_with_cache(tokens)
        pattern = torch.stack([cache["pattern", layer] for layer in range(2)])  # layer batch head q k
        L = tokens.shape[1]
        eye = torch.eye(L, dtype=torch.bool)
        masks = {"prev": eye.roll(-1, dims=1).tril(), "cur": eye, "first": torch.zeros(L, L, dtype=torch.bool).index_fill_(1, torch.tensor([0]), True)}
        ours = {name: torch.stack([sol.attention_score(pattern[layer], mask) for layer in range(2)])
                for name, mask in masks.items()}
        ours["ind"] = torch.stack([sol.induction_score(pattern[layer]) for layer in range(2)])
        tl = {
            "prev": detect_head(model, text, "previous_token_head", error_measure="mul"),
            "ind": detect_head(model, text, "induction_head", error_measure="mul"),
            "cur": detect_head(model, text, torch.eye(L), error_measure="mul"),
            "first": detect_head(model, text, torch.zeros(L, L).index_fill_(1, torch.tensor([0]), 1.0), error_measure="mul"),
        }
        torch.testing.assert_close(ours["prev"] * (L - 1) / L, tl["prev"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ours["ind"] * n / L, tl["ind"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close((1 + ours["cur"] * (L - 1)) / L, tl["cur"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close((1 + ours["first"] * (L - 1)) / L, tl["first"], rtol=1e-4, atol=1e-5)
        assert tl["ind"][1].max() * L / n > 0.9 and tl["prev"][0].max() * L / (L - 1) > 0.5  # the heads are there


def test_per_token_loss_matches_transformer_lens(model):
    """Our per-token loss vs TransformerLens's own next-token loss (lm_cross_entropy_loss)."""
    tokens = attn_only_2l.repeated_tokens(4, 9, torch.Generator().manual_seed(5))
    with torch.no_grad():
        theirs = model(tokens, return_type="loss", loss_per_token=True)
        torch.testing.assert_close(sol.per_token_loss(model(tokens), tokens), theirs)
        logits = torch.randn(3, 7, 11, generator=torch.Generator().manual_seed(0))
        toks = torch.randint(0, 11, (3, 7), generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(sol.per_token_loss(logits, toks), lm_cross_entropy_loss(logits, toks, per_token=True))


def test_composition_scores_match_transformer_lens(model):
    """Our composition scores vs HookedTransformer.all_composition_scores (TL's own code), on the
    shipped model and on a randomly initialised one."""
    for m in (model, attn_only_2l.random_model(torch.Generator().manual_seed(3))):
        for kind in "QKV":
            theirs = m.all_composition_scores(kind)[0, :, 1, :]
            torch.testing.assert_close(sol.composition_scores(m, kind), theirs, rtol=1e-3, atol=1e-5)


def test_previous_token_head_feeds_the_induction_head_keys(model):
    """The story the notebook tells: every induction head (the model has learned several, which is
    why ablating one of them costs little) reads its keys mostly from the previous-token head:
    in each induction head's column of the K-composition scores the previous-token head is the
    largest, well above the scores of a randomly initialised model, and above its Q-composition."""
    tokens = attn_only_2l.repeated_tokens(16, 15, torch.Generator().manual_seed(11))
    _, cache = model.run_with_cache(tokens)
    prev_mask = torch.eye(tokens.shape[1], dtype=torch.bool).roll(-1, dims=1).tril()  # key q - 1 for every q >= 1
    prev_head = int(sol.attention_score(cache["pattern", 0], prev_mask).argmax())
    induction_heads = (sol.induction_score(cache["pattern", 1]) > 0.9).nonzero()[:, 0].tolist()
    assert induction_heads
    with torch.no_grad():
        k_comp, q_comp = sol.composition_scores(model, "K"), sol.composition_scores(model, "Q")
        baseline = sol.composition_scores(attn_only_2l.random_model(torch.Generator().manual_seed(0)), "K").max()
    for head in induction_heads:
        assert int(k_comp[:, head].argmax()) == prev_head, k_comp
        assert k_comp[prev_head, head] > 2 * baseline and k_comp[prev_head, head] > q_comp[prev_head, head]


# --------------------------------------------------------------------------------------------
# Every exercise: the reference passes, every probe fails and is named
# --------------------------------------------------------------------------------------------


def test_every_exercise_has_a_reference_and_enough_points():
    assert set(SOLUTIONS) == set(EXERCISES)
    assert len(EXERCISES) >= 8


def _run(exercise, fn):
    return CIRCUITS.run(exercise.id, fn)


_REFERENCE_OUTPUTS: dict[str, dict] = {}


def _reference(exercise_id):
    if exercise_id not in _REFERENCE_OUTPUTS:
        _REFERENCE_OUTPUTS[exercise_id] = _run(EXERCISES[exercise_id], SOLUTIONS[exercise_id])
    return _REFERENCE_OUTPUTS[exercise_id]


_PROBE_OUTPUTS: dict[str, dict] = {}


def _probe_outputs(exercise_id):
    if exercise_id not in _PROBE_OUTPUTS:
        _PROBE_OUTPUTS[exercise_id] = {p.name: _run(EXERCISES[exercise_id], p.fn) for p in EXERCISES[exercise_id].probes}
    return _PROBE_OUTPUTS[exercise_id]


@pytest.mark.parametrize("exercise_id", sorted(SOLUTIONS))
def test_reference_passes_its_own_check(exercise_id):
    exercise = EXERCISES[exercise_id]
    outputs = _reference(exercise_id)
    for split in outputs:
        for outcome in outputs[split]:
            assert "output" in outcome, outcome
    again = _run(exercise, SOLUTIONS[exercise_id])  # a second run from the same seeds is identical
    verdict = judge(exercise, again, outputs, scored_split="hidden")
    assert verdict.passed and verdict.fraction == 1.0, verdict.message


@pytest.mark.parametrize("exercise_id,probe_name",
                         [(ex.id, p.name) for ex in EXERCISES.values() for p in ex.probes])
def test_each_probe_fails_and_is_named(exercise_id, probe_name):
    exercise = EXERCISES[exercise_id]
    references = _reference(exercise_id)
    probe_outputs = _probe_outputs(exercise_id)
    probe = next(p for p in exercise.probes if p.name == probe_name)
    public_only = {name: {"public": outs["public"]} for name, outs in probe_outputs.items()}  # what grading has
    verdict = judge(exercise, probe_outputs[probe_name], references, probes=public_only, scored_split="hidden")
    assert not verdict.passed
    assert verdict.fraction == 0.0, f"probe {probe_name} matches the reference on some hidden input"
    assert probe.message in verdict.message, verdict.message


# --------------------------------------------------------------------------------------------
# New exercises vs independent implementations
# --------------------------------------------------------------------------------------------


def test_head_logit_attribution_matches_transformer_lens_and_is_exact(model):
    """Ours vs TransformerLens's ``stack_head_results`` + ``logit_attrs`` (its own DLA code), and
    the decomposition is exact without LayerNorm: heads + embeddings + b_O + b_U = logit difference."""
    prompts = attn_only_2l.induction_prompts(6, 10, torch.Generator().manual_seed(4))
    for m in (model, attn_only_2l.random_model(torch.Generator().manual_seed(6))):
        assert m.cfg.normalization_type is None
        with torch.no_grad():
            logits, cache = m.run_with_cache(prompts["clean"])
            stack = cache.stack_head_results(layer=-1, pos_slice=-1)  # [component, batch, d_model]
            theirs = cache.logit_attrs(stack, tokens=prompts["correct"], incorrect_tokens=prompts["wrong"], pos_slice=-1)
            ours = sol.head_logit_attribution(m, prompts["clean"], prompts["correct"], prompts["wrong"])
            torch.testing.assert_close(ours.flatten(), theirs.mean(dim=-1), rtol=1e-4, atol=1e-4)
            direction = (m.W_U[:, prompts["correct"]] - m.W_U[:, prompts["wrong"]]).T
            rest = ((cache["embed"][:, -1] + cache["pos_embed"][:, -1] + m.b_O.sum(0)) * direction).sum(-1) \
                + m.b_U[prompts["correct"]] - m.b_U[prompts["wrong"]]
            ld = sol.logit_diff(logits, prompts["correct"], prompts["wrong"])
            torch.testing.assert_close(ours.sum() + rest.mean(), ld.mean(), rtol=1e-4, atol=1e-4)


def test_position_patching_matches_transformer_lens(model):
    """Ours vs ``transformer_lens.patching.get_act_patch_attn_head_out_by_pos`` ([layer, pos, head])."""
    from transformer_lens import patching

    p = attn_only_2l.induction_prompts(4, 6, torch.Generator().manual_seed(8))
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(p["clean"])
        clean_ld = sol.logit_diff(clean_logits, p["correct"], p["wrong"]).mean()
        corrupted_ld = sol.logit_diff(model(p["corrupted"]), p["correct"], p["wrong"]).mean()

        def metric(logits):
            return (sol.logit_diff(logits, p["correct"], p["wrong"]).mean() - corrupted_ld) / (clean_ld - corrupted_ld)

        theirs = patching.get_act_patch_attn_head_out_by_pos(model, p["corrupted"], clean_cache, metric)
        ours = sol.head_position_patching_effect(model, **p)
    torch.testing.assert_close(ours, theirs.permute(0, 2, 1), rtol=1e-4, atol=1e-5)


def test_offset_detector_finds_exactly_the_planted_heads_on_many_models():
    """The reference detector recovers the planted heads (and no distractor) on 40 simulated hidden
    models, so that the exercise's truth is reachable; a head planted with another offset is found
    with that offset."""
    import numpy as np

    exercise = EXERCISES["circuits.find_offset_heads"]
    for seed in range(40):
        case = exercise.make_case(np.random.default_rng(seed))
        output = exercise.call(sol.find_offset_heads, case)
        ok, message = exercise.judge(output, output)
        assert ok and np.array_equal(output["found"], output["planted"]), (seed, output, message)
    planted = attn_only_2l.plant_head(attn_only_2l.random_model(torch.Generator().manual_seed(1)), 1, 2, 3, 3.5)
    assert sol.find_offset_heads(planted) == [(1, 2, 3)]
