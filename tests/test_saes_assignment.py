"""The saes assignment: every exercise's check passes the master's own solution and fails (naming
the mistake) on each known-wrong variant; training checks reject an untrained answer.

The reference solutions are taken from the master notebook itself (its locked and solution cells
are executed into a namespace), so there is no second copy to drift. Independent implementations
used as oracles: SAELens's TopK activation and explained-variance calculator, our library
(``interplab.sae``: written separately, and itself cross-checked against SAELens in
``test_sae_saelens.py``) for the loss, CE recovery and feature recovery, and Elhage et al.'s
closed-form dimensionality of known geometries (antipodal pairs have D = 1/2).
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from interplab import sae as sae_lib
from interplab.checking import judge

from conftest import Master

SAES = Master("saes")
EXERCISES = SAES.exercises


@pytest.fixture(scope="module")
def solutions() -> dict[str, Any]:
    torch.set_num_threads(1)
    return SAES.namespace()


def _run(exercise, fn) -> dict[str, list]:
    return SAES.run(exercise.id, fn)


def test_master_structure() -> None:
    SAES.assert_structure(min_exercises=10)


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_reference_passes_and_probes_are_named(solutions, exercise_id) -> None:
    SAES.assert_reference_passes_and_probes_are_named(exercise_id, solutions[exercise_id.split(".")[1]])


def test_training_checks_reject_untrained_answers(solutions) -> None:
    toy = EXERCISES["saes.train_toy_model"]
    untrained = lambda n_features, d_hidden, **_: (torch.randn(d_hidden, n_features) * 0.1, torch.zeros(n_features))
    reference = _run(toy, solutions["train_toy_model"])
    assert judge(toy, _run(toy, untrained), reference).fraction == 0.0

    sae_ex = EXERCISES["saes.train_sae"]
    reference = _run(sae_ex, solutions["train_sae"])

    def dense(x, d_sae, l1_coefficient, steps, generator):  # trained without the sparsity penalty
        return solutions["train_sae"](x, d_sae, 0.0, steps, generator)

    verdict = judge(sae_ex, _run(sae_ex, dense), reference)
    assert verdict.fraction == 0.0 and "L0" in verdict.message

    sparse = EXERCISES["saes.sparse_features"]
    dense_batch = lambda batch, n_features, feature_probability, generator: torch.rand(batch, n_features, generator=generator)
    assert judge(sparse, _run(sparse, dense_batch), _run(sparse, solutions["sparse_features"])).fraction == 0.0


def test_solutions_agree_with_independent_implementations(solutions) -> None:
    g = torch.Generator().manual_seed(0)
    # TopK: SAELens's activation module.
    from sae_lens.saes.topk_sae import TopK

    pre = torch.randn(6, 20, generator=g) - 1
    torch.testing.assert_close(solutions["topk_activation"](pre, 5), TopK(5)(pre))
    # Explained variance: SAELens's calculator.
    from sae_lens.evals import ExplainedVarianceCalculator

    x = torch.randn(50, 8, generator=g) + 3
    x_hat = x + torch.randn(50, 8, generator=g) * 0.5
    calc = ExplainedVarianceCalculator()
    calc.add_batch(sae_output=x_hat, hidden_acts=x)
    assert float(solutions["explained_variance"](x, x_hat)) == pytest.approx(calc.compute(), abs=1e-5)
    # SAE forward and loss: our library's SAE module.
    sae = sae_lib.SAE(sae_lib.SAEConfig(d_in=8, d_sae=24, l1_coefficient=0.7), generator=g)
    with torch.no_grad():
        sae.b_enc.normal_(generator=g)
        sae.b_dec.normal_(generator=g)
        sae.W_dec.mul_(2.0)
    w = {k: getattr(sae, k).detach() for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    f, x_hat = solutions["sae_forward"](x, **w)
    torch.testing.assert_close(f, sae.encode(x).detach())
    assert float(solutions["sae_loss"](x, **w, l1_coefficient=0.7)) == pytest.approx(sae.loss(x)[0].item(), rel=1e-5)
    # Feature recovery: the library's functions.
    true, learned = torch.randn(5, 8, generator=g), torch.randn(9, 8, generator=g)
    rec = solutions["feature_recovery"](true, learned)
    assert rec["mmcs"] == pytest.approx(sae_lib.mean_max_cosine(true, learned), abs=1e-6)
    assert rec["matched"] == pytest.approx(sae_lib.matched_cosine(true, learned), abs=1e-6)
    # Dimensionality of known geometries: orthogonal features 1, an antipodal pair 1/2 each, absent 0.
    W = torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    W[:, 3] = 1e-9
    torch.testing.assert_close(solutions["feature_dimensionality"](W)[:3], torch.tensor([0.5, 0.5, 1.0]))
    # CE loss recovered: the library's hook-based implementation, on the zoo model and SAE.
    model, zoo_sae, world = solutions["lm"], solutions["zoo_sae"], solutions["world"]
    batch = world.sample(20, 3)
    mask = batch.labels["loss_mask"][:, 1:].bool()
    ours = sae_lib.ce_loss_recovered(model, zoo_sae, batch.tokens, solutions["HOOK_NAME"], mask=mask)
    theirs = solutions["ce_loss_recovered"](model, zoo_sae, batch.tokens, mask, solutions["HOOK_NAME"])
    assert float(theirs) == pytest.approx(ours["ce_loss_recovered"], abs=1e-5)
    # Resampling: the library's (randomised) resampler agrees on the invariants.
    dead = torch.zeros(24, dtype=torch.bool)
    dead[[2, 5]] = True
    new = solutions["resample_dead"](**w, dead=dead, x=x)
    torch.testing.assert_close(new["W_dec"][~dead], w["W_dec"][~dead])
    torch.testing.assert_close(new["W_dec"][dead].norm(dim=-1), torch.ones(2))
    assert (new["b_enc"][dead] == 0).all()


def test_batched_toy_models_converge_to_the_figure_the_notebook_describes(solutions) -> None:
    """The notebook's superposition figure (4 seeds per sparsity, 2000 steps, the lowest-loss seed):
    dense features keep the two most important at norm 1 and drop the rest; sparse ones keep all five."""
    from interplab.superposition import train_toy_models

    torch.set_num_threads(1)
    importance = 0.9 ** torch.arange(5)
    W, b, loss = train_toy_models(torch.tensor([1.0, 0.3, 0.05]).repeat_interleave(4), importance, 2, 2000,
                                  torch.Generator().manual_seed(0), batch=256, lr=1e-2)
    dense, sparse = int(loss[:4].argmin()), 8 + int(loss[8:].argmin())
    norms = W[dense].norm(dim=0)
    assert torch.allclose(norms[:2], torch.ones(2), atol=0.05) and bool((norms[2:] < 0.15).all()), norms  # [1, 1, 0.08, 0.03, 0.01]
    assert bool((b[dense, 2:] - 0.5).abs().max() < 0.05), b[dense]  # dropped features: the mean, 0.5
    assert bool((W[sparse].norm(dim=0) > 0.9).all()) and bool((b[sparse] < 0).all())  # a pentagon, norms ~1.13
    # The batched trainer is the exercise's model and loss: the same W, b give the same loss.
    x = solutions["sparse_features"](4096, 5, 1.0, torch.Generator().manual_seed(1))
    single = solutions["importance_loss"](x, solutions["toy_forward"](W[dense], b[dense], x), importance)
    assert abs(float(single) - float(loss[dense])) < 0.02  # two samples of the same expectation


def test_frontier_card_supports_the_notebook_text() -> None:
    from interplab import sae_frontier

    card = sae_frontier.load_card()
    assert card["recipe"] == "python -m interplab.sae_frontier --card"
    points = {(p["kind"], p.get("l1_coefficient", p.get("k"))): p for p in card["points"]}
    assert {k for k, _ in points} == {"relu", "topk"} and len(points) == 6
    for (kind, _), p in points.items():
        assert 0 < p["l0"] and p["explained_variance"] < 1 and p["ce_loss_recovered"] < 1.01
    topk = [points[("topk", k)] for k in sae_frontier.TOPK_KS]
    assert [p["l0"] for p in topk] == pytest.approx(list(sae_frontier.TOPK_KS), abs=0.5)  # TopK's L0 is k
    relu = sorted((points[("relu", c)] for c in sae_frontier.L1_COEFFICIENTS), key=lambda p: p["l0"])
    assert all(a["explained_variance"] <= b["explained_variance"] for a, b in zip(relu, relu[1:]))  # more L0, better fit
    # The notebook's comparison at matched L0: TopK ahead on both axes.
    for k, l1 in ((16, 3.0), (8, 10.0)):
        assert points[("topk", k)]["l0"] <= points[("relu", l1)]["l0"] + 1.5
        for metric in ("explained_variance", "ce_loss_recovered"):
            assert points[("topk", k)][metric] > points[("relu", l1)][metric], (k, l1, metric)
    assert points[("topk", 4)]["dead_fraction"] > 0.05 and points[("topk", 4)]["resampled"] > 0  # 10.5 %, 2
