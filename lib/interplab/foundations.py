"""Foundations of explanation: the shared parts of the ``foundations`` assignment.

Everything here is infrastructure; the explanation methods themselves are the exercises.

- :func:`load_diabetes_split` reads scikit-learn's bundled diabetes data (442 patients, 10
  standardised features, a disease-progression target; no download) and splits it once.
- The 8x8 digits come from :func:`interplab.subliminal.digits_tensors` (the bundled
  ``load_digits``, pixels scaled to [-1, 1], the course's one fixed split).
- :class:`DigitsMLP` is the small image model of the gradient methods: a stack of linear layers
  with ReLUs, returning logits; :func:`train_classifier` trains one in about a second (full-batch
  Adam, fixed seed), so the notebook can retrain it for ROAR and on permuted labels.
- :func:`cascading_randomisation` is Adebayo et al. (2018)'s model-randomisation schedule for a
  :class:`DigitsMLP` (top layer first, cumulative), seeded.
- :func:`random_coalitions` draws the coalitions KernelSHAP is fitted on, :func:`all_coalitions`
  enumerates them.
- :func:`plot_digit_maps` draws attribution maps as 8x8 heatmaps (matplotlib, offline).
"""
from __future__ import annotations

import functools
from copy import deepcopy
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

DIABETES_SEED = 0  # the fixed train/test split of the diabetes data
N_DIABETES_TRAIN = 342


@dataclass(frozen=True)
class TabularSplit:
    X_train: Float[np.ndarray, "n_train features"]
    y_train: Float[np.ndarray, " n_train"]
    X_test: Float[np.ndarray, "n_test features"]
    y_test: Float[np.ndarray, " n_test"]
    feature_names: tuple[str, ...]


@functools.lru_cache(maxsize=1)
def load_diabetes_split() -> TabularSplit:
    """scikit-learn's bundled diabetes data (float64, features already mean-centred and scaled by
    scikit-learn), 342 train / 100 test patients, split once with a fixed seed."""
    from sklearn.datasets import load_diabetes  # bundled with scikit-learn: no download

    data = load_diabetes()
    order = np.random.default_rng(DIABETES_SEED).permutation(len(data.target))
    train, test = order[:N_DIABETES_TRAIN], order[N_DIABETES_TRAIN:]
    arrays = (data.data[train], data.target[train], data.data[test], data.target[test])
    for array in arrays:  # cached and shared: nobody may edit the split in place
        array.setflags(write=False)
    return TabularSplit(*arrays, feature_names=tuple(data.feature_names))


# --------------------------------------------------------------------------------------------
# The image model
# --------------------------------------------------------------------------------------------


class DigitsMLP(nn.Module):
    """Linear layers with ReLUs in between, returning logits (no softmax). ``layers`` is what
    :func:`cascading_randomisation` re-initialises, last layer first."""

    def __init__(self, widths: Sequence[int] = (64, 64, 32, 10)) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: Float[Tensor, "batch features"]) -> Float[Tensor, "batch classes"]:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


def train_classifier(X: Float[Tensor, "n features"], y: Int[Tensor, " n"], *, seed: int, steps: int = 300,
                     lr: float = 1e-2, widths: Sequence[int] = (64, 64, 32, 10)) -> DigitsMLP:
    """A :class:`DigitsMLP` trained with full-batch Adam on cross-entropy (about a second on one
    core for the digits), in eval mode. The same ``seed`` and data give the same weights."""
    with torch.random.fork_rng(devices=[]):  # the caller's random state is untouched
        torch.manual_seed(seed)
        model = DigitsMLP(widths)
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        with torch.enable_grad():  # a notebook may have switched autograd off
            for _ in range(steps):
                optimiser.zero_grad()
                nn.functional.cross_entropy(model(X), y).backward()
                optimiser.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, X: Tensor, y: Tensor) -> float:
    return float((model(X).argmax(-1) == y).float().mean())


def cascading_randomisation(model: DigitsMLP, seed: int = 0) -> Iterator[tuple[str, DigitsMLP]]:
    """Adebayo et al. (2018)'s cascading randomisation: yields ``(name, randomised copy)`` with the
    layers re-initialised from the top down, cumulatively (``layers.2``, then also ``layers.1``,
    then ``layers.0`` for the default widths). Re-initialised means PyTorch's own
    ``reset_parameters`` drawn under ``torch.manual_seed(seed + stage)`` in a forked RNG: the same
    ``seed`` gives the same copies, and ``model`` itself is never changed."""
    copy = deepcopy(model).eval()
    for stage, index in enumerate(reversed(range(len(copy.layers)))):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + stage)
            copy.layers[index].reset_parameters()
        yield f"layers.{index}", deepcopy(copy)  # a copy per stage: a list of the yielded models stays correct


# --------------------------------------------------------------------------------------------
# Coalitions (Shapley values)
# --------------------------------------------------------------------------------------------


def all_coalitions(n_features: int) -> Bool[np.ndarray, "coalitions features"]:
    """Every subset of ``n_features`` players as a boolean row, in binary order (row ``k`` holds
    the bits of ``k``, feature 0 as the lowest bit): ``2**n_features`` rows, the empty set first."""
    if not 1 <= n_features <= 20:
        raise ValueError(f"enumerating coalitions needs 1 to 20 features, got {n_features}")
    return ((np.arange(2**n_features)[:, None] >> np.arange(n_features)[None, :]) & 1).astype(bool)


def random_coalitions(n_features: int, n_samples: int, rng: np.random.Generator) -> Bool[np.ndarray, "samples features"]:
    """``n_samples`` coalitions drawn uniformly from the non-empty, non-full subsets (each
    feature in or out with probability 1/2, redrawn when all are in or all out). Uniform
    sampling is why KernelSHAP then weights every row by the Shapley kernel."""
    if n_features < 2:
        raise ValueError("KernelSHAP needs at least 2 features")
    rows: list[np.ndarray] = []
    while len(rows) < n_samples:
        draw = rng.random((n_samples, n_features)) < 0.5
        sizes = draw.sum(1)
        rows.extend(draw[(sizes > 0) & (sizes < n_features)])
    return np.stack(rows[:n_samples])


def proper_coalitions(n_features: int) -> Bool[np.ndarray, "coalitions features"]:
    """Every coalition except the empty and the full one (what KernelSHAP's regression needs)."""
    return all_coalitions(n_features)[1:-1]


# --------------------------------------------------------------------------------------------
# Plots (matplotlib, static PNG in the notebook: renders offline)
# --------------------------------------------------------------------------------------------


def plot_digit_maps(images: Float[Tensor, "n 64"], maps: dict[str, Tensor], *, title: str = "") -> Any:
    """One row per image: the image, then each method's map as an 8x8 heatmap (diverging colours
    centred on 0, each map scaled by its own largest absolute value). Returns the figure."""
    import matplotlib.pyplot as plt

    images = torch.as_tensor(images).detach().float()
    n = images.shape[0]
    fig, axes = plt.subplots(n, 1 + len(maps), figsize=(1.4 * (1 + len(maps)), 1.45 * n + 0.4), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(images[i].reshape(8, 8).numpy(), cmap="gray_r")
        for j, (name, values) in enumerate(maps.items(), start=1):
            value = torch.as_tensor(values[i]).detach().float().reshape(8, 8)
            limit = float(value.abs().max()) or 1.0
            axes[i, j].imshow(value.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
            if i == 0:
                axes[i, j].set_title(name, fontsize=7)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0, 0].set_title("input", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def format_table(rows: dict[str, Sequence[float]], columns: Sequence[str], *, width: int = 10, digits: int = 3) -> str:
    """A plain-text table: one row per method, one column per value (for printed results)."""
    name_width = max(len(name) for name in rows) + 2
    lines = [" " * name_width + "".join(f"{c:>{width}s}" for c in columns)]
    for name, values in rows.items():
        lines.append(f"{name:{name_width}s}" + "".join(f"{v:{width}.{digits}f}" for v in values))
    return "\n".join(lines)


ModelFn = Callable[[np.ndarray], np.ndarray]  # a black box: rows of features in, one prediction per row out
