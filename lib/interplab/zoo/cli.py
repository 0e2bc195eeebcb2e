"""``interplab zoo list|train NAME|verify``."""
from __future__ import annotations

import argparse
import json

from interplab import zoo


def zoo_command(args: argparse.Namespace) -> int:
    models = zoo.registry()
    if args.zoo_command == "list":
        for name in sorted(models):
            try:
                card = zoo.card(name)
                summary = ", ".join(f"{k}={v}" for k, v in card.get("metrics", {}).items())
            except FileNotFoundError:
                summary = "not trained"
            print(f"{name:28s} {summary}")
        return 0
    if args.zoo_command == "train":
        if args.seed is not None and args.out is None:
            raise SystemExit("interplab zoo train: --seed needs --out (another seed must not overwrite the shipped weights)")
        module = zoo.module_for(args.name)
        card = module.train(args.out or zoo.WEIGHTS_DIR, seed=args.seed)
        print(json.dumps(card, indent=2))
        return 0
    if args.zoo_command == "verify":
        failures = 0
        for name in sorted(models):
            try:
                model = models[name].load()
            except FileNotFoundError as error:  # a model whose recipe exists but was never trained
                failures += 1
                print(f"FAIL {name}: {error}")
                continue
            results = models[name].verify(model)
            for check_name, ok in results.items():
                failures += not ok
                print(f"{'ok  ' if ok else 'FAIL'} {name}: {check_name}")
        return 1 if failures else 0
    return 2
