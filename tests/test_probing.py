"""The probing assignment: every check passes the master's own solution and names each known
mistake; the solutions agree with independent references.

The reference solutions come from the master notebook itself (its locked and solution cells are
executed into a namespace). Independent oracles:

* scikit-learn's ``LogisticRegression`` (lbfgs, multinomial, unpenalised intercept) for the probe;
* a hand-written unembedding (LayerNorm by its formula, then ``W_U``, ``b_U``) for the logit lens;
* interchange interventions written with a hand-rolled forward pass through the model's modules,
  no hook points;
* LEACE's defining property: after erasure the class-conditional means coincide (no linear
  classifier beats a constant), and the edit is smaller than any other such projection tried;
* DAS on a synthetic "model" with a planted rotated binary variable recovers the planted direction.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from conftest import Master

PROBING = Master("probing", hidden_seed=7070)


@pytest.fixture(scope="module")
def ns() -> dict[str, Any]:
    """The master's setup and solution cells, executed (the notebook's own reference code)."""
    torch.set_num_threads(1)
    yield PROBING.namespace(setup_only=True)
    torch.set_grad_enabled(True)  # the setup cell turns gradients off for the notebook


def test_master_structure() -> None:
    PROBING.assert_structure(min_exercises=10)


@pytest.mark.parametrize("exercise_id", sorted(PROBING.exercises))
def test_reference_passes_and_probes_are_named(ns, exercise_id) -> None:
    PROBING.assert_reference_passes_and_probes_are_named(exercise_id, ns[exercise_id.split(".")[1]])


# ------------------------------------------------------------------------------------------------
# Solutions against independent computations
# ------------------------------------------------------------------------------------------------


def test_probe_matches_scikit_learn(ns) -> None:
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(0)
    for n_classes in (2, 3):
        y = torch.randint(n_classes, (300,), generator=g)
        X = torch.randn(n_classes, 10, generator=g)[y] * 2 + torch.randn(300, 10, generator=g) + 1
        l2 = 1e-2
        W, b = ns["fit_probe"](X, y, n_classes, l2)
        # sklearn minimises C * sum(CE) + |W|^2 / 2, i.e. our objective with C = 1 / (l2 * n); for two
        # classes it fits one weight vector w = W[1] - W[0], and at our optimum W[1] = -W[0] = w / 2,
        # so our penalty is l2 / 4 * |w|^2: C = 2 / (l2 * n)
        C = (2 if n_classes == 2 else 1) / (l2 * len(X))
        clf = LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(X.double().numpy(), y.numpy())
        if n_classes == 2:  # sklearn's binary model is one logit: ours is the difference of two
            np.testing.assert_allclose((W[1] - W[0]).numpy(), clf.coef_[0], rtol=2e-3, atol=2e-4)
            np.testing.assert_allclose(float(b[1] - b[0]), clf.intercept_[0], rtol=2e-3, atol=2e-4)
        else:
            np.testing.assert_allclose(W.numpy(), clf.coef_, rtol=2e-3, atol=2e-4)
            np.testing.assert_allclose((b - b.mean()).numpy(), clf.intercept_ - clf.intercept_.mean(), rtol=2e-3, atol=2e-4)
        assert (clf.predict(X.numpy()) == (X @ W.T + b).argmax(-1).numpy()).all()


def test_logit_lens_matches_a_hand_written_unembedding(ns) -> None:
    """On the lenses' model (``toyworld-lm-4l``, Part 2) at every one of its residual points."""
    from interplab.probing import LENS_POINTS

    lm = ns["lens_lm"]
    assert lm.cfg.n_layers == 4 and len(LENS_POINTS) == 9 and set(LENS_POINTS) <= set(lm.hook_dict)
    with torch.no_grad():
        logits, cache = lm.run_with_cache(ns["docs"].tokens[:4], names_filter=list(LENS_POINTS))
    for hook in LENS_POINTS:
        resid = cache[hook].double()
        centred = resid - resid.mean(-1, keepdim=True)
        normed = centred / (centred.pow(2).mean(-1, keepdim=True) + lm.cfg.eps).sqrt()
        normed = normed * lm.ln_final.w.double() + lm.ln_final.b.double()
        by_hand = normed @ lm.W_U.double() + lm.b_U.double()
        torch.testing.assert_close(ns["logit_lens"](lm, cache[hook]).double(), by_hand, rtol=1e-4, atol=1e-4)
    # the last point's lens is the model itself
    torch.testing.assert_close(ns["logit_lens"](lm, cache[LENS_POINTS[-1]]), logits, rtol=1e-4, atol=1e-4)


def manual_logits(model, tokens: torch.Tensor, edit) -> torch.Tensor:
    """``toyworld-lm``'s forward pass from its modules, no hook points; ``edit(layer, kind, resid)``
    may change the residual stream before a block (``pre``), after attention (``mid``), after it (``post``)."""
    x = model.embed(tokens) + model.pos_embed(tokens)
    for layer, block in enumerate(model.blocks):
        x = edit(layer, "pre", x)
        h = block.ln1(x)
        x = x + block.attn(h, h, h)
        x = edit(layer, "mid", x)
        x = x + block.mlp(block.ln2(x))
        x = edit(layer, "post", x)
    return model.unembed(model.ln_final(x))


@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_mid", "blocks.1.hook_resid_mid", "blocks.1.hook_resid_post"])
@pytest.mark.parametrize("k", [None, 2])
def test_interchange_matches_independent_hooks(ns, hook, k) -> None:
    from interplab.probing import persona_swap_pairs

    lm = ns["lm"]
    pairs = persona_swap_pairs(ns["world"], 6, 42)
    layer, kind = int(hook.split(".")[1]), hook.rsplit("_", 1)[1]
    basis = None if k is None else torch.linalg.qr(torch.randn(lm.cfg.d_model, k, generator=torch.Generator().manual_seed(1)))[0].T
    rows = torch.arange(len(pairs))
    stored = {}

    def record(l, kd, x):
        if (l, kd) == (layer, kind):
            stored["source"] = x[rows, pairs.source_at].clone()
        return x

    def swap(l, kd, x):
        if (l, kd) != (layer, kind):
            return x
        x = x.clone()
        for i in range(len(pairs)):  # one pair at a time, the formula written out
            old, new = x[i, pairs.base_at[i]], stored["source"][i]
            if basis is None:
                x[i, pairs.base_at[i]] = new
            else:
                x[i, pairs.base_at[i]] = old + sum(((new - old) @ u) * u for u in basis)
        return x

    with torch.no_grad():
        manual_logits(lm, pairs.source, record)
        expected = manual_logits(lm, pairs.base, swap)
    got = ns["interchange_logits"](lm, pairs.base, pairs.source, pairs.base_at, pairs.source_at, hook, basis)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    iia = ns["interchange_accuracy"](lm, pairs.base, pairs.source, pairs.base_at, pairs.source_at, hook, pairs.counterfactual, basis)
    assert iia == pytest.approx(float((expected[rows, pairs.base_at].argmax(-1) == pairs.counterfactual).float().mean()))


def test_leace_erases_every_linear_signal(ns) -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(3, (500,), generator=g)
    X = torch.randn(500, 8, generator=g) @ torch.randn(8, 8, generator=g) + torch.randn(3, 8, generator=g)[y] * 2
    M, mean = ns["leace_eraser"](X, y, 3)
    erased = X - (X - mean) @ M.T
    # linear guardedness: every class has the same mean after erasure
    class_means = torch.stack([erased[y == c].mean(0) for c in range(3)])
    assert (class_means - erased.mean(0)).abs().max() < 1e-3
    assert (X[y == 0].mean(0) - X[y == 1].mean(0)).norm() > 1  # ... which was far from true before
    # a fresh probe can do no better than the majority class
    W, b = ns["fit_probe"](erased, y, 3, 1e-3)
    majority = float(torch.bincount(y).max()) / len(y)
    assert float(((erased @ W.T + b).argmax(-1) == y).float().mean()) <= majority + 0.03
    # M is an (oblique) projection of rank C - 1
    torch.testing.assert_close(M @ M, M, rtol=1e-3, atol=1e-3)
    assert torch.linalg.matrix_rank(M, atol=1e-3) == 2


def test_das_recovers_a_planted_rotated_variable(ns) -> None:
    """A synthetic "model": a binary variable is stored along a rotated direction of an 8-d input,
    read by a fixed linear head; other directions carry distractors the head also reads. DAS trained
    on interchange pairs must find the planted direction (|cosine| > 0.95)."""
    from transformer_lens.hook_points import HookedRootModule, HookPoint

    d, n = 8, 64
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0)))
    planted = rotation[0]

    class Planted(HookedRootModule):
        def __init__(self) -> None:
            super().__init__()
            self.hook_resid = HookPoint()
            self.setup()

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [n, 1, d] -> logits [n, 1, 2]
            h = self.hook_resid(x)
            variable = h @ planted  # the only thing the output depends on
            return torch.stack([-variable, variable], -1) * 4

    g = torch.Generator().manual_seed(1)

    def inputs(values: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(n, d, generator=g) * 2
        noise -= (noise @ planted)[:, None] * planted  # distractors orthogonal to the variable
        return ((values * 2 - 1)[:, None] * planted + noise)[:, None]

    base_values, source_values = torch.randint(2, (n,), generator=g), torch.randint(2, (n,), generator=g)
    base, source = inputs(base_values), inputs(source_values)
    at = torch.zeros(n, dtype=torch.long)
    model = Planted()
    direction = ns["train_das"](model, base, source, at, at, "hook_resid", source_values, steps=200, lr=0.05, seed=0)
    assert float((direction @ planted).abs()) > 0.95
    assert ns["interchange_accuracy"](model, base, source, at, at, "hook_resid", source_values, direction[None]) == 1.0


# ------------------------------------------------------------------------------------------------
# Library helpers
# ------------------------------------------------------------------------------------------------


def test_swap_pairs_and_labels(ns) -> None:
    from interplab.probing import class_labels, persona_swap_pairs

    world, lm = ns["world"], ns["lm"]
    pairs = persona_swap_pairs(world, 16, 3)
    vocab = world.tokenizer.vocab
    for i in range(len(pairs)):
        assert vocab[int(pairs.base[i, pairs.base_at[i]])] == "?" and vocab[int(pairs.source[i, pairs.source_at[i]])] == "?"
        assert vocab[int(pairs.base[i, 1])] == pairs.base_persona[i] != pairs.source_persona[i]
    # the unpatched model says what the base's persona says
    with torch.no_grad():
        said = lm(pairs.base)[torch.arange(len(pairs)), pairs.base_at].argmax(-1)
    assert (said == pairs.base_token).all() and (pairs.base_token != pairs.counterfactual).all()
    classes = class_labels(ns["docs"], "persona")
    assert (classes[:, 0] == -1).all() and (classes[~ns["doc_mask"]] == -1).all()
    with pytest.raises(ValueError, match="unknown label"):
        class_labels(ns["docs"], "mood")
