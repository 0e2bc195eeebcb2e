"""``attn-only-2l``: a 2-layer attention-only transformer that has learned induction.

The smallest model in which the induction circuit of Olsson et al. (2022) forms: a
previous-token head in layer 0 writes "the token before me was A" into each position, and an
induction head in layer 1 uses that (K-composition) to attend from the second occurrence of A to
the token that followed its first occurrence, and copies it.

Data: ``[BOS] + r_1..r_n + r_1..r_n`` with ``r`` distinct random tokens (``n`` drawn per batch
from 4..31), so the second half is predictable only by looking back. Tokens are integers: 0 is
BOS, 1..63 are "random" tokens; there is no tokenizer and nothing is downloaded.

Design choices:

- No LayerNorm (``normalization_type=None``). With only embeddings, attention and unembedding,
  the residual stream is exactly a sum of linear terms, so the QK/OV circuits and composition
  scores a student computes from the weights (``model.QK``, ``model.OV``, ``W_E``, ``W_U``) are
  exactly what the model computes, with no LayerNorm folding caveat. At this size training is
  stable without it.
- Learned absolute positional embeddings (``"standard"``): a previous-token head needs position
  information, and with learned embeddings the positional QK circuit shows the head's rule.
- A BOS token at position 0 gives heads a resting place when they have nothing to do (the
  "first-token" heads students will find).

``python -m interplab.zoo.attn_only_2l`` (or ``interplab zoo train attn-only-2l``) retrains it.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

ZOO_NAME = "attn-only-2l"
BOS = 0  # the beginning-of-sequence token, always at position 0
D_VOCAB = 64  # BOS + 63 random tokens
N_CTX = 64
MAX_SEQ_LEN = (N_CTX - 1) // 2  # longest random half that fits: 1 + 2 * 31 = 63 tokens


def config() -> HookedTransformerConfig:
    """The architecture (no weights)."""
    return HookedTransformerConfig(
        n_layers=2,
        d_model=64,
        d_head=16,
        n_heads=4,
        d_vocab=D_VOCAB,
        d_vocab_out=D_VOCAB,
        n_ctx=N_CTX,
        act_fn=None,
        attn_only=True,
        normalization_type=None,
        positional_embedding_type="standard",
        default_prepend_bos=False,  # there is no tokenizer; sequences carry BOS themselves
        device="cpu",
        dtype=torch.float32,
        init_weights=False,  # we initialise from our own generator (no global seeding)
    )


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 1200
    batch: int = 64
    lr: float = 5e-3
    weight_decay: float = 0.01
    min_seq_len: int = 4
    max_seq_len: int = MAX_SEQ_LEN
    init_std: float = 0.02
    eval_batch: int = 256
    eval_seq_len: int = 20
    log_every: int = 10  # the loss curve in the card; logging does not change the training run


# ---------------------------------------------------------------------------------------------
# Data (used by training, verify(), the circuits notebook and its checks: one helper, one place)
# ---------------------------------------------------------------------------------------------


def repeated_tokens(batch: int, seq_len: int, generator: torch.Generator) -> Int[Tensor, "batch 1+2*seq_len"]:
    """``[BOS] + r + r``: ``seq_len`` distinct random tokens (from 1..63), then the same again.

    Seeded by ``generator`` only, so the same generator state gives the same batch."""
    if not 1 <= seq_len <= MAX_SEQ_LEN:
        raise ValueError(f"seq_len must be in 1..{MAX_SEQ_LEN} (the model's context is {N_CTX}), got {seq_len}")
    # A random permutation per row, cut to seq_len: distinct tokens within each half.
    half = torch.rand(batch, D_VOCAB - 1, generator=generator).argsort(dim=-1)[:, :seq_len] + 1
    bos = torch.full((batch, 1), BOS, dtype=torch.long)
    return torch.cat([bos, half, half], dim=1)


def induction_prompts(batch: int, seq_len: int, generator: torch.Generator) -> dict[str, Tensor]:
    """Clean/corrupted prompt pairs for activation patching of the induction circuit.

    ``clean`` is ``[BOS] + r_1..r_n + r_1..r_m`` (``m`` in 1..n-1, one ``m`` per batch): at its last
    position the model should predict ``correct = r_{m+1}``, which followed ``r_m`` earlier.
    ``corrupted`` is the same prompt with that earlier ``r_{m+1}`` replaced by a fresh token
    ``wrong`` (not in ``r``): induction now predicts ``wrong``. The two prompts differ in one position.

    Returns ``clean``, ``corrupted`` (``batch x (1 + n + m)``), ``correct`` and ``wrong`` (``batch``)."""
    if not 2 <= seq_len <= MAX_SEQ_LEN - 1:
        raise ValueError(f"seq_len must be in 2..{MAX_SEQ_LEN - 1}, got {seq_len}")
    perm = torch.rand(batch, D_VOCAB - 1, generator=generator).argsort(dim=-1) + 1
    half, fresh = perm[:, :seq_len], perm[:, seq_len]
    m = int(torch.randint(1, seq_len, (1,), generator=generator))
    bos = torch.full((batch, 1), BOS, dtype=torch.long)
    clean = torch.cat([bos, half, half[:, :m]], dim=1)
    corrupted = clean.clone()
    corrupted[:, 1 + m] = fresh  # position of r_{m+1} in the first half
    return {"clean": clean, "corrupted": corrupted, "correct": half[:, m].clone(), "wrong": fresh.clone()}


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def _build() -> HookedTransformer:
    with warnings.catch_warnings():
        # TransformerLens 3.x steers users to TransformerBridge, which wraps Hugging Face models;
        # a model built from a config alone is what HookedTransformer is still for.
        warnings.filterwarnings("ignore", message="HookedTransformer is deprecated", category=DeprecationWarning)
        return HookedTransformer(config())


def random_model(generator: torch.Generator, std: float = 0.2) -> HookedTransformer:
    """A freshly initialised model of the same architecture, every parameter (biases included)
    drawn from ``generator``: the input of checks that must not pass by accident on the
    trained weights."""
    model = _build()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model.eval()


def plant_head(model: HookedTransformer, layer: int, head: int, target: int | str, strength: float) -> HookedTransformer:
    """Make head ``(layer, head)`` of ``model`` prefer a fixed key: ``target = k`` (an int >= 0) is the
    key ``k`` positions back (0: the current token, 1: the previous one), ``target = "bos"`` is key 0.

    Adds ``strength`` to the head's attention scores on those (query, key) cells through a permanent
    hook on ``blocks.{layer}.attn.hook_attn_scores`` (after the causal mask, before the softmax), so
    the head behaves as planted in every run, hooks of the caller included; its weights do not
    change. Used to make models with known heads for the detector exercise. Returns ``model``."""
    if target != "bos" and not (isinstance(target, int) and target >= 0):
        raise ValueError(f"target must be an offset k >= 0 or 'bos', got {target!r}")

    def add_preference(scores: Float[Tensor, "batch head q k"], hook) -> Float[Tensor, "batch head q k"]:
        n_q, n_k = scores.shape[-2:]
        if target == "bos":
            cells = torch.zeros(n_q, n_k, dtype=torch.bool)
            cells[:, 0] = True
        else:
            cells = torch.ones(n_q, n_k, dtype=torch.bool).tril(-target).triu(-target)
        scores[:, head] = scores[:, head] + strength * cells
        return scores

    model.add_hook(f"blocks.{layer}.attn.hook_attn_scores", add_preference, is_permanent=True)
    return model


def _init(model: HookedTransformer, generator: torch.Generator, std: float) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.split(".")[-1].startswith("b_"):
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def _losses(model: HookedTransformer, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos-1"]:
    logits = model(tokens)
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")


def _head_scores(model: HookedTransformer, tokens: Int[Tensor, "batch 1+2*seq_len"]) -> dict[str, Tensor]:
    """Previous-token score of every head (attention from q to q-1, averaged over q >= 1) and
    induction score (attention from q to q-n+1, averaged over the second half)."""
    n = (tokens.shape[1] - 1) // 2
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    pattern = torch.stack([cache["pattern", layer] for layer in range(model.cfg.n_layers)])  # layer batch head q k
    prev = pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(1, -1))
    induction = pattern.diagonal(offset=-(n - 1), dim1=-2, dim2=-1)[..., -n:].mean(dim=(1, -1))
    return {"previous_token": prev, "induction": induction}


@torch.no_grad()
def evaluate(model: HookedTransformer, batch: int = 256, seq_len: int = 20, seed: int = 12345) -> dict[str, Any]:
    """Card metrics on held-out repeated sequences (a fixed seed that training never uses)."""
    tokens = repeated_tokens(batch, seq_len, torch.Generator().manual_seed(seed))
    losses = _losses(model, tokens)
    # Prediction at position p is of token p+1: positions 0..n-1 predict the first half (BOS
    # predicts r_1), positions n+1..2n-1 predict r_2..r_n of the second half (n predicts r_1: unknowable).
    first = losses[:, :seq_len].mean().item()
    repeated = losses[:, seq_len + 1:].mean().item()
    scores = _head_scores(model, tokens)
    prev, ind = scores["previous_token"], scores["induction"]
    best_prev = int(prev[0].argmax())
    best_ind = int(ind[1].argmax())
    return {
        "loss_first_half": round(first, 4),
        "loss_repeated_half": round(repeated, 4),
        "uniform_loss": round(math.log(D_VOCAB - 1), 4),
        "best_previous_token_head": f"L0H{best_prev}",
        "previous_token_score": round(prev[0, best_prev].item(), 4),
        "best_induction_head": f"L1H{best_ind}",
        "induction_score": round(ind[1, best_ind].item(), 4),
    }


def train(out_dir: Path | str, cfg: TrainConfig | None = None, seed: int | None = None) -> dict[str, Any]:
    """Train with fixed seeds on one CPU thread, write weights + card into ``out_dir``, return the card."""
    from safetensors.torch import save_file

    from interplab.zoo import with_seed

    cfg = with_seed(cfg or TrainConfig(), seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reproducible and cheap: the recipe is timed on one thread
    try:
        generator = torch.Generator().manual_seed(cfg.seed)
        model = _build()
        _init(model, generator, cfg.init_std)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        start = time.perf_counter()
        log = []
        for step in range(cfg.steps):
            seq_len = int(torch.randint(cfg.min_seq_len, cfg.max_seq_len + 1, (1,), generator=generator))
            tokens = repeated_tokens(cfg.batch, seq_len, generator)
            loss = _losses(model, tokens).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # Dense enough to see the induction phase change (a sudden drop within ~100 steps).
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                log.append({"step": step, "loss": round(loss.item(), 4)})
        seconds = time.perf_counter() - start
        model.eval()
        metrics = evaluate(model, cfg.eval_batch, cfg.eval_seq_len)
    finally:
        torch.set_num_threads(threads)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / f"{ZOO_NAME}.safetensors"))
    card = {
        "name": ZOO_NAME,
        "description": "2-layer attention-only transformer (4 heads/layer, d_model 64, no LayerNorm) "
                       "trained on [BOS] + random tokens + the same tokens repeated; forms a previous-token "
                       "head (layer 0) and an induction head (layer 1).",
        "recipe": {"module": __name__, "train_config": asdict(cfg), "optimizer": "AdamW",
                   "data": "repeated_tokens(batch, seq_len ~ U[min_seq_len, max_seq_len], generator)",
                   "architecture": {k: v for k, v in config().to_dict().items()
                                    if k in ("n_layers", "d_model", "d_head", "n_heads", "d_vocab", "n_ctx",
                                             "attn_only", "normalization_type", "positional_embedding_type")}},
        "seed": cfg.seed,
        "training_time_s": round(seconds, 1),
        "training_threads": 1,
        "torch_version": torch.__version__,
        "metrics": metrics,
        "loss_curve": log,
    }
    (out_dir / f"{ZOO_NAME}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def load() -> HookedTransformer:
    """The shipped model, in eval mode, built offline from the safetensors file."""
    from safetensors.torch import load_file

    from interplab.zoo import weights_path

    model = _build()
    model.load_state_dict(load_file(str(weights_path(ZOO_NAME))))
    return model.eval()


# Thresholds: the uniform loss over 63 tokens is ln 63 = 4.14; an induction head must do most of
# the work on the repeated half.
def verify(model: HookedTransformer) -> dict[str, bool]:
    metrics = evaluate(model)
    return {
        "first-half loss is near chance (> 3.5)": metrics["loss_first_half"] > 3.5,
        "repeated-half loss < 0.5": metrics["loss_repeated_half"] < 0.5,
        "repeated-half loss < 0.15 x first-half loss": metrics["loss_repeated_half"] < 0.15 * metrics["loss_first_half"],
        "a layer-0 head has previous-token score > 0.5": metrics["previous_token_score"] > 0.5,
        "a layer-1 head has induction score > 0.5": metrics["induction_score"] > 0.5,
    }


if __name__ == "__main__":
    from interplab.zoo import WEIGHTS_DIR

    print(json.dumps(train(WEIGHTS_DIR), indent=2))
