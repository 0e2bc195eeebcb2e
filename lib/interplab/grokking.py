"""Helpers of the grokking assignment and of the ``modadd-1l`` training script (not exercise
solutions): the Fourier basis used to log the key frequencies, the key-frequency rule and the
phase rule the model card records, the cached analysis inputs and the plots.

Conventions (stated once here and in the notebook):

- The Fourier basis over ``0..p-1`` (``p`` odd) has ``p`` orthonormal rows: the constant
  ``1/sqrt(p)``, then for each frequency ``k = 1..(p-1)/2`` the rows ``cos(2 pi k x / p)`` and
  ``sin(2 pi k x / p)``, each scaled to unit norm. Row ``2k-1`` is ``cos k``, row ``2k`` is ``sin k``.
- The key frequencies of an embedding are the frequencies holding at least
  :data:`KEY_FREQUENCY_SHARE` of the squared norm of the token embeddings (tokens ``0..p-1``) in
  that basis, in increasing order.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

KEY_FREQUENCY_SHARE = 0.1  # a share of the embedding's squared norm: above the uniform 2/(p-1) for p >= 23
MEMORISED_TRAIN_LOSS = 0.05  # train loss below this: the training pairs are memorised
CLEANUP_TEST_LOSS_FRACTION = 0.5  # test loss below this share of its peak: generalisation under way
GROKKED_TEST_LOSS = 0.05  # test loss below this: the circuit generalises and cleanup is done


def fourier_basis(p: int) -> Float[Tensor, "p p"]:
    """The orthonormal Fourier basis over ``0..p-1`` (rows; see the module docstring), float64."""
    if p < 3 or p % 2 == 0:
        raise ValueError(f"p must be an odd number >= 3, got {p}")
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    for k in range(1, (p - 1) // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
    basis = torch.stack(rows)
    return basis / basis.norm(dim=1, keepdim=True)


def frequency_norms(embedding: Float[Tensor, "p d_model"]) -> Float[Tensor, "n_freq"]:  # noqa: F821 (a jaxtyping dimension)
    """Squared norm of the embedding in each frequency ``k = 1..(p-1)/2`` (its cos and sin rows
    together), float64."""
    p = embedding.shape[0]
    coefficients = fourier_basis(p) @ embedding.double()
    squared = coefficients.pow(2).sum(dim=1)
    return squared[1::2] + squared[2::2]


def key_frequencies(embedding: Float[Tensor, "p d_model"], share: float = KEY_FREQUENCY_SHARE) -> list[int]:
    """The frequencies holding at least ``share`` of the embedding's non-constant squared norm,
    in increasing order."""
    norms = frequency_norms(embedding)
    return [k + 1 for k in range(len(norms)) if norms[k] >= share * norms.sum()]


def phase_boundaries(curve: list[dict[str, Any]]) -> dict[str, int | None]:
    """The steps where the three phases of Nanda et al. end, from a logged training curve
    (``step``, ``train_loss``, ``test_loss`` per entry, in step order):

    - ``memorised``: the first step with train loss below :data:`MEMORISED_TRAIN_LOSS`
      (memorisation ends, circuit formation begins);
    - ``cleanup_start``: the first step after the test-loss peak with test loss below
      :data:`CLEANUP_TEST_LOSS_FRACTION` of that peak (circuit formation ends);
    - ``grokked``: the first step with test loss below :data:`GROKKED_TEST_LOSS` (cleanup ends).

    A boundary the curve never reaches is None."""

    def first(condition, entries) -> int | None:
        return next((e["step"] for e in entries if condition(e)), None)

    peak_index = max(range(len(curve)), key=lambda i: curve[i]["test_loss"])
    peak = curve[peak_index]["test_loss"]
    return {
        "memorised": first(lambda e: e["train_loss"] < MEMORISED_TRAIN_LOSS, curve),
        "test_loss_peak": curve[peak_index]["step"],
        "cleanup_start": first(lambda e: e["test_loss"] < CLEANUP_TEST_LOSS_FRACTION * peak, curve[peak_index:]),
        "grokked": first(lambda e: e["test_loss"] < GROKKED_TEST_LOSS, curve),
    }
