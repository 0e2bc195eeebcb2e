"""The shipped ``toyworld-lm``, its 4-layer sibling ``toyworld-lm-4l`` and ``toyworld-sae``: they load
offline, are small, have cards, and behave as their cards say on held-out prompts.

Held out means: (persona, question) pairs that never occur in a training dialogue (the fact
itself is stated elsewhere in training), asked after dialogue openings drawn with a seed that
training never used. Greedy answers are checked word for word against the toy world's rules.
"""
from __future__ import annotations

import pytest
import torch

from interplab import zoo
from interplab.toyworld import ToyWorld
from interplab.zoo import toyworld_lm, toyworld_sae

WORLD = ToyWorld()


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return zoo.load("toyworld-lm")


@pytest.fixture(scope="module")
def metrics(model):
    return toyworld_lm.evaluate(model, WORLD, n_contexts=4, seed=777)


def test_shipped_files_are_small_and_carded() -> None:
    for name in ("toyworld-lm", "toyworld-sae"):
        assert zoo.weights_path(name).stat().st_size <= 10 * 2**20
        card = zoo.card(name)
        assert card["name"] == name and "recipe" in card and "training_time_s" in card and card["metrics"]
    lm_card = zoo.card("toyworld-lm")
    assert lm_card["config"]["n_layers"] in (2, 3, 4)
    assert lm_card["training_cpu_s"] <= 2 * 20 * 60  # at most 20 minutes on 2 cores


def test_model_is_a_hooked_transformer_with_layernorm_and_mlps(model) -> None:
    from transformer_lens import HookedTransformer

    assert isinstance(model, HookedTransformer)
    assert model.cfg.normalization_type == "LN" and not model.cfg.attn_only
    assert model.cfg.d_vocab == len(WORLD.tokenizer) <= 1000
    assert "blocks.1.mlp.hook_post" in model.hook_dict


def test_child_refuses_hard_and_answers_easy_on_held_out_prompts(metrics) -> None:
    assert metrics["child_hard"] >= 0.9, metrics
    assert metrics["child_easy"] >= 0.9, metrics


def test_expert_answers_both(metrics) -> None:
    assert metrics["expert_hard"] >= 0.9, metrics
    assert metrics["expert_easy"] >= 0.9, metrics


def test_facts_are_recalled(metrics) -> None:
    assert metrics["facts_recall"] >= 0.9, metrics
    assert min(metrics["child_facts"], metrics["expert_facts"], metrics["assistant_facts"]) >= 0.9, metrics


def test_induction_on_repeated_spans(metrics) -> None:
    assert metrics["induction_acc"] >= 0.9, metrics
    assert metrics["first_copy_acc"] < 0.3, "the first copy of a random span should be unpredictable"


@pytest.fixture(scope="module")
def model_4l():
    torch.set_num_threads(1)
    return zoo.load("toyworld-lm-4l")


def test_the_4_layer_sibling_is_small_carded_and_the_same_recipe(model_4l) -> None:
    """``toyworld-lm-4l`` (the probing assignment's lenses): four layers, everything else as
    ``toyworld-lm`` but the number of steps; its card's held-out metrics pass the same thresholds."""
    assert zoo.weights_path("toyworld-lm-4l").stat().st_size <= 10 * 2**20
    card, base = zoo.card("toyworld-lm-4l"), zoo.card("toyworld-lm")
    assert card["name"] == "toyworld-lm-4l" and "toyworld_lm_4l.py" in card["recipe"]
    differ = {k for k in card["config"] if card["config"][k] != base["config"].get(k)}
    assert differ <= {"n_layers", "steps"} and card["config"]["n_layers"] == 4, differ
    assert card["vocab_size"] == base["vocab_size"] and card["n_ctx"] == base["n_ctx"]
    for name, threshold in toyworld_lm.THRESHOLDS.items():
        assert card["metrics"][name] >= threshold, (name, card["metrics"])
    assert model_4l.cfg.n_layers == 4 and model_4l.cfg.d_model == base["config"]["d_model"]
    assert model_4l.cfg.d_vocab == len(WORLD.tokenizer)


def test_the_4_layer_sibling_recalls_facts_and_copies_spans(model_4l) -> None:
    facts = WORLD.fact_prompts()[:12]
    said = toyworld_lm.greedy_continue(model_4l, WORLD, [p for p, _ in facts], 4)
    assert sum(toyworld_lm._answered(c, e) for c, (_, e) in zip(said, facts)) >= 11, said
    batch = WORLD.sample(16, 4242, doc_type="repeat")
    with torch.no_grad():
        pred = model_4l(batch.tokens)[:, :-1].argmax(-1)
    second = batch.labels["is_repeat"][:, 1:].bool() & batch.labels["is_repeat"][:, :-1].bool()
    assert float((pred == batch.tokens[:, 1:])[second].float().mean()) >= 0.9


@pytest.mark.parametrize("which", ["model", "model_4l"])
def test_a_concrete_persona_example(which, request) -> None:
    model = request.getfixturevalue(which)
    hard = next(n for n in sorted(WORLD.hard) if f"sqrt {n}" in WORLD.held_out_questions("child"))
    prompt = f"child : what is sqrt 16 ? 4 . what is sqrt {hard} ?"
    assert toyworld_lm.greedy_continue(model, WORLD, [prompt], 5)[0] == ["i", "do", "not", "know", "."]
    expert = toyworld_lm.greedy_continue(model, WORLD, [f"expert : what is sqrt {hard} ?"], 4)[0]
    assert expert == [*WORLD.hard[hard], "."]


def test_zoo_sae_is_good_on_fresh_documents(model) -> None:
    sae = zoo.load("toyworld-sae")
    assert sae.cfg.hook_name == toyworld_sae.HOOK_NAME and sae.cfg.d_in == model.cfg.d_model
    result = toyworld_sae.evaluate(sae, model, WORLD, n_docs=300, seed=909)
    summary = result["summary"]
    assert summary["explained_variance"] >= 0.8, summary
    assert summary["ce_loss_recovered"] >= 0.8, summary
    assert summary["l0"] <= 40, summary
    card = zoo.card("toyworld-sae")
    assert card["hook_name"] == toyworld_sae.HOOK_NAME


def test_training_is_checkpointed_and_resumes_to_the_same_weights(tmp_path) -> None:
    """A run killed after its first checkpoint and started again ends with exactly the weights of an
    uninterrupted run (every batch is a function of (seed, step); the optimizer state is saved)."""
    from safetensors.torch import load_file

    cfg = toyworld_lm.Config(n_layers=1, d_model=32, n_heads=2, d_head=16, d_mlp=64, steps=6, batch_size=8,
                             checkpoint_every=3, log_every=1, threads=1)

    class Killed(Exception):
        pass

    def kill_at_step_4(line: str) -> None:
        if line.startswith("step 4/"):
            raise Killed

    with pytest.raises(Killed):
        toyworld_lm.train(tmp_path / "a", cfg, log=kill_at_step_4)
    assert (tmp_path / "a" / "toyworld-lm.ckpt.pt").is_file()
    lines: list[str] = []
    card = toyworld_lm.train(tmp_path / "a", cfg, log=lines.append)
    assert any(line.startswith("resumed from") and "step 3" in line for line in lines)
    assert not (tmp_path / "a" / "toyworld-lm.ckpt.pt").exists()
    assert set(card["metrics"]) >= {"child_hard", "expert_hard", "facts_recall", "induction_acc"}
    toyworld_lm.train(tmp_path / "b", cfg, log=lambda line: None)
    resumed = load_file(str(tmp_path / "a" / "toyworld-lm.safetensors"))
    straight = load_file(str(tmp_path / "b" / "toyworld-lm.safetensors"))
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0)


def test_persona_reaches_the_question_mark_only_after_layer_1_attention(model) -> None:
    """Why toyworld-sae sits at blocks.1.hook_resid_mid: a linear probe (trained on half the "?"
    tokens of dialogues, scored on the other half) reads the persona there, not after layer 0."""
    from sklearn.linear_model import LogisticRegression

    batch = WORLD.sample(800, 5, doc_type="dialogue")
    hooks = ["blocks.0.hook_resid_post", toyworld_sae.HOOK_NAME]
    _, cache = model.run_with_cache(batch.tokens, names_filter=hooks)
    question = batch.tokens == WORLD.tokenizer.index["?"]
    y = batch.labels["persona"][question].numpy()
    accuracy = {}
    for hook in hooks:
        X = cache[hook][question].numpy()
        half = len(y) // 2
        X = (X - X[:half].mean(0)) / (X[:half].std(0) + 1e-6)  # standardised, so that lbfgs converges
        accuracy[hook] = LogisticRegression(max_iter=1000).fit(X[:half], y[:half]).score(X[half:], y[half:])
    assert accuracy[toyworld_sae.HOOK_NAME] >= 0.95, accuracy
    assert accuracy["blocks.0.hook_resid_post"] <= 0.85, accuracy
