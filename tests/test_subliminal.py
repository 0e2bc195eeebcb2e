"""The subliminal-learning assignment: library, reference figures, checks, judge, notebook.

The reference solutions are the bodies between ``### BEGIN/END SOLUTION`` in
``assignments/subliminal/subliminal.py``, executed here from the master itself (no copy to drift).
Independent implementations used as oracles:
- forward pass: a loop of ``torch.nn.Sequential(Linear, ReLU, Linear, ReLU, Linear)``, one per model;
- teacher loss: ``torch.nn.functional.cross_entropy`` per model on the class logits;
- distillation loss: ``torch.nn.functional.kl_div`` per model (the library computes it by hand);
- digit accuracy: ``sklearn.metrics.accuracy_score`` per model;
- one-step inner product: ``torch.func.grad`` + ``functional_call`` on one ``nn.Sequential`` per model;
- the judge's numpy forward pass: the torch forward pass.
"""
from __future__ import annotations

import time
from pathlib import Path

import jupytext
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score
from torch import nn

from interplab import subliminal as sl
from interplab.checking import PUBLIC_SEED, judge, load_spec_module

ROOT = Path(__file__).resolve().parents[1]
MASTER = ROOT / "assignments" / "subliminal" / "subliminal.py"
CHECKS = load_spec_module(ROOT / "assignments" / "subliminal" / "checks.py")
EXERCISES = {ex.id: ex for ex in CHECKS.EXERCISES}
HIDDEN_SEED = 424242



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The models are tiny: one thread is faster than two, and much faster on a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sol() -> dict:
    """The master's setup cell and solution cells, executed in one namespace."""
    nb = jupytext.read(MASTER, fmt="py:percent")
    namespace: dict = {}
    for cell in nb.cells:
        meta = cell.metadata
        if cell.cell_type == "code" and (meta.get("role") == "solution" or meta.get("grade_id") == "setup"):
            exec(compile(cell.source, f"{MASTER.name}:{meta.get('grade_id')}", "exec"), namespace)
    return namespace


def _mlps(n_models=3, n_aux=5, hidden=16, seed=0, dtype=torch.float32):
    return sl.init_mlps(n_models, n_aux, hidden, torch.Generator().manual_seed(seed), dtype)


def _sequential(params: dict, i: int) -> nn.Sequential:
    w1, w2, w3 = (params[f"W{k}"][i] for k in (1, 2, 3))
    net = nn.Sequential(nn.Linear(*w1.shape), nn.ReLU(), nn.Linear(*w2.shape), nn.ReLU(), nn.Linear(*w3.shape))
    net = net.to(w1.dtype)
    with torch.no_grad():
        for layer, k in zip((net[0], net[2], net[4]), (1, 2, 3)):
            layer.weight.copy_(params[f"W{k}"][i].T)  # nn.Linear stores (out, in)
            layer.bias.copy_(params[f"b{k}"][i])
    return net


# --------------------------------------------------------------------------------------------
# Data and library, cross-checked against independent implementations
# --------------------------------------------------------------------------------------------


def test_digits_are_bundled_scaled_and_split_once():
    split = sl.load_digits_split()
    assert split.x_train.shape == (1257, 64) and split.x_test.shape == (540, 64)
    assert split.x_train.min() == -1.0 and split.x_train.max() == 1.0
    assert sorted(set(split.y_test.tolist())) == list(range(10))
    assert sl.load_digits_split() is split  # cached, read-only
    assert not split.x_test.flags.writeable


def test_forward_matches_a_loop_of_nn_sequential(sol):
    params = _mlps()
    x = torch.rand(7, 64) * 2 - 1
    expected = torch.stack([_sequential(params, i)(x) for i in range(3)]).detach()
    torch.testing.assert_close(sl.mlp_forward(params, x), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sol["mlp_forward"](params, x), expected, rtol=1e-5, atol=1e-6)
    # One batch per model gives the same as the shared batch repeated.
    torch.testing.assert_close(sl.mlp_forward(params, x.expand(3, -1, -1)), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sl.numpy_forward({k: v.numpy() for k, v in params.items()}, x.numpy()),
                               expected.numpy(), rtol=1e-5, atol=1e-5)


def test_losses_and_accuracy_match_torch_and_sklearn(sol):
    g = torch.Generator().manual_seed(1)
    logits, other = torch.randn(4, 9, 17, generator=g), torch.randn(4, 9, 17, generator=g)
    labels = torch.randint(0, 10, (9,), generator=g)
    expected = torch.stack([F.cross_entropy(logits[i, :, :10], labels) for i in range(4)])
    torch.testing.assert_close(sl.teacher_loss(logits, labels), expected)
    torch.testing.assert_close(sol["teacher_loss"](logits, labels), expected)
    for on, cols in (("aux", slice(10, None)), ("all", slice(None))):
        kl = torch.stack([F.kl_div(torch.log_softmax(logits[i, :, cols], -1), torch.log_softmax(other[i, :, cols], -1),
                                   reduction="batchmean", log_target=True) for i in range(4)])
        torch.testing.assert_close(sl.distillation_loss(logits, other, on=on), kl)
        torch.testing.assert_close(sol["distillation_loss"](logits, other, on=on), kl)
    params = _mlps(n_aux=8)
    split = sl.load_digits_split()
    x, y = torch.from_numpy(split.x_test[:100].copy()), torch.from_numpy(split.y_test[:100].copy())
    predictions = sl.mlp_forward(params, x)[..., :10].argmax(-1)
    expected = torch.tensor([accuracy_score(y.numpy(), predictions[i].numpy()) for i in range(3)], dtype=torch.float32)
    torch.testing.assert_close(sl.digit_accuracy(params, x, y), expected)
    torch.testing.assert_close(sol["digit_accuracy"](params, x, y), expected)


def _one_step_torch_func(teacher_init, student_init, x, y, noise, teacher_lr, student_lr):
    """One model at a time, with nn.Sequential and torch.func: no batching, no shared code."""
    out = []
    for i in range(teacher_init["W1"].shape[0]):
        t_net, s_net = _sequential(teacher_init, i), _sequential(student_init, i)
        t_params = {k: v.detach() for k, v in t_net.named_parameters()}
        s_params = {k: v.detach() for k, v in s_net.named_parameters()}

        def t_loss(p):
            return F.cross_entropy(torch.func.functional_call(t_net, p, (x,))[:, :10], y)

        t_step = {k: -teacher_lr * g for k, g in torch.func.grad(t_loss)(t_params).items()}
        target = torch.func.functional_call(t_net, {k: t_params[k] + t_step[k] for k in t_params}, (noise,))[:, 10:]

        def s_loss(p):
            s_aux = torch.func.functional_call(s_net, p, (noise,))[:, 10:]
            return F.kl_div(torch.log_softmax(s_aux, -1), torch.log_softmax(target, -1), reduction="batchmean",
                            log_target=True)

        s_step = {k: -student_lr * g for k, g in torch.func.grad(s_loss)(s_params).items()}
        out.append(sum((s_step[k] * t_step[k]).sum() for k in t_step))
    return torch.stack(out).detach()


def test_one_step_inner_product_matches_torch_func(sol):
    t_init, o_init = _mlps(dtype=torch.float64, seed=2), _mlps(dtype=torch.float64, seed=3)
    split = sl.load_digits_split()
    x, y = torch.from_numpy(split.x_train[:32].astype(np.float64)), torch.from_numpy(split.y_train[:32].copy())
    noise = sl.uniform_noise(32, torch.Generator().manual_seed(4), torch.float64)
    for student in (t_init, o_init):
        expected = _one_step_torch_func(t_init, student, x, y, noise, 0.3, 0.2)
        torch.testing.assert_close(sl.one_step_inner_product(t_init, student, x, y, noise, 0.3, 0.2), expected,
                                   rtol=1e-9, atol=1e-15)
        torch.testing.assert_close(sol["one_step_inner_product"](t_init, student, x, y, noise, 0.3, 0.2), expected,
                                   rtol=1e-9, atol=1e-15)


def test_one_step_is_non_negative_only_for_a_shared_init():
    signs = sl.inner_product_signs(64, hidden=32, seed=5)
    assert (signs["shared"] >= 0).all()
    assert (signs["different"] < 0).any() and (signs["different"] > 0).any()


def test_distill_is_vectorised_models_do_not_interact():
    """Training models 0..3 together gives model 0 what training it alone gives."""
    x_train, y_train, _, _ = sl.digits_tensors()
    init = _mlps(n_models=4, n_aux=4, hidden=16, seed=6)
    teachers = sl.train_teachers(init, x_train, y_train, 1, 3e-3, 64, torch.Generator().manual_seed(0))
    alone = sl.train_teachers({k: v[:1] for k, v in init.items()}, x_train, y_train, 1, 3e-3, 64,
                              torch.Generator().manual_seed(0))
    for k in sl.LAYERS:
        torch.testing.assert_close(teachers[k][:1], alone[k], rtol=1e-4, atol=1e-5)
    students = sl.distill(teachers, init, 20, 3e-3, 16, torch.Generator().manual_seed(1))
    student0 = sl.distill({k: v[:1] for k, v in teachers.items()}, {k: v[:1] for k, v in init.items()}, 20, 3e-3, 16,
                          torch.Generator().manual_seed(1))
    for k in sl.LAYERS:
        torch.testing.assert_close(students[k][:1], student0[k], rtol=1e-4, atol=1e-5)
        assert torch.equal(init[k], _mlps(n_models=4, n_aux=4, hidden=16, seed=6)[k])  # inputs untouched


# --------------------------------------------------------------------------------------------
# Reference figures: the shipped card, and the thresholds reproduced on fewer seeds
# --------------------------------------------------------------------------------------------


def test_shipped_card_meets_the_thresholds():
    card = sl.load_card()
    assert card["recipe"] == "python -m interplab.subliminal --card"
    assert all(card["passes"].values()), card["passes"]
    assert sl.card_passes(card["figures"]) == card["passes"]
    f = card["figures"]
    assert f["teacher_m10"] >= 0.95 and f["shared_m10"] >= 0.6 and f["different_m10"] <= 0.15 and f["gap_m3"] >= 0.15
    assert f["one_step_shared_fraction_nonnegative"] == 1.0 and f["one_step_different_fraction_nonnegative"] < 1.0
    # The all-logits control transfers to both initialisations.
    assert f["shared_all_logits_m10"] > 0.9 and f["different_all_logits_m10"] > 0.9


def test_library_reproduces_the_card_thresholds_on_fewer_seeds():
    started = time.perf_counter()
    m10 = sl.run_experiment(8, sl.SubliminalConfig(n_aux=10), seed=1, controls=False)
    m3 = sl.run_experiment(8, sl.SubliminalConfig(n_aux=3), seed=1, controls=False)
    figures = {"teacher_m10": m10["teacher"].mean(), "shared_m10": m10["shared"].mean(),
               "different_m10": m10["different"].mean(), "gap_m3": m3["shared"].mean() - m3["different"].mean()}
    assert all(sl.card_passes(figures).values()), figures
    print(f"8 seeds at m=10 and m=3: {time.perf_counter() - started:.0f} s")  # measured, not asserted


def test_card_partial_sharing_and_single_logit_claims():
    """The claims of sections 6, 6b and 8: which shared layers carry the trait (32 seeds), and one
    auxiliary logit carries some of it under a squared error although the softmax KL sees nothing."""
    card = sl.load_card()
    sharing = {name: stats["mean"] for name, stats in card["sharing_m10"].items()}
    assert sharing["all"] == card["per_m"]["10"]["shared"]["mean"]  # the same students as the main figure
    assert sharing["hidden only"] < 0.12 and abs(sharing["hidden only"] - sharing["none"]) < 0.03  # 0.090 vs 0.099
    assert sharing["head only"] > sharing["hidden only"] + 0.08  # 0.217 vs 0.090
    assert sharing["all"] > sharing["head only"] + 0.3  # 0.696 vs 0.217
    single = card["single_logit_squared_error"]
    assert single["all"]["mean"] > single["none"]["mean"] + 0.08  # 0.244 vs 0.112
    assert card["per_m"]["1"]["shared"]["mean"] < 0.15  # KL at m = 1: no gradient, chance (0.094)


def test_squared_error_has_a_gradient_with_one_logit_where_the_kl_has_none():
    generator = torch.Generator().manual_seed(0)
    teacher, student = sl.init_mlps(2, 1, 16, generator), sl.init_mlps(2, 1, 16, generator)
    noise = sl.uniform_noise(32, generator)
    target = sl.mlp_forward(teacher, noise)
    for loss_fn, has_gradient in ((sl.distillation_loss, False), (sl.squared_error_loss, True)):
        params = sl.clone_params(student, requires_grad=True)
        grads = torch.autograd.grad(loss_fn(sl.mlp_forward(params, noise), target).sum(), list(params.values()),
                                    allow_unused=True)
        total = sum(float(g.abs().sum()) for g in grads if g is not None)
        assert (total > 0) == has_gradient, (loss_fn.__name__, total)


def test_mixed_init_takes_each_layer_from_the_right_side():
    generator = torch.Generator().manual_seed(0)
    shared, different = sl.init_mlps(3, 10, 8, generator), sl.init_mlps(3, 10, 8, generator)
    for name, layers in sl.SHARING.items():
        mixed = sl.mixed_init(shared, different, layers)
        for k in sl.LAYERS:
            assert torch.equal(mixed[k], (shared if k in layers else different)[k]), (name, k)


def test_library_reproduces_the_partial_sharing_ordering_on_fewer_seeds():
    result = sl.run_sharing_experiment(8, seed=0, sharing=("head only", "hidden only"))
    assert result["hidden only"].mean() < 0.16  # measured 0.092
    assert result["head only"].mean() > result["hidden only"].mean() + 0.05  # measured 0.213


# --------------------------------------------------------------------------------------------
# Every exercise: the reference passes, every probe fails and is named
# --------------------------------------------------------------------------------------------

_OUTPUTS: dict = {}
_PROBE_OUTPUTS: dict = {}
# What the judge itself says about a probe of the training exercise (a real student's weights never
# equal a probe's, so there the judge's message, not the probe match, must name the mistake).
JUDGE_SAYS = {"all_logits": "Distil on the auxiliary logits only", "untrained": "did it train",
              "copies_teacher": "teacher's own function"}


def _run(exercise, fn) -> dict:
    return {"public": exercise.run(fn, "public", PUBLIC_SEED), "hidden": exercise.run(fn, "hidden", HIDDEN_SEED)}


def _reference(exercise_id: str, sol) -> dict:
    if exercise_id not in _OUTPUTS:
        _OUTPUTS[exercise_id] = _run(EXERCISES[exercise_id], sol[exercise_id.split(".")[1]])
    return _OUTPUTS[exercise_id]


def test_at_least_six_graded_exercises_each_with_a_test_cell():
    nb = jupytext.read(MASTER, fmt="py:percent")
    tests = [c.source for c in nb.cells if c.metadata.get("role") == "test"]
    assert len(EXERCISES) >= 6
    for exercise_id in EXERCISES:
        assert sum(f'check("{exercise_id}"' in t for t in tests) == 1, exercise_id


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_reference_passes_its_own_check(exercise_id, sol):
    refs = _reference(exercise_id, sol)
    for split in ("public", "hidden"):
        assert all("output" in o for o in refs[split]), refs[split]
    verdict = judge(EXERCISES[exercise_id], refs, refs)
    assert verdict.passed and verdict.fraction == 1.0, verdict.message


@pytest.mark.parametrize("exercise_id,probe_name",
                         [(ex.id, p.name) for ex in CHECKS.EXERCISES for p in ex.probes])
def test_each_probe_fails_and_is_named(exercise_id, probe_name, sol):
    exercise = EXERCISES[exercise_id]
    probe = next(p for p in exercise.probes if p.name == probe_name)
    refs = _reference(exercise_id, sol)
    if exercise_id not in _PROBE_OUTPUTS:
        _PROBE_OUTPUTS[exercise_id] = {p.name: _run(exercise, p.fn) for p in exercise.probes}
    probe_outputs = _PROBE_OUTPUTS[exercise_id]
    verdict = judge(exercise, probe_outputs[probe_name], refs, probe_outputs)
    assert not verdict.passed and verdict.fraction < 1.0, verdict.message
    assert probe.message in verdict.message, verdict.message
    if exercise.judge is not None:
        assert JUDGE_SAYS[probe_name] in verdict.message, verdict.message


# --------------------------------------------------------------------------------------------
# The judge of the distillation exercise, on the grader's side
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def distill_reference(sol):
    outputs = _reference("subliminal.distill", sol)
    from interplab.checking import decode
    return decode(outputs["public"][0]["output"])


def test_judge_scores_the_reference_with_accuracies_computed_on_its_side(distill_reference):
    ok, message = CHECKS.judge_distill(distill_reference, distill_reference)
    assert ok, message
    shared = float(sl.numpy_accuracy(distill_reference["shared"]).mean())
    different = float(sl.numpy_accuracy(distill_reference["different"]).mean())
    assert shared >= CHECKS.SHARED_MIN and different <= CHECKS.DIFFERENT_MAX
    assert f"{shared:.2f}" in message and f"{different:.2f}" in message


def test_judge_rejects_the_teachers_own_weights(distill_reference):
    case = EXERCISES["subliminal.distill"].cases("public", PUBLIC_SEED)[0]
    teacher = {k: v.numpy().copy() for k, v in case["teacher"].items()}
    copied = dict(distill_reference, shared=teacher, different=teacher)
    ok, message = CHECKS.judge_distill(copied, distill_reference)
    assert not ok and "teacher's own function" in message
    # A lightly perturbed copy is still the teacher.
    rng = np.random.default_rng(0)
    nudged = {k: v + rng.normal(0, 1e-4, v.shape).astype(np.float32) for k, v in teacher.items()}
    ok, message = CHECKS.judge_distill(dict(distill_reference, shared=nudged), distill_reference)
    assert not ok and "teacher's own function" in message
    # The teacher only as the shared-init student (different-init one honest) is caught too.
    ok, message = CHECKS.judge_distill(dict(distill_reference, shared=teacher), distill_reference)
    assert not ok and "shared-init student computes" in message


def test_judge_rejects_untrained_students(distill_reference):
    case = EXERCISES["subliminal.distill"].cases("public", PUBLIC_SEED)[0]
    shared_init = {k: v.numpy().copy() for k, v in case["shared_init"].items()}
    different_init = {k: v.numpy().copy() for k, v in case["different_init"].items()}
    # An untrained different-init student has the right (chance) accuracy: only the KL check catches it.
    ok, message = CHECKS.judge_distill(dict(distill_reference, different=different_init), distill_reference)
    assert not ok and "different-init student's auxiliary logits are no closer" in message
    ok, message = CHECKS.judge_distill(dict(distill_reference, shared=shared_init), distill_reference)
    assert not ok and "shared-init student's auxiliary logits are no closer" in message


def test_judge_rejects_malformed_weights_with_a_clear_message(distill_reference):
    shared = dict(distill_reference["shared"])
    del shared["b3"]
    ok, message = CHECKS.judge_distill(dict(distill_reference, shared=shared), distill_reference)
    assert not ok and "missing" in message
    wrong_shape = dict(distill_reference["shared"], W1=distill_reference["shared"]["W1"][:1])
    ok, message = CHECKS.judge_distill(dict(distill_reference, shared=wrong_shape), distill_reference)
    assert not ok and "shape" in message
    nan = dict(distill_reference["different"], W2=np.full_like(distill_reference["different"]["W2"], np.nan))
    ok, message = CHECKS.judge_distill(dict(distill_reference, different=nan), distill_reference)
    assert not ok and "NaN" in message
    ok, message = CHECKS.judge_distill("not weights", distill_reference)
    assert not ok
