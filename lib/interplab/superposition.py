"""Toy models of superposition (Elhage et al. 2022), many instances trained as one tensor.

The ``saes`` assignment has students write one toy model (``h = W x``, ``x_hat = ReLU(W^T h + b)``,
importance-weighted squared error) and train it; this module trains a whole batch of *instances* at
once, each with its own feature probability and seed, the way Anthropic's reference notebook does
(a leading instance axis on ``W`` and ``b``, per-instance losses summed, so instances stay
independent). Used by the notebook's figure, which needs converged models to be read.
"""
from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def train_toy_models(feature_probability: Float[Tensor, " instances"], importance: Float[Tensor, " n_features"],
                     d_hidden: int, steps: int, generator: torch.Generator, batch: int = 1024,
                     lr: float = 1e-3) -> tuple[Float[Tensor, "instances d_hidden n_features"], Float[Tensor, "instances n_features"],
                                                Float[Tensor, " instances"]]:
    """Train one toy model per entry of ``feature_probability`` (Adam, a fresh sparse batch per step,
    the learning rate decayed linearly to zero over the last half); returns ``(W, b, loss)``, the loss
    measured on a fresh batch of 8192 (so that instances can be ranked without minibatch noise)."""
    n_instances, n_features = len(feature_probability), len(importance)
    W = torch.empty(n_instances, d_hidden, n_features)
    for i in range(n_instances):  # Xavier-normal per instance, as in the single-model exercise
        torch.nn.init.xavier_normal_(W[i], generator=generator)
    W, b = W.requires_grad_(True), torch.zeros(n_instances, n_features, requires_grad=True)
    optimizer = torch.optim.Adam([W, b], lr=lr)
    p = feature_probability[:, None, None]

    def loss_on_fresh_batch(size: int) -> Float[Tensor, " instances"]:
        values = torch.rand(n_instances, size, n_features, generator=generator)
        x = values * (torch.rand(n_instances, size, n_features, generator=generator) < p)
        h = torch.einsum("ibf,idf->ibd", x, W)
        x_hat = torch.relu(torch.einsum("ibd,idf->ibf", h, W) + b[:, None, :])
        return (importance * (x - x_hat) ** 2).sum(-1).mean(-1)  # one value per instance

    with torch.enable_grad():
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = lr * min(1.0, 2.0 * (steps - step) / steps)
            loss = loss_on_fresh_batch(batch).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return W.detach(), b.detach(), loss_on_fresh_batch(8192)
