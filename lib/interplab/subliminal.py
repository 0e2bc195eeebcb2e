"""Subliminal learning on 8x8 digits: a vectorised batch of MLPs with auxiliary logits.

Cloud et al. (2025), "Subliminal Learning: Language models transmit behavioral traits via hidden
signals in data" (https://arxiv.org/abs/2507.14805), section 6: a teacher MLP with ``m`` extra
*auxiliary* logits is trained on digits with a loss on its 10 class logits only; a student is
distilled on the teacher's auxiliary logits only, on pure noise images, and still learns to classify
digits, but only when it starts from the teacher's initialisation.

This module is the reusable core of the ``subliminal`` assignment and the script that measures the
reference figures (``python -m interplab.subliminal --card`` writes ``subliminal_card.json`` next to
this file). Everything is batched over a leading *model* axis, as the paper trains 100 MLPs at once:
a batch of ``M`` MLPs is a dict of tensors whose first dimension is ``M`` (``W1: (M, 64, H)``,
``b1: (M, H)``, ...), the forward pass is one ``einsum`` per layer, and training sums the per-model
losses (Adam is elementwise, so the models still train independently).

Data: scikit-learn's bundled digits (``sklearn.datasets.load_digits``, 1797 8x8 images shipped
inside the package, no download), pixels scaled from 0..16 to [-1, 1], split once with a fixed
permutation into 1257 training and 540 held-out images. Noise inputs are uniform on [-1, 1]^64.

The judge-side helpers (:func:`numpy_forward`, :func:`numpy_accuracy`, :func:`judge_inputs`) use
numpy only, so the autograder can score returned weights in its own process.
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

N_CLASSES = 10
D_IN = 64  # 8x8 pixels
LAYERS = ("W1", "b1", "W2", "b2", "W3", "b3")
DATA_SEED = 0  # the fixed train/held-out split
N_TRAIN = 1257
CARD_PATH = Path(__file__).with_name("subliminal_card.json")

Params = dict[str, Tensor]  # a batch of MLPs: LAYERS -> tensors with a leading model axis


@dataclass(frozen=True)
class SubliminalConfig:
    """Everything that defines one run of the experiment (the card records it)."""

    hidden: int = 64
    n_aux: int = 10
    teacher_epochs: int = 20
    teacher_lr: float = 1e-3
    teacher_batch: int = 64
    distill_steps: int = 600
    distill_lr: float = 3e-3
    noise_batch: int = 64


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigitsSplit:
    x_train: np.ndarray  # (1257, 64) float32 in [-1, 1]
    y_train: np.ndarray  # (1257,) int64
    x_test: np.ndarray  # (540, 64) float32 in [-1, 1]
    y_test: np.ndarray  # (540,) int64


@functools.lru_cache(maxsize=1)
def load_digits_split() -> DigitsSplit:
    """The bundled 8x8 digits, scaled to [-1, 1] and split once with a fixed seed (numpy arrays)."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    x = (digits.data.astype(np.float32) / 16.0) * 2.0 - 1.0
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(DATA_SEED).permutation(len(x))
    train, test = order[:N_TRAIN], order[N_TRAIN:]
    arrays = (x[train], y[train], x[test], y[test])
    for array in arrays:  # cached and shared: nobody may edit the split in place
        array.setflags(write=False)
    return DigitsSplit(*arrays)


def digits_tensors() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)`` as torch tensors (float32 / int64)."""
    split = load_digits_split()
    return tuple(torch.from_numpy(a.copy()) for a in (split.x_train, split.y_train, split.x_test, split.y_test))


def uniform_noise(batch: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Float[Tensor, "batch 64"]:
    """``batch`` noise images, uniform on [-1, 1]^64 (the student's only inputs)."""
    return torch.rand(batch, D_IN, generator=generator, dtype=dtype) * 2.0 - 1.0


# --------------------------------------------------------------------------------------------
# A batch of MLPs
# --------------------------------------------------------------------------------------------


def init_mlps(n_models: int, n_aux: int, hidden: int, generator: torch.Generator,
              dtype: torch.dtype = torch.float32) -> Params:
    """``n_models`` independent 64 -> hidden -> hidden -> (10 + n_aux) MLPs, with PyTorch's default
    ``nn.Linear`` initialisation (weights and biases uniform on +-1/sqrt(fan_in))."""
    dims = (D_IN, hidden, hidden, N_CLASSES + n_aux)
    params: Params = {}
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:]), start=1):
        bound = fan_in ** -0.5
        params[f"W{i}"] = (torch.rand(n_models, fan_in, fan_out, generator=generator, dtype=dtype) * 2 - 1) * bound
        params[f"b{i}"] = (torch.rand(n_models, fan_out, generator=generator, dtype=dtype) * 2 - 1) * bound
    return params


def mlp_forward(params: Params, x: Float[Tensor, "*models batch 64"]) -> Float[Tensor, "models batch logits"]:
    """Logits of every model on ``x``: the same inputs for all models ``(batch, 64)`` or one batch per
    model ``(models, batch, 64)``. ReLU after the two hidden layers, none after the last."""
    h = x
    for i in (1, 2, 3):
        pattern = "mbi,mio->mbo" if h.dim() == 3 else "bi,mio->mbo"
        h = torch.einsum(pattern, h, params[f"W{i}"]) + params[f"b{i}"][:, None, :]
        if i < 3:
            h = torch.relu(h)
    return h


def class_logits(logits: Float[Tensor, "... logits"]) -> Float[Tensor, "... 10"]:
    return logits[..., :N_CLASSES]


def aux_logits(logits: Float[Tensor, "... logits"]) -> Float[Tensor, "... n_aux"]:
    return logits[..., N_CLASSES:]


def digit_accuracy(params: Params, x: Float[Tensor, "batch 64"], y: Int[Tensor, " batch"]) -> Float[Tensor, " models"]:
    """Per-model accuracy: argmax over the 10 class logits only (the auxiliary ones are not classes)."""
    with torch.no_grad():
        predictions = class_logits(mlp_forward(params, x)).argmax(-1)
    return (predictions == y).to(params["W1"].dtype).mean(-1)


def teacher_loss(logits: Float[Tensor, "models batch logits"], labels: Int[Tensor, " batch"]) -> Float[Tensor, " models"]:
    """Cross-entropy on the 10 class logits only, averaged over the batch, one value per model."""
    cls = class_logits(logits)
    target = labels.expand(cls.shape[0], -1)
    return F.cross_entropy(cls.transpose(1, 2), target, reduction="none").mean(-1)


def distillation_loss(student_logits: Float[Tensor, "models batch logits"], teacher_logits: Float[Tensor, "models batch logits"],
                      on: Literal["aux", "all"] = "aux") -> Float[Tensor, " models"]:
    """KL(teacher || student) between the softmaxes of the auxiliary logits (``on="aux"``) or of all
    logits (``on="all"``, the control), averaged over the batch, one value per model."""
    pick = aux_logits if on == "aux" else (lambda t: t)
    log_p_teacher = torch.log_softmax(pick(teacher_logits), -1)
    log_p_student = torch.log_softmax(pick(student_logits), -1)
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean(-1)


def squared_error_loss(student_logits: Float[Tensor, "models batch logits"], teacher_logits: Float[Tensor, "models batch logits"],
                       on: Literal["aux", "all"] = "aux") -> Float[Tensor, " models"]:
    """Squared error between the raw auxiliary logits (``on="aux"``) or all logits, summed over logits
    and averaged over the batch: unlike the softmax KL it has a gradient with a single auxiliary logit."""
    pick = aux_logits if on == "aux" else (lambda t: t)
    return ((pick(student_logits) - pick(teacher_logits)) ** 2).sum(-1).mean(-1)


def clone_params(params: Params, requires_grad: bool = False) -> Params:
    return {k: v.detach().clone().requires_grad_(requires_grad) for k, v in params.items()}


def stack_params(*batches: Params) -> Params:
    """Concatenate batches of MLPs along the model axis."""
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def split_params(params: Params, sizes: list[int]) -> list[Params]:
    parts = {k: torch.split(v, sizes) for k, v in params.items()}
    return [{k: parts[k][i] for k in params} for i in range(len(sizes))]


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def train_teachers(init: Params, x: Tensor, y: Tensor, epochs: int, lr: float, batch: int,
                   generator: torch.Generator, loss_fn: Callable[[Tensor, Tensor], Tensor] = teacher_loss,
                   forward: Callable[[Params, Tensor], Tensor] = mlp_forward) -> Params:
    """Adam on the class-logit loss, minibatches shared by all models; returns trained copies."""
    params = clone_params(init, requires_grad=True)
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            # Summing per-model losses keeps the models independent: each gradient is its own model's.
            loss = loss_fn(forward(params, x[idx]), y[idx]).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return clone_params(params)


def distill(teacher: Params, student_init: Params, n_steps: int, lr: float, noise_batch: int,
            generator: torch.Generator, on: Literal["aux", "all"] = "aux",
            loss_fn: Callable[..., Tensor] = distillation_loss,
            forward: Callable[[Params, Tensor], Tensor] = mlp_forward) -> Params:
    """Train copies of ``student_init`` (model i against teacher i) with Adam to match the teacher's
    logits (``on``) on fresh uniform noise each step; digits are never seen."""
    teacher = clone_params(teacher)
    params = clone_params(student_init, requires_grad=True)
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    for _ in range(n_steps):
        noise = uniform_noise(noise_batch, generator, dtype=params["W1"].dtype)
        with torch.no_grad():
            target = forward(teacher, noise)
        loss = loss_fn(forward(params, noise), target, on=on).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return clone_params(params)


def flat_update(after: Params, before: Params) -> Float[Tensor, "models n_params"]:
    """Each model's parameter change, flattened to one vector per model."""
    return torch.cat([(after[k] - before[k]).flatten(1) for k in LAYERS], dim=1)


def one_step_inner_product(teacher_init: Params, student_init: Params, x: Float[Tensor, "batch 64"],
                           y: Int[Tensor, " batch"], noise: Float[Tensor, "noise 64"], teacher_lr: float,
                           student_lr: float) -> Float[Tensor, " models"]:
    """The one-step argument of the paper, for every model at once.

    The teacher takes one gradient step of size ``teacher_lr`` on the digit loss (class logits only)
    from ``teacher_init``; the student takes one gradient step of size ``student_lr`` from
    ``student_init`` on the auxiliary-logit KL to the *updated* teacher on ``noise``. Returns
    <delta_student, delta_teacher> per model, summed over every parameter."""
    teacher = clone_params(teacher_init, requires_grad=True)
    grads = torch.autograd.grad(teacher_loss(mlp_forward(teacher, x), y).sum(), list(teacher.values()))
    teacher_step = {k: -teacher_lr * g for k, g in zip(teacher, grads)}
    updated_teacher = {k: teacher_init[k] + teacher_step[k] for k in teacher}
    student = clone_params(student_init, requires_grad=True)
    with torch.no_grad():
        target = mlp_forward(updated_teacher, noise)
    grads = torch.autograd.grad(distillation_loss(mlp_forward(student, noise), target).sum(), list(student.values()))
    student_step = {k: -student_lr * g for k, g in zip(student, grads)}
    return sum((student_step[k] * teacher_step[k]).flatten(1).sum(-1) for k in LAYERS)


# --------------------------------------------------------------------------------------------
# The whole experiment
# --------------------------------------------------------------------------------------------


def _teachers(n_models: int, config: SubliminalConfig, seed: int) -> tuple[torch.Generator, Params, Params, Params]:
    """The start of every experiment: ``(generator, shared_init, different_init, trained teachers)``,
    drawn in this order from one generator seeded with ``seed``."""
    x_train, y_train, _, _ = digits_tensors()
    generator = torch.Generator().manual_seed(seed)
    shared_init = init_mlps(n_models, config.n_aux, config.hidden, generator)
    different_init = init_mlps(n_models, config.n_aux, config.hidden, generator)
    teachers = train_teachers(shared_init, x_train, y_train, config.teacher_epochs, config.teacher_lr,
                              config.teacher_batch, generator)
    return generator, shared_init, different_init, teachers


def run_experiment(n_models: int, config: SubliminalConfig = SubliminalConfig(), seed: int = 0,
                   controls: bool = True) -> dict[str, np.ndarray]:
    """Teachers, shared-init and different-init students (and, with ``controls``, the all-logits
    students), ``n_models`` of each; returns per-model held-out accuracies as numpy arrays."""
    generator, shared_init, different_init, teachers = _teachers(n_models, config, seed)
    _, _, x_test, y_test = digits_tensors()
    # Students from both initialisations train as one batch of 2M models against the same teachers.
    both_teachers, both_inits = stack_params(teachers, teachers), stack_params(shared_init, different_init)
    kinds = {"aux": "", "all": "_all_logits"} if controls else {"aux": ""}
    result = {"teacher": digit_accuracy(teachers, x_test, y_test).numpy(),
              "shared_init_untrained": digit_accuracy(shared_init, x_test, y_test).numpy()}
    for on, suffix in kinds.items():
        students = distill(both_teachers, both_inits, config.distill_steps, config.distill_lr,
                           config.noise_batch, generator, on=on)
        shared, different = split_params(students, [n_models, n_models])
        result["shared" + suffix] = digit_accuracy(shared, x_test, y_test).numpy()
        result["different" + suffix] = digit_accuracy(different, x_test, y_test).numpy()
    return result


# Which parameters a student shares with its teacher's initialisation (the others are drawn afresh).
SHARING: dict[str, tuple[str, ...]] = {
    "all": LAYERS,
    "head only": ("W3", "b3"),
    "hidden only": ("W1", "b1", "W2", "b2"),
    "none": (),
}


def mixed_init(shared: Params, different: Params, shared_layers: tuple[str, ...]) -> Params:
    """``shared``'s tensors for ``shared_layers``, ``different``'s for the rest."""
    return {k: (shared if k in shared_layers else different)[k].clone() for k in LAYERS}


def run_sharing_experiment(n_models: int, config: SubliminalConfig = SubliminalConfig(), seed: int = 0,
                           sharing: tuple[str, ...] = tuple(SHARING),
                           loss_fn: Callable[..., Tensor] = distillation_loss) -> dict[str, np.ndarray]:
    """Teachers, then students whose initialisation shares the layers ``SHARING[name]`` with the
    teacher's (auxiliary logits only, ``loss_fn``), all kinds as one batch; held-out accuracy per
    model for each name in ``sharing``, and ``"teacher"``."""
    generator, shared_init, different_init, teachers = _teachers(n_models, config, seed)
    _, _, x_test, y_test = digits_tensors()
    inits = stack_params(*(mixed_init(shared_init, different_init, SHARING[name]) for name in sharing))
    students = distill(stack_params(*[teachers] * len(sharing)), inits, config.distill_steps, config.distill_lr,
                       config.noise_batch, generator, loss_fn=loss_fn)
    parts = split_params(students, [n_models] * len(sharing))
    result = {"teacher": digit_accuracy(teachers, x_test, y_test).numpy()}
    result.update({name: digit_accuracy(part, x_test, y_test).numpy() for name, part in zip(sharing, parts)})
    return result


def inner_product_signs(n_models: int, hidden: int = 64, n_aux: int = 10, lr: float = 1e-3,
                        seed: int = 0, batch: int = 256, dtype: torch.dtype = torch.float64) -> dict[str, np.ndarray]:
    """<delta_student, delta_teacher> over ``n_models`` random draws (initialisations, digit batch,
    noise batch), for students that share the teacher's initialisation and for students that do not."""
    x_train, y_train, _, _ = digits_tensors()
    generator = torch.Generator().manual_seed(seed)
    teacher_init = init_mlps(n_models, n_aux, hidden, generator, dtype)
    other_init = init_mlps(n_models, n_aux, hidden, generator, dtype)
    idx = torch.randperm(len(x_train), generator=generator)[:batch]
    x, y = x_train[idx].to(dtype), y_train[idx]
    noise = uniform_noise(batch, generator, dtype)
    return {"shared": one_step_inner_product(teacher_init, teacher_init, x, y, noise, lr, lr).numpy(),
            "different": one_step_inner_product(teacher_init, other_init, x, y, noise, lr, lr).numpy()}


# --------------------------------------------------------------------------------------------
# Judge side: numpy only (runs in the autograder's process on decoded weights)
# --------------------------------------------------------------------------------------------


def numpy_forward(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """:func:`mlp_forward` in numpy (float64), for weights returned as arrays."""
    h = np.asarray(x, dtype=np.float64)
    for i in (1, 2, 3):
        w = np.asarray(params[f"W{i}"], dtype=np.float64)
        b = np.asarray(params[f"b{i}"], dtype=np.float64)
        h = np.einsum("bi,mio->mbo" if h.ndim == 2 else "mbi,mio->mbo", h, w) + b[:, None, :]
        if i < 3:
            h = np.maximum(h, 0.0)
    return h


def numpy_accuracy(params: dict[str, np.ndarray]) -> np.ndarray:
    """Per-model accuracy on the held-out digits (class logits only)."""
    split = load_digits_split()
    predictions = numpy_forward(params, split.x_test)[..., :N_CLASSES].argmax(-1)
    return (predictions == split.y_test).mean(-1)


@functools.lru_cache(maxsize=1)
def judge_inputs(n: int = 256) -> np.ndarray:
    """Fixed noise images (their own seed) on which the judge compares auxiliary logits."""
    x = np.random.default_rng(1234).uniform(-1.0, 1.0, size=(n, D_IN))
    x.setflags(write=False)
    return x


def numpy_aux_kl(teacher_logits: np.ndarray, student_logits: np.ndarray) -> np.ndarray:
    """Per-model mean KL(teacher || student) between auxiliary-logit softmaxes (numpy)."""
    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    lt, ls = log_softmax(teacher_logits[..., N_CLASSES:]), log_softmax(student_logits[..., N_CLASSES:])
    return (np.exp(lt) * (lt - ls)).sum(-1).mean(-1)


# --------------------------------------------------------------------------------------------
# The card: reference figures (python -m interplab.subliminal --card)
# --------------------------------------------------------------------------------------------

CARD_THRESHOLDS = {
    "teacher_min": 0.95,  # m = 10
    "shared_m10_min": 0.6,
    "different_m10_max": 0.15,
    "gap_m3_min": 0.15,  # shared minus different, m = 3
}


def _summary(values: np.ndarray) -> dict[str, float]:
    stats = {"mean": values.mean(), "std": values.std(), "min": values.min(), "max": values.max()}
    return {k: float(f"{float(v):.4g}") for k, v in stats.items()}  # 4 significant digits (inner products are ~1e-13)


def make_card(n_models: int = 32, aux_sizes: tuple[int, ...] = (1, 2, 3, 5, 10, 30), seed: int = 0,
              config: SubliminalConfig = SubliminalConfig(), n_draws: int = 200) -> dict:
    """Measure the reference figures: accuracies per m (means over ``n_models`` seeds) and the signs
    of the one-step inner product over ``n_draws`` draws."""
    started = time.perf_counter()
    per_m = {}
    for m in aux_sizes:
        result = run_experiment(n_models, replace(config, n_aux=m), seed=seed, controls=(m == config.n_aux))
        per_m[str(m)] = {name: _summary(values) for name, values in result.items()}
    signs = inner_product_signs(n_draws, hidden=config.hidden, n_aux=config.n_aux, seed=seed)
    # Which shared parameters carry the trait (m = 10, KL), and one auxiliary logit under a loss
    # that has a gradient there (squared error on the raw logit; the softmax KL has none at m = 1).
    partial = run_sharing_experiment(n_models, config, seed=seed)
    single_logit = run_sharing_experiment(n_models, replace(config, n_aux=1), seed=seed, sharing=("all", "none"),
                                          loss_fn=squared_error_loss)
    m10, m3 = per_m.get("10"), per_m.get("3")
    figures = {
        "teacher_m10": m10["teacher"]["mean"] if m10 else None,
        "shared_m10": m10["shared"]["mean"] if m10 else None,
        "different_m10": m10["different"]["mean"] if m10 else None,
        "shared_all_logits_m10": m10.get("shared_all_logits", {}).get("mean") if m10 else None,
        "different_all_logits_m10": m10.get("different_all_logits", {}).get("mean") if m10 else None,
        "gap_m3": round(m3["shared"]["mean"] - m3["different"]["mean"], 4) if m3 else None,
        "one_step_shared_fraction_nonnegative": float((signs["shared"] >= 0).mean()),
        "one_step_different_fraction_nonnegative": float((signs["different"] >= 0).mean()),
    }
    return {
        "experiment": "subliminal learning on sklearn 8x8 digits (Cloud et al. 2025, section 6)",
        "recipe": "python -m interplab.subliminal --card",
        "config": asdict(config),
        "n_models_per_setting": n_models,
        "seed": seed,
        "torch": torch.__version__,
        "figures": figures,
        "thresholds": CARD_THRESHOLDS,
        "passes": card_passes(figures),
        "per_m": per_m,
        "sharing_m10": {name: _summary(values) for name, values in partial.items()},
        "single_logit_squared_error": {name: _summary(values) for name, values in single_logit.items()},
        "one_step": {"n_draws": n_draws, "lr": 1e-3,
                     "shared": _summary(signs["shared"]), "different": _summary(signs["different"])},
        "seconds": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
    }


def card_passes(figures: dict) -> dict[str, bool]:
    t = CARD_THRESHOLDS
    return {
        "teacher_min": figures["teacher_m10"] >= t["teacher_min"],
        "shared_m10_min": figures["shared_m10"] >= t["shared_m10_min"],
        "different_m10_max": figures["different_m10"] <= t["different_m10_max"],
        "gap_m3_min": figures["gap_m3"] >= t["gap_m3_min"],
    }


def load_card() -> dict:
    """The shipped reference figures (measured by ``python -m interplab.subliminal --card``)."""
    return json.loads(CARD_PATH.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interplab.subliminal", description=__doc__.split("\n")[0])
    parser.add_argument("--card", action="store_true", help="measure the reference figures and write the card")
    parser.add_argument("--models", type=int, default=32, help="models (seeds) per setting")
    parser.add_argument("--out", type=Path, default=CARD_PATH)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.card:
        parser.print_help()
        return 0
    card = make_card(n_models=args.models)
    args.out.write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card["figures"], indent=2))
    print(f"card written to {args.out} in {card['seconds']} s; passes: {card['passes']}")
    return 0 if all(card["passes"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
