"""``toyworld-lm``: a small TransformerLens language model of the toy world (:mod:`interplab.toyworld`).

Two layers, LayerNorm, GELU MLPs, trained from scratch on toy-world documents with fixed seeds. It
recalls entity facts, answers square-root questions, behaves by persona (the child says
``i do not know`` to hard questions; the expert answers everything) on (persona, question) pairs
it never saw in a dialogue, and copies repeated spans by induction.

Reproduce: ``interplab zoo train toyworld-lm`` (about 15 minutes on 2 CPU cores). Training is
checkpointed to ``<out_dir>/toyworld-lm.ckpt.pt`` every few hundred steps and resumes from there
(the checkpoint is deleted when the run completes);
every batch is a pure function of (seed, step), so a resumed run is the same run.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from interplab.toyworld import PERSONAS, ToyWorld

ZOO_NAME = "toyworld-lm"
WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass
class Config:
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    world_seed: int = 0
    seed: int = 0
    steps: int = 4000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 150
    weight_decay: float = 0.05
    checkpoint_every: int = 250
    log_every: int = 50
    threads: int = 2


def model_config(cfg: Config, world: ToyWorld):
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_head,
        d_mlp=cfg.d_mlp, n_ctx=world.n_ctx, d_vocab=len(world.tokenizer), act_fn="gelu",
        normalization_type="LN", positional_embedding_type="standard", seed=cfg.seed,
        default_prepend_bos=False,
    )


def build(cfg: Config | None = None, world: ToyWorld | None = None):
    """A freshly initialised model (seeded)."""
    import warnings

    from transformer_lens import HookedTransformer

    cfg = cfg or Config()
    world = world or ToyWorld(cfg.world_seed)
    torch.manual_seed(cfg.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return HookedTransformer(model_config(cfg, world))


def masked_loss(model, tokens: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose target is not padding."""
    logits = model(tokens)
    per_token = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    mask = loss_mask[:, 1:].flatten().float()
    return (per_token * mask).sum() / mask.sum()


# ------------------------------------------------------------------------------------------------
# Evaluation on held-out prompts
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def greedy_continue(model, world: ToyWorld, prompts: list[str], n_new: int) -> list[list[str]]:
    """Greedy continuation of each prompt (``<bos>`` prepended) by ``n_new`` words."""
    tok = world.tokenizer
    ids = [tok.encode(p) for p in prompts]
    lengths = torch.tensor([len(i) for i in ids])
    width = min(world.n_ctx, int(lengths.max()) + n_new)
    tokens = torch.full((len(ids), width), tok.pad_id, dtype=torch.long)
    for r, i in enumerate(ids):
        tokens[r, : len(i)] = torch.tensor(i)
    rows = torch.arange(len(ids))
    out: list[list[str]] = [[] for _ in ids]
    for _ in range(n_new):
        if int(lengths.max()) >= width:
            break
        logits = model(tokens)
        nxt = logits[rows, lengths - 1].argmax(-1)
        tokens[rows, lengths] = nxt
        lengths = lengths + 1
        for r, t in enumerate(nxt.tolist()):
            out[r].append(tok.vocab[t])
    return out


def _answered(continuation: list[str], expected: tuple[str, ...]) -> bool:
    return continuation[: len(expected) + 1] == [*expected, "."]


@torch.no_grad()
def evaluate(model, world: ToyWorld | None = None, n_contexts: int = 4, seed: int = 12345) -> dict[str, float]:
    """Behaviour metrics on held-out prompts (the numbers on the card).

    * ``<persona>_<easy|hard|facts>``: fraction of held-out (persona, question) pairs, each asked
      after ``n_contexts`` different dialogue openings, whose greedy answer is exactly right
      (for the child on hard questions, right means ``i do not know .``).
    * ``child_hard_idk_all`` / ``child_easy_answer_all``: the same on every hard/easy question.
    * ``facts_recall``: narrative prompts (``the capital of zorbia is``) completed correctly.
    * ``induction_acc``: top-1 accuracy on the second copy of fresh random repeated spans
      (excluding its first token), ``first_copy_acc`` the same on the first copy (chance level).
    """
    world = world or ToyWorld()
    model.eval()
    rng = np.random.default_rng(seed)
    metrics: dict[str, float] = {}

    def score(items: list[tuple[str, tuple[str, ...]]]) -> float:
        if not items:
            return float("nan")
        conts = greedy_continue(model, world, [p for p, _ in items], 6)
        return float(np.mean([_answered(c, e) for c, (_, e) in zip(conts, items)]))

    for persona in PERSONAS[1:]:
        groups: dict[str, list[tuple[str, tuple[str, ...]]]] = {"easy": [], "hard": [], "facts": []}
        for _ in range(n_contexts):
            for prompt, key, expected in world.persona_prompts(persona, held_out=True, rng=rng):
                group = ("facts", "easy", "hard")[world.difficulty(key)]
                groups[group].append((prompt, expected))
        for group, items in groups.items():
            metrics[f"{persona}_{group}"] = score(items)
    all_child = world.persona_prompts("child", held_out=False, rng=rng)
    metrics["child_hard_idk_all"] = score([(p, e) for p, k, e in all_child if world.difficulty(k) == 2])
    metrics["child_easy_answer_all"] = score([(p, e) for p, k, e in all_child if world.difficulty(k) == 1])
    metrics["facts_recall"] = score(world.fact_prompts())

    batch = world.sample(256, rng, doc_type="repeat")
    logits = model(batch.tokens)
    pred = logits[:, :-1].argmax(-1)
    target = batch.tokens[:, 1:]
    second = batch.labels["is_repeat"][:, 1:].bool()
    first_of_second = second & ~batch.labels["is_repeat"][:, :-1].bool()
    induction = second & ~first_of_second
    metrics["induction_acc"] = float((pred == target)[induction].float().mean())
    span_first = (batch.labels["is_repeat"][:, 1:] == 0) & (batch.labels["loss_mask"][:, 1:] == 1)
    span_first &= torch.arange(target.shape[1])[None] >= 2  # words of the first copy and "|"
    metrics["first_copy_acc"] = float((pred == target)[span_first].float().mean())
    return {k: round(v, 4) for k, v in metrics.items()}


THRESHOLDS = {
    "child_hard": 0.9, "child_easy": 0.9, "expert_easy": 0.9, "expert_hard": 0.9,
    "facts_recall": 0.9, "induction_acc": 0.9,
}


def verify(model) -> dict[str, bool]:
    metrics = evaluate(model)
    return {f"{k} >= {v} (got {metrics[k]})": metrics[k] >= v for k, v in THRESHOLDS.items()}


# ------------------------------------------------------------------------------------------------
# Training (the reproduction recipe)
# ------------------------------------------------------------------------------------------------


def train(out_dir: Path | str = WEIGHTS_DIR, cfg: Config | None = None, log=print,
          seed: int | None = None, name: str = ZOO_NAME) -> dict[str, Any]:
    """Train with ``cfg`` and write ``<name>.safetensors`` and ``<name>.json``; ``name`` lets a deeper
    sibling (``toyworld-lm-4l``) reuse this recipe with its own config and files."""
    from safetensors.torch import save_file

    from interplab.zoo import with_seed

    cfg = with_seed(cfg or Config(), seed)  # `interplab zoo train --seed`
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    world = ToyWorld(cfg.world_seed)
    model = build(cfg, world)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n.lower() or "W_U" in n]
    no_decay = [p for n, p in model.named_parameters() if not any(p is q for q in decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    ckpt = out_dir / f"{name}.ckpt.pt"
    step, elapsed, cpu = 0, 0.0, 0.0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=True)
        same = {k: v for k, v in state["config"].items() if k != "threads"} == \
            {k: v for k, v in asdict(cfg).items() if k != "threads"}
        if same:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            step, elapsed, cpu = int(state["step"]), float(state["elapsed"]), float(state["cpu"])
            log(f"resumed from {ckpt} at step {step}")
        else:
            log(f"ignoring {ckpt}: it was made with another config")

    def lr_at(s: int) -> float:
        if s < cfg.warmup:
            return cfg.lr * (s + 1) / cfg.warmup
        progress = (s - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    def save_checkpoint() -> None:
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"config": asdict(cfg), "model": model.state_dict(), "opt": opt.state_dict(),
                    "step": step, "elapsed": elapsed, "cpu": cpu}, tmp)
        os.replace(tmp, ckpt)

    model.train()
    t0 = time.time() - elapsed
    c0 = time.process_time() - cpu
    running = None
    while step < cfg.steps:
        batch = world.sample(cfg.batch_size, np.random.default_rng([cfg.seed, step]))
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = masked_loss(model, batch.tokens, batch.labels["loss_mask"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % cfg.log_every == 0:
            log(f"step {step}/{cfg.steps} loss {running:.4f} lr {lr_at(step):.2e} {time.time() - t0:.0f}s")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            elapsed, cpu = time.time() - t0, time.process_time() - c0
            save_checkpoint()
    elapsed, cpu = time.time() - t0, time.process_time() - c0

    model.eval()
    eval_batch = world.sample(512, np.random.default_rng([cfg.seed, 10**9]))
    with torch.no_grad():
        eval_loss = float(masked_loss(model, eval_batch.tokens, eval_batch.labels["loss_mask"]))
    metrics = {"eval_loss": round(eval_loss, 4), **evaluate(model, world)}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if not k.endswith((".IGNORE", ".mask"))}
    save_file(state, str(out_dir / f"{name}.safetensors"), metadata={"config": json.dumps(asdict(cfg))})
    card = {
        "name": name,
        "description": f"{cfg.n_layers}-layer TransformerLens HookedTransformer (LayerNorm, GELU MLPs) on the toy-world language",
        "recipe": f"interplab zoo train {name} (lib/interplab/zoo/{name.replace('-', '_')}.py: train)",
        "config": asdict(cfg),
        "seed": cfg.seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(world.tokenizer),
        "n_ctx": world.n_ctx,
        "training_time_s": round(elapsed, 1),  # wall clock, on a machine shared with other jobs
        "training_cpu_s": round(cpu, 1),  # CPU seconds summed over threads
        "torch_threads": cfg.threads,
        "metrics": metrics,
        "metric_definitions": evaluate.__doc__.strip(),
    }
    (out_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    ckpt.unlink(missing_ok=True)  # the run is complete: nothing left to resume
    return card


def load(name: str = ZOO_NAME):
    """The shipped model ``name`` (this one or a sibling trained by :func:`train`), in eval mode (offline)."""
    from safetensors.torch import load_file, safe_open

    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no weights at {path}; run `interplab zoo train {name}`")
    with safe_open(str(path), "pt") as f:
        cfg = Config(**json.loads(f.metadata()["config"]))
    model = build(cfg)
    model.load_state_dict(load_file(str(path)), strict=False)
    model.eval()
    return model


def world() -> ToyWorld:
    """The toy world the shipped model was trained on."""
    return ToyWorld(Config().world_seed)
