"""``modadd-1l``: a one-layer transformer that groks modular addition (Nanda et al. 2023).

The task: given ``a, b`` in ``0..p-1``, predict ``(a + b) mod p``. The input is three tokens
``[a, b, =]`` (``=`` is token ``p``), the answer is read from the logits at the ``=`` position. A
fraction of the ``p * p`` pairs is the training set, the rest the test set. Full-batch AdamW with
strong weight decay first memorises the training pairs (test loss stays high), then, thousands of
steps later, forms the Fourier multiplication circuit and "groks": test loss falls.

Design choices, and where they differ from Nanda et al. (p = 113, d_model 128, 4 heads, d_mlp 512,
lr 1e-3, weight decay 1, 30 % training data, 40k full-batch steps):

- ``p = 31``, a narrower model (d_model 48, 4 heads of 12, d_mlp 192), a 50 % training fraction
  and a faster decay (lr 3e-3, weight decay 3): the model groks within a thousand steps and the
  recipe trains in minutes on one shared CPU core (p = 113 at the paper's width took over a second
  per full-batch step there), and every analysis of the assignment takes seconds. At d_model 32
  the same recipe stalled at 99 % test accuracy (test loss 0.13); at weight decay 2 it had not
  grokked after 1100 steps.
- The model computes only the residual stream of the ``=`` position after the embedding: in a
  one-layer model the other positions' outputs never reach the answer, so skipping them changes
  nothing the loss sees and cuts training time threefold. Attention is from ``=`` to all three
  positions (``[a, b, =]``); there is no causal mask to apply to the last query.
- No LayerNorm, no attention or unembedding biases (as in the paper's model); the MLP has input and
  output biases. Every tensor the analysis needs is a named hook (``hook_pattern``,
  ``hook_mlp_post``, ...), so ``run_with_cache`` works as with TransformerLens models.
- The loss is computed in float64 (as in the paper's code): at the very low losses after grokking,
  float32 log-softmax rounding makes the loss curve noisy.

Shipped: the final weights (``modadd-1l.safetensors``), a handful of checkpoints along training
(``modadd-1l-checkpoints.safetensors``, keys ``step{N}.{param}``) and a card with the train and
test loss curves, the weight norm, the key frequencies found at the end and the phase boundaries.

``python -m interplab.zoo.modadd_1l`` (or ``interplab zoo train modadd-1l``) retrains it.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

ZOO_NAME = "modadd-1l"
CHECKPOINTS = f"{ZOO_NAME}-checkpoints"


@dataclass(frozen=True)
class ModelConfig:
    p: int = 31
    d_model: int = 48
    n_heads: int = 4
    d_head: int = 12
    d_mlp: int = 192


@dataclass
class TrainConfig:
    seed: int = 0
    train_fraction: float = 0.5
    steps: int = 1500
    lr: float = 3e-3
    weight_decay: float = 3.0
    betas: tuple[float, float] = (0.9, 0.98)
    log_every: int = 10  # the loss curves in the card; logging does not change the training run
    checkpoint_steps: tuple[int, ...] = field(default=(0, 100, 200, 300, 400, 500, 600, 800, 1500))


class ModAddTransformer(HookedRootModule):
    """One attention layer (``n_heads`` heads) and one ReLU MLP on ``[a, b, =]``; returns the
    logits over ``0..p-1`` at the ``=`` position."""

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self.cfg = cfg
        p, d, h, dh, dm = cfg.p, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
        self.W_E = nn.Parameter(torch.zeros(p + 1, d))  # token p is "="
        self.W_pos = nn.Parameter(torch.zeros(3, d))
        self.W_Q = nn.Parameter(torch.zeros(h, d, dh))
        self.W_K = nn.Parameter(torch.zeros(h, d, dh))
        self.W_V = nn.Parameter(torch.zeros(h, d, dh))
        self.W_O = nn.Parameter(torch.zeros(h, dh, d))
        self.W_in = nn.Parameter(torch.zeros(d, dm))
        self.b_in = nn.Parameter(torch.zeros(dm))
        self.W_out = nn.Parameter(torch.zeros(dm, d))
        self.b_out = nn.Parameter(torch.zeros(d))
        self.W_U = nn.Parameter(torch.zeros(d, p))
        self.hook_embed = HookPoint()  # batch pos d_model: token + position embeddings
        self.hook_attn_scores = HookPoint()  # batch head key_pos: from "=" to [a, b, =]
        self.hook_pattern = HookPoint()  # batch head key_pos
        self.hook_z = HookPoint()  # batch head d_head
        self.hook_attn_out = HookPoint()  # batch d_model
        self.hook_resid_mid = HookPoint()  # batch d_model
        self.hook_mlp_pre = HookPoint()  # batch d_mlp
        self.hook_mlp_post = HookPoint()  # batch d_mlp: the neuron activations
        self.hook_mlp_out = HookPoint()  # batch d_mlp
        self.hook_resid_post = HookPoint()  # batch d_model
        self.setup()

    def forward(self, tokens: Int[Tensor, "batch 3"]) -> Float[Tensor, "batch p"]:
        x = self.hook_embed(self.W_E[tokens] + self.W_pos)
        # Heads as one matrix product each (a batched einsum over heads is several times slower on CPU).
        h, dh = self.cfg.n_heads, self.cfg.d_head
        q = (x[:, -1] @ self.W_Q.transpose(0, 1).reshape(x.shape[-1], h * dh)).view(-1, h, 1, dh)
        k = (x @ self.W_K.transpose(0, 1).reshape(x.shape[-1], h * dh)).view(-1, 3, h, dh).transpose(1, 2)
        v = (x @ self.W_V.transpose(0, 1).reshape(x.shape[-1], h * dh)).view(-1, 3, h, dh).transpose(1, 2)
        scores = self.hook_attn_scores((q @ k.transpose(-1, -2)).squeeze(-2) / math.sqrt(dh))
        pattern = self.hook_pattern(scores.softmax(dim=-1))
        z = self.hook_z((pattern.unsqueeze(-2) @ v).squeeze(-2))
        attn_out = self.hook_attn_out(z.reshape(-1, h * dh) @ self.W_O.reshape(h * dh, -1))
        resid_mid = self.hook_resid_mid(x[:, -1] + attn_out)
        pre = self.hook_mlp_pre(resid_mid @ self.W_in + self.b_in)
        post = self.hook_mlp_post(F.relu(pre))
        mlp_out = self.hook_mlp_out(post @ self.W_out + self.b_out)
        resid_post = self.hook_resid_post(resid_mid + mlp_out)
        return resid_post @ self.W_U


# ---------------------------------------------------------------------------------------------
# Data (used by training, verify(), the grokking notebook and its checks: one place)
# ---------------------------------------------------------------------------------------------


def all_pairs(p: int) -> Int[Tensor, "p*p 3"]:
    """Every input ``[a, b, =]``, row ``a * p + b``."""
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    return torch.stack([a, b, torch.full_like(a, p)], dim=1)


def labels(p: int) -> Int[Tensor, "p*p"]:  # noqa: F821 (a jaxtyping dimension)
    """``(a + b) mod p`` for every row of :func:`all_pairs`."""
    pairs = all_pairs(p)
    return (pairs[:, 0] + pairs[:, 1]) % p


def train_mask(p: int, train_fraction: float, seed: int) -> Tensor:
    """Boolean mask over the rows of :func:`all_pairs`: the training pairs (a seeded random subset)."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(p * p, generator=generator)
    mask = torch.zeros(p * p, dtype=torch.bool)
    mask[order[: round(train_fraction * p * p)]] = True
    return mask


def loss_fn(logits: Float[Tensor, "batch p"], target: Int[Tensor, "batch"]) -> Tensor:  # noqa: F821 (a jaxtyping dimension)
    """Mean cross-entropy, computed in float64 (see the module docstring)."""
    return F.cross_entropy(logits.double(), target)


def weight_norm(params: dict[str, Tensor]) -> float:
    """The L2 norm of all parameters together (what weight decay shrinks)."""
    return math.sqrt(sum(float(t.detach().double().pow(2).sum()) for t in params.values()))


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def _init(model: ModAddTransformer, generator: torch.Generator) -> None:
    # As in the paper's code: N(0, 1/d_model) for every matrix, zero biases.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("b_"):
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(model.cfg.d_model))


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def train(out_dir: Path | str, cfg: TrainConfig | None = None, seed: int | None = None,
          model_cfg: ModelConfig = ModelConfig()) -> dict[str, Any]:
    """Train with fixed seeds on one CPU thread, write weights, checkpoints and card into
    ``out_dir``, return the card."""
    from safetensors.torch import save_file

    from interplab.grokking import key_frequencies, phase_boundaries
    from interplab.zoo import with_seed

    cfg = with_seed(cfg or TrainConfig(), seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    p = model_cfg.p
    pairs, target = all_pairs(p), labels(p)
    mask = train_mask(p, cfg.train_fraction, cfg.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reproducible and cheap: the recipe is timed on one thread
    try:
        generator = torch.Generator().manual_seed(cfg.seed)
        model = ModAddTransformer(model_cfg)
        _init(model, generator)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
        checkpoints: dict[str, Tensor] = {}
        curve = []
        start = time.perf_counter()
        for step in range(cfg.steps + 1):
            logits = model(pairs[mask])
            loss = loss_fn(logits, target[mask])
            if step % cfg.log_every == 0 or step in cfg.checkpoint_steps:
                with torch.no_grad():
                    test_loss = loss_fn(model(pairs[~mask]), target[~mask]).item()
                curve.append({"step": step, "train_loss": round(loss.item(), 6), "test_loss": round(test_loss, 6),
                              "weight_norm": round(weight_norm(dict(model.named_parameters())), 4)})
            if step in cfg.checkpoint_steps:
                checkpoints.update({f"step{step}.{k}": v for k, v in _state(model).items()})
            if step == cfg.steps:
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    model.eval()
    save_file(_state(model), str(out_dir / f"{ZOO_NAME}.safetensors"))
    save_file(checkpoints, str(out_dir / f"{CHECKPOINTS}.safetensors"))
    with torch.no_grad():
        logits = model(pairs)
    freqs = key_frequencies(model.W_E[:p].detach())
    card = {
        "name": ZOO_NAME,
        "description": f"1-layer transformer (d_model {model_cfg.d_model}, {model_cfg.n_heads} heads, d_mlp "
                       f"{model_cfg.d_mlp}, ReLU, no LayerNorm) trained on (a + b) mod {p} with "
                       f"{cfg.train_fraction:.0%} of the pairs, full-batch AdamW with weight decay "
                       f"{cfg.weight_decay}: memorises, then groks.",
        "recipe": {"module": __name__, "train_config": asdict(cfg), "model_config": asdict(model_cfg),
                   "optimizer": "AdamW, full batch, constant learning rate",
                   "data": "all_pairs(p), train_mask(p, train_fraction, seed)"},
        "seed": cfg.seed,
        "training_time_s": round(seconds, 1),
        "training_threads": 1,
        "torch_version": torch.__version__,
        "metrics": {
            "train_loss": round(loss_fn(logits[mask], target[mask]).item(), 6),
            "test_loss": round(loss_fn(logits[~mask], target[~mask]).item(), 6),
            "test_accuracy": round((logits[~mask].argmax(-1) == target[~mask]).double().mean().item(), 4),
            "uniform_loss": round(math.log(p), 4),
        },
        "key_frequencies": freqs,
        "phases": phase_boundaries(curve),
        "checkpoint_steps": list(cfg.checkpoint_steps),
        "curve": curve,
    }
    (out_dir / f"{ZOO_NAME}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def load() -> ModAddTransformer:
    """The shipped final model, in eval mode, built offline from the safetensors file."""
    from safetensors.torch import load_file

    from interplab.zoo import card, weights_path

    model = ModAddTransformer(ModelConfig(**card(ZOO_NAME)["recipe"]["model_config"]))
    model.load_state_dict(load_file(str(weights_path(ZOO_NAME))))
    return model.eval()


def load_checkpoints() -> dict[int, ModAddTransformer]:
    """Step -> the model at that step of training (the shipped checkpoints), in eval mode."""
    from safetensors.torch import load_file

    from interplab.zoo import WEIGHTS_DIR, card

    meta = card(ZOO_NAME)
    path = WEIGHTS_DIR / f"{CHECKPOINTS}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"zoo model {ZOO_NAME!r} has no checkpoints at {path}; run `interplab zoo train {ZOO_NAME}`")
    tensors = load_file(str(path))
    models = {}
    for step in meta["checkpoint_steps"]:
        model = ModAddTransformer(ModelConfig(**meta["recipe"]["model_config"]))
        model.load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"step{step}.")})
        models[step] = model.eval()
    return models


def verify(model: ModAddTransformer) -> dict[str, bool]:
    meta_cfg = TrainConfig()
    p = model.cfg.p
    mask = train_mask(p, meta_cfg.train_fraction, meta_cfg.seed)
    with torch.no_grad():
        logits = model(all_pairs(p))
    target = labels(p)
    test_acc = (logits[~mask].argmax(-1) == target[~mask]).double().mean().item()
    return {
        "train loss < 0.01": loss_fn(logits[mask], target[mask]).item() < 0.01,
        "test accuracy > 0.99 (grokked)": test_acc > 0.99,
    }


if __name__ == "__main__":
    from interplab.zoo import WEIGHTS_DIR

    print(json.dumps(train(WEIGHTS_DIR), indent=2))
