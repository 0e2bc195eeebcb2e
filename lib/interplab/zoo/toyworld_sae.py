"""``toyworld-sae``: a ReLU sparse autoencoder on ``toyworld-lm``'s residual stream in the middle of
its second layer, after attention and before the MLP (:data:`HOOK_NAME`), shipped so that later assignments (steering, attribution) do not depend on
a student's own SAE.

The weights file holds SAELens's parameter names and shapes, and its metadata holds SAELens's
``cfg.json``, so :func:`export_saelens` writes a directory that ``sae_lens.SAE.load_from_disk`` reads.
Trained on activations of every non-padding token (``<bos>`` included, so the SAE can be spliced in at
every position). Reproduce: ``interplab zoo train toyworld-sae`` (about a minute on 2 CPU cores;
needs the shipped ``toyworld-lm``).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from interplab import sae as sae_lib
from interplab.toyworld import DIFFICULTIES, PERSONAS, SENTIMENTS, ToyWorld

ZOO_NAME = "toyworld-sae"
WEIGHTS_DIR = Path(__file__).parent / "weights"
# Why here: linear probes (logistic regression, held-out half) on the shipped model read persona at a
# question's "?" with 66% accuracy after layer 0 but 99% here, after layer 1's attention has moved it
# from the dialogue's first token; difficulty (100%) and sentiment at "felt" (99%) are present too.
HOOK_NAME = "blocks.1.hook_resid_mid"
LM_NAME = "toyworld-lm"


@dataclass
class Config:
    d_sae: int = 512
    l1_coefficient: float = 3.0
    steps: int = 3000
    batch_size: int = 1024
    lr: float = 2e-3
    resample_every: int = 500
    n_docs: int = 6000
    data_seed: int = 101
    seed: int = 0
    threads: int = 1  # small matrices: a second thread gains little and hurts on a shared machine


@torch.no_grad()
def activations(model, tokens: torch.Tensor, hook_name: str = HOOK_NAME, batch: int = 512) -> torch.Tensor:
    """``[n_docs, n_ctx, d_model]`` activations of ``model`` at ``hook_name``."""
    out = []
    for i in range(0, len(tokens), batch):
        _, cache = model.run_with_cache(tokens[i: i + batch], names_filter=[hook_name])
        out.append(cache[hook_name])
    return torch.cat(out)


def label_scopes(tokens: torch.Tensor, labels: dict[str, torch.Tensor], world: ToyWorld) -> dict[str, torch.Tensor]:
    """Where each ground-truth variable is scored (boolean masks shaped like ``tokens``).

    * persona and difficulty: the ``?`` ending each question of a dialogue, where the model must
      decide how to answer (difficulty 0 there means a fact question);
    * sentiment: the ``felt`` of a sentiment story, where the model must predict ``happy`` or ``sad``."""
    question_mark = (tokens == world.tokenizer.index["?"]) & (labels["doc_type"] == 1)
    felt = (tokens == world.tokenizer.index["felt"]) & (labels["sentiment"] > 0)
    return {"persona": question_mark, "difficulty": question_mark, "sentiment": felt}


def label_scores(f: torch.Tensor, labels: dict[str, torch.Tensor], scopes: dict[str, torch.Tensor]
                 ) -> dict[str, dict[str, Any]]:
    """For each ground-truth value (``persona=child``, ``difficulty=hard``, ``sentiment=positive``...),
    the feature whose firing (activation > 0) best predicts it, by F1, on the tokens of its
    variable's scope, with precision (of the tokens where it fires, the fraction with that value) and
    recall (of the tokens with that value, the fraction where it fires).
    ``f [n_tokens, d_sae]``; labels and scopes ``[n_tokens]``."""
    fired = (f > 0).float()
    out: dict[str, dict[str, Any]] = {}
    variables = {"persona": PERSONAS, "difficulty": DIFFICULTIES, "sentiment": SENTIMENTS}
    for var, names in variables.items():
        scope = scopes[var]
        fired_in = fired[scope]
        values = labels[var][scope]
        for value, name in enumerate(names):
            if value == 0:
                continue
            truth = (values == value).float()
            tp = truth @ fired_in
            precision = tp / fired_in.sum(0).clamp(min=1)
            recall = tp / truth.sum().clamp(min=1)
            f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-9)
            best = int(f1.argmax())
            out[f"{var}={name}"] = {"feature": best, "precision": round(float(precision[best]), 4),
                                    "recall": round(float(recall[best]), 4), "f1": round(float(f1[best]), 4)}
    return out


def fit(x: torch.Tensor, cfg: Config, architecture: str = "standard", k: int | None = None,
        log=None) -> tuple[sae_lib.SAE, dict[str, list[float]]]:
    """An SAE trained on activation rows ``x`` with ``cfg``'s recipe (decoder bias started at the data
    mean, dead features resampled every ``cfg.resample_every`` steps); ReLU + L1 or TopK with ``k``."""
    torch.manual_seed(cfg.seed)
    sae = sae_lib.SAE(sae_lib.SAEConfig(d_in=x.shape[-1], d_sae=cfg.d_sae, architecture=architecture, k=k,
                                        l1_coefficient=cfg.l1_coefficient, hook_name=HOOK_NAME, model_name=LM_NAME),
                      generator=torch.Generator().manual_seed(cfg.seed))
    with torch.no_grad():  # start the decoder bias at the data mean: the SAE then models deviations
        sae.b_dec.copy_(x.mean(0))
    rows = sae_lib.iter_rows(x, cfg.batch_size, cfg.seed)
    history = sae_lib.train_sae(sae, lambda step: next(rows),
                                sae_lib.TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                                                    resample_every=cfg.resample_every, log_every=250, seed=cfg.seed),
                                log)
    return sae, history


def train(out_dir: Path | str = WEIGHTS_DIR, cfg: Config | None = None, log=print,
          seed: int | None = None) -> dict[str, Any]:
    from safetensors.torch import save_file

    from interplab import zoo
    from interplab.zoo import with_seed

    cfg = with_seed(cfg or Config(), seed)  # `interplab zoo train --seed`
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    start, start_cpu = time.time(), time.process_time()
    model = zoo.load(LM_NAME)
    world = ToyWorld()
    batch = world.sample(cfg.n_docs, cfg.data_seed)
    acts = activations(model, batch.tokens)
    mask = batch.labels["loss_mask"].bool()
    x = acts[mask]
    log(f"{len(x)} activation vectors of width {x.shape[-1]} at {HOOK_NAME}")

    sae, _ = fit(x, cfg, log=log)
    elapsed, cpu = time.time() - start, time.process_time() - start_cpu
    metrics = evaluate(sae, model, world)
    weights = {k: getattr(sae, k).detach().contiguous() for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    save_file(weights, str(out_dir / f"{ZOO_NAME}.safetensors"),
              metadata={"saelens_cfg": json.dumps(_saelens_cfg(sae)), "config": json.dumps(asdict(cfg))})
    card = {
        "name": ZOO_NAME,
        "description": f"ReLU SAE (L1 weighted by decoder norms) on {LM_NAME} at {HOOK_NAME}",
        "recipe": f"interplab zoo train {ZOO_NAME} (lib/interplab/zoo/toyworld_sae.py: train)",
        "hook_name": HOOK_NAME,
        "model": LM_NAME,
        "config": asdict(cfg),
        "seed": cfg.seed,
        "training_time_s": round(elapsed, 1),  # wall clock (activations + training), on a shared machine
        "training_cpu_s": round(cpu, 1),
        "metrics": metrics["summary"],
        "ground_truth_features": metrics["features"],
        "metric_definitions": sae_lib.__doc__.split("Definitions", 1)[1].strip(),
    }
    (out_dir / f"{ZOO_NAME}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def _saelens_cfg(sae: sae_lib.SAE) -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        sae_lib.save_saelens(sae, tmp)
        return json.loads((Path(tmp) / sae_lib.SAELENS_CFG).read_text())


@torch.no_grad()
def evaluate(sae: sae_lib.SAE, model=None, world: ToyWorld | None = None, n_docs: int = 1000,
             seed: int = 202) -> dict[str, Any]:
    """Card metrics on fresh documents: L0, explained variance, CE loss recovered, dead fraction,
    and the best feature for each ground-truth value (precision/recall/F1 of "feature fires")."""
    from interplab import zoo

    model = model or zoo.load(LM_NAME)
    world = world or ToyWorld()
    batch = world.sample(n_docs, seed)
    mask = batch.labels["loss_mask"].bool()
    acts = activations(model, batch.tokens)
    x = acts[mask]
    f = sae.encode(x)
    ce = sae_lib.ce_loss_recovered(model, sae, batch.tokens, HOOK_NAME, mask=batch.labels["loss_mask"][:, 1:])
    summary = {
        "l0": round(sae_lib.l0(f), 3),
        "explained_variance": round(sae_lib.explained_variance(x, sae.decode(f)), 4),
        "ce_loss_recovered": round(ce["ce_loss_recovered"], 4),
        "ce_clean": round(ce["ce_clean"], 4),
        "ce_with_sae": round(ce["ce_with_sae"], 4),
        "ce_zero_ablation": round(ce["ce_zero_ablation"], 4),
        "dead_fraction": round(float(sae_lib.dead_features(f).float().mean()), 4),
    }
    scopes = {k: v[mask] for k, v in label_scopes(batch.tokens, batch.labels, world).items()}
    labels = {k: v[mask] for k, v in batch.labels.items()}
    features = label_scores(f, labels, scopes)
    summary["best_f1_persona_child"] = features["persona=child"]["f1"]
    summary["best_f1_difficulty_hard"] = features["difficulty=hard"]["f1"]
    summary["best_f1_sentiment_negative"] = features["sentiment=negative"]["f1"]
    return {"summary": summary, "features": features}


def load() -> sae_lib.SAE:
    """The shipped SAE (offline)."""
    from safetensors.torch import load_file, safe_open

    path = WEIGHTS_DIR / f"{ZOO_NAME}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no weights at {path}; run `interplab zoo train {ZOO_NAME}`")
    with safe_open(str(path), "pt") as fh:
        saelens_cfg = json.loads(fh.metadata()["saelens_cfg"])
    meta = saelens_cfg["metadata"]
    sae = sae_lib.SAE(sae_lib.SAEConfig(d_in=saelens_cfg["d_in"], d_sae=saelens_cfg["d_sae"],
                                        l1_coefficient=meta["interplab"]["l1_coefficient"],
                                        hook_name=meta["hook_name"], model_name=meta["model_name"]))
    weights = load_file(str(path))
    with torch.no_grad():
        for k in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, k).copy_(weights[k])
    return sae.eval()


def export_saelens(path: Path | str) -> Path:
    """Write the shipped SAE as a SAELens directory (``cfg.json`` + ``sae_weights.safetensors``)."""
    return sae_lib.save_saelens(load(), path)


THRESHOLDS = {"explained_variance": 0.8, "ce_loss_recovered": 0.8}


def verify(sae) -> dict[str, bool]:
    metrics = evaluate(sae)["summary"]
    return {f"{k} >= {v} (got {metrics[k]})": metrics[k] >= v for k, v in THRESHOLDS.items()}
