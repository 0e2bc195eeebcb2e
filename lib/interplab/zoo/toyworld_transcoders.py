"""``toyworld-transcoders``: one ReLU transcoder per MLP of ``toyworld-lm``, for attribution graphs.

Transcoder ``l`` reads the MLP's input ``ln2(resid_mid)`` (after the LayerNorm's weight and bias)
and predicts the MLP's output ``blocks.l.hook_mlp_out`` (definitions in :mod:`interplab.attribution`):
``f = ReLU(x @ W_enc + b_enc)``, ``y_hat = f @ W_dec + b_dec``. Loss: squared error summed over
dimensions divided by the output's total variance (normalised MSE), plus ``l1_coefficient`` times an
L1 penalty on ``f_i * ||W_dec[i]||`` (decoder-norm weighted, as for the zoo SAE) divided by the
output's standard deviation, so that the coefficient means the same at both layers.
Trained with fixed seeds on the MLP inputs/outputs of every non-padding token of fresh toy-world
documents. Reproduce: ``interplab zoo train toyworld-transcoders`` (a few CPU-minutes; needs the
shipped ``toyworld-lm``).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from interplab.attribution import Transcoder, Transcoders, ce_losses, fidelity, mlp_io
from interplab.toyworld import ToyWorld

ZOO_NAME = "toyworld-transcoders"
WEIGHTS_DIR = Path(__file__).parent / "weights"
LM_NAME = "toyworld-lm"


@dataclass
class Config:
    d_tc: int = 1024
    l1_coefficient: float = 0.02
    # Rows at the "?" of dialogue questions (where the model decides between answering and "i do not
    # know"; ~2.5% of tokens) are repeated this many times in the training set. The layer-1 MLP writes
    # ~50x less there than on average, and without this the transcoder ignores those tokens:
    # explained variance at "?" (layer 1, 1500 steps) -0.09 at 1x, 0.07 at 10x, 0.38 at 30x, 0.65 at 100x.
    question_oversample: int = 100
    steps: int = 3000
    batch_size: int = 1024
    lr: float = 2e-3
    n_docs: int = 4000
    data_seed: int = 303
    seed: int = 0
    threads: int = 1


def question_marks(tokens: torch.Tensor, labels: dict[str, torch.Tensor], world: ToyWorld) -> torch.Tensor:
    """The "?" ending each dialogue question: where the model decides how to answer."""
    return (tokens == world.tokenizer.index["?"]) & (labels["doc_type"] == 1)


def _train_layer(x: torch.Tensor, y: torch.Tensor, cfg: Config, layer: int, log) -> Transcoder:
    # Both loss terms are divided by the output's variance (resp. its square root): the layer-1 MLP
    # writes outputs ~8x larger than layer 0's, and one l1_coefficient should mean the same for both.
    variance = ((y - y.mean(0)) ** 2).sum(-1).mean()
    g = torch.Generator().manual_seed(cfg.seed + layer)
    tc = Transcoder(x.shape[-1], cfg.d_tc, generator=g)
    with torch.no_grad():
        tc.b_dec.copy_(y.mean(0))
        tc.W_dec.mul_(variance.sqrt())  # decoder rows start at 0.1 of the output's typical norm
    opt = torch.optim.Adam(tc.parameters(), lr=cfg.lr)
    order = torch.Generator().manual_seed(cfg.seed + 100 + layer)
    for step in range(cfg.steps):
        lr = cfg.lr * min(1.0, (cfg.steps - step) / (0.2 * cfg.steps))  # linear decay over the last 20%
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(x), (cfg.batch_size,), generator=order)
        f = tc.encode(x[idx])
        y_hat = tc.decode(f)
        mse = ((y[idx] - y_hat) ** 2).sum(-1).mean() / variance
        l1 = (f * tc.W_dec.norm(dim=-1)).sum(-1).mean() / variance.sqrt()
        loss = mse + cfg.l1_coefficient * l1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 500 == 0 or step == cfg.steps - 1:
            log(f"layer {layer} step {step}: nmse {mse.item():.4f} l1 {l1.item():.3f} L0 {(f > 0).float().sum(-1).mean().item():.1f}")
    return tc.eval()


def train(out_dir: Path | str = WEIGHTS_DIR, cfg: Config | None = None, log=print,
          seed: int | None = None) -> dict[str, Any]:
    from safetensors.torch import save_file

    from interplab import zoo
    from interplab.zoo import with_seed

    cfg = with_seed(cfg or Config(), seed)  # `interplab zoo train --seed`
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    start, start_cpu = time.time(), time.process_time()
    model = zoo.load(LM_NAME)
    world = ToyWorld()
    batch = world.sample(cfg.n_docs, cfg.data_seed)
    mask = batch.labels["loss_mask"].bool()
    question = question_marks(batch.tokens, batch.labels, world)
    ins, outs = [], []
    for i in range(0, cfg.n_docs, 500):
        a, b = mlp_io(model, batch.tokens[i:i + 500])
        ins += [a[:, mask[i:i + 500]]] + [a[:, question[i:i + 500]]] * cfg.question_oversample
        outs += [b[:, mask[i:i + 500]]] + [b[:, question[i:i + 500]]] * cfg.question_oversample
    x, y = torch.cat(ins, 1), torch.cat(outs, 1)
    log(f"{int(mask.sum())} tokens ({x.shape[1]} rows with the question marks oversampled), width {x.shape[-1]}")
    layers = [_train_layer(x[l], y[l], cfg, l, log) for l in range(model.cfg.n_layers)]
    transcoders = Transcoders(layers)
    elapsed, cpu = time.time() - start, time.process_time() - start_cpu
    metrics = evaluate(transcoders, model, world)
    weights = {f"{l}.{k}": getattr(tc, k).detach().contiguous() for l, tc in enumerate(layers)
               for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    save_file(weights, str(out_dir / f"{ZOO_NAME}.safetensors"), metadata={"config": json.dumps(asdict(cfg))})
    card = {
        "name": ZOO_NAME,
        "description": f"one ReLU transcoder per MLP of {LM_NAME}: ln2(resid_mid) -> {cfg.d_tc} features -> hook_mlp_out",
        "recipe": f"interplab zoo train {ZOO_NAME} (lib/interplab/zoo/toyworld_transcoders.py: train)",
        "model": LM_NAME,
        "config": asdict(cfg),
        "seed": cfg.seed,
        "training_time_s": round(elapsed, 1),  # wall clock (activations + training), on a shared machine
        "training_cpu_s": round(cpu, 1),
        "metrics": metrics,
        "metric_definitions": (
            "per layer on the MLP outputs of every non-padding token of fresh documents: nmse = "
            "E||y - y_hat||^2 / E||y - E y||^2, explained_variance = 1 - nmse, l0 = mean number of active "
            "features per token, dead_fraction = features never active, explained_variance_at_question = the "
            "same on the '?' ending dialogue questions only (variance of y there); ce_*: mean next-token loss of the "
            "model (clean), with both MLPs replaced by their transcoders (no error terms), with both MLPs "
            "zero-ablated; ce_recovered = (zero - transcoders) / (zero - clean)"),
    }
    (out_dir / f"{ZOO_NAME}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


@torch.no_grad()
def evaluate(transcoders: Transcoders, model=None, world: ToyWorld | None = None, n_docs: int = 600,
             seed: int = 404) -> dict[str, Any]:
    """The card's fidelity metrics on fresh documents (see ``metric_definitions`` on the card)."""
    from interplab import zoo

    model = model or zoo.load(LM_NAME)
    world = world or ToyWorld()
    batch = world.sample(n_docs, seed)
    mask = batch.labels["loss_mask"].bool()
    ins, outs = mlp_io(model, batch.tokens)
    out: dict[str, Any] = {}
    for l in range(len(transcoders)):
        f = transcoders[l].encode(ins[l][mask])
        m = fidelity(outs[l][mask], transcoders[l].decode(f), f)
        m["dead_fraction"] = float(((f > 0).sum(0) == 0).float().mean())
        question = question_marks(batch.tokens, batch.labels, world)
        fq = transcoders[l].encode(ins[l][question])
        m["explained_variance_at_question"] = fidelity(outs[l][question], transcoders[l].decode(fq), fq)["explained_variance"]
        out[f"layer{l}"] = {k: round(v, 4) for k, v in m.items()}
    out.update({k: round(v, 4) for k, v in ce_losses(model, transcoders, batch.tokens, batch.labels["loss_mask"]).items()})
    return out


def load() -> Transcoders:
    """The shipped transcoders (offline), in eval mode."""
    from safetensors.torch import load_file, safe_open

    path = WEIGHTS_DIR / f"{ZOO_NAME}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no weights at {path}; run `interplab zoo train {ZOO_NAME}`")
    with safe_open(str(path), "pt") as fh:
        cfg = Config(**json.loads(fh.metadata()["config"]))
    weights = load_file(str(path))
    n_layers = len({k.split(".")[0] for k in weights})
    layers = []
    for l in range(n_layers):
        tc = Transcoder(weights[f"{l}.W_enc"].shape[0], cfg.d_tc)
        with torch.no_grad():
            for k in ("W_enc", "b_enc", "W_dec", "b_dec"):
                getattr(tc, k).copy_(weights[f"{l}.{k}"])
        layers.append(tc.eval())
    return Transcoders(layers).eval()


THRESHOLDS = {"layer0.explained_variance": 0.8, "layer1.explained_variance": 0.8, "ce_recovered": 0.8}


def _get(metrics: dict[str, Any], key: str) -> float:
    for part in key.split("."):
        metrics = metrics[part]
    return float(metrics)


def verify(transcoders) -> dict[str, bool]:
    metrics = evaluate(transcoders)
    return {f"{k} >= {v} (got {_get(metrics, k)})": _get(metrics, k) >= v for k, v in THRESHOLDS.items()}
