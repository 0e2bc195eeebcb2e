"""Time-series XAI: the shared parts of the ``tsxai`` assignment (data, the FCN, helpers, plots).

Everything here is infrastructure; the attribution methods themselves are the exercises.

- :func:`load_dataset` reads GunPoint (univariate) or BasicMotions (6 channels) from the npz files
  that ship in ``interplab/tsxai_data`` (made once from aeon's bundled copies by
  ``tsxai_data/make_datasets.py``; aeon itself cannot be installed next to the course's
  numpy/pandas pins). Nothing is downloaded.
- :class:`FCN` is the fully convolutional network of Wang et al. (2017): three Conv1d-BatchNorm-ReLU
  blocks, global average pooling over time, a linear classifier. ``model.features(x)`` gives the
  last block's feature maps (what CAM and Grad-CAM read), ``model.classifier`` the linear head.
- Conventions shared by every method (Captum's call shape, so methods are swappable):
  inputs are ``Float[Tensor, "batch channels time"]``, targets ``Int[Tensor, "batch"]``, and an
  attribution function is called as ``attribute(model, inputs, target, baselines=...)`` and returns
  a tensor shaped like ``inputs`` (CAM-type methods, which cannot tell channels apart, return
  ``"batch time"``; :func:`as_input_shaped` broadcasts them).
- :func:`segment_ids` defines the segments of grouped methods (feature ablation, LIME, the
  per-segment completeness check): equal-length segments in time, separately for each channel.
- :func:`random_attribution` is the sanity baseline every method must beat; it insists on a seed.
- :func:`plot_attribution` draws a heatmap over the series, one row per channel.
"""
from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

DATA_DIR = Path(__file__).parent / "tsxai_data"
DATASETS = ("gunpoint", "basicmotions")

AttributionFn = Callable[..., Tensor]


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeSeriesDataset:
    """A UCR/UEA classification problem as float32 tensors shaped ``(cases, channels, time)``."""

    name: str
    X_train: Float[Tensor, "n_train channels time"]
    y_train: Int[Tensor, " n_train"]
    X_test: Float[Tensor, "n_test channels time"]
    y_test: Int[Tensor, " n_test"]
    class_names: tuple[str, ...]
    channel_names: tuple[str, ...]

    @property
    def n_channels(self) -> int:
        return self.X_train.shape[1]

    @property
    def length(self) -> int:
        return self.X_train.shape[2]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


# BasicMotions: a smartwatch's 3-axis accelerometer then 3-axis gyroscope (UEA archive description).
CHANNEL_NAMES = {
    "gunpoint": ("x position of the hand",),
    "basicmotions": ("acc x", "acc y", "acc z", "gyro x", "gyro y", "gyro z"),
}


def load_dataset(name: str) -> TimeSeriesDataset:
    """``"gunpoint"`` or ``"basicmotions"``, from the shipped npz (offline, a few milliseconds)."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    path = DATA_DIR / f"{name}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; regenerate it with {DATA_DIR / 'make_datasets.py'}")
    with np.load(path, allow_pickle=False) as data:
        return TimeSeriesDataset(
            name=name,
            X_train=torch.from_numpy(data["X_train"].copy()),
            y_train=torch.from_numpy(data["y_train"].copy()),
            X_test=torch.from_numpy(data["X_test"].copy()),
            y_test=torch.from_numpy(data["y_test"].copy()),
            class_names=tuple(str(s) for s in data["class_names"]),
            channel_names=CHANNEL_NAMES[name],
        )


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class ConvBlock(nn.Module):
    """Conv1d with "same" zero padding (time length is kept; for an even kernel the extra zero goes
    on the right, as PyTorch's ``padding="same"`` does) -> BatchNorm1d -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        left = (kernel_size - 1) // 2
        self.pad = nn.ConstantPad1d((left, kernel_size - 1 - left), 0.0)
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size)
        self.norm = nn.BatchNorm1d(out_channels)
        self.act = nn.ReLU()

    def forward(self, x: Float[Tensor, "batch c_in time"]) -> Float[Tensor, "batch c_out time"]:
        return self.act(self.norm(self.conv(self.pad(x))))


class FCN(nn.Module):
    """Wang, Yan & Oates (2017), "Time series classification from scratch with deep neural
    networks: a strong baseline": conv blocks (paper: 128/256/128 filters, kernels 8/5/3), global
    average pooling over time, a linear layer to class logits (no softmax: ``forward`` returns
    logits). Because of the GAP, ``logits[c] = mean_t (W[c] @ features[:, t]) + b[c]``: the class
    activation map is exact, not an approximation."""

    def __init__(self, in_channels: int, n_classes: int, widths: Sequence[int] = (128, 256, 128),
                 kernels: Sequence[int] = (8, 5, 3)) -> None:
        super().__init__()
        if len(widths) != len(kernels):
            raise ValueError("widths and kernels must have the same length")
        chans = [in_channels, *widths]
        self.blocks = nn.ModuleList(ConvBlock(chans[i], chans[i + 1], k) for i, k in enumerate(kernels))
        self.classifier = nn.Linear(chans[-1], n_classes)

    def features(self, x: Float[Tensor, "batch channels time"]) -> Float[Tensor, "batch filters time"]:
        """The last conv block's output (after its ReLU): the maps CAM and Grad-CAM weight."""
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: Float[Tensor, "batch channels time"]) -> Float[Tensor, "batch classes"]:
        return self.classifier(self.features(x).mean(dim=-1))


@torch.no_grad()
def predict(model: nn.Module, inputs: Float[Tensor, "batch channels time"]) -> Int[Tensor, " batch"]:
    """The model's predicted class (argmax of the logits)."""
    return model(inputs).argmax(dim=-1)


@torch.no_grad()
def accuracy(model: nn.Module, inputs: Tensor, labels: Tensor) -> float:
    return float((predict(model, inputs) == labels).float().mean())


# --------------------------------------------------------------------------------------------
# Shared helpers for the methods
# --------------------------------------------------------------------------------------------


def segment_ids(n_channels: int, length: int, n_segments: int) -> Int[Tensor, "channels time"]:
    """Group id of every (channel, time) element: ``n_segments`` equal-length segments in time,
    separately for each channel, numbered channel-major: ``id = channel * n_segments + segment``,
    with ``segment = (t * n_segments) // length`` (so segment lengths differ by at most one when
    ``length`` is not a multiple of ``n_segments``). This is Captum's ``feature_mask`` layout."""
    if not 1 <= n_segments <= length:
        raise ValueError(f"n_segments must be between 1 and the series length {length}, got {n_segments}")
    segment = (torch.arange(length) * n_segments) // length
    return torch.arange(n_channels)[:, None] * n_segments + segment[None, :]


def as_input_shaped(attributions: Tensor, inputs: Tensor) -> Tensor:
    """Broadcast a ``"batch time"`` map (CAM, Grad-CAM) to the inputs' ``"batch channels time"``;
    an inputs-shaped attribution is returned unchanged."""
    if attributions.shape == inputs.shape:
        return attributions
    if attributions.dim() == 2 and attributions.shape == (inputs.shape[0], inputs.shape[2]):
        return attributions[:, None, :].expand_as(inputs)
    raise ValueError(f"attributions of shape {tuple(attributions.shape)} do not fit inputs {tuple(inputs.shape)}")


def random_attribution(model: nn.Module, inputs: Float[Tensor, "batch channels time"], target: Tensor | None = None,
                       *, seed: int) -> Float[Tensor, "batch channels time"]:
    """Standard-normal noise shaped like ``inputs``: the baseline any method must beat.

    The seed is required: an unseeded random baseline makes every faithfulness table
    unreproducible (a pitfall of several libraries). ``model`` and ``target`` are accepted only to
    keep the common call shape."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(inputs.shape, generator=generator, dtype=inputs.dtype)


def cascading_randomisation(model: nn.Module, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """Adebayo et al. (2018)'s cascading model-parameter randomisation for an :class:`FCN`: yields
    ``(name, randomised copy)`` with the layers re-initialised from the top down, cumulatively:
    ``classifier``, then also ``blocks.2``, then ``blocks.1``, then ``blocks.0`` (everything).

    "Re-initialised" is PyTorch's own initialisation (``reset_parameters`` of every layer: conv and
    linear weights and biases, BatchNorm scale, shift and running statistics), drawn under
    ``torch.manual_seed(seed + stage)`` inside a forked RNG: the same ``seed`` gives the same
    copies, and the caller's global random state is untouched. ``model`` itself is never changed;
    the copies are in eval mode like the shipped models."""
    copy = deepcopy(model).eval()
    stages = [("classifier", copy.classifier)] + [(f"blocks.{i}", copy.blocks[i]) for i in reversed(range(len(copy.blocks)))]
    for stage, (name, layer) in enumerate(stages):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + stage)
            for module in layer.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        yield name, deepcopy(copy)  # a copy per stage: keeping the yielded models in a list stays correct


# --------------------------------------------------------------------------------------------
# Plots (matplotlib, static PNG in the notebook: renders offline)
# --------------------------------------------------------------------------------------------


def plot_attribution(series: Float[Tensor, "channels time"], attribution: Tensor, *, title: str = "",
                     channel_names: Sequence[str] | None = None, signed: bool = True, ax: Any = None) -> Any:
    """Heatmap of ``attribution`` behind ``series``, one row per channel.

    ``attribution`` is ``"channels time"`` or ``"time"`` (one map for all channels, e.g. CAM).
    ``signed=True`` uses a diverging colour map centred on 0 (red = evidence for the target,
    blue = against); ``signed=False`` a sequential one. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    series = torch.as_tensor(series).detach().cpu().float()
    attribution = torch.as_tensor(attribution).detach().cpu().float()
    if series.dim() == 1:
        series = series[None]
    if attribution.dim() == 1:
        attribution = attribution[None].expand(series.shape[0], -1)
    if attribution.shape != series.shape:
        raise ValueError(f"attribution {tuple(attribution.shape)} does not fit series {tuple(series.shape)}")
    n_channels, length = series.shape
    if ax is None:
        fig, axes = plt.subplots(n_channels, 1, figsize=(9, 1.1 + 1.0 * n_channels), sharex=True, squeeze=False)
        axes = axes[:, 0]
    else:
        axes, fig = [ax], ax.figure
        if n_channels != 1:
            raise ValueError("pass ax only for a single channel")
    limit = float(attribution.abs().max()) or 1.0
    cmap, vmin = ("RdBu_r", -limit) if signed else ("viridis", 0.0)
    names = list(channel_names) if channel_names is not None else [f"ch {c}" for c in range(n_channels)]
    for c, axis in enumerate(axes):
        low, high = float(series[c].min()), float(series[c].max())
        pad = 0.05 * (high - low or 1.0)
        image = axis.imshow(attribution[c][None].numpy(), aspect="auto", cmap=cmap, vmin=vmin, vmax=limit,
                            extent=(-0.5, length - 0.5, low - pad, high + pad), interpolation="nearest")
        axis.plot(np.arange(length), series[c].numpy(), color="black", linewidth=1.2)
        axis.set_ylabel(names[c], rotation=0, ha="right", va="center", fontsize=8)
        axis.set_yticks([])
    axes[-1].set_xlabel("time step")
    if title:
        axes[0].set_title(title)
    fig.colorbar(image, ax=list(axes), fraction=0.03, pad=0.01)
    return fig


def plot_curves(curves: dict[str, Tensor], *, title: str = "", xlabel: str = "fraction of elements perturbed",
                ylabel: str = "p(target)") -> Any:
    """Mean curve per method (e.g. deletion or insertion curves), x from 0 to 1."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for name, curve in curves.items():
        curve = torch.as_tensor(curve).detach().float()
        mean = curve.mean(0) if curve.dim() == 2 else curve
        ax.plot(np.linspace(0, 1, mean.shape[-1]), mean.numpy(), label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return fig
