"""Checks of the subliminal-learning assignment.

Five exercises are compared value by value with the reference solution (seeded random MLPs,
logits, digits). ``subliminal.distill`` is a training exercise: the kernel returns the distilled
weights as arrays and :func:`judge_distill` scores them in the grader's process (held-out digit
accuracy of the shared-init and different-init students, computed there, plus checks that the
students were trained and are not the teacher).
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from interplab import subliminal as sl
from interplab.checking import Exercise, Probe, torch_generator

ASSIGNMENT = "subliminal"
Params = sl.Params


def _random_mlps(rng: np.random.Generator, dtype: torch.dtype = torch.float32, n_models: int | None = None,
                 n_aux: int | None = None, hidden: int | None = None) -> Params:
    n_models = n_models or int(rng.integers(1, 5))
    n_aux = n_aux or int(rng.integers(2, 13))
    hidden = hidden or int(rng.integers(8, 33))
    return sl.init_mlps(n_models, n_aux, hidden, torch_generator(rng), dtype)


def _heldout_sample(rng: np.random.Generator, n: int, dtype: torch.dtype = torch.float32):
    split = sl.load_digits_split()
    idx = rng.choice(len(split.x_test), size=n, replace=False)
    return torch.tensor(split.x_test[idx], dtype=dtype), torch.tensor(split.y_test[idx])


def _random_logits(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch_generator(rng)
    shape = (int(rng.integers(1, 5)), int(rng.integers(4, 33)), sl.N_CLASSES + int(rng.integers(2, 13)))
    return torch.randn(*shape, generator=g) * 2.0, torch.randn(*shape, generator=g) * 2.0


# --------------------------------------------------------------------------------------------
# 1. mlp_forward
# --------------------------------------------------------------------------------------------


def _case_forward(rng: np.random.Generator) -> dict[str, Any]:
    params = _random_mlps(rng)
    x = torch.rand(int(rng.integers(3, 17)), sl.D_IN, generator=torch_generator(rng)) * 2 - 1
    return {"params": params, "x": x}


def _forward_relu_on_logits(params: Params, x: torch.Tensor) -> torch.Tensor:
    return torch.relu(sl.mlp_forward(params, x))


def _forward_no_bias(params: Params, x: torch.Tensor) -> torch.Tensor:
    return sl.mlp_forward({k: (torch.zeros_like(v) if k.startswith("b") else v) for k, v in params.items()}, x)


def _forward_first_model_only(params: Params, x: torch.Tensor) -> torch.Tensor:
    first = {k: v[:1].expand_as(v) for k, v in params.items()}
    return sl.mlp_forward(first, x)


FORWARD = Exercise(
    id="subliminal.mlp_forward",
    make_case=_case_forward,
    probes=[
        Probe("relu_on_logits", _forward_relu_on_logits,
              "you applied ReLU after the last layer too; logits must be able to go negative."),
        Probe("no_bias", _forward_no_bias, "you left out the biases b1, b2, b3."),
        Probe("first_model_only", _forward_first_model_only,
              "every model used the first model's weights; contract over the model axis "
              "(einsum 'bi,mio->mbo', then 'mbi,mio->mbo')."),
    ],
    hint="x is (batch, 64) and shared by all models; after the first layer the activations carry a model axis.",
)


# --------------------------------------------------------------------------------------------
# 2. digit_accuracy
# --------------------------------------------------------------------------------------------


def _case_accuracy(rng: np.random.Generator) -> dict[str, Any]:
    params = _random_mlps(rng, n_models=int(rng.integers(2, 6)), n_aux=int(rng.integers(6, 16)))
    x, y = _heldout_sample(rng, 80)
    return {"params": params, "x": x, "y": y}


def _call_accuracy(fn, case: dict[str, Any]) -> torch.Tensor:
    return torch.as_tensor(fn(**case), dtype=torch.float32)


def _accuracy_all_logits(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (sl.mlp_forward(params, x).argmax(-1) == y).float().mean(-1)


def _accuracy_count(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return sl.digit_accuracy(params, x, y) * len(y)


ACCURACY = Exercise(
    id="subliminal.digit_accuracy",
    make_case=_case_accuracy,
    call=_call_accuracy,
    probes=[
        Probe("argmax_over_all_logits", _accuracy_all_logits,
              "you took the argmax over all logits; only the first 10 are digit classes, the auxiliary "
              "logits are not predictions."),
        Probe("count_not_fraction", _accuracy_count, "return the fraction of correct predictions, not their count."),
    ],
    hint="class_logits = logits[..., :10]; compare their argmax with y and average over the batch axis.",
)


# --------------------------------------------------------------------------------------------
# 3. teacher_loss
# --------------------------------------------------------------------------------------------


def _case_teacher_loss(rng: np.random.Generator) -> dict[str, Any]:
    logits, _ = _random_logits(rng)
    labels = torch.from_numpy(rng.integers(0, sl.N_CLASSES, size=logits.shape[1]))
    return {"logits": logits, "labels": labels}


def _teacher_loss_all_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    target = labels.expand(logits.shape[0], -1)
    return F.cross_entropy(logits.transpose(1, 2), target, reduction="none").mean(-1)


def _teacher_loss_summed(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return sl.teacher_loss(logits, labels) * logits.shape[1]


def _teacher_loss_scalar(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return sl.teacher_loss(logits, labels).mean()


TEACHER_LOSS = Exercise(
    id="subliminal.teacher_loss",
    make_case=_case_teacher_loss,
    probes=[
        Probe("softmax_over_all_logits", _teacher_loss_all_logits,
              "your softmax ran over all logits, auxiliary ones included; the teacher's loss sees the "
              "10 class logits only (that is what leaves the auxiliary logits 'untrained')."),
        Probe("summed_over_batch", _teacher_loss_summed, "average the cross-entropy over the batch, do not sum it."),
        Probe("mean_over_models", _teacher_loss_scalar,
              "return one loss per model, shape (models,), not their mean: the models train independently."),
    ],
    hint="F.cross_entropy wants the class axis second: logits[..., :10].transpose(1, 2), with labels expanded to (models, batch).",
)


# --------------------------------------------------------------------------------------------
# 4. distillation_loss
# --------------------------------------------------------------------------------------------


def _case_distillation_loss(rng: np.random.Generator) -> dict[str, Any]:
    student, teacher = _random_logits(rng)
    return {"student_logits": student, "teacher_logits": teacher}


def _call_distillation_loss(fn, case: dict[str, Any]) -> dict[str, Any]:
    return {on: fn(case["student_logits"], case["teacher_logits"], on=on) for on in ("aux", "all")}


def _kl_reversed(student_logits, teacher_logits, on="aux"):
    return sl.distillation_loss(teacher_logits, student_logits, on=on)


def _kl_class_logits(student_logits, teacher_logits, on="aux"):
    if on == "aux":
        cls = slice(0, sl.N_CLASSES)
        return sl.distillation_loss(student_logits[..., cls], teacher_logits[..., cls], on="all")
    return sl.distillation_loss(student_logits, teacher_logits, on=on)


def _kl_summed(student_logits, teacher_logits, on="aux"):
    return sl.distillation_loss(student_logits, teacher_logits, on=on) * student_logits.shape[1]


def _kl_ignores_on(student_logits, teacher_logits, on="aux"):
    return sl.distillation_loss(student_logits, teacher_logits, on="aux")


DISTILLATION_LOSS = Exercise(
    id="subliminal.distillation_loss",
    make_case=_case_distillation_loss,
    call=_call_distillation_loss,
    probes=[
        Probe("reversed_kl", _kl_reversed,
              "you computed KL(student || teacher); distillation matches the teacher's distribution: "
              "KL(teacher || student) = sum p_teacher (log p_teacher - log p_student)."),
        Probe("class_logits", _kl_class_logits,
              "with on='aux' you used the class logits (the first 10); the auxiliary logits are logits[..., 10:]."),
        Probe("summed_over_batch", _kl_summed, "average the KL over the batch, do not sum it."),
        Probe("ignores_on", _kl_ignores_on, "on='all' must compare the softmax over every logit (the control)."),
    ],
    hint="torch.log_softmax both sides on the selected logits, then (p_t * (log p_t - log p_s)).sum(-1).mean(-1).",
)


# --------------------------------------------------------------------------------------------
# 5. distill (judged on the returned weights)
# --------------------------------------------------------------------------------------------

DISTILL_MODELS = 4
DISTILL_CONFIG = sl.SubliminalConfig()  # hidden 64, m = 10, 600 Adam steps at 3e-3 on 64 noise images

# Thresholds on the mean over the case's 4 models (reference: about 0.7 shared, 0.1 different).
SHARED_MIN = 0.45
DIFFERENT_MAX = 0.25
GAP_MIN = 0.25
KL_RATIO_MAX = 0.5  # a trained student's aux-logit KL to the teacher, relative to its initialisation's


@functools.lru_cache(maxsize=8)
def _teachers(seed: int) -> tuple[Params, Params, Params]:
    cfg = DISTILL_CONFIG
    x_train, y_train, _, _ = sl.digits_tensors()
    generator = torch.Generator().manual_seed(seed)
    shared_init = sl.init_mlps(DISTILL_MODELS, cfg.n_aux, cfg.hidden, generator)
    different_init = sl.init_mlps(DISTILL_MODELS, cfg.n_aux, cfg.hidden, generator)
    teacher = sl.train_teachers(shared_init, x_train, y_train, cfg.teacher_epochs, cfg.teacher_lr,
                                cfg.teacher_batch, generator)
    return teacher, shared_init, different_init


def _case_distill(rng: np.random.Generator) -> dict[str, Any]:
    seed = int(rng.integers(0, 2**31))
    teacher, shared_init, different_init = _teachers(seed)
    return {"teacher": teacher, "shared_init": shared_init, "different_init": different_init,
            "n_steps": DISTILL_CONFIG.distill_steps, "lr": DISTILL_CONFIG.distill_lr,
            "noise_batch": DISTILL_CONFIG.noise_batch, "seed": seed + 1}


def _as_numpy_params(params: Any, what: str) -> dict[str, np.ndarray]:
    if not isinstance(params, dict) or set(params) != set(sl.LAYERS):
        raise TypeError(f"{what} must return a dict with keys {list(sl.LAYERS)}")
    return {k: params[k].detach().cpu().float().numpy() if isinstance(params[k], torch.Tensor)
            else np.asarray(params[k], dtype=np.float32) for k in sl.LAYERS}


def _call_distill(fn, case: dict[str, Any]) -> dict[str, Any]:
    """Both students train in one call (a batch of 2 x 4 models), each against its own copy of the
    teacher; the teachers' and initialisations' logits on the judge's fixed noise ride along, so the
    judge can tell a trained student from an untrained one or from the teacher itself."""
    teacher = sl.stack_params(case["teacher"], case["teacher"])
    init = sl.stack_params(case["shared_init"], case["different_init"])
    trained = fn(sl.clone_params(teacher), sl.clone_params(init), n_steps=case["n_steps"], lr=case["lr"],
                 noise_batch=case["noise_batch"], generator=torch.Generator().manual_seed(case["seed"]))
    weights = _as_numpy_params(trained, "distill")
    shared = {k: v[:DISTILL_MODELS] for k, v in weights.items()}
    different = {k: v[DISTILL_MODELS:] for k, v in weights.items()}
    x = sl.judge_inputs()
    as_np = lambda p: {k: v.numpy() for k, v in p.items()}  # noqa: E731
    return {
        "shared": shared,
        "different": different,
        "teacher_logits": sl.numpy_forward(as_np(case["teacher"]), x).astype(np.float32),
        "shared_init_logits": sl.numpy_forward(as_np(case["shared_init"]), x).astype(np.float32),
        "different_init_logits": sl.numpy_forward(as_np(case["different_init"]), x).astype(np.float32),
    }


def _weights_problem(output: Any, reference: dict[str, Any], kind: str) -> str | None:
    weights = output.get(kind) if isinstance(output, dict) else None
    if not isinstance(weights, dict) or set(weights) != set(sl.LAYERS):
        return f"the {kind}-init student's weights are missing (expected keys {list(sl.LAYERS)})"
    for k in sl.LAYERS:
        value, expected = weights[k], reference[kind][k]
        if not isinstance(value, np.ndarray) or value.shape != expected.shape:
            return f"{kind}-init student: {k} should have shape {expected.shape}, got {getattr(value, 'shape', type(value).__name__)}"
        if not np.all(np.isfinite(value)):
            return f"{kind}-init student: {k} contains NaN or inf (is the learning rate right?)"
    return None


def judge_distill(output: Any, reference: Any) -> tuple[bool, str]:
    """Score the returned weights on held-out digits, in the grader's process.

    The teacher's and the initialisations' logits come from ``reference`` (the build's own run on
    the same case), never from the submission."""
    for kind in ("shared", "different"):
        problem = _weights_problem(output, reference, kind)
        if problem:
            return False, problem
    x = sl.judge_inputs()
    teacher_logits = reference["teacher_logits"].astype(np.float64)
    logits = {kind: sl.numpy_forward(output[kind], x) for kind in ("shared", "different")}
    scale = np.sqrt((teacher_logits ** 2).mean())
    for kind in ("shared", "different"):
        if np.sqrt(((logits[kind] - teacher_logits) ** 2).mean()) < 0.02 * scale:
            return False, (f"the {kind}-init student computes (almost) the teacher's own function: return the "
                           "student trained from its own initialisation, not a copy of the teacher.")
    for kind in ("shared", "different"):
        kl_init = sl.numpy_aux_kl(teacher_logits, reference[f"{kind}_init_logits"].astype(np.float64)).mean()
        kl = sl.numpy_aux_kl(teacher_logits, logits[kind]).mean()
        if not kl <= KL_RATIO_MAX * kl_init:
            return False, (f"the {kind}-init student's auxiliary logits are no closer to the teacher's than at "
                           f"initialisation (KL {kl:.3g} vs {kl_init:.3g} before training): did it train, on the "
                           "auxiliary logits, with the optimiser stepping the student's parameters?")
    accuracy = {kind: float(sl.numpy_accuracy(output[kind]).mean()) for kind in ("shared", "different")}
    shared, different = accuracy["shared"], accuracy["different"]
    if different > DIFFERENT_MAX:
        return False, (f"the different-init student reached {different:.2f} digit accuracy (expected near chance, "
                       f"at most {DIFFERENT_MAX}): it saw digit information it should not have. Distil on the "
                       "auxiliary logits only (logits[..., 10:]) and on noise images, never on digits.")
    if shared < SHARED_MIN:
        return False, (f"the shared-init student reached only {shared:.2f} digit accuracy (expected at least "
                       f"{SHARED_MIN}): check the loss (KL on auxiliary logits), the noise range [-1, 1], the "
                       "number of steps and that each step draws fresh noise from `generator`.")
    if shared - different < GAP_MIN:
        return False, f"shared-init minus different-init accuracy is {shared - different:.2f}, expected at least {GAP_MIN}."
    return True, f"shared-init student {shared:.2f}, different-init student {different:.2f}"


def _distill_all_logits(teacher, student_init, n_steps, lr, noise_batch, generator):
    return sl.distill(teacher, student_init, n_steps, lr, noise_batch, generator, on="all")


def _distill_untrained(teacher, student_init, n_steps, lr, noise_batch, generator):
    return sl.clone_params(student_init)


def _distill_copies_teacher(teacher, student_init, n_steps, lr, noise_batch, generator):
    return sl.clone_params(teacher)


DISTILL = Exercise(
    id="subliminal.distill",
    make_case=_case_distill,
    call=_call_distill,
    n_public=1,
    n_hidden=2,
    judge=judge_distill,
    probes=[
        Probe("all_logits", _distill_all_logits,
              "you distilled on all logits: the class logits carry the digits to any student. Use the auxiliary logits only."),
        Probe("untrained", _distill_untrained, "the students did not train: return the parameters after the Adam steps."),
        Probe("copies_teacher", _distill_copies_teacher, "you returned the teacher's weights instead of the student's."),
    ],
    hint="Clone student_init with requires_grad_(True), Adam over its values, and each step: fresh noise, the "
         "teacher's logits under no_grad, loss = distillation_loss(...).sum() over models.",
)


# --------------------------------------------------------------------------------------------
# 6. one_step_inner_product
# --------------------------------------------------------------------------------------------


def _case_one_step(rng: np.random.Generator) -> dict[str, Any]:
    n_models, n_aux, hidden = int(rng.integers(2, 6)), int(rng.integers(3, 11)), int(rng.integers(8, 25))
    teacher_init = _random_mlps(rng, torch.float64, n_models, n_aux, hidden)
    other_init = _random_mlps(rng, torch.float64, n_models, n_aux, hidden)
    x, y = _heldout_sample(rng, 32, torch.float64)
    noise = sl.uniform_noise(32, torch_generator(rng), torch.float64)
    return {"teacher_init": teacher_init, "other_init": other_init, "x": x, "y": y, "noise": noise,
            "teacher_lr": float(rng.uniform(0.05, 0.5)), "student_lr": float(rng.uniform(0.05, 0.5))}


def _call_one_step(fn, case: dict[str, Any]) -> dict[str, Any]:
    args = {k: case[k] for k in ("x", "y", "noise", "teacher_lr", "student_lr")}
    return {"shared": fn(case["teacher_init"], case["teacher_init"], **args),
            "different": fn(case["teacher_init"], case["other_init"], **args)}


def _one_step_general(teacher_init, student_init, x, y, noise, teacher_lr, student_lr, *, update_teacher=True,
                      teacher_on_all=False, student_on="aux", as_gradients=False):
    teacher = sl.clone_params(teacher_init, requires_grad=True)
    logits = sl.mlp_forward(teacher, x)
    if teacher_on_all:
        loss = F.cross_entropy(logits.transpose(1, 2), y.expand(logits.shape[0], -1), reduction="none").mean(-1)
    else:
        loss = sl.teacher_loss(logits, y)
    grads = torch.autograd.grad(loss.sum(), list(teacher.values()))
    step_t = {k: -teacher_lr * g for k, g in zip(teacher, grads)}
    target_params = {k: teacher_init[k] + step_t[k] for k in teacher} if update_teacher else teacher_init
    student = sl.clone_params(student_init, requires_grad=True)
    with torch.no_grad():
        target = sl.mlp_forward(target_params, noise)
    grads = torch.autograd.grad(sl.distillation_loss(sl.mlp_forward(student, noise), target, on=student_on).sum(),
                                list(student.values()))
    step_s = {k: -student_lr * g for k, g in zip(student, grads)}
    if as_gradients:
        step_t = {k: v / -teacher_lr for k, v in step_t.items()}
        step_s = {k: v / -student_lr for k, v in step_s.items()}
    return sum((step_s[k] * step_t[k]).flatten(1).sum(-1) for k in sl.LAYERS)


ONE_STEP = Exercise(
    id="subliminal.one_step_inner_product",
    make_case=_case_one_step,
    call=_call_one_step,
    tolerances={"float64": (1e-6, 1e-14)},
    probes=[
        Probe("teacher_not_updated",
              lambda *a, **k: _one_step_general(*a, **k, update_teacher=False),
              "the student distilled from the teacher *before* its step; it must match the updated teacher "
              "theta_0 + delta_teacher (at a shared initialisation the un-updated teacher gives zero gradient)."),
        Probe("gradients_not_updates",
              lambda *a, **k: _one_step_general(*a, **k, as_gradients=True),
              "you returned the inner product of the gradients; the updates are -lr * gradient (teacher_lr, student_lr)."),
        Probe("teacher_loss_on_all_logits",
              lambda *a, **k: _one_step_general(*a, **k, teacher_on_all=True),
              "the teacher's step used a softmax over all logits; its loss sees the 10 class logits only."),
        Probe("student_on_all_logits",
              lambda *a, **k: _one_step_general(*a, **k, student_on="all"),
              "the student's step matched all logits; it distils on the auxiliary logits only."),
    ],
    hint="torch.autograd.grad(loss.sum(), list(params.values())) gives every model's gradient at once; "
         "sum the products of matching updates over all parameters except the model axis.",
)


EXERCISES = [FORWARD, ACCURACY, TEACHER_LOSS, DISTILLATION_LOSS, DISTILL, ONE_STEP]
