"""The time-series XAI assignment: data, zoo models, reference solutions, checks.

The reference solutions are the solution cells of ``assignments/tsxai/tsxai.py`` (executed here
with the master's locked setup cell). They are cross-checked against independent implementations:

- Captum 0.9 (``Saliency``, ``IntegratedGradients`` with ``method="riemann_middle"``,
  ``Occlusion``, ``FeatureAblation`` with a segment ``feature_mask``, ``LayerGradCam``) on the
  shipped zoo models, univariate and multivariate;
- completeness: IG's gap against Captum's convergence delta, and per segment for the grouped
  methods (a segment's attribution is the drop of a forward pass with that segment removed);
- a second, deliberately plain implementation of deletion/insertion AUC (numpy loops), and of
  comprehensiveness/sufficiency;
- TSR against a literal transcription of Ismail et al.'s Algorithm 1 (loops over t and i);
- the LIME surrogate against scikit-learn's weighted ``LinearRegression``;
- the model-randomisation check against Captum's ``Saliency`` on every stage and
  ``scipy.stats.spearmanr``.

Then every Exercise in ``checks.py`` passes against the reference and fails against each of its
probes with the probe's diagnosis, and the student version raises only NotImplementedError.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import jupytext
import numpy as np
import pytest
import torch

from interplab.checking import PUBLIC_SEED, judge, load_spec_module
from interplab.tsxai import DATA_DIR, load_dataset, random_attribution, segment_ids
from interplab.zoo import WEIGHTS_DIR, card, fcn_basicmotions, fcn_gunpoint

captum_attr = pytest.importorskip("captum.attr", reason="captum is in the test extra")

REPO = Path(__file__).resolve().parents[1]
MASTER = REPO / "assignments" / "tsxai" / "tsxai.py"
CHECKS = REPO / "assignments" / "tsxai" / "checks.py"
HIDDEN_SEED = 987654321
ZOO = {"gunpoint": fcn_gunpoint, "basicmotions": fcn_basicmotions}


def _namespace(student: bool = False) -> dict:
    """Execute the master's locked and solution cells (the student version: solutions stripped as
    nbgrader does, the body between the markers replaced by ``raise NotImplementedError()``)."""
    nb = jupytext.read(MASTER, fmt="py:percent")
    namespace: dict = {"__name__": "tsxai_master"}
    for cell in nb.cells:
        role = cell.metadata.get("role")
        if cell.cell_type != "code" or role not in ("locked", "solution"):
            continue
        source = cell.source
        if student and role == "solution":
            source = re.sub(r"( *)### BEGIN SOLUTION\n.*?### END SOLUTION",
                            lambda m: f"{m.group(1)}raise NotImplementedError()", source, flags=re.S)
        exec(compile(source, str(MASTER), "exec"), namespace)
    return namespace


@pytest.fixture(scope="module", autouse=True)
def _restore_torch_threads():
    """The master's setup cell pins torch to one thread (as graders want); undo it for other modules."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ref(_restore_torch_threads) -> dict:
    return _namespace()


@pytest.fixture(scope="module", params=["gunpoint", "basicmotions"])
def setting(request):
    """(model, inputs, target) for one zoo model: a few test series with *random* targets."""
    data = load_dataset(request.param)
    model = ZOO[request.param].load()
    gen = torch.Generator().manual_seed(0)
    inputs = data.X_test[:4] + 0.05 * torch.randn(data.X_test[:4].shape, generator=gen)
    target = torch.randint(0, data.n_classes, (4,), generator=gen)
    return model, inputs, target


# ------------------------------------------------------------------------------------------
# Data and zoo
# ------------------------------------------------------------------------------------------


def test_datasets_ship_offline_and_match_their_manifest():
    manifest = json.loads((DATA_DIR / "MANIFEST.json").read_text())
    for name, shapes in {"gunpoint": ((50, 1, 150), (150, 1, 150), 2),
                         "basicmotions": ((40, 6, 100), (40, 6, 100), 4)}.items():
        data = load_dataset(name)
        assert tuple(data.X_train.shape) == shapes[0] and tuple(data.X_test.shape) == shapes[1]
        assert data.X_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
        assert data.n_classes == shapes[2] and len(data.channel_names) == shapes[0][1]
        assert set(data.y_train.tolist()) == set(range(shapes[2]))
        entry = manifest["datasets"][name]
        assert hashlib.sha256((DATA_DIR / f"{name}.npz").read_bytes()).hexdigest() == entry["npz_sha256"]
        assert entry["shapes"]["X_test"] == list(shapes[1])
    assert manifest["network"].startswith("sockets disabled")


@pytest.mark.parametrize("name", ["fcn-gunpoint", "fcn-basicmotions"])
def test_zoo_accuracy_on_card_is_reproduced_by_shipped_weights(name):
    module = fcn_gunpoint if name == "fcn-gunpoint" else fcn_basicmotions
    model = module.load()
    data = load_dataset(module.CONFIG.dataset)
    with torch.no_grad():
        accuracy = (model(data.X_test).argmax(-1) == data.y_test).float().mean().item()
    metrics = card(name)["metrics"]
    assert round(accuracy, 4) == metrics["test_accuracy"]
    assert all(module.verify(model).values()), module.verify(model)
    assert (WEIGHTS_DIR / f"{name}.safetensors").stat().st_size < 10 * 2**20
    if name == "fcn-gunpoint":
        assert metrics["test_accuracy"] >= 0.97
    assert "shrunk" in card(name)["description"]  # the card says the widths were changed


def test_segment_ids_are_captum_feature_mask_layout():
    ids = segment_ids(2, 10, 3)
    assert ids.tolist() == [[0, 0, 0, 0, 1, 1, 1, 2, 2, 2], [3, 3, 3, 3, 4, 4, 4, 5, 5, 5]]
    with pytest.raises(ValueError):
        segment_ids(1, 5, 6)


def test_random_baseline_is_seeded():
    x = torch.zeros(2, 1, 30)
    assert torch.equal(random_attribution(None, x, seed=3), random_attribution(None, x, seed=3))
    assert not torch.equal(random_attribution(None, x, seed=3), random_attribution(None, x, seed=4))


# ------------------------------------------------------------------------------------------
# Cross-checks against Captum
# ------------------------------------------------------------------------------------------


def test_saliency_agrees_with_captum(ref, setting):
    model, x, t = setting
    for absolute in (True, False):
        expected = captum_attr.Saliency(model).attribute(x.clone().requires_grad_(), target=t, abs=absolute)
        torch.testing.assert_close(ref["saliency"](model, x, t, absolute=absolute), expected, rtol=1e-5, atol=1e-7)


def test_integrated_gradients_agrees_with_captum_and_completeness_holds(ref, setting):
    model, x, t = setting
    baselines = 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    ours = ref["integrated_gradients"](model, x, t, baselines=baselines, n_steps=24)
    theirs, delta = captum_attr.IntegratedGradients(model).attribute(
        x, baselines=baselines, target=t, n_steps=24, method="riemann_middle", return_convergence_delta=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    gap = ref["completeness_gap"](model, x, t, ours, baselines)
    torch.testing.assert_close(gap, delta.to(gap.dtype), rtol=1e-3, atol=1e-4)
    # With enough steps the attributions add up to f(x) - f(baseline) (logits of order 1-10).
    fine = ref["integrated_gradients"](model, x, t, baselines=baselines, n_steps=256)
    assert ref["completeness_gap"](model, x, t, fine, baselines).abs().max() < 0.05


@pytest.mark.parametrize("window,stride", [(10, 10), (12, 5), (7, 3)])
def test_occlusion_agrees_with_captum(ref, setting, window, stride):
    model, x, t = setting
    expected = captum_attr.Occlusion(model).attribute(x, sliding_window_shapes=(1, window), strides=(1, stride),
                                                      target=t, baselines=0.25)
    torch.testing.assert_close(ref["occlusion"](model, x, t, window, stride, baselines=0.25), expected,
                               rtol=1e-4, atol=1e-5)


def test_feature_ablation_agrees_with_captum(ref, setting):
    model, x, t = setting
    mask = segment_ids(x.shape[1], x.shape[2], 7)[None]
    expected = captum_attr.FeatureAblation(model).attribute(x, target=t, feature_mask=mask, baselines=-0.5)
    torch.testing.assert_close(ref["feature_ablation"](model, x, t, 7, baselines=-0.5), expected, rtol=1e-4, atol=1e-5)


def test_grad_cam_and_cam_agree_with_captum_layer_grad_cam(ref, setting):
    model, x, t = setting
    layer = captum_attr.LayerGradCam(model, model.blocks[-1])
    torch.testing.assert_close(ref["grad_cam"](model, x, t), layer.attribute(x, target=t, relu_attributions=True)[:, 0],
                               rtol=1e-4, atol=1e-6)
    # For a GAP network, CAM = T x (Grad-CAM without its ReLU).
    torch.testing.assert_close(ref["class_activation_map"](model, x, t) / x.shape[-1],
                               layer.attribute(x, target=t)[:, 0], rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------
# Completeness per segment for grouped methods
# ------------------------------------------------------------------------------------------


def _drop(model, x, t, mask, baseline):
    with torch.no_grad():
        full = model(x).gather(1, t[:, None])[:, 0]
        removed = model(torch.where(mask, torch.as_tensor(baseline), x)).gather(1, t[:, None])[:, 0]
    return full - removed


def test_grouped_methods_are_complete_per_segment(ref, setting):
    model, x, t = setting
    _, channels, length = x.shape
    ids = segment_ids(channels, length, 5)
    ablation = ref["feature_ablation"](model, x, t, 5, baselines=0.0)
    occlusion = ref["occlusion"](model, x, t, length // 5, length // 5, baselines=0.0)  # non-overlapping windows
    for g in range(channels * 5):
        mask = ids == g
        drop = _drop(model, x, t, mask, 0.0)
        # every element of the segment carries the segment's drop...
        torch.testing.assert_close(ablation[:, mask], drop[:, None].expand(-1, int(mask.sum())), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(occlusion[:, mask], drop[:, None].expand(-1, int(mask.sum())), rtol=1e-4, atol=1e-5)
        # ...so the segment mean (the per-segment total / segment size) is exactly that drop
        torch.testing.assert_close(ablation[:, mask].sum(1) / mask.sum(), drop, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------
# Second implementations
# ------------------------------------------------------------------------------------------


def _plain_curves(model, x, attributions, n_steps, baseline, ranking, output):
    """Deletion/insertion written the obvious way: numpy, one series and one step at a time."""
    xs = x.numpy().astype(np.float64)
    attr = attributions.numpy()
    base = np.broadcast_to(np.asarray(baseline, dtype=np.float64), xs.shape)
    results = {"deletion": [], "insertion": []}

    def value(series, target):
        logits = model(torch.tensor(series[None], dtype=torch.float32))[0].double().numpy()
        if output == "probability":
            e = np.exp(logits - logits.max())
            return (e / e.sum())[target]
        return logits[target]

    with torch.no_grad():
        for b in range(xs.shape[0]):
            target = int(model(x[b:b + 1]).argmax())
            scores = attr[b].ravel()
            scores = np.abs(scores) if ranking == "absolute" else scores
            order = sorted(range(scores.size), key=lambda i: (-scores[i], i))  # ties: earliest first
            for kind in results:
                curve = []
                for j in range(n_steps + 1):
                    chosen = order[: j * scores.size // n_steps]
                    if kind == "deletion":
                        series = xs[b].ravel().copy()
                        series[chosen] = base[b].ravel()[chosen]
                    else:
                        series = base[b].ravel().copy()
                        series[chosen] = xs[b].ravel()[chosen]
                    curve.append(value(series.reshape(xs[b].shape), target))
                results[kind].append(np.trapezoid(curve, dx=1.0 / n_steps))
    return {k: np.array(v) for k, v in results.items()}


@pytest.mark.parametrize("ranking,output,baseline", [("signed", "probability", 0.0), ("absolute", "logit", 0.7)])
def test_deletion_auc_agrees_with_a_plain_implementation(ref, setting, ranking, output, baseline):
    model, x, t = setting
    # CAM broadcast over channels gives exact ties on BasicMotions: the tie rule is exercised too.
    for attributions in (torch.randn(x.shape, generator=torch.Generator().manual_seed(2)),
                         ref["class_activation_map"](model, x, t)[:, None, :].expand_as(x).contiguous()):
        ours = ref["perturbation_curves"](model, x, attributions, n_steps=8, baselines=baseline, ranking=ranking,
                                          output=output)
        plain = _plain_curves(model, x, attributions, 8, baseline, ranking, output)
        np.testing.assert_allclose(ours["deletion_auc"].numpy(), plain["deletion"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ours["insertion_auc"].numpy(), plain["insertion"], rtol=1e-4, atol=1e-5)


def test_comprehensiveness_sufficiency_agree_with_a_plain_implementation(ref, setting):
    model, x, _ = setting
    attributions = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    percents = (3, 20, 50)
    ours = ref["comprehensiveness_sufficiency"](model, x, attributions, percents=percents, baselines=0.2,
                                                ranking="absolute", output="probability")
    with torch.no_grad():
        for b in range(x.shape[0]):
            probs = model(x[b:b + 1]).softmax(-1)[0]
            target = int(probs.argmax())
            scores = attributions[b].abs().flatten().tolist()
            order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
            comp, suff = [], []
            for p in percents:
                top = torch.zeros(len(scores), dtype=torch.bool)
                top[order[: p * len(scores) // 100]] = True
                top = top.reshape(x[b].shape)
                removed = torch.where(top, torch.tensor(0.2), x[b])
                kept = torch.where(top, x[b], torch.tensor(0.2))
                comp.append(probs[target] - model(removed[None]).softmax(-1)[0, target])
                suff.append(probs[target] - model(kept[None]).softmax(-1)[0, target])
            torch.testing.assert_close(ours["comprehensiveness"][b], torch.stack(comp).mean(), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(ours["sufficiency"][b], torch.stack(suff).mean(), rtol=1e-4, atol=1e-5)


def test_tsr_agrees_with_a_literal_algorithm_1(ref):
    model = fcn_basicmotions.load()
    x = load_dataset("basicmotions").X_test[5:6, :, 30:70]  # a crop: the literal loops are slow
    t = torch.tensor([2])
    base = ref["saliency"]
    ours = ref["temporal_saliency_rescaling"](model, x, t, base, baselines=0.0)
    R = base(model, x, t)
    time_relevance = torch.zeros(x.shape[-1])
    for step in range(x.shape[-1]):
        masked = x.clone()
        masked[:, :, step] = 0.0
        time_relevance[step] = (R - base(model, masked, t)).abs().sum()
    expected = torch.zeros_like(x)
    for step in range(x.shape[-1]):
        if time_relevance[step] > time_relevance.mean():
            for channel in range(x.shape[1]):
                masked = x.clone()
                masked[:, channel, step] = 0.0
                expected[0, channel, step] = time_relevance[step] * (R - base(model, masked, t)).abs().sum()
    torch.testing.assert_close(ours, expected, rtol=1e-3, atol=1e-4)
    assert (ours == 0).any() and (ours > 0).any()


def test_lime_agrees_with_sklearn_weighted_least_squares(ref, setting):
    from sklearn.linear_model import LinearRegression

    model, x, t = setting
    channels, length = x.shape[1:]
    n_segments = 5
    masks = torch.randint(0, 2, (80, channels * n_segments), generator=torch.Generator().manual_seed(3)).float()
    ours = ref["lime_segments"](model, x, t, n_segments, masks, baselines=0.0, kernel_width=0.25)
    ids = segment_ids(channels, length, n_segments)
    z = masks.double().numpy()
    weights = np.exp(-(1 - np.sqrt(z.sum(1) / z.shape[1])) ** 2 / 0.25**2)
    for b in range(x.shape[0]):
        perturbed = torch.where(masks[:, ids].bool(), x[b], torch.tensor(0.0))
        with torch.no_grad():
            y = model(perturbed).softmax(-1)[:, t[b]].double().numpy()
        fit = LinearRegression().fit(z, y, sample_weight=weights)
        expected = torch.from_numpy(fit.coef_)[ids].float()
        torch.testing.assert_close(ours[b], expected, rtol=1e-3, atol=1e-4)


def test_native_guide_counterfactuals_are_valid_and_minimal(ref):
    model = fcn_gunpoint.load()
    data = load_dataset("gunpoint")
    queries = data.X_test[:6]
    index = ref["nearest_unlike_neighbour"](model, queries, data.X_train)
    nuns = data.X_train[index]
    with torch.no_grad():
        assert (model(nuns).argmax(-1) != model(queries).argmax(-1)).all()
        distances = torch.cdist(queries.flatten(1), data.X_train.flatten(1))
        unlike = model(data.X_train).argmax(-1)[None] != model(queries).argmax(-1)[:, None]
    torch.testing.assert_close(distances.gather(1, index[:, None])[:, 0], distances.masked_fill(~unlike, np.inf).amin(1))
    importance = ref["class_activation_map"](model, nuns, model(nuns).argmax(-1))
    cf = ref["native_guide"](model, queries, nuns, importance)
    metrics = ref["counterfactual_metrics"](model, queries, cf["counterfactual"])
    assert metrics["validity"].all()
    for b in range(len(queries)):  # no shorter window (at its best place) flips the class
        start, length = int(cf["start"][b]), int(cf["length"][b])
        changed = (cf["counterfactual"][b] != queries[b]).any(0).nonzero()[:, 0]
        assert changed.numel() == 0 or (changed.min() >= start and changed.max() < start + length)
        candidates = []
        for shorter in range(1, length):
            sums = torch.nn.functional.conv1d(importance[b][None, None].double(), torch.ones(1, 1, shorter).double())[0, 0]
            s = int(sums.argmax())
            candidate = queries[b].clone()
            candidate[:, s:s + shorter] = nuns[b, :, s:s + shorter]
            candidates.append(candidate)
        if candidates:
            with torch.no_grad():
                assert (model(torch.stack(candidates)).argmax(-1) != model(nuns[b:b + 1]).argmax()).all()
    changed_fraction = (cf["counterfactual"] != queries).float().flatten(1).mean(1)
    torch.testing.assert_close(metrics["sparsity"], 1 - changed_fraction)
    assert (changed_fraction <= cf["length"] / queries.shape[-1] + 1e-6).all()
    torch.testing.assert_close(metrics["linf"], (cf["counterfactual"] - queries).abs().flatten(1).amax(1))


# ------------------------------------------------------------------------------------------
# The exercises: reference passes, each probe fails with its diagnosis, student version is empty
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checks(ref):
    module = load_spec_module(CHECKS)
    module.bind_reference(ref)
    yield module
    module.bind_reference(None)


def test_randomisation_similarity_agrees_with_captum_and_scipy(ref, setting):
    """The sanity check (Adebayo et al. 2018) against an independent pipeline: Captum's
    ``Saliency(abs=True)`` on every stage of the cascade and ``scipy.stats.spearmanr`` per example;
    the cascade is cumulative from the top, seeded, and leaves the trained model untouched."""
    from scipy.stats import spearmanr

    from interplab.tsxai import cascading_randomisation

    model, inputs, target = setting
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ours = ref["randomisation_similarity"](model, inputs, target, ref["saliency"], seed=3)
    trained = captum_attr.Saliency(model).attribute(inputs, target=target, abs=True).flatten(1)
    stages = list(cascading_randomisation(model, seed=3))
    assert [name for name, _ in stages] == ["classifier", "blocks.2", "blocks.1", "blocks.0"]
    for row, (name, randomised) in enumerate(stages):
        theirs = captum_attr.Saliency(randomised).attribute(inputs, target=target, abs=True).flatten(1)
        expected = [spearmanr(a.numpy(), b.numpy()).statistic for a, b in zip(trained, theirs)]
        np.testing.assert_allclose(ours[row].numpy(), expected, rtol=1e-5, atol=1e-6)
        # cumulative: the layers below the stage are the trained ones, the stage's own layer is not
        changed = {k for k, v in randomised.state_dict().items() if not torch.equal(v, before[k])}
        assert any(k.startswith(name) for k in changed) and all(
            k.startswith(tuple(n for n, _ in stages[:row + 1])) for k in changed), (name, changed)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    again = ref["randomisation_similarity"](model, inputs, target, ref["saliency"], seed=3)
    assert torch.equal(ours, again)


def _exercise_names():
    return [ex.id for ex in load_spec_module(CHECKS).EXERCISES]


def test_at_least_ten_graded_exercises_all_checked_in_the_master():
    ids = _exercise_names()
    assert len(ids) >= 10 and len(set(ids)) == len(ids)
    master = MASTER.read_text()
    for exercise_id in ids:
        assert f'check("{exercise_id}", {exercise_id.split(".")[1]})' in master


@pytest.mark.parametrize("exercise_id", _exercise_names())
def test_exercise_passes_reference_and_names_each_probe(ref, checks, exercise_id):
    exercise = next(ex for ex in checks.EXERCISES if ex.id == exercise_id)
    solution = ref[exercise_id.split(".")[1]]
    outputs = {"public": exercise.run(solution, "public", PUBLIC_SEED),
               "hidden": exercise.run(solution, "hidden", HIDDEN_SEED)}
    assert not [o for split in outputs.values() for o in split if "error" in o]
    verdict = judge(exercise, outputs, outputs)
    assert verdict.passed and verdict.fraction == 1.0
    # The probes on the public inputs (what self-study ships), all on record as in a real build:
    # each must fail, and the diagnosis must be its own (the first matching probe is named, so two
    # probes that give the same outputs would be caught here).
    public = {"public": outputs["public"]}
    probe_outputs = {p.name: {"public": exercise.run(p.fn, "public", PUBLIC_SEED)} for p in exercise.probes}
    for probe in exercise.probes:
        wrong = probe_outputs[probe.name]
        assert not [o for o in wrong["public"] if "error" in o], probe.name
        verdict = judge(exercise, wrong, public, probe_outputs, scored_split="public")
        assert not verdict.passed, f"probe {probe.name} passes"
        assert probe.message in verdict.message, (probe.name, verdict.message)


def test_student_version_raises_only_not_implemented(checks):
    student = _namespace(student=True)
    for exercise in checks.EXERCISES:
        outcomes = exercise.run(student[exercise.id.split(".")[1]], "public", PUBLIC_SEED)
        assert all(o.get("error", {}).get("ename") == "NotImplementedError" for o in outcomes), exercise.id
