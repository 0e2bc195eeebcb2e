"""Checks of the ``tsxai`` assignment (time-series XAI on the FCN zoo models).

Every case explains both zoo models: ``fcn-gunpoint`` (one channel) and ``fcn-basicmotions`` (six
channels), so univariate and multivariate code paths are always checked together. Inputs are
test-set series picked by the case's seed plus a little seeded jitter; targets are drawn at random
(not the argmax), so an implementation that ignores ``target`` is caught.

Probes (known-wrong variants) are written as *transformations of the reference solution*: the
reference with a softmax appended to the model, with the argmax target, with the model in training
mode, with the flag flipped, and so on. They only run where the reference exists: when ``interplab
build`` executes the master notebook in reference mode, :func:`reference` finds the solution
functions in the notebook's namespace. So even the instructor's copy holds no solution code (the
released copy has the probes stripped by the build in any case).
"""
from __future__ import annotations

import copy
import functools
import math
import sys
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from interplab.checking import CheckSpecError, Exercise, Probe, Solutions, torch_generator

ASSIGNMENT = "tsxai"
MODELS = {"gunpoint": "fcn-gunpoint", "basicmotions": "fcn-basicmotions"}

# Probes built from the reference solutions find them in the notebook's namespace (tests bind another).
SOLUTIONS = Solutions(ASSIGNMENT)
bind_reference, reference, variant, mapped = SOLUTIONS.bind, SOLUTIONS.reference, SOLUTIONS.variant, SOLUTIONS.mapped


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@functools.cache
def _zoo_model(dataset: str) -> nn.Module:
    from interplab import zoo

    return zoo.load(f"fcn-{dataset}")  # imports only that model's module


def fresh_model(dataset: str) -> nn.Module:
    """A private copy of the zoo model in eval mode (a submission that mutates it harms nobody)."""
    return copy.deepcopy(_zoo_model(dataset)).eval()


@functools.cache
def _data(dataset: str):
    from interplab.tsxai import load_dataset

    return load_dataset(dataset)


def series(rng: np.random.Generator, dataset: str, batch: int) -> Tensor:
    """``batch`` test series of ``dataset`` picked by ``rng``, with 5% (of each channel's std) jitter."""
    data = _data(dataset)
    index = torch.from_numpy(rng.choice(data.X_test.shape[0], size=batch, replace=False))
    scale = data.X_test.std(dim=(0, 2))[None, :, None]
    noise = torch.randn((batch, data.n_channels, data.length), generator=torch_generator(rng))
    return data.X_test[index] + 0.05 * scale * noise


def targets(rng: np.random.Generator, dataset: str, batch: int) -> Tensor:
    return torch.from_numpy(rng.integers(0, _data(dataset).n_classes, size=batch)).long()


def both(make: Callable[[np.random.Generator, str], dict[str, Any]]) -> Callable[[np.random.Generator], dict[str, Any]]:
    """A case made of one sub-case per zoo model."""
    return lambda rng: {dataset: make(rng, dataset) for dataset in MODELS}


def per_dataset(obj: Callable[..., Any], case: dict[str, Any]) -> dict[str, Any]:
    return {dataset: obj(**kwargs) for dataset, kwargs in case.items()}


def baseline_value(rng: np.random.Generator, inputs: Tensor) -> float | Tensor:
    """Zero, a random constant, or a seeded noise tensor: a non-zero baseline exposes code that ignores it."""
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return 0.0
    if kind == 1:
        return float(np.round(rng.uniform(-1.0, 1.0), 3))
    return 0.3 * torch.randn(inputs.shape, generator=torch_generator(rng))


# --------------------------------------------------------------------------------------------
# Probe building blocks
# --------------------------------------------------------------------------------------------


def with_softmax(model: nn.Module) -> nn.Module:
    return nn.Sequential(model, nn.Softmax(dim=-1)).eval()


def in_train_mode(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).train()


def argmax_target(kwargs: dict[str, Any]) -> Tensor:
    with torch.no_grad():
        return kwargs["model"](kwargs["inputs"]).argmax(-1)


def input_x_gradient(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """A base method for the TSR check (not one of the exercises): inputs times the logit gradient."""
    x = inputs.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
    return (inputs * grad).detach()


def _occlusion_counts(length: int, window: int, stride: int) -> Tensor:
    """How many windows cover each time step (clipped windows, as in the exercise)."""
    counts = torch.zeros(length)
    for k in range(math.ceil((length - window) / stride) + 1):
        counts[k * stride:k * stride + window] += 1
    return counts


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


def _attribution_case(rng: np.random.Generator, dataset: str, batch: int = 3) -> dict[str, Any]:
    inputs = series(rng, dataset, batch)
    return {"model": fresh_model(dataset), "inputs": inputs, "target": targets(rng, dataset, batch)}


def _saliency_case(rng, dataset):
    return {**_attribution_case(rng, dataset), "absolute": bool(rng.integers(0, 2))}


def _ig_case(rng, dataset):
    case = _attribution_case(rng, dataset, batch=2)
    case["baselines"] = 0.3 * torch.randn(case["inputs"].shape, generator=torch_generator(rng))
    case["n_steps"] = int(rng.integers(8, 33))
    return case


def _completeness_case(rng, dataset):
    case = _attribution_case(rng, dataset)
    case["attributions"] = 0.05 * torch.randn(case["inputs"].shape, generator=torch_generator(rng))
    case["baselines"] = baseline_value(rng, case["inputs"])
    return case


def _occlusion_case(rng, dataset):
    case = _attribution_case(rng, dataset, batch=2)
    window = int(rng.integers(5, 21))
    case.update(window=window, stride=int(rng.integers(max(1, window // 2), window + 1)),
                baselines=baseline_value(rng, case["inputs"]))
    return case


def _ablation_case(rng, dataset):
    case = _attribution_case(rng, dataset, batch=2)
    case.update(n_segments=int(rng.integers(4, 17)), baselines=baseline_value(rng, case["inputs"]))
    return case


def _tsr_case(rng, dataset):
    # TSR costs (C + 1) x T calls of the base method: random crops of 48-64 steps keep the check
    # fast (the FCN's global average pooling accepts any length; the method does not care).
    case = _attribution_case(rng, dataset, batch=2)
    crop = int(rng.integers(48, 65))
    start = int(rng.integers(0, case["inputs"].shape[-1] - crop + 1))
    case["inputs"] = case["inputs"][..., start:start + crop].contiguous()
    case.update(base_method=input_x_gradient, baselines=float(np.round(rng.uniform(-1.0, 1.0), 3)))
    return case


def _curves_case(rng, dataset):
    inputs = series(rng, dataset, 3)
    return {"model": fresh_model(dataset), "inputs": inputs,
            "attributions": torch.randn(inputs.shape, generator=torch_generator(rng)),
            "n_steps": int(rng.integers(5, 21)), "baselines": baseline_value(rng, inputs),
            "ranking": str(rng.choice(["signed", "absolute"])), "output": str(rng.choice(["probability", "logit"]))}


def _cs_case(rng, dataset):
    inputs = series(rng, dataset, 3)
    percents = tuple(sorted(int(p) for p in rng.choice(np.arange(1, 60), size=3, replace=False)))
    return {"model": fresh_model(dataset), "inputs": inputs,
            "attributions": torch.randn(inputs.shape, generator=torch_generator(rng)), "percents": percents,
            "baselines": baseline_value(rng, inputs), "ranking": str(rng.choice(["signed", "absolute"])),
            "output": str(rng.choice(["probability", "logit"]))}


def _nun_case(rng, dataset):
    data = _data(dataset)
    index = rng.choice(data.X_train.shape[0], size=min(30, data.X_train.shape[0]), replace=False)
    return {"model": fresh_model(dataset), "queries": series(rng, dataset, 3),
            "references": data.X_train[torch.from_numpy(index)]}


def _native_guide_case(rng, dataset):
    data = _data(dataset)
    model = fresh_model(dataset)
    query = series(rng, dataset, 2)
    with torch.no_grad():
        query_class = model(query).argmax(-1)
        train_class = model(data.X_train).argmax(-1)
    nun = torch.stack([data.X_train[int(rng.choice(np.flatnonzero((train_class != c).numpy())))]
                       for c in query_class.tolist()])
    # Importance on a grid of 1/64: window sums are exact in any summation order.
    raw = rng.integers(0, 64, size=(2, data.length)).astype(np.float32) / 64
    kernel = np.ones(9, dtype=np.float32) / 8  # smooth so that windows, not points, stand out
    importance = np.stack([np.round(np.convolve(r, kernel, mode="same") * 64) / 64 for r in raw])
    return {"model": model, "query": query, "nun": nun, "importance": torch.from_numpy(importance.astype(np.float32))}


def _cf_metrics_case(rng, dataset):
    original = series(rng, dataset, 4)
    counterfactual = original.clone()
    gen = torch_generator(rng)
    length = original.shape[-1]
    for b in range(4):  # change a random window by a random amount (sometimes enough to flip the class)
        start = int(rng.integers(0, length - 10))
        width = int(rng.integers(5, length - start + 1))
        counterfactual[b, :, start:start + width] += float(rng.choice([0.3, 3.0])) * torch.randn(
            (original.shape[1], width), generator=gen)
    return {"model": fresh_model(dataset), "original": original, "counterfactual": counterfactual}


def _lime_case(rng, dataset):
    case = _attribution_case(rng, dataset, batch=2)
    n_segments = int(rng.integers(3, 9))
    n_features = _data(dataset).n_channels * n_segments
    masks = torch.from_numpy(rng.integers(0, 2, size=(4 * n_features + 20, n_features))).float()
    case.update(n_segments=n_segments, masks=masks, baselines=baseline_value(rng, case["inputs"]),
                kernel_width=float(rng.choice([0.25, 0.5])))
    return case


# --------------------------------------------------------------------------------------------
# Exercises
# --------------------------------------------------------------------------------------------

SOFTMAX_MESSAGE = ("you differentiated/used the softmax probability; this exercise uses the target's logit "
                   "(the models return logits)")
ARGMAX_MESSAGE = "you explained the predicted class (argmax) instead of the given `target`"
TRAIN_MODE_MESSAGE = ("the model was in training mode: BatchNorm normalised with the batch's statistics. "
                      "Keep it in eval() mode")

EXERCISES = [
    Exercise(
        id="tsxai.saliency", make_case=both(_saliency_case), call=per_dataset,
        # A batch of one (or any other evaluation order) flips the ReLU gate of a pre-activation
        # within float32 noise of 0 and moves a few gradient values by up to ~0.2: a correct batch-
        # of-one answer failed 3 of 100 builds (up to 14 of 450 values, 3 %); every mistake changes most.
        outliers=0.05,
        probes=[
            Probe("softmax", variant("saliency", model=lambda k: with_softmax(k["model"])), SOFTMAX_MESSAGE),
            Probe("argmax", variant("saliency", target=argmax_target), ARGMAX_MESSAGE),
            Probe("train_mode", variant("saliency", model=lambda k: in_train_mode(k["model"])), TRAIN_MODE_MESSAGE),
            Probe("abs_flag", variant("saliency", absolute=lambda k: not k["absolute"]),
                  "the `absolute` flag is inverted or ignored: |gradient| only when absolute=True, the signed gradient otherwise"),
        ],
        hint="gradient of logits.gather(1, target[:, None]).sum() w.r.t. a copy of the inputs that requires grad",
    ),
    Exercise(
        id="tsxai.integrated_gradients", make_case=both(_ig_case), call=per_dataset,
        tolerances={"float32": (1e-3, 1e-5)},
        probes=[
            Probe("zero_baseline", variant("integrated_gradients", baselines=lambda k: None),
                  "you ignored `baselines` (integrated from zero instead of from the given baseline)"),
            Probe("softmax", variant("integrated_gradients", model=lambda k: with_softmax(k["model"])), SOFTMAX_MESSAGE),
            Probe("argmax", variant("integrated_gradients", target=argmax_target), ARGMAX_MESSAGE),
            Probe("train_mode", variant("integrated_gradients", model=lambda k: in_train_mode(k["model"])),
                  TRAIN_MODE_MESSAGE),
        ],
        hint="midpoint rule: alpha_k = (k + 0.5) / n_steps; multiply the averaged gradient by (inputs - baselines)",
    ),
    Exercise(
        id="tsxai.completeness_gap", make_case=both(_completeness_case), call=per_dataset,
        tolerances={"float32": (1e-4, 1e-4)},
        probes=[
            Probe("sign", mapped("completeness_gap", lambda out, k: -out),
                  "the sign is flipped: return sum(attributions) - (f(x) - f(baseline))"),
            Probe("softmax", variant("completeness_gap", model=lambda k: with_softmax(k["model"])),
                  "you compared with a change of probability; IG (and this gap) is about the target's logit"),
            Probe("abs_sum", variant("completeness_gap", attributions=lambda k: k["attributions"].abs()),
                  "you summed |attributions|: completeness is about the signed sum"),
        ],
    ),
    Exercise(
        id="tsxai.occlusion", make_case=both(_occlusion_case), call=per_dataset,
        tolerances={"float32": (1e-4, 2e-5)},
        probes=[
            Probe("sum_not_mean", mapped("occlusion", lambda out, k: out * _occlusion_counts(
                k["inputs"].shape[-1], k["window"], k["stride"])),
                "you summed the drops of overlapping windows; each element gets their average"),
            Probe("sign", mapped("occlusion", lambda out, k: -out),
                  "the sign is flipped: the attribution is f(x) - f(occluded), positive when occluding hurts the target"),
            Probe("softmax", variant("occlusion", model=lambda k: with_softmax(k["model"])), SOFTMAX_MESSAGE),
            Probe("argmax", variant("occlusion", target=argmax_target), ARGMAX_MESSAGE),
        ],
        hint="window starts 0, stride, 2*stride, ... up to ceil((T - window) / stride) * stride, clipped at the end",
    ),
    Exercise(
        id="tsxai.feature_ablation", make_case=both(_ablation_case), call=per_dataset,
        tolerances={"float32": (1e-4, 2e-5)},
        probes=[
            Probe("divided", mapped("feature_ablation", lambda out, k: out / _segment_sizes(k)),
                  "you divided each segment's drop by its length; every element of a segment gets the full drop "
                  "(Captum's FeatureAblation convention)"),
            Probe("sign", mapped("feature_ablation", lambda out, k: -out),
                  "the sign is flipped: the attribution is f(x) - f(ablated)"),
            Probe("softmax", variant("feature_ablation", model=lambda k: with_softmax(k["model"])), SOFTMAX_MESSAGE),
            Probe("argmax", variant("feature_ablation", target=argmax_target), ARGMAX_MESSAGE),
        ],
        hint="segments come from segment_ids(C, T, n_segments): ids == g is the mask of segment g",
    ),
    Exercise(
        id="tsxai.class_activation_map", make_case=both(_attribution_case), call=per_dataset,
        tolerances={"float32": (1e-4, 1e-4)},
        probes=[
            Probe("bias", mapped("class_activation_map",
                                 lambda out, k: out + k["model"].classifier.bias[k["target"]].detach()[:, None]),
                  "you added the classifier's bias: CAM is sum_k W[c, k] A_k(t) only"),
            Probe("relu", mapped("class_activation_map", lambda out, k: torch.relu(out)),
                  "you applied a ReLU: CAM keeps negative evidence (the ReLU belongs to Grad-CAM)"),
            Probe("mean", mapped("class_activation_map", lambda out, k: out / k["inputs"].shape[-1]),
                  "you divided by the series length: CAM is the per-time-step term without the 1/T of the pooling"),
            Probe("argmax", variant("class_activation_map", target=argmax_target), ARGMAX_MESSAGE),
        ],
    ),
    Exercise(
        id="tsxai.grad_cam", make_case=both(_attribution_case), call=per_dataset,
        tolerances={"float32": (1e-4, 1e-6)},
        probes=[
            Probe("no_relu", lambda **k: reference("class_activation_map")(**k) / k["inputs"].shape[-1],
                  "you forgot the ReLU on the weighted sum of the maps"),
            Probe("summed_weights", mapped("grad_cam", lambda out, k: out * k["inputs"].shape[-1]),
                  "you summed the gradients over time; Grad-CAM's weights are their average over time"),
            Probe("argmax", variant("grad_cam", target=argmax_target), ARGMAX_MESSAGE),
        ],
        hint="alpha_k = grads.mean(-1) where grads = d logit_target / d model.features(x); then ReLU(sum_k alpha_k A_k)",
    ),
    Exercise(
        id="tsxai.temporal_saliency_rescaling", make_case=both(_tsr_case), call=per_dataset,
        n_hidden=2, tolerances={"float32": (1e-3, 1e-4)},
        probes=[
            Probe("zero_mask", variant("temporal_saliency_rescaling", baselines=lambda k: 0.0),
                  "you masked with zeros instead of the given `baselines`"),
            Probe("argmax", variant("temporal_saliency_rescaling", target=argmax_target), ARGMAX_MESSAGE),
        ],
        hint="tau_t: mask all channels at t; threshold = mean of tau over time; phi_(i,t): mask only (i, t); "
             "result tau_t * phi_(i,t) where tau_t > threshold, else 0",
    ),
    Exercise(
        id="tsxai.perturbation_curves", make_case=both(_curves_case), call=per_dataset,
        tolerances={"float32": (1e-4, 1e-5)},
        probes=[
            Probe("double_softmax", lambda **k: reference("perturbation_curves")(
                **{**k, "model": with_softmax(k["model"]) if k["output"] == "probability" else k["model"]}),
                "softmax applied twice: the models return logits, apply softmax once (only for output='probability')"),
            Probe("ranking", variant("perturbation_curves",
                                     ranking=lambda k: "absolute" if k["ranking"] == "signed" else "signed"),
                  "the `ranking` convention is swapped or ignored: 'signed' sorts by value (most positive first), "
                  "'absolute' by magnitude"),
            Probe("ascending", lambda **k: reference("perturbation_curves")(
                **{**k, "attributions": -(k["attributions"].abs() if k["ranking"] == "absolute" else k["attributions"]),
                   "ranking": "signed"}),
                "you perturbed the least important elements first: sort in descending order"),
            Probe("output", variant("perturbation_curves",
                                    output=lambda k: "logit" if k["output"] == "probability" else "probability"),
                  "the `output` convention is swapped or ignored: probabilities are softmax(logits), 'logit' is the raw logit"),
        ],
        hint="target = argmax on the clean inputs; k_j = (j * N) // n_steps; AUC = trapezoid rule over x = j / n_steps",
    ),
    Exercise(
        id="tsxai.comprehensiveness_sufficiency", make_case=both(_cs_case), call=per_dataset,
        tolerances={"float32": (1e-4, 1e-5)},
        probes=[
            Probe("double_softmax", lambda **k: reference("comprehensiveness_sufficiency")(
                **{**k, "model": with_softmax(k["model"]) if k["output"] == "probability" else k["model"]}),
                "softmax applied twice: the models return logits, apply softmax once (only for output='probability')"),
            Probe("swapped", mapped("comprehensiveness_sufficiency", lambda out, k: {
                "comprehensiveness": out["sufficiency"], "sufficiency": out["comprehensiveness"]}),
                "comprehensiveness and sufficiency are swapped: comprehensiveness removes the top-k, sufficiency keeps only them"),
            Probe("ranking", variant("comprehensiveness_sufficiency",
                                     ranking=lambda k: "absolute" if k["ranking"] == "signed" else "signed"),
                  "the `ranking` convention is swapped or ignored"),
            Probe("output", variant("comprehensiveness_sufficiency",
                                    output=lambda k: "logit" if k["output"] == "probability" else "probability"),
                  "the `output` convention is swapped or ignored: probabilities are softmax(logits), 'logit' is the raw logit"),
        ],
        hint="k = (p * N) // 100 for each p in percents; average the per-k differences of probabilities",
    ),
    Exercise(
        id="tsxai.nearest_unlike_neighbour", make_case=both(_nun_case), call=per_dataset,
        probes=[
            Probe("like", lambda **k: _nearest(k, unlike=False, p=2),
                  "you returned the nearest neighbour of the *same* predicted class: the NUN's class must differ"),
            Probe("l1", lambda **k: _nearest(k, unlike=True, p=1), "you used the L1 distance; the NUN is the Euclidean nearest"),
        ],
    ),
    Exercise(
        id="tsxai.native_guide", make_case=both(_native_guide_case), call=per_dataset,
        probes=[
            Probe("min_window", variant("native_guide", importance=lambda k: -k["importance"]),
                  "you placed the window where the importance is lowest: use the maximum window sum"),
            Probe("fixed_start", variant("native_guide", importance=lambda k: torch.linspace(
                1.0, 0.0, k["importance"].shape[-1]).expand_as(k["importance"]).contiguous()),
                "your window always starts at t = 0: place it where the NUN's importance is highest"),
        ],
        hint="for each L, start = argmax of the window sums; stop at the first L the model assigns to argmax model(nun)",
    ),
    Exercise(
        id="tsxai.counterfactual_metrics", make_case=both(_cf_metrics_case), call=per_dataset,
        tolerances={"float32": (1e-5, 1e-5)},
        probes=[
            Probe("l2_squared", mapped("counterfactual_metrics", lambda out, k: {**out, "l2": out["l2"] ** 2}),
                  "your L2 is the squared norm: take the square root"),
            Probe("changed_fraction", mapped("counterfactual_metrics",
                                             lambda out, k: {**out, "sparsity": 1 - out["sparsity"]}),
                  "your sparsity counts changed elements; it is the fraction left unchanged (higher is sparser)"),
            Probe("validity", mapped("counterfactual_metrics", lambda out, k: {**out, "validity": ~out["validity"]}),
                  "validity is inverted: a counterfactual is valid when the predicted class changed"),
        ],
    ),
    Exercise(
        id="tsxai.lime_segments", make_case=both(_lime_case), call=per_dataset,
        tolerances={"float32": (1e-3, 1e-4)},
        probes=[
            Probe("unweighted", variant("lime_segments", kernel_width=lambda k: 1e6),
                  "your fit is unweighted: weight each sample by exp(-d^2 / kernel_width^2)"),
            Probe("argmax", variant("lime_segments", target=argmax_target), ARGMAX_MESSAGE),
        ],
        hint="y = softmax probability of the target; design = [1, z]; solve least squares on rows scaled by sqrt(weight)",
    ),
]


def _segment_sizes(kwargs: dict[str, Any]) -> Tensor:
    from interplab.tsxai import segment_ids

    _, channels, length = kwargs["inputs"].shape
    ids = segment_ids(channels, length, kwargs["n_segments"])
    return torch.bincount(ids.flatten())[ids].to(kwargs["inputs"].dtype)


def _nearest(kwargs: dict[str, Any], unlike: bool, p: int) -> Tensor:
    model, queries, references = kwargs["model"], kwargs["queries"], kwargs["references"]
    with torch.no_grad():
        same = model(references).argmax(-1)[None, :] == model(queries).argmax(-1)[:, None]
    distance = torch.cdist(queries.flatten(1).double(), references.flatten(1).double(), p=p)
    return torch.where(same if unlike else ~same, torch.inf, distance).argmin(1)


# --------------------------------------------------------------------------------------------
# New exercises (science): the model randomisation sanity check (Adebayo et al. 2018)
# --------------------------------------------------------------------------------------------


def grad_cam_map(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """A base method for the randomisation check: Grad-CAM (ReLU'd, ``"batch time"``), whose zeros
    make ties, so that the average-rank convention matters on every case."""
    features = model.features(inputs.detach()).detach().requires_grad_(True)
    logits = model.classifier(features.mean(-1))
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), features)
    return torch.relu((grad.mean(-1, keepdim=True) * features).sum(1)).detach()


def _randomisation_case(rng: np.random.Generator, dataset: str) -> dict[str, Any]:
    # GunPoint with a signed map (no ties: absolute values matter), BasicMotions with Grad-CAM
    # (ties at zero: average ranks matter). Targets are random, not the predicted class: a
    # submission that re-targets each randomised copy differs.
    case = _attribution_case(rng, dataset, batch=3)
    case.update(method=input_x_gradient if dataset == "gunpoint" else grad_cam_map, seed=int(rng.integers(0, 1000)))
    return case


def _ranks(values: Tensor, ordinal: bool) -> Tensor:
    if ordinal:
        return values.argsort(1).argsort(1).double()
    below = (values[:, None, :] < values[:, :, None]).sum(-1)
    equal = (values[:, None, :] == values[:, :, None]).sum(-1)
    return (below + (equal + 1) / 2).double()


def _similarity_probe(absolute: bool = True, ranks: str = "average", retarget: bool = False,
                      consecutive: bool = False) -> Callable[..., Tensor]:
    """Randomisation similarity with one convention changed (``ranks``: average, ordinal or none)."""
    from interplab.tsxai import cascading_randomisation

    def correlation(a: Tensor, b: Tensor) -> Tensor:
        a, b = (a.abs() if absolute else a).flatten(1), (b.abs() if absolute else b).flatten(1)
        if ranks == "none":
            ra, rb = a.double(), b.double()
        else:
            ra, rb = _ranks(a, ranks == "ordinal"), _ranks(b, ranks == "ordinal")
        ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
        return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))

    def probe(model, inputs, target, method, seed=0):
        trained = previous = method(model, inputs, target).detach()
        rows = []
        for _, randomised in cascading_randomisation(model, seed):
            with torch.no_grad():
                stage_target = randomised(inputs).argmax(-1) if retarget else target
            current = method(randomised, inputs, stage_target).detach()
            rows.append(correlation(previous if consecutive else trained, current))
            previous = current
        return torch.stack(rows).to(inputs.dtype)
    return probe


EXERCISES += [
    Exercise(
        id="tsxai.randomisation_similarity", make_case=both(_randomisation_case), call=per_dataset,
        probes=[
            Probe("signed", _similarity_probe(absolute=False),
                  "you ranked the signed maps; compare absolute values |map|, as the exercise states"),
            Probe("pearson", _similarity_probe(ranks="none"),
                  "you computed Pearson's correlation of the values; Spearman's is Pearson's correlation of the ranks"),
            Probe("ordinal_ranks", _similarity_probe(ranks="ordinal"),
                  "your ranks break ties by position; tied values get the average of the ranks they span (as scipy.stats.spearmanr)"),
            Probe("retarget", _similarity_probe(retarget=True),
                  "you explained the class each randomised copy predicts; explain the same target at every stage"),
            Probe("consecutive", _similarity_probe(consecutive=True),
                  "you compared each stage with the previous stage; compare every stage with the trained model's map"),
        ],
        hint="for each stage of cascading_randomisation(model, seed): Spearman (average ranks) of |map| against the trained model's |map|, same target",
    ),
]
