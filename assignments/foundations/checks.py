"""Checks of the ``foundations`` assignment (model-agnostic methods, gradient methods, sanity checks).

Tabular exercises run on hand-built black boxes (a linear part, one interaction and a saturating
term, so that "the prediction at the mean" differs from "the mean prediction"), with random
data, features, grids, coalitions and samples. Gradient exercises run on small random
:class:`~interplab.foundations.DigitsMLP` models in **float64** (no ReLU gate flips within float
noise, so any correct evaluation order passes at float64 tolerance), with random targets, never
the argmax: code that ignores ``target`` is caught.

Probes (known-wrong variants) are mostly *transformations of the reference solution*, found in the
notebook's namespace when ``interplab build`` executes the master (:func:`reference`); the others
are written here as the wrong formula they name.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from interplab.checking import CheckSpecError, Exercise, Probe, Solutions, torch_generator

ASSIGNMENT = "foundations"

# Probes built from the reference solutions find them in the notebook's namespace (tests bind another).
SOLUTIONS = Solutions(ASSIGNMENT)
bind_reference, reference, variant, mapped = SOLUTIONS.bind, SOLUTIONS.reference, SOLUTIONS.variant, SOLUTIONS.mapped


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def black_box(rng: np.random.Generator, n_features: int) -> Callable[[np.ndarray], np.ndarray]:
    """A hand-built regression model (at least 3 features): linear + a pairwise and a three-way
    interaction (without one, Shapley and Banzhaf values coincide) + a saturating term + an offset."""
    w = np.round(rng.normal(size=n_features), 3)
    i, j, l = rng.choice(n_features, size=3, replace=False)
    k = int(rng.integers(0, n_features))
    c, s, b = np.round(rng.uniform(0.5, 2.0), 3), np.round(rng.uniform(0.5, 2.0), 3), np.round(rng.normal(), 3)

    def predict(X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return X @ w + c * X[:, i] * X[:, j] + X[:, i] * X[:, j] * X[:, l] + np.tanh(s * X[:, k]) + b
    return predict


def random_mlp(rng: np.random.Generator, n_features: int = 10) -> nn.Module:
    """A float64 :class:`DigitsMLP` with random weights and biases, in eval mode."""
    from interplab.foundations import DigitsMLP

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng.integers(0, 2**62)))
        model = DigitsMLP((n_features, 8, 6, 4)).double().eval()
    return model


def _tabular(rng: np.random.Generator, n: int) -> tuple[int, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    n_features = int(rng.integers(3, 6))
    return n_features, rng.normal(size=(n, n_features)), black_box(rng, n_features)


def _image(rng: np.random.Generator, batch: int = 3) -> dict[str, Any]:
    gen = torch_generator(rng)
    inputs = torch.rand((batch, 10), generator=gen, dtype=torch.float64) * 2 - 1
    return {"model": random_mlp(rng), "inputs": inputs, "target": torch.from_numpy(rng.integers(0, 4, size=batch)).long()}


def _mse_score(y: np.ndarray, p: np.ndarray) -> float:
    return -float(np.mean((y - p) ** 2))


def _permutation_case(rng):
    from sklearn.metrics import r2_score

    n_features, X, predict = _tabular(rng, 30)
    y = predict(X) + rng.normal(scale=0.3, size=30)
    repeats = int(rng.integers(2, 4))
    return {"predict": predict, "X": X, "y": y, "score": r2_score if rng.integers(0, 2) else _mse_score,
            "permutations": np.stack([rng.permutation(30) for _ in range(repeats)])}


def _pd_case(rng):
    n_features, X, predict = _tabular(rng, 20)
    return {"predict": predict, "X": X, "feature": int(rng.integers(0, n_features)),
            "grid": np.sort(rng.uniform(-2, 2, size=int(rng.integers(4, 8))))}


def _game(rng: np.random.Generator) -> dict[str, Any]:
    n_features = int(rng.integers(3, 7))
    return {"predict": black_box(rng, n_features), "x": rng.normal(size=n_features),
            "background": rng.normal(size=(int(rng.integers(4, 9)), n_features))}


def _coalition_case(rng):
    case = _game(rng)
    case["coalitions"] = rng.random((int(rng.integers(6, 11)), len(case["x"]))) < 0.5
    return case


def _kernel_case(rng):
    from interplab.foundations import proper_coalitions, random_coalitions

    case = _game(rng)
    n_features = len(case["x"])
    # every coalition (the exact answer) or a uniform sample with repeats (an estimate)
    case["coalitions"] = proper_coalitions(n_features) if rng.integers(0, 2) else random_coalitions(n_features, 3 * n_features + 8, rng)
    return case


def _lime_case(rng):
    n_features = int(rng.integers(3, 6))
    return {"predict": black_box(rng, n_features), "x": rng.normal(size=n_features),
            "scale": rng.uniform(0.5, 2.0, size=n_features), "noise": rng.normal(size=(60, n_features)),
            "kernel_width": float(rng.choice([0.75 * math.sqrt(n_features), 1.0, 2.5]))}


def _saliency_case(rng):
    return {**_image(rng), "absolute": bool(rng.integers(0, 2))}


def _ig_case(rng):
    case = _image(rng)
    # never the default (zeros): a submission that ignores `baselines` fails every case
    case["baselines"] = float(np.round(rng.uniform(0.2, 1), 3) * rng.choice([-1, 1])) if rng.integers(0, 2) else \
        torch.rand(case["inputs"].shape, generator=torch_generator(rng), dtype=torch.float64) - 0.5
    case["n_steps"] = int(rng.integers(8, 33))
    return case


def _smoothgrad_case(rng):
    case = _image(rng)
    case["noise"] = torch.randn((int(rng.integers(3, 9)), *case["inputs"].shape), generator=torch_generator(rng), dtype=torch.float64)
    case["sigma"] = float(np.round(rng.uniform(0.1, 0.5), 3))
    return case


def gradient_x_input(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """The base method of the similarity check (not one of the exercises)."""
    x = inputs.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
    return (grad * inputs).detach()


def _similarity_case(rng):
    case = _image(rng)
    # a third of the inputs exactly 0: gradient x input ties there (average ranks matter) and keeps its sign elsewhere
    case["inputs"] = torch.where(torch.from_numpy(rng.random(case["inputs"].shape) < 0.3), 0.0, case["inputs"])
    return {"method": gradient_x_input, **case, "others": [random_mlp(rng) for _ in range(2)]}


def _removal_case(rng):
    gen = torch_generator(rng)
    inputs = torch.rand((4, 12), generator=gen, dtype=torch.float64)
    attributions = torch.from_numpy(rng.integers(-3, 4, size=(4, 12)).astype(np.float64))  # many ties
    return {"inputs": inputs, "attributions": attributions, "k": int(rng.integers(1, 12)),
            "fill": torch.rand(12, generator=gen, dtype=torch.float64) - 1}


def _faithfulness_case(rng):
    case = _image(rng)
    gen = torch_generator(rng)
    case.update(attributions=torch.randn(case["inputs"].shape, generator=gen, dtype=torch.float64),
                subsets=torch.rand((12, 10), generator=gen) < 0.4,
                fill=torch.rand(10, generator=gen, dtype=torch.float64) - 0.5)
    return case


# --------------------------------------------------------------------------------------------
# Probe building blocks
# --------------------------------------------------------------------------------------------


def with_softmax(model: nn.Module) -> nn.Module:
    return nn.Sequential(model, nn.Softmax(dim=-1)).eval()


def argmax_target(kwargs: dict[str, Any]) -> Tensor:
    with torch.no_grad():
        return kwargs["model"](kwargs["inputs"]).argmax(-1)


def _at_mean(predict: Callable[[np.ndarray], np.ndarray], X: np.ndarray, feature: int, grid: np.ndarray) -> np.ndarray:
    rows = np.repeat(X.mean(0, keepdims=True), len(grid), axis=0)
    rows[:, feature] = grid
    return predict(rows)


def _banzhaf(predict, x, background):
    """Marginal contributions averaged with equal weight over coalitions (the Banzhaf value)."""
    from interplab.foundations import all_coalitions

    n_features = len(x)
    coalitions = all_coalitions(n_features)
    values = reference("coalition_values")(predict=predict, x=x, background=background, coalitions=coalitions)
    rows = [np.flatnonzero(~coalitions[:, i]) for i in range(n_features)]
    return np.array([np.mean(values[r + 2**i] - values[r]) for i, r in enumerate(rows)])


def _regression(weighted: bool, constrained: bool) -> Callable[..., np.ndarray]:
    """KernelSHAP's regression with the kernel weights or the efficiency constraint left out."""
    def probe(predict, x, background, coalitions):
        n_features = len(x)
        sizes = coalitions.sum(1)
        weights = (n_features - 1) / (np.array([math.comb(n_features, int(s)) for s in sizes]) * sizes * (n_features - sizes)) \
            if weighted else np.ones(len(coalitions))
        values = reference("coalition_values")(predict=predict, x=x, background=background, coalitions=coalitions)
        phi0, fx = predict(background).mean(), predict(x[None])[0]
        z = coalitions.astype(np.float64)
        root = np.sqrt(weights)
        if constrained:
            head = np.linalg.lstsq((z[:, :-1] - z[:, -1:]) * root[:, None],
                                   (values - phi0 - z[:, -1] * (fx - phi0)) * root, rcond=None)[0]
            return np.append(head, fx - phi0 - head.sum())
        design = np.column_stack([np.ones(len(z)), z])
        return np.linalg.lstsq(design * root[:, None], values * root, rcond=None)[0][1:]
    return probe


def _raw_features(out: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The same surrogate fitted on the raw samples instead of the standardised offsets."""
    coef = out["coef"] / kwargs["scale"]
    return {"coef": coef, "intercept": out["intercept"] - coef @ kwargs["x"], "fidelity": out["fidelity"]}


def _absolute_smoothgrad(model, inputs, target, noise, sigma):
    return torch.stack([reference("saliency")(model=model, inputs=inputs + sigma * n, target=target, absolute=True)
                        for n in noise]).mean(0)


def _ranks(values: Tensor, ordinal: bool) -> Tensor:
    if ordinal:
        return values.argsort(1).argsort(1).double()
    below = (values[:, None, :] < values[:, :, None]).sum(-1)
    equal = (values[:, None, :] == values[:, :, None]).sum(-1)
    return (below + (equal + 1) / 2).double()


def _similarity_probe(absolute: bool = True, ranks: str = "average", retarget: bool = False) -> Callable[..., Tensor]:
    """Randomisation similarity with one convention changed (``ranks``: average, ordinal or none)."""
    def correlation(a: Tensor, b: Tensor) -> Tensor:
        a, b = (a.abs(), b.abs()) if absolute else (a, b)
        ra, rb = (a.double(), b.double()) if ranks == "none" else (_ranks(a, ranks == "ordinal"), _ranks(b, ranks == "ordinal"))
        ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
        return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))

    def probe(method, model, others, inputs, target):
        trained = method(model, inputs, target).detach()
        rows = []
        for other in others:
            with torch.no_grad():
                other_target = other(inputs).argmax(-1) if retarget else target
            rows.append(correlation(trained, method(other, inputs, other_target).detach()))
        return torch.stack(rows)
    return probe


def _ties_last(inputs, attributions, k, fill):
    """Ties broken towards the higher index: the reference on mirrored columns, mirrored back."""
    return reference("remove_top_features")(inputs=inputs.flip(1), attributions=attributions.flip(1), k=k, fill=fill.flip(0)).flip(1)


# --------------------------------------------------------------------------------------------
# Exercises
# --------------------------------------------------------------------------------------------

SOFTMAX_MESSAGE = ("you used the softmax probability; this exercise uses the target's logit "
                   "(the models return logits)")
ARGMAX_MESSAGE = "you explained the predicted class (argmax) instead of the given `target`"

EXERCISES = [
    Exercise(
        id="foundations.permutation_importance", make_case=_permutation_case,
        tolerances={"float64": (1e-7, 1e-9)},
        probes=[
            Probe("sign", mapped("permutation_importance", lambda out, k: -out),
                  "the sign is flipped: the importance is the baseline score minus the score after shuffling"),
            Probe("averaged", mapped("permutation_importance", lambda out, k: out.mean(1)),
                  "you averaged over the repeats; return every repeat, shape (features, repeats)"),
            Probe("transposed", mapped("permutation_importance", lambda out, k: out.T),
                  "your array is (repeats, features); the exercise asks for (features, repeats), like sklearn's `importances`"),
        ],
        hint="importances[j, r] = score(y, predict(X)) - score(y, predict(X with column j = X[permutations[r], j]))",
    ),
    Exercise(
        id="foundations.partial_dependence", make_case=_pd_case,
        probes=[
            Probe("at_the_mean", mapped("partial_dependence", lambda out, k: {
                "ice": out["ice"], "average": _at_mean(k["predict"], k["X"], k["feature"], k["grid"])}),
                "your partial dependence is the prediction at the mean input; it is the mean of the predictions (the ICE curves)"),
            Probe("centred", mapped("partial_dependence", lambda out, k: {
                "ice": out["ice"] - out["ice"][:, :1], "average": out["average"] - out["average"][0]}),
                "you centred the curves at the first grid value (c-ICE); return the predictions themselves"),
            Probe("transposed", mapped("partial_dependence", lambda out, k: {"ice": out["ice"].T, "average": out["average"]}),
                  "your ICE array is (grid, n); row i must be patient i's curve: shape (n, grid)"),
        ],
    ),
    Exercise(
        id="foundations.coalition_values", make_case=_coalition_case,
        probes=[
            Probe("swapped", variant("coalition_values", coalitions=lambda k: ~k["coalitions"]),
                  "True means the feature is in the coalition and comes from x; you took it from the background"),
            Probe("mean_background", variant("coalition_values", background=lambda k: k["background"].mean(0, keepdims=True)),
                  "you predicted at the mean background row; v(S) is the mean of the predictions over the background rows"),
        ],
    ),
    Exercise(
        id="foundations.exact_shapley", make_case=_game,
        probes=[
            Probe("banzhaf", _banzhaf,
                  "you weighted every coalition equally (that is the Banzhaf value); Shapley weights are |S|! (M-|S|-1)! / M!"),
            Probe("mean_background", variant("exact_shapley", background=lambda k: k["background"].mean(0, keepdims=True)),
                  "you used the mean background row; v(S) averages the predictions over every background row"),
        ],
        hint="row k of all_coalitions(M) plus feature i is row k + 2**i; weight |S|! (M - |S| - 1)! / M!",
    ),
    Exercise(
        id="foundations.kernel_shap", make_case=_kernel_case,
        tolerances={"float64": (1e-6, 1e-8)},
        probes=[
            Probe("unconstrained", _regression(weighted=True, constrained=False),
                  "you fitted a free intercept without the efficiency constraint: the values must add up to f(x) - E f(background)"),
            Probe("unweighted", _regression(weighted=False, constrained=True),
                  "your regression is unweighted: weight each row by the Shapley kernel (M-1) / (C(M,|z|) |z| (M-|z|))"),
        ],
        hint="eliminate the constraint: phi_M = f(x) - phi0 - sum of the others; weighted least squares on the rest",
    ),
    Exercise(
        id="foundations.lime_tabular", make_case=_lime_case,
        tolerances={"float64": (1e-6, 1e-8)},
        probes=[
            Probe("unweighted", variant("lime_tabular", kernel_width=lambda k: 1e8),
                  "your fit is unweighted: weight each sample by exp(-d^2 / kernel_width^2), d = ||noise row||"),
            Probe("raw_features", mapped("lime_tabular", _raw_features),
                  "you regressed on the raw samples; regress on the standardised offsets (the noise), so coef is per standard deviation"),
        ],
        hint="design = [1, noise]; weights exp(-||noise||^2 / w^2); fidelity = weighted R^2 of the fit",
    ),
    Exercise(
        id="foundations.saliency", make_case=_saliency_case,
        probes=[
            Probe("softmax", variant("saliency", model=lambda k: with_softmax(k["model"])), SOFTMAX_MESSAGE),
            Probe("argmax", variant("saliency", target=argmax_target), ARGMAX_MESSAGE),
            Probe("abs_flag", variant("saliency", absolute=lambda k: not k["absolute"]),
                  "the `absolute` flag is inverted or ignored: |gradient| only when absolute=True"),
        ],
    ),
    Exercise(
        id="foundations.integrated_gradients", make_case=_ig_case,
        probes=[
            Probe("zero_baseline", variant("integrated_gradients", baselines=lambda k: None),
                  "you ignored `baselines` (integrated from zero instead of from the given baseline)"),
            Probe("softmax", variant("integrated_gradients", model=lambda k: with_softmax(k["model"])), SOFTMAX_MESSAGE),
            Probe("argmax", variant("integrated_gradients", target=argmax_target), ARGMAX_MESSAGE),
        ],
        hint="midpoint rule: alpha_k = (k + 0.5) / n_steps; multiply the averaged gradient by (inputs - baselines)",
    ),
    Exercise(
        id="foundations.smoothgrad", make_case=_smoothgrad_case,
        probes=[
            Probe("unscaled", variant("smoothgrad", sigma=lambda k: 1.0),
                  "you added the noise without multiplying it by sigma"),
            Probe("absolute", _absolute_smoothgrad, "you averaged |gradient|; SmoothGrad here averages the signed gradients"),
            Probe("softmax", variant("smoothgrad", model=lambda k: with_softmax(k["model"])), SOFTMAX_MESSAGE),
        ],
    ),
    Exercise(
        id="foundations.randomisation_similarity", make_case=_similarity_case,
        probes=[
            Probe("signed", _similarity_probe(absolute=False),
                  "you ranked the signed maps; compare absolute values |map|, as the exercise states"),
            Probe("pearson", _similarity_probe(ranks="none"),
                  "you computed Pearson's correlation of the values; Spearman's is Pearson's correlation of the ranks"),
            Probe("ordinal_ranks", _similarity_probe(ranks="ordinal"),
                  "your ranks break ties by position; tied values get the average of the ranks they span (as scipy.stats.spearmanr)"),
            Probe("retarget", _similarity_probe(retarget=True),
                  "you explained the class each other model predicts; explain the same target for every model"),
        ],
        hint="Spearman (average ranks) of |method(model)| against |method(other)| for each other model, same target",
    ),
    Exercise(
        id="foundations.remove_top_features", make_case=_removal_case,
        probes=[
            Probe("signed", variant("remove_top_features", attributions=lambda k: k["attributions"] - k["attributions"].min()),
                  "you ranked by the signed attribution; rank by |attribution|"),
            Probe("ties_last", _ties_last,
                  "your ties are broken towards the higher index; among equal |attribution| the lower index goes first (a stable sort)"),
            Probe("least", lambda inputs, attributions, k, fill: reference("remove_top_features")(
                inputs=inputs, attributions=1 / (1 + attributions.abs()), k=k, fill=fill),
                "you removed the features of *smallest* |attribution|; remove the k largest"),
        ],
        hint="torch.argsort(attributions.abs(), dim=1, descending=True, stable=True)[:, :k]",
    ),
    Exercise(
        id="foundations.faithfulness_correlation", make_case=_faithfulness_case,
        probes=[
            Probe("softmax", variant("faithfulness_correlation", model=lambda k: with_softmax(k["model"])), SOFTMAX_MESSAGE),
            Probe("sign", mapped("faithfulness_correlation", lambda out, k: -out),
                  "the sign is flipped: correlate the attribution mass with f(x) - f(x with the subset removed)"),
            Probe("absolute", variant("faithfulness_correlation", attributions=lambda k: k["attributions"].abs()),
                  "you summed |attributions|; use the signed attributions"),
        ],
        hint="drop[b, s] = logit_t(x_b) - logit_t(x_b with subset s = fill); mass[b, s] = attributions[b] @ subsets[s]",
    ),
]
