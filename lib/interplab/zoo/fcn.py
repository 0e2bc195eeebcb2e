"""Training recipe shared by the two FCN zoo models (``fcn-gunpoint``, ``fcn-basicmotions``).

nanoGPT style: a config dataclass and a plain loop. The architecture is
:class:`interplab.tsxai.FCN` (Wang et al. 2017) with the filter widths halved (paper 128/256/128,
here 64/128/64 by default) so that the weights are small and every attribution method in the
assignment runs in seconds on a laptop CPU; kernels 8/5/3, BatchNorm, ReLU and global average
pooling are as in the paper. Adam (lr 1e-3, as in the paper), a fixed number of epochs, the
learning rate halved when the training loss plateaus. The test split is used once, after
training, for the card: no model selection on it.

This module defines no ``ZOO_NAME``: the registry lists ``fcn_gunpoint`` and ``fcn_basicmotions``.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from interplab.tsxai import FCN, accuracy, load_dataset

# Published FCN test accuracy (full 128/256/128 widths), for comparison on the card.
PUBLISHED = {"gunpoint": {"fcn_test_accuracy": 1.00, "source": "Wang et al. 2017, UCR results (GunPoint test error 0.000)"}}


@dataclass(frozen=True)
class FCNConfig:
    dataset: str
    widths: tuple[int, ...] = (64, 128, 64)
    kernels: tuple[int, ...] = (8, 5, 3)
    epochs: int = 500
    batch_size: int = 16
    lr: float = 1e-3
    plateau_patience: int = 30  # epochs without a new best training loss before halving the lr
    min_lr: float = 1e-4
    seed: int = 0


def build(cfg: FCNConfig, in_channels: int, n_classes: int) -> FCN:
    return FCN(in_channels, n_classes, widths=cfg.widths, kernels=cfg.kernels)


def train(name: str, cfg: FCNConfig, out_dir: Path | str) -> dict[str, Any]:
    """Train with fixed seeds on one CPU thread, write ``<name>.safetensors`` and ``<name>.json``."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_dataset(cfg.dataset)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reproducible and cheap: the recipe is timed on one thread
    try:
        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        model = build(cfg, data.n_channels, data.n_classes)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=cfg.plateau_patience,
                                                               min_lr=cfg.min_lr)
        n = data.X_train.shape[0]
        log = []
        start = time.perf_counter()
        for epoch in range(cfg.epochs):
            model.train()
            order = torch.randperm(n, generator=generator)
            total = 0.0
            for i in range(0, n, cfg.batch_size):
                idx = order[i:i + cfg.batch_size]
                if len(idx) < 2:  # BatchNorm needs two cases
                    continue
                loss = F.cross_entropy(model(data.X_train[idx]), data.y_train[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
            scheduler.step(total / n)
            if epoch % 25 == 0 or epoch == cfg.epochs - 1:
                log.append({"epoch": epoch, "train_loss": round(total / n, 5), "lr": optimizer.param_groups[0]["lr"]})
        seconds = time.perf_counter() - start
        model.eval()
        metrics = evaluate(model, cfg.dataset)
    finally:
        torch.set_num_threads(threads)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / f"{name}.safetensors"))
    n_params = sum(p.numel() for p in model.parameters())
    card = {
        "name": name,
        "description": f"FCN (Wang et al. 2017) on {cfg.dataset} ({data.n_channels} channel(s), length {data.length}, "
                       f"{data.n_classes} classes). Filter widths shrunk from the paper's 128/256/128 to "
                       f"{'/'.join(map(str, cfg.widths))} to keep weights small and attribution methods fast; "
                       "kernels 8/5/3, BatchNorm, ReLU, global average pooling as published.",
        "recipe": {"module": "interplab.zoo.fcn", "config": asdict(cfg), "optimizer": "Adam",
                   "schedule": "ReduceLROnPlateau(factor=0.5) on the training loss",
                   "data": f"interplab.tsxai.load_dataset({cfg.dataset!r}) (aeon's bundled UCR/UEA copy, train split)",
                   "selection": "none: the final epoch's weights; the test split is used once, for this card"},
        "parameters": n_params,
        "seed": cfg.seed,
        "training_time_s": round(seconds, 1),
        "training_threads": 1,
        "torch_version": torch.__version__,
        "metrics": metrics,
        "published": PUBLISHED.get(cfg.dataset),
        "loss_curve": log,
    }
    (out_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


@torch.no_grad()
def evaluate(model: FCN, dataset: str) -> dict[str, float]:
    data = load_dataset(dataset)
    return {"train_accuracy": round(accuracy(model, data.X_train, data.y_train), 4),
            "test_accuracy": round(accuracy(model, data.X_test, data.y_test), 4),
            "n_test": int(data.X_test.shape[0])}


def load(name: str, cfg: FCNConfig) -> FCN:
    """The shipped model in eval mode (BatchNorm uses its running statistics), built offline."""
    from safetensors.torch import load_file

    from interplab.zoo import weights_path

    data = load_dataset(cfg.dataset)
    model = build(cfg, data.n_channels, data.n_classes)
    model.load_state_dict(load_file(str(weights_path(name))))
    return model.eval()


def zoo_entry(name: str, cfg: FCNConfig, min_test_accuracy: float):
    """``train``, ``load`` and ``verify`` of one FCN zoo model (the zoo contract), so that each
    dataset's module only names its model, config and accuracy bar."""

    def train_entry(out_dir: Path | str, seed: int | None = None) -> dict[str, Any]:
        from interplab.zoo import with_seed

        return train(name, with_seed(cfg, seed), out_dir)

    def load_entry() -> FCN:
        return load(name, cfg)

    def verify_entry(model: FCN) -> dict[str, bool]:
        metrics = evaluate(model, cfg.dataset)
        return {
            f"test accuracy >= {min_test_accuracy}": metrics["test_accuracy"] >= min_test_accuracy,
            "train accuracy == 1.0": metrics["train_accuracy"] == 1.0,
            "model is in eval mode (BatchNorm uses running statistics)": not model.training,
        }

    return train_entry, load_entry, verify_entry
