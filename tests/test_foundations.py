"""The foundations assignment: reference solutions against independent implementations, and checks.

The reference solutions are the master's own solution cells (conftest ``Master``), cross-checked
against:

- ``sklearn.inspection.permutation_importance`` (its own shuffles reproduced exactly) and
  ``sklearn.inspection.partial_dependence`` (``method="brute"``, a custom grid), on a fitted regressor;
- the Shapley axioms on hand-built models (efficiency, symmetry, dummy, additivity) and a closed
  form (a linear model's interventional Shapley values are ``w_i (x_i - mean_b b_i)``);
- ``shap.KernelExplainer`` (every coalition enumerated: exact), and the convergence of sampled
  KernelSHAP to exact enumeration;
- scikit-learn's weighted ``LinearRegression`` for the LIME surrogate and its weighted R^2;
- Captum's ``Saliency``, ``IntegratedGradients`` (``riemann_middle``) and ``NoiseTunnel`` on the
  same noise; ``scipy.stats.spearmanr`` for the similarity; Quantus-style faithfulness by loops.

Then every Exercise in ``checks.py`` passes against the reference and fails against each of its
probes with the probe's diagnosis. Everything runs in-process on small inputs (no notebook).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from interplab.foundations import (
    DigitsMLP,
    all_coalitions,
    cascading_randomisation,
    proper_coalitions,
    random_coalitions,
)

from conftest import Master

captum_attr = pytest.importorskip("captum.attr", reason="captum is in the test extra")

MASTER = Master("foundations")


@pytest.fixture(scope="module")
def ref():
    threads = torch.get_num_threads()
    namespace = MASTER.namespace()  # the setup cell (data, no training) and the solution cells
    MASTER.checks.bind_reference(namespace)
    yield namespace
    MASTER.checks.bind_reference(None)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def regressor():
    from sklearn.ensemble import GradientBoostingRegressor

    from interplab.foundations import load_diabetes_split

    data = load_diabetes_split()
    return GradientBoostingRegressor(n_estimators=30, max_depth=2, random_state=0).fit(data.X_train, data.y_train), data


def test_structure():
    MASTER.assert_structure(min_exercises=10)


@pytest.mark.parametrize("exercise_id", sorted(MASTER.exercises))
def test_reference_passes_and_probes_are_named(ref, exercise_id):
    name = exercise_id.split(".", 1)[1]
    MASTER.assert_reference_passes_and_probes_are_named(exercise_id, ref[name])


# ------------------------------------------------------------------------------------------
# Model-agnostic methods against scikit-learn and the axioms
# ------------------------------------------------------------------------------------------


def test_permutation_importance_matches_sklearn(ref, regressor):
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import r2_score

    model, data = regressor
    X, y = data.X_test[:60], data.y_test[:60]
    expected = permutation_importance(model, X, y, scoring="r2", n_repeats=4, random_state=7).importances
    # sklearn: one seed drawn from random_state, the same RandomState per column, and each repeat
    # shuffles the already shuffled column again (cumulative permutations)
    seed = np.random.RandomState(7).randint(np.iinfo(np.int32).max + 1)
    state, shuffling, current, permutations = np.random.RandomState(seed), np.arange(len(y)), np.arange(len(y)), []
    for _ in range(4):
        state.shuffle(shuffling)
        current = current[shuffling]
        permutations.append(current.copy())
    ours = ref["permutation_importance"](model.predict, X, y, r2_score, np.stack(permutations))
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-12)


def test_partial_dependence_matches_sklearn(ref, regressor):
    from sklearn.inspection import partial_dependence

    model, data = regressor
    grid = np.linspace(-0.05, 0.08, 7)
    expected = partial_dependence(model, data.X_train, [2], custom_values={2: grid}, method="brute", kind="both")
    ours = ref["partial_dependence"](model.predict, data.X_train, 2, grid)
    np.testing.assert_allclose(ours["ice"], expected["individual"][0], rtol=1e-10)
    np.testing.assert_allclose(ours["average"], expected["average"][0], rtol=1e-10)


def test_exact_shapley_axioms_on_hand_built_models(ref):
    rng = np.random.default_rng(0)
    background = rng.normal(size=(12, 5))
    x = np.array([0.7, 0.7, -1.2, 2.0, 0.3])
    background[:, 1] = background[:, 0]  # features 0 and 1 interchangeable in x and in every background row

    def f(X):  # symmetric in features 0 and 1, ignores feature 4, an interaction with feature 3
        return X[:, 0] + X[:, 1] + 3 * np.tanh(X[:, 2]) + X[:, 0] * X[:, 3] + X[:, 1] * X[:, 3]

    def g(X):
        return np.sin(X[:, 2]) - X[:, 3] ** 2

    phi_f = ref["exact_shapley"](f, x, background)
    assert phi_f.sum() == pytest.approx(f(x[None])[0] - f(background).mean(), abs=1e-12)  # efficiency
    assert phi_f[0] == pytest.approx(phi_f[1], abs=1e-12)  # symmetry
    assert phi_f[4] == pytest.approx(0.0, abs=1e-12)  # dummy
    phi_g = ref["exact_shapley"](g, x, background)
    phi_sum = ref["exact_shapley"](lambda X: f(X) + g(X), x, background)
    np.testing.assert_allclose(phi_sum, phi_f + phi_g, atol=1e-12)  # additivity
    w = np.array([1.5, -2.0, 0.5, 0.0, 3.0])  # linear model: w_i (x_i - E b_i), in closed form
    np.testing.assert_allclose(ref["exact_shapley"](lambda X: X @ w + 1.0, x, background),
                               w * (x - background.mean(0)), atol=1e-12)


def test_kernel_shap_matches_shap_kernel_explainer_and_exact_enumeration(ref):
    shap = pytest.importorskip("shap", reason="shap is in the test extra")
    rng = np.random.default_rng(1)
    w = rng.normal(size=6)

    def f(X):
        return X @ w + np.tanh(X[:, 0] * X[:, 1]) - 0.5 * X[:, 2] * X[:, 5]

    x, background = rng.normal(size=6), rng.normal(size=(10, 6))
    exact = ref["exact_shapley"](f, x, background)
    ours = ref["kernel_shap"](f, x, background, proper_coalitions(6))
    explainer = shap.KernelExplainer(f, background)
    theirs = explainer.shap_values(x[None], nsamples=2**6, l1_reg=False, silent=True)[0]
    np.testing.assert_allclose(ours, exact, atol=1e-10)
    np.testing.assert_allclose(theirs, exact, atol=1e-8)
    assert explainer.expected_value == pytest.approx(f(background).mean())
    # sampled coalitions: efficiency holds exactly, and the error shrinks with the sample
    errors = []
    for n in (20, 2000):
        estimate = [ref["kernel_shap"](f, x, background, random_coalitions(6, n, np.random.default_rng(s))) for s in range(5)]
        assert all(e.sum() == pytest.approx(f(x[None])[0] - f(background).mean(), abs=1e-9) for e in estimate)
        errors.append(np.mean([np.abs(e - exact).max() for e in estimate]))
    assert errors[1] < errors[0] / 3, errors


def test_lime_matches_sklearn_weighted_regression(ref):
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(2)
    w = rng.normal(size=4)

    def f(X):
        return X @ w + np.sin(2 * X[:, 0])

    x, scale, noise = rng.normal(size=4), rng.uniform(0.5, 2, size=4), rng.normal(size=(300, 4))
    ours = ref["lime_tabular"](f, x, scale, noise, 1.5)
    weights = np.exp(-np.sum(noise**2, 1) / 1.5**2)
    surrogate = LinearRegression().fit(noise, f(x + noise * scale), sample_weight=weights)
    np.testing.assert_allclose(ours["coef"], surrogate.coef_, rtol=1e-8)
    assert float(ours["intercept"]) == pytest.approx(surrogate.intercept_, rel=1e-8)
    assert float(ours["fidelity"]) == pytest.approx(surrogate.score(noise, f(x + noise * scale), sample_weight=weights), rel=1e-8)
    linear = ref["lime_tabular"](lambda X: X @ w, x, scale, noise, 1.5)  # a linear model is fitted exactly
    np.testing.assert_allclose(linear["coef"], w * scale, rtol=1e-10)
    assert float(linear["fidelity"]) == pytest.approx(1.0)


def test_coalitions_helpers():
    assert all_coalitions(3).tolist()[:3] == [[False, False, False], [True, False, False], [False, True, False]]
    assert len(proper_coalitions(4)) == 14
    sample = random_coalitions(5, 200, np.random.default_rng(0))
    assert sample.shape == (200, 5) and (sample.sum(1) > 0).all() and (sample.sum(1) < 5).all()
    with pytest.raises(ValueError):
        random_coalitions(1, 3, np.random.default_rng(0))


# ------------------------------------------------------------------------------------------
# Gradient methods against Captum, the similarity against scipy
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(3)
    model = DigitsMLP((64, 32, 32, 10)).double().eval()
    inputs = torch.rand((5, 64), dtype=torch.float64) * 2 - 1
    target = torch.tensor([0, 3, 9, 3, 5])
    return model, inputs, target


def test_gradient_methods_match_captum(ref, mlp):
    model, inputs, target = mlp
    for absolute in (True, False):
        expected = captum_attr.Saliency(model).attribute(inputs, target=target, abs=absolute)
        torch.testing.assert_close(ref["saliency"](model, inputs, target, absolute=absolute), expected)
    for baselines in (None, -1.0, torch.rand_like(inputs) - 0.5):
        captum_base = 0.0 if baselines is None else baselines
        expected, delta = captum_attr.IntegratedGradients(model).attribute(
            inputs, baselines=captum_base, target=target, n_steps=40, method="riemann_middle", return_convergence_delta=True)
        ours = ref["integrated_gradients"](model, inputs, target, baselines=baselines, n_steps=40)
        torch.testing.assert_close(ours, expected)
        assert delta.abs().max() < 0.05  # completeness nearly holds with 40 steps on this model


def test_smoothgrad_matches_captum_noise_tunnel_on_the_same_noise(ref, mlp):
    model, inputs, target = mlp
    # NoiseTunnel draws each copy's noise with torch.normal(0, stdev) from the global generator (one
    # copy per call with nt_samples_batch_size=1, nothing else drawn in between): draw the same
    # numbers first, from the same seed, and hand them to ours as standard-normal noise
    stdev = torch.tensor(0.3).repeat(inputs.shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        draws = torch.stack([torch.normal(0, stdev) for _ in range(6)]).double()
        torch.manual_seed(11)
        expected = captum_attr.NoiseTunnel(captum_attr.Saliency(model)).attribute(
            inputs, nt_type="smoothgrad", nt_samples=6, nt_samples_batch_size=1, stdevs=0.3, target=target, abs=False)
    ours = ref["smoothgrad"](model, inputs, target, draws / 0.3, 0.3)
    torch.testing.assert_close(ours, expected)


def test_randomisation_similarity_matches_scipy_and_cascade(ref, mlp):
    from scipy.stats import spearmanr

    model, inputs, target = mlp
    cascade = list(cascading_randomisation(model, seed=0))
    assert [name for name, _ in cascade] == ["layers.2", "layers.1", "layers.0"]
    assert not torch.equal(cascade[0][1].layers[2].weight, model.layers[2].weight)
    assert torch.equal(cascade[0][1].layers[1].weight, model.layers[1].weight)
    assert torch.equal(list(cascading_randomisation(model, seed=0))[2][1].layers[0].weight, cascade[2][1].layers[0].weight)

    def gxi(m, x, t):  # rectified: zeros make ties
        return torch.relu(ref["saliency"](m, x, t, absolute=False) * x)

    ours = ref["randomisation_similarity"](gxi, model, [m for _, m in cascade], inputs, target)
    trained = gxi(model, inputs, target).abs()
    for s, (_, other) in enumerate(cascade):
        mapped = gxi(other, inputs, target).abs()
        for b in range(len(inputs)):
            expected = spearmanr(trained[b].numpy(), mapped[b].numpy()).statistic
            assert float(ours[s, b]) == pytest.approx(expected, abs=1e-10)


def test_remove_top_features_and_faithfulness_by_loops(ref, mlp):
    model, inputs, target = mlp
    attributions = torch.round(torch.randn(inputs.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    fill = torch.full((64,), -0.5, dtype=torch.float64)
    removed = ref["remove_top_features"](inputs, attributions, 10, fill)
    for b in range(len(inputs)):  # a plain stable ordering: larger |a| first, then lower index
        order = sorted(range(64), key=lambda i: (-abs(float(attributions[b, i])), i))[:10]
        expected = inputs[b].clone()
        expected[order] = -0.5
        assert torch.equal(removed[b], expected)
    subsets = torch.rand((20, 64), generator=torch.Generator().manual_seed(1)) < 0.3
    ours = ref["faithfulness_correlation"](model, inputs, target, attributions, subsets, fill)
    with torch.no_grad():
        for b in range(len(inputs)):
            clean = float(model(inputs[b:b + 1])[0, target[b]])
            drops = [clean - float(model(torch.where(s, fill, inputs[b])[None])[0, target[b]]) for s in subsets]
            mass = [float(attributions[b][s].sum()) for s in subsets]
            assert float(ours[b]) == pytest.approx(np.corrcoef(mass, drops)[0, 1], abs=1e-10)
    assert math.isnan(float(ref["randomisation_similarity"](lambda m, x, t: torch.ones_like(x), model, [model], inputs, target)[0, 0]))
