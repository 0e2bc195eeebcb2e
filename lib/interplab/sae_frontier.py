"""ReLU vs TopK SAEs on ``toyworld-lm``: the sparsity / fidelity frontier (``python -m interplab.sae_frontier --card``).

Trains ReLU SAEs (L1 weighted by decoder norms) at several L1 coefficients and TopK SAEs at several
``k`` on the activations the zoo SAE was trained on (``toyworld-lm`` at ``blocks.1.hook_resid_mid``,
the same recipe as ``toyworld-sae`` but fewer steps, dead features resampled inside training), then
measures each on fresh documents with the zoo's own ``evaluate`` (L0, explained variance, fraction
of CE loss recovered, dead fraction). Writes ``sae_frontier_card.json`` next to this file; the
``saes`` notebook plots it. Deterministic: a rerun on the same torch gives the same card.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from interplab.toyworld import ToyWorld
from interplab.zoo import toyworld_sae

CARD_PATH = Path(__file__).with_name("sae_frontier_card.json")
L1_COEFFICIENTS = (1.0, 3.0, 10.0)
TOPK_KS = (4, 8, 16)
# Much smaller than the zoo SAE's recipe (512 features, 3000 steps of 1024 rows, 6000 documents) so
# that the six SAEs train in a few CPU-minutes; the zoo SAE is the notebook's reference point.
CONFIG = replace(toyworld_sae.Config(), d_sae=256, steps=600, batch_size=256, resample_every=150, n_docs=1000)


def make_card(config: toyworld_sae.Config = CONFIG, l1_coefficients: tuple[float, ...] = L1_COEFFICIENTS,
              ks: tuple[int, ...] = TOPK_KS, eval_docs: int = 200) -> dict:
    from interplab import zoo

    started = time.perf_counter()
    model, world = zoo.load(toyworld_sae.LM_NAME), ToyWorld()
    batch = world.sample(config.n_docs, config.data_seed)
    x = toyworld_sae.activations(model, batch.tokens)[batch.labels["loss_mask"].bool()]
    runs = [("relu", {"l1_coefficient": c}, replace(config, l1_coefficient=c), "standard", None) for c in l1_coefficients]
    runs += [("topk", {"k": k}, config, "topk", k) for k in ks]
    points = []
    for kind, setting, cfg, architecture, k in runs:
        sae, history = toyworld_sae.fit(x, cfg, architecture, k)
        summary = toyworld_sae.evaluate(sae, model, world, n_docs=eval_docs)["summary"]
        points.append({"kind": kind, **setting, "resampled": int(sum(history["resampled"])),
                       **{m: summary[m] for m in ("l0", "explained_variance", "ce_loss_recovered", "dead_fraction")}})
        print(points[-1], flush=True)
    return {"experiment": "ReLU vs TopK SAEs on toyworld-lm at " + toyworld_sae.HOOK_NAME,
            "recipe": "python -m interplab.sae_frontier --card", "config": asdict(config),
            "eval_docs": eval_docs, "torch": torch.__version__, "points": points,
            "seconds": round(time.perf_counter() - started, 1)}


def load_card() -> dict:
    """The shipped frontier (measured by ``python -m interplab.sae_frontier --card``)."""
    return json.loads(CARD_PATH.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interplab.sae_frontier", description=__doc__.split("\n")[0])
    parser.add_argument("--card", action="store_true", help="train the SAEs and write the card")
    parser.add_argument("--out", type=Path, default=CARD_PATH)
    args = parser.parse_args(argv)
    torch.set_num_threads(CONFIG.threads)
    if not args.card:
        parser.print_help()
        return 0
    card = make_card()
    args.out.write_text(json.dumps(card, indent=2) + "\n")
    print(f"card written to {args.out} in {card['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
