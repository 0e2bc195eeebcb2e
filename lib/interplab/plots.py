"""Plots that every notebook can share: static matplotlib figures, so they render offline (PNG in
the notebook, no JavaScript, no CDN).

- :func:`heatmap`: any matrix (attention patterns, per-head scores, circuits), diverging colours
  centred on zero when the values have both signs.
- :func:`line`: one or more curves over positions (e.g. per-token loss).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().float().numpy()
    return np.asarray(values, dtype=float)


def heatmap(matrix: Any, *, title: str = "", xlabel: str = "", ylabel: str = "",
            xticklabels: Sequence[str] | None = None, yticklabels: Sequence[str] | None = None,
            annotate: bool | None = None, signed: bool | None = None, ax: Any = None, figsize=(4.5, 3.8)):
    """Show a 2-D matrix. ``signed`` (default: whether values of both signs occur) picks a
    diverging colour map centred on 0; ``annotate`` (default: small matrices) writes the values.
    Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    values = _numpy(matrix)
    if values.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D matrix, got shape {values.shape}")
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    finite = values[np.isfinite(values)]
    signed = bool(finite.size and finite.min() < 0 < finite.max()) if signed is None else signed
    if signed:
        bound = float(np.abs(finite).max()) if finite.size else 1.0
        image = ax.imshow(values, cmap="RdBu_r", vmin=-bound, vmax=bound)
    else:
        image = ax.imshow(values, cmap="viridis")
    fig.colorbar(image, ax=ax, shrink=0.8)
    if annotate is None:
        annotate = values.size <= 64
    if annotate:
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if signed else "white")
    # Small matrices get integer ticks (head indices), not matplotlib's fractional ones.
    if xticklabels is None and values.shape[1] <= 16:
        xticklabels = [str(i) for i in range(values.shape[1])]
    if yticklabels is None and values.shape[0] <= 16:
        yticklabels = [str(i) for i in range(values.shape[0])]
    if xticklabels is not None:
        ax.set_xticks(range(len(xticklabels)), list(xticklabels), rotation=90 if len(xticklabels) > 8 else 0)
    if yticklabels is not None:
        ax.set_yticks(range(len(yticklabels)), list(yticklabels))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    return fig


def line(curves: dict[str, Any], *, title: str = "", xlabel: str = "", ylabel: str = "",
         vlines: Sequence[float] = (), ax: Any = None, figsize=(6.5, 3.2)):
    """Plot named 1-D curves against their index; ``vlines`` marks positions (e.g. where a repeat starts)."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    for name, values in curves.items():
        ax.plot(_numpy(values), label=name)
    for x in vlines:
        ax.axvline(x, color="grey", linestyle="--", linewidth=1)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(curves) > 1:
        ax.legend()
    fig.tight_layout()
    return fig


def head_labels(n_layers: int, n_heads: int) -> list[str]:
    """``["L0H0", "L0H1", ...]``: the usual names of attention heads."""
    return [f"L{layer}H{head}" for layer in range(n_layers) for head in range(n_heads)]
