"""``ioi-3l``: a 3-layer transformer that solves the indirect-object-identification task of
``interplab.ioi`` ("when anna and boris went to the market , boris gave the book to" -> anna).

The model of the ``discovery`` assignment: small enough that every circuit-discovery method
(activation and path patching, attribution patching, EAP, ACDC) runs in seconds on a CPU, deep
enough for the IOI circuit's three stages (find the duplicated name, move "S is duplicated" to the
end, copy the other name).

Design choices:

- No LayerNorm (``normalization_type=None``): the logits are exactly the sum of what each
  component writes into the residual stream, so direct logit attribution is exact and the edges of
  the computational graph are exactly additive (ACDC, EAP and path patching need no LayerNorm
  freezing caveat).
- MLPs (``d_mlp = 4 d_model``): the patching exercises resolve attention *and* MLP outputs.
- Learned absolute positions and a ``<bos>`` at position 0 (a resting place for idle heads).
- Trained on the last position only (cross-entropy of ``IO`` over the whole vocabulary), on the
  training split of ``interplab.ioi`` (held-out templates and name pairs are never seen).

``python -m interplab.zoo.ioi_3l`` (or ``interplab zoo train ioi-3l``) retrains it.
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer, HookedTransformerConfig

from interplab import ioi

ZOO_NAME = "ioi-3l"


def config(n_layers: int = 3, attn_only: bool = False, hooks: bool = True) -> HookedTransformerConfig:
    """The architecture (no weights); ``n_layers``/``attn_only`` build smaller relatives for tests.
    ``hooks=False`` leaves out the per-head hook points (training is several times faster without)."""
    return HookedTransformerConfig(
        n_layers=n_layers,
        d_model=64,
        d_head=16,
        n_heads=4,
        d_mlp=None if attn_only else 256,
        d_vocab=len(ioi.VOCAB),
        d_vocab_out=len(ioi.VOCAB),
        n_ctx=ioi.MAX_LEN,
        act_fn=None if attn_only else "gelu",
        attn_only=attn_only,
        normalization_type=None,
        positional_embedding_type="standard",
        default_prepend_bos=False,  # prompts carry <bos> themselves
        device="cpu",
        dtype=torch.float32,
        init_weights=False,  # initialised from our own generator (no global seeding)
        # The hook points circuit discovery needs: per-head outputs, per-head q/k/v inputs, MLP inputs.
        use_attn_result=hooks,
        use_split_qkv_input=hooks,
        use_hook_mlp_in=hooks,
    )


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 1500
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    init_std: float = 0.05
    eval_batch: int = 256


def build(cfg: HookedTransformerConfig | None = None) -> HookedTransformer:
    with warnings.catch_warnings():
        # TransformerLens 3.x steers users to TransformerBridge (Hugging Face models); a model built
        # from a config alone is what HookedTransformer is still for.
        warnings.filterwarnings("ignore", message="HookedTransformer is deprecated", category=DeprecationWarning)
        return HookedTransformer(cfg or config())


def _init(model: HookedTransformer, generator: torch.Generator, std: float) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.split(".")[-1].startswith("b_"):
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def planted_circuit_model(generator: torch.Generator) -> tuple[HookedTransformer, list[str]]:
    """A 2-layer attention-only model of this architecture with a hand-planted circuit, and that
    circuit's edges (``interplab.circuit_graph`` names): what circuit discovery must recover exactly.

    Every head attends uniformly (``W_Q = W_K = 0``: no query or key edge can matter), and the
    heads read and write disjoint subspaces of the residual stream: the embeddings write ``A``; one
    layer-0 head reads ``A`` and writes ``B``; two layer-1 heads read ``B`` and write ``C``, the
    second exactly ``-1/2`` times the first (an edge that works *against* the answer); the
    unembedding reads only ``C``. A decoy layer-0 head writes a subspace nobody reads; every other
    head writes nothing. Which head plays which role is drawn from ``generator``."""
    model = build(config(n_layers=2, attn_only=True))
    d, n = model.cfg.d_head, model.cfg.n_heads
    A, B, C, D = (slice(8 * i, 8 * i + 8) for i in range(4))
    h0, decoy = torch.randperm(n, generator=generator)[:2].tolist()
    h1, h1_neg = torch.randperm(n, generator=generator)[:2].tolist()

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        model.W_E[:, A] = rand(model.cfg.d_vocab, 8)
        model.W_U[C] = rand(8, model.cfg.d_vocab_out)
        for head, read, write in ((h0, A, B), (decoy, A, D)):
            model.blocks[0].attn.W_V[head, read] = rand(8, d) / 3
            model.blocks[0].attn.W_O[head, :, write] = rand(d, 8) / 3
        model.blocks[1].attn.W_V[h1, B] = rand(8, d) / 3
        model.blocks[1].attn.W_V[h1_neg, B] = model.blocks[1].attn.W_V[h1, B]
        model.blocks[1].attn.W_O[h1, :, C] = rand(d, 8) / 3
        model.blocks[1].attn.W_O[h1_neg, :, C] = -0.5 * model.blocks[1].attn.W_O[h1, :, C]
    edges = [f"embed->a0.{h0}<v>", f"a0.{h0}->a1.{h1}<v>", f"a0.{h0}->a1.{h1_neg}<v>",
             f"a1.{h1}->logits", f"a1.{h1_neg}->logits"]
    return model.eval(), edges


def logit_diff(logits: torch.Tensor, io: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Logit of ``io`` minus logit of ``s`` at the last position, per prompt."""
    final = logits[:, -1]
    return final.gather(-1, io[:, None])[:, 0] - final.gather(-1, s[:, None])[:, 0]


@torch.no_grad()
def evaluate(model: HookedTransformer, split: ioi.Split = "test", batch: int = 256, seed: int = 777) -> dict[str, float]:
    """Accuracy (top-1 over the whole vocabulary is IO), mean logit difference IO - S on clean
    prompts and on their ABC corruptions, averaged over the split's templates."""
    generator = torch.Generator().manual_seed(seed)
    acc, ld, ld_abc = [], [], []
    for template in ioi.templates(split):
        p = ioi.ioi_prompts(batch, generator, split, template)
        logits = model(p["clean"])
        acc.append((logits[:, -1].argmax(-1) == p["io"]).float().mean().item())
        ld.append(logit_diff(logits, p["io"], p["s"]).mean().item())
        ld_abc.append(logit_diff(model(p["corrupted"]), p["io"], p["s"]).mean().item())
    n = len(acc)
    return {"accuracy": round(sum(acc) / n, 4), "min_template_accuracy": round(min(acc), 4),
            "logit_diff": round(sum(ld) / n, 3), "logit_diff_abc": round(sum(ld_abc) / n, 3)}


def train(out_dir: Path | str, cfg: TrainConfig | None = None) -> dict[str, Any]:
    """Train with fixed seeds on one CPU thread, write weights + card into ``out_dir``, return the card."""
    from safetensors.torch import save_file

    cfg = cfg or TrainConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reproducible and cheap: the recipe is timed on one thread
    try:
        generator = torch.Generator().manual_seed(cfg.seed)
        model = build(config(hooks=False))
        _init(model, generator, cfg.init_std)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
        start = time.perf_counter()
        log = []
        for step in range(cfg.steps):
            p = ioi.ioi_prompts(cfg.batch, generator, "train")
            loss = F.cross_entropy(model(p["clean"])[:, -1], p["io"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if step % 250 == 0 or step == cfg.steps - 1:
                log.append({"step": step, "loss": round(loss.item(), 4)})
        seconds = time.perf_counter() - start
        model.eval()
        metrics = {f"test_{k}": v for k, v in evaluate(model, "test", cfg.eval_batch).items()}
        metrics |= {f"train_{k}": v for k, v in evaluate(model, "train", cfg.eval_batch).items()}
    finally:
        torch.set_num_threads(threads)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              str(out_dir / f"{ZOO_NAME}.safetensors"))
    card = {
        "name": ZOO_NAME,
        "description": "3-layer transformer (4 heads/layer, d_model 64, MLPs, no LayerNorm) trained on the "
                       "IOI task of interplab.ioi (last-position cross-entropy of the indirect object). "
                       "test_* metrics: held-out templates and held-out name pairs; logit_diff_abc: the "
                       "same prompts with three fresh names (Wang et al.'s ABC corruption).",
        "recipe": {"module": __name__, "train_config": asdict(cfg), "optimizer": "AdamW, one-cycle schedule",
                   "data": "ioi_prompts(batch, generator, 'train'): one random training template per step",
                   "architecture": {k: v for k, v in config().to_dict().items()
                                    if k in ("n_layers", "d_model", "d_head", "n_heads", "d_mlp", "d_vocab",
                                             "n_ctx", "normalization_type", "positional_embedding_type")}},
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

    model = build()
    model.load_state_dict(load_file(str(weights_path(ZOO_NAME))))
    return model.eval()


def verify(model: HookedTransformer) -> dict[str, bool]:
    metrics = evaluate(model, "test")
    return {
        "held-out accuracy >= 0.9": metrics["accuracy"] >= 0.9,
        "every held-out template >= 0.8": metrics["min_template_accuracy"] >= 0.8,
        "held-out logit difference IO - S > 2": metrics["logit_diff"] > 2,
        "ABC prompts: |logit difference| < 1": abs(metrics["logit_diff_abc"]) < 1,
    }


if __name__ == "__main__":
    from interplab.zoo import WEIGHTS_DIR

    print(json.dumps(train(WEIGHTS_DIR), indent=2))
