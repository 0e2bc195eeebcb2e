"""Checks of the grokking assignment (see interplab.checking for the contract).

Every input is generated from the case's ``rng``: odd moduli ``p`` (small, so that hidden cases
are cheap), random embeddings, random functions on the ``p x p`` grid of inputs ``(a, b)``,
random logits, train masks and frequency sets, random loss curves with planted phases, random
parameter dictionaries. Nothing here needs the shipped model: what the exercises compute is
defined for any input, and the notebook applies them to ``modadd-1l``.

Conventions fixed here and in the notebook:

* the Fourier basis has rows ``[1, cos 1, sin 1, cos 2, sin 2, ...]`` over ``x = 0..p-1``, each of
  unit norm; frequency ``k`` owns rows ``2k-1`` (cos) and ``2k`` (sin);
* a function of the inputs is a tensor indexed ``[a, b, ...]``; logits are ``[a, b, c]``;
* the "sum directions" of frequency ``k`` are ``cos(2 pi k (a+b) / p)`` and ``sin(2 pi k (a+b) / p)``
  on the grid; projections are least-squares (orthogonal) projections over the ``p * p`` grid;
* losses are mean cross-entropies (natural log) over the pairs they are evaluated on.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from interplab.checking import Exercise, Probe, torch_generator

ASSIGNMENT = "grokking"
TOL = {"float32": (1e-4, 1e-5), "float64": (1e-6, 1e-9)}
LOSS_TOL = {"float32": (1e-4, 1e-5), "float64": (1e-5, 1e-7)}  # float32 logits: another order of summation
ODD = (5, 7, 9, 11, 13, 15, 17, 19)


def _p(rng: np.random.Generator) -> int:
    return int(rng.choice(ODD))


def _basis(p: int, sin_first: bool = False, normalise: bool = True) -> torch.Tensor:
    """The basis in float64 (inputs of other exercises); probes of the basis exercise compare at float32."""
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    for k in range(1, (p - 1) // 2 + 1):
        pair = [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
        rows += pair[::-1] if sin_first else pair
    basis = torch.stack(rows)
    return basis / basis.norm(dim=1, keepdim=True) if normalise else basis


def _freqs(rng: np.random.Generator, p: int) -> list[int]:
    n_freq = (p - 1) // 2
    return sorted(int(k) + 1 for k in rng.choice(n_freq, size=int(rng.integers(1, min(3, n_freq) + 1)), replace=False))


# --------------------------------------------------------------------------------------------
# 1. The Fourier basis
# --------------------------------------------------------------------------------------------


def _basis_case(rng: np.random.Generator) -> dict[str, Any]:
    return {"p": _p(rng)}


# --------------------------------------------------------------------------------------------
# 2. A 2D Fourier transform over (a, b)
# --------------------------------------------------------------------------------------------


def _fourier_2d_case(rng: np.random.Generator) -> dict[str, Any]:
    p, g = _p(rng), torch_generator(rng)
    return {"values": torch.randn(int(rng.integers(1, 4)), p, p, generator=g, dtype=torch.float64),
            "basis": _basis(p)}


# --------------------------------------------------------------------------------------------
# 3. Frequencies of the embedding
# --------------------------------------------------------------------------------------------


def _embedding_case(rng: np.random.Generator) -> dict[str, Any]:
    p, g = _p(rng), torch_generator(rng)
    return {"W_E": torch.randn(p, int(rng.integers(3, 9)), generator=g), "basis": _basis(p)}


def _frequency_norms(W_E, basis, squared: bool = True, cos_only: bool = False):
    coeffs = (basis @ W_E.double()).pow(2).sum(dim=1)
    norms = coeffs[1::2] + (0 if cos_only else coeffs[2::2])
    return norms if squared else norms.sqrt()


# --------------------------------------------------------------------------------------------
# 4. Neuron frequency fractions
# --------------------------------------------------------------------------------------------


def _neuron_case(rng: np.random.Generator) -> dict[str, Any]:
    p, g = _p(rng), torch_generator(rng)
    return {"acts_fourier": torch.randn(int(rng.integers(2, 6)), p, p, generator=g, dtype=torch.float64)}


def _neuron_fractions(acts_fourier, with_constant: bool = False, linear_only: bool = False):
    p = acts_fourier.shape[-1]
    squared = acts_fourier.double().pow(2)
    total = squared.flatten(1).sum(1) - (0 if with_constant else squared[:, 0, 0])
    fractions = []
    for k in range(1, (p - 1) // 2 + 1):
        idx = [0, 2 * k - 1, 2 * k]
        block = squared[:, idx][:, :, idx]
        mass = block.flatten(1).sum(1) - block[:, 0, 0]
        if linear_only:
            mass = block[:, 0, 1:].sum(1) + block[:, 1:, 0].sum(1)
        fractions.append(mass / total)
    return torch.stack(fractions, dim=1)


# --------------------------------------------------------------------------------------------
# 5-6. Sum directions: projections and the fraction of variance they explain
# --------------------------------------------------------------------------------------------


def _grid_case(rng: np.random.Generator) -> dict[str, Any]:
    p, g = _p(rng), torch_generator(rng)
    freqs = _freqs(rng, p)
    values = torch.randn(p, p, int(rng.integers(1, 5)), generator=g)
    # Plant some sum-direction signal so that fractions are not all near 2/(p*p).
    a = torch.arange(p)[:, None, None].double()
    b = torch.arange(p)[None, :, None].double()
    for k in freqs:
        values = values + float(rng.normal()) * torch.cos(2 * math.pi * k * (a + b) / p + float(rng.uniform(0, 6)))
    return {"values": values.float(), "freqs": freqs}


def _sum_directions(p: int, freqs, difference: bool = False) -> torch.Tensor:
    a = torch.arange(p, dtype=torch.float64)[:, None]
    b = torch.arange(p, dtype=torch.float64)[None, :]
    s = a - b if difference else a + b
    dirs = []
    for k in freqs:
        dirs += [torch.cos(2 * math.pi * k * s / p).flatten(), torch.sin(2 * math.pi * k * s / p).flatten()]
    dirs = torch.stack(dirs)
    return dirs / dirs.norm(dim=1, keepdim=True)


def _project(values, freqs, constant: bool = True, difference: bool = False):
    p = values.shape[0]
    flat = values.double().reshape(p * p, -1)
    dirs = _sum_directions(p, freqs, difference)
    out = dirs.T @ (dirs @ flat)
    if constant:
        out = out + flat.mean(0, keepdim=True)
    return out.reshape(values.shape)


def _sum_fraction(values, freqs, centred: bool = True, difference: bool = False):
    p = values.shape[0]
    flat = values.double().reshape(p * p, -1)
    if centred:
        flat = flat - flat.mean(0, keepdim=True)
    projected = _project(flat.reshape(values.shape), freqs, constant=False, difference=difference).reshape(p * p, -1)
    return projected.pow(2).sum(0) / flat.pow(2).sum(0)


# --------------------------------------------------------------------------------------------
# 7-8. Restricted and excluded loss
# --------------------------------------------------------------------------------------------


def _loss_case(rng: np.random.Generator) -> dict[str, Any]:
    p, g = _p(rng), torch_generator(rng)
    freqs = _freqs(rng, p)
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    labels = ((a + b) % p).reshape(p, p)
    c = torch.arange(p, dtype=torch.float64)
    # Logits with a Fourier-circuit part (the restricted model can do well) plus noise.
    s = (a + b).double().reshape(p, p, 1)
    logits = 0.5 * torch.randn(p, p, p, generator=g, dtype=torch.float64)
    for k in freqs:
        logits = logits + float(rng.uniform(1, 4)) * torch.cos(2 * math.pi * k * (s - c) / p)
    train = torch.rand(p, p, generator=g) < float(rng.uniform(0.3, 0.7))
    train[0, 0] = True
    return {"logits": logits.float(), "labels": labels, "train_mask": train, "freqs": freqs}


def _restricted(logits, labels, train_mask, freqs, constant: bool = True, on: str = "all"):
    logits = _project(logits, freqs, constant=constant)
    mask = {"all": torch.ones_like(train_mask), "train": train_mask, "test": ~train_mask}[on]
    return float(F.cross_entropy(logits[mask], labels[mask]))


def _excluded(logits, labels, train_mask, freqs, on: str = "train", keep_constant: bool = True):
    ablated = logits.double() - _project(logits, freqs, constant=not keep_constant)
    mask = {"all": torch.ones_like(train_mask), "train": train_mask}[on]
    return float(F.cross_entropy(ablated[mask], labels[mask]))


# --------------------------------------------------------------------------------------------
# 9. Phase boundaries
# --------------------------------------------------------------------------------------------


def _curve_case(rng: np.random.Generator) -> dict[str, Any]:
    """A synthetic grokking curve with a test-loss bump (memorisation), a plateau and a fall."""
    every = int(rng.choice([10, 25, 50]))
    steps = np.arange(0, every * int(rng.integers(60, 120)), every)
    n = len(steps)
    mem, fall, done = sorted(rng.choice(np.arange(5, n - 5), size=3, replace=False))
    t = np.arange(n)
    train = 3.0 * np.exp(-t / max(mem / 3, 1)) + 1e-3 * rng.random(n)
    bump = 3.0 + 4.0 * np.minimum(t / max(mem, 1), 1.0)
    decay = np.clip((t - fall) / max(done - fall, 1), 0, None)
    test = bump * np.exp(-4.0 * decay) + 1e-3 * rng.random(n)
    return {"steps": torch.tensor(steps), "train_loss": torch.tensor(train), "test_loss": torch.tensor(test)}


def _phases(steps, train_loss, test_loss, memorised_below: float = 0.05, cleanup_fraction: float = 0.5,
            grokked_below: float = 0.05, from_peak: bool = True):
    steps, train_loss, test_loss = (np.asarray(x) for x in (steps, train_loss, test_loss))

    def first(mask) -> int:
        return int(steps[np.argmax(mask)]) if mask.any() else -1

    peak = int(np.argmax(test_loss))
    after = np.arange(len(steps)) >= (peak if from_peak else 0)
    return (first(train_loss < memorised_below),
            first(after & (test_loss < cleanup_fraction * test_loss[peak])),
            first(test_loss < grokked_below))


# --------------------------------------------------------------------------------------------
# 10. The weight norm
# --------------------------------------------------------------------------------------------


def _params_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    names = ["W_E", "W_pos", "W_Q", "W_in", "b_in", "W_U"][: int(rng.integers(2, 7))]
    return {"params": {name: torch.randn(*rng.integers(1, 6, size=int(rng.integers(1, 4))), generator=g)
                       for name in names}}


def _weight_norm(params, squared: bool = False, summed_norms: bool = False):
    if summed_norms:
        return sum(float(t.double().norm()) for t in params.values())
    total = sum(float(t.double().pow(2).sum()) for t in params.values())
    return total if squared else math.sqrt(total)


def _float(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


EXERCISES = [
    Exercise("grokking.fourier_basis", _basis_case, tolerances=TOL, probes=[
        Probe("not_normalised", lambda p: _basis(p, normalise=False),
              "the rows are not unit vectors: divide each row by its norm (the constant row by sqrt(p))"),
        Probe("sin_first", lambda p: _basis(p, sin_first=True),
              "the rows of each frequency are in the wrong order: cos k is row 2k-1, sin k is row 2k"),
    ]),
    Exercise("grokking.fourier_2d", _fourier_2d_case, tolerances=TOL, probes=[
        Probe("transposed", lambda values, basis: basis.T @ values @ basis,
              "you used the transpose of the basis: the coefficients are basis @ values @ basis.T"),
        Probe("one_axis", lambda values, basis: basis @ values,
              "you transformed only the a axis: transform both a (rows) and b (columns)"),
    ]),
    Exercise("grokking.frequency_norms", _embedding_case, tolerances=TOL, probes=[
        Probe("not_squared", lambda W_E, basis: _frequency_norms(W_E, basis, squared=False),
              "return the squared norm of each frequency (sum of squares of its cos and sin coefficients), not its square root"),
        Probe("cos_only", lambda W_E, basis: _frequency_norms(W_E, basis, cos_only=True),
              "each frequency has a cos and a sin row: add both"),
    ]),
    Exercise("grokking.neuron_frequency_fractions", _neuron_case, tolerances=TOL, probes=[
        Probe("with_constant", lambda acts_fourier: _neuron_fractions(acts_fourier, with_constant=True),
              "the denominator must leave out the constant term [0, 0] (a neuron's mean is not a frequency)"),
        Probe("linear_only", lambda acts_fourier: _neuron_fractions(acts_fourier, linear_only=True),
              "count the product terms of frequency k too ([cos k, cos k], [cos k, sin k], ...), not only the terms linear in a or b"),
    ]),
    Exercise("grokking.project_onto_sums", _grid_case, tolerances=TOL, probes=[
        Probe("no_constant", lambda values, freqs: _project(values, freqs, constant=False),
              "keep the constant (the mean over the grid of each column) in the projection"),
        Probe("difference", lambda values, freqs: _project(values, freqs, difference=True),
              "the directions are functions of a + b, not a - b"),
    ]),
    Exercise("grokking.sum_fraction", _grid_case, tolerances=TOL, probes=[
        Probe("not_centred", lambda values, freqs: _sum_fraction(values, freqs, centred=False),
              "subtract each column's mean first: the fraction is of the variance, not of the raw squared values"),
        Probe("difference", lambda values, freqs: _sum_fraction(values, freqs, difference=True),
              "the directions are functions of a + b, not a - b"),
    ]),
    Exercise("grokking.restricted_loss", _loss_case, call=lambda fn, c: _float(fn(**c)), tolerances=LOSS_TOL, probes=[
        Probe("no_constant", lambda **c: _restricted(**c, constant=False),
              "keep the mean logit of each output c (the constant direction) in the restricted logits"),
        Probe("train_only", lambda **c: _restricted(**c, on="train"),
              "the restricted loss is evaluated on all p * p pairs, not only the training pairs"),
        Probe("test_only", lambda **c: _restricted(**c, on="test"),
              "the restricted loss is evaluated on all p * p pairs, not only the test pairs"),
    ]),
    Exercise("grokking.excluded_loss", _loss_case, call=lambda fn, c: _float(fn(**c)), tolerances=LOSS_TOL, probes=[
        Probe("all_pairs", lambda **c: _excluded(**c, on="all"),
              "the excluded loss is evaluated on the training pairs only (train_mask)"),
        Probe("constant_removed", lambda **c: _excluded(**c, keep_constant=False),
              "remove only the key-frequency sum directions: keep each output's mean logit"),
    ]),
    Exercise("grokking.phase_boundaries", _curve_case, call=lambda fn, c: [int(x) for x in fn(**c)], probes=[
        Probe("not_from_peak", lambda **c: _phases(**c, from_peak=False),
              "cleanup_start is searched from the test-loss peak on (before the peak the loss is still rising)"),
    ]),
    Exercise("grokking.weight_norm", _params_case, call=lambda fn, c: _float(fn(**c)), tolerances=LOSS_TOL, probes=[
        Probe("squared", lambda params: _weight_norm(params, squared=True),
              "return the norm (the square root of the sum of squares), not its square"),
        Probe("summed_norms", lambda params: _weight_norm(params, summed_norms=True),
              "the norm of all parameters together is sqrt(sum of every squared entry), not the sum of each tensor's norm"),
    ]),
]
