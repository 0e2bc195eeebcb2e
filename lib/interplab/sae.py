"""Sparse autoencoders: the model, its loss, training, metrics, and SAELens's on-disk format.

This is the library side used by the zoo SAE (``toyworld-sae``) and by later assignments; the
``saes`` assignment has students write these pieces themselves.

Definitions (the same in the assignment, on the zoo cards and in the SAELens cross-check test):

* ``encode(x) = act((x - b_dec) @ W_enc + b_enc)``, ``decode(f) = f @ W_dec + b_dec``, where ``act``
  is ReLU, or TopK (keep the ``k`` largest pre-activations, then ReLU). This is SAELens's
  ``standard`` / ``topk`` architecture with ``apply_b_dec_to_input=True``.
* ReLU loss: ``E ||x - x_hat||^2 + l1_coefficient * E sum_i f_i ||W_dec[i]||`` (the L1 penalty is
  weighted by decoder row norms, so shrinking the decoder cannot cheat it; Anthropic, April 2024).
  TopK loss: the reconstruction term alone.
* L0: the mean over tokens of the number of non-zero features.
* Explained variance: ``1 - E||x - x_hat||^2 / (E||x||^2 - ||E x||^2)`` (the denominator is the
  total variance of ``x``, summed over dimensions).
* Fraction of CE loss recovered: ``(L_zero - L_sae) / (L_zero - L_clean)``, where ``L_clean`` is the
  model's loss, ``L_sae`` its loss with the SAE's reconstruction spliced in at the hook and
  ``L_zero`` its loss with the hook's activation zero-ablated.
* Dead features: features that did not fire on any token of a window of recent tokens.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_CFG = "cfg.json"


@dataclass
class SAEConfig:
    d_in: int
    d_sae: int
    architecture: str = "standard"  # "standard" (ReLU + L1) or "topk"
    k: int | None = None
    l1_coefficient: float = 1.0
    hook_name: str = ""
    model_name: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


class SAE(nn.Module):
    """A sparse autoencoder with SAELens's parameter names and shapes:
    ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec [d_in]``."""

    def __init__(self, cfg: SAEConfig, generator: torch.Generator | None = None):
        super().__init__()
        if cfg.architecture not in ("standard", "topk"):
            raise ValueError(f"architecture must be 'standard' or 'topk', got {cfg.architecture!r}")
        if cfg.architecture == "topk" and not cfg.k:
            raise ValueError("a topk SAE needs k")
        self.cfg = cfg
        # Decoder rows start as random unit vectors and the encoder as their transpose (a common,
        # well-behaved initialisation; Anthropic April 2024 and SAELens both do a variant of it).
        w = torch.randn(cfg.d_sae, cfg.d_in, generator=generator)
        w = w / w.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(w.clone())
        self.W_enc = nn.Parameter(w.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))

    def pre_activations(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        pre = self.pre_activations(x)
        if self.cfg.architecture == "topk":
            values, indices = pre.topk(self.cfg.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, indices, values.relu())
        return pre.relu()

    def decode(self, f: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        return f @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        return self.decode(self.encode(x))

    def loss(self, x: Float[Tensor, "batch d_in"]) -> tuple[Tensor, dict[str, float]]:
        """Training loss on a batch of activations, and its parts."""
        f = self.encode(x)
        x_hat = self.decode(f)
        mse = (x - x_hat).pow(2).sum(-1).mean()
        if self.cfg.architecture == "topk":
            sparsity = torch.zeros(())
        else:
            sparsity = (f * self.W_dec.norm(dim=-1)).sum(-1).mean()
        loss = mse + self.cfg.l1_coefficient * sparsity
        return loss, {"mse": mse.item(), "sparsity": sparsity.item(), "l0": (f != 0).sum(-1).float().mean().item()}


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------


def l0(f: Float[Tensor, "... d_sae"]) -> float:
    """Mean number of non-zero features per token."""
    return float((f != 0).sum(-1).float().mean())


def explained_variance(x: Float[Tensor, "... d"], x_hat: Float[Tensor, "... d"]) -> float:
    """``1 - E||x - x_hat||^2 / (E||x||^2 - ||E x||^2)``, over all tokens (float64 sums)."""
    x = x.reshape(-1, x.shape[-1]).double()
    x_hat = x_hat.reshape(-1, x_hat.shape[-1]).double()
    mse = (x - x_hat).pow(2).sum(-1).mean()
    total_variance = x.pow(2).sum(-1).mean() - x.mean(0).pow(2).sum()
    return float(1 - mse / total_variance)


def _masked_ce(logits: Tensor, tokens: Tensor, mask: Tensor | None) -> Tensor:
    per_token = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    if mask is None:
        return per_token.mean()
    m = mask.flatten().float()
    return (per_token * m).sum() / m.sum()


@torch.no_grad()
def ce_loss_recovered(model, sae: SAE, tokens: Tensor, hook_name: str,
                      mask: Tensor | None = None) -> dict[str, float]:
    """Clean, spliced and zero-ablated next-token losses, and the fraction recovered.

    ``mask [batch, pos-1]`` selects which next-token predictions count (``None``: all). The SAE is
    spliced in at every position through a TransformerLens hook."""
    clean = _masked_ce(model(tokens), tokens, mask)
    spliced = _masked_ce(model.run_with_hooks(tokens, fwd_hooks=[(hook_name, lambda act, hook: sae(act))]),
                         tokens, mask)
    zero = _masked_ce(model.run_with_hooks(tokens, fwd_hooks=[(hook_name, lambda act, hook: torch.zeros_like(act))]),
                      tokens, mask)
    return {"ce_clean": float(clean), "ce_with_sae": float(spliced), "ce_zero_ablation": float(zero),
            "ce_loss_recovered": float((zero - spliced) / (zero - clean))}


def dead_features(fired: Float[Tensor, "window d_sae"]) -> Tensor:
    """Boolean mask of features that never fired in a window of feature activations."""
    return (fired != 0).sum(0) == 0


def cosine_matrix(a: Float[Tensor, "n d"], b: Float[Tensor, "m d"]) -> Float[Tensor, "n m"]:
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def mean_max_cosine(true_features: Float[Tensor, "n d"], learned: Float[Tensor, "m d"]) -> float:
    """For each true feature, the best cosine similarity with any learned direction; the mean."""
    return float(cosine_matrix(true_features, learned).max(-1).values.mean())


def matched_cosine(true_features: Float[Tensor, "n d"], learned: Float[Tensor, "m d"]) -> float:
    """Mean cosine similarity after a one-to-one (Hungarian) matching of true to learned features."""
    from scipy.optimize import linear_sum_assignment

    sims = cosine_matrix(true_features, learned).double().numpy()
    rows, cols = linear_sum_assignment(sims, maximize=True)
    return float(sims[rows, cols].sum() / len(true_features))


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def resample_dead(sae: SAE, dead: Tensor, x: Float[Tensor, "batch d_in"], optimizer: torch.optim.Optimizer | None,
                  generator: torch.Generator | None = None) -> int:
    """Re-initialise dead features on inputs the SAE reconstructs badly (Anthropic, "Towards
    Monosemanticity", 2023, simplified): draw inputs with probability proportional to their squared
    reconstruction error, point each dead feature's decoder row at one of them (unit norm), set its
    encoder column to that direction scaled to 0.2 times the mean live encoder norm, zero its bias,
    and reset the optimizer's moments for those entries. Returns how many were resampled."""
    idx = dead.nonzero().flatten()
    if len(idx) == 0:
        return 0
    err = (x - sae(x)).pow(2).sum(-1)
    if float(err.sum()) <= 0:
        return 0
    picks = torch.multinomial(err / err.sum(), len(idx), replacement=len(idx) > len(x), generator=generator)
    directions = F.normalize(x[picks] - sae.b_dec, dim=-1)
    alive = ~dead
    scale = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
    sae.W_dec[idx] = directions
    sae.W_enc[:, idx] = directions.T * scale * 0.2
    sae.b_enc[idx] = 0.0
    if optimizer is not None:
        for p, sl in ((sae.W_dec, (idx,)), (sae.W_enc, (slice(None), idx)), (sae.b_enc, (idx,))):
            state = optimizer.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][sl] = 0.0
    return len(idx)


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 512
    lr: float = 3e-3
    resample_every: int = 0  # 0: never
    dead_window: int = 200  # steps a feature must stay silent to count as dead
    log_every: int = 0
    seed: int = 0


def train_sae(sae: SAE, batches: Callable[[int], Tensor], cfg: TrainConfig,
              log: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Train ``sae`` with Adam on ``batches(step) -> [batch, d_in]``; returns the loss history.

    Decoder rows are kept at unit norm after each step for TopK SAEs (their loss has no norm
    penalty that would otherwise pin the scale)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    last_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long)
    history: dict[str, list[float]] = {"loss": [], "mse": [], "l0": [], "resampled": []}
    for step in range(cfg.steps):
        x = batches(step)
        lr = cfg.lr * min(1.0, (cfg.steps - step) / (0.2 * cfg.steps))  # linear decay over the last 20%
        for g in opt.param_groups:
            g["lr"] = lr
        loss, parts = sae.loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sae.cfg.architecture == "topk":
            with torch.no_grad():
                sae.W_dec /= sae.W_dec.norm(dim=-1, keepdim=True)
        with torch.no_grad():
            fired = (sae.encode(x) != 0).any(0)
        last_fired = torch.where(fired, torch.tensor(step), last_fired)
        history["loss"].append(float(loss))
        history["mse"].append(parts["mse"])
        history["l0"].append(parts["l0"])
        if cfg.resample_every and (step + 1) % cfg.resample_every == 0 and step < 0.8 * cfg.steps:
            dead = (step - last_fired) >= cfg.dead_window
            n = resample_dead(sae, dead, x, opt, gen)
            last_fired[dead] = step
            history["resampled"].append(n)
        if log and cfg.log_every and (step + 1) % cfg.log_every == 0:
            log(f"step {step + 1}: loss {float(loss):.4f} mse {parts['mse']:.4f} l0 {parts['l0']:.1f}")
    return history


# ------------------------------------------------------------------------------------------------
# SAELens's on-disk format: <dir>/cfg.json and <dir>/sae_weights.safetensors
# ------------------------------------------------------------------------------------------------


def save_saelens(sae: SAE, path: str | Path) -> Path:
    """Write ``sae`` in SAELens's format (loadable with ``sae_lens.SAE.load_from_disk(path)``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    c = sae.cfg
    cfg: dict[str, Any] = {
        "architecture": c.architecture, "d_in": c.d_in, "d_sae": c.d_sae, "dtype": "float32",
        "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
        "reshape_activations": "none",
        # sae_lens_version marks the file as SAELens 6.x format (older ones are read as legacy configs).
        "metadata": {"sae_lens_version": "6.0.0", "sae_lens_training_version": None, "model_name": c.model_name, "hook_name": c.hook_name, "hook_head_index": None,
                     "prepend_bos": True, "context_size": None, "dataset_path": None,
                     "interplab": {"l1_coefficient": c.l1_coefficient, **c.metadata}},
    }
    if c.architecture == "topk":
        cfg["k"] = c.k
        cfg["rescale_acts_by_decoder_norm"] = False
    weights = {name: p.detach().float().contiguous() for name, p in
               (("W_enc", sae.W_enc), ("b_enc", sae.b_enc), ("W_dec", sae.W_dec), ("b_dec", sae.b_dec))}
    save_file(weights, str(path / SAELENS_WEIGHTS))
    (path / SAELENS_CFG).write_text(json.dumps(cfg, indent=2) + "\n")
    return path


def load_saelens(path: str | Path) -> SAE:
    """Read an SAE in SAELens's format (``standard`` or ``topk``, no activation normalisation)."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg = json.loads((path / SAELENS_CFG).read_text())
    arch = cfg.get("architecture", "standard")
    if arch not in ("standard", "topk"):
        raise ValueError(f"{path}: architecture {arch!r} is not supported (standard or topk)")
    if cfg.get("normalize_activations", "none") != "none" or not cfg.get("apply_b_dec_to_input", True):
        raise ValueError(f"{path}: only normalize_activations='none' with apply_b_dec_to_input=True is supported")
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise ValueError(f"{path}: rescale_acts_by_decoder_norm is not supported")
    meta = cfg.get("metadata") or {}
    extra = dict(meta.get("interplab") or {})
    sae = SAE(SAEConfig(d_in=cfg["d_in"], d_sae=cfg["d_sae"], architecture=arch, k=cfg.get("k"),
                        l1_coefficient=extra.pop("l1_coefficient", 1.0), hook_name=meta.get("hook_name") or "",
                        model_name=meta.get("model_name") or "", metadata=extra))
    weights = load_file(str(path / SAELENS_WEIGHTS))
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(weights[name].float())
    return sae


def iter_rows(x: Tensor, batch_size: int, seed: int = 0) -> Iterator[Tensor]:
    """Endless shuffled mini-batches of the rows of ``x``."""
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - batch_size + 1, batch_size):
            yield x[perm[i: i + batch_size]]
