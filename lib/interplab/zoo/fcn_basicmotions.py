"""``fcn-basicmotions``: the FCN of Wang et al. (2017) trained on BasicMotions (6 channels (3-axis accelerometer, 3-axis gyroscope), 100 time steps, 4 classes).

Used by the ``tsxai`` assignment. The recipe (architecture, optimiser, schedule, seed) is
:mod:`interplab.zoo.fcn`; the data is aeon's bundled copy, shipped as
``interplab/tsxai_data/basicmotions.npz``. ``python -m interplab.zoo.fcn_basicmotions`` (or
``interplab zoo train fcn-basicmotions``) retrains it in about two minutes on one CPU thread.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from interplab.tsxai import FCN
from interplab.zoo import fcn

ZOO_NAME = "fcn-basicmotions"
CONFIG = fcn.FCNConfig(dataset="basicmotions")
MIN_TEST_ACCURACY = 0.95


def train(out_dir: Path | str) -> dict[str, Any]:
    return fcn.train(ZOO_NAME, CONFIG, out_dir)


def load() -> FCN:
    return fcn.load(ZOO_NAME, CONFIG)


def verify(model: FCN) -> dict[str, bool]:
    metrics = fcn.evaluate(model, CONFIG.dataset)
    return {
        f"test accuracy >= {MIN_TEST_ACCURACY}": metrics["test_accuracy"] >= MIN_TEST_ACCURACY,
        "train accuracy == 1.0": metrics["train_accuracy"] == 1.0,
        "model is in eval mode (BatchNorm uses running statistics)": not model.training,
    }


if __name__ == "__main__":
    from interplab.zoo import WEIGHTS_DIR

    print(json.dumps(train(WEIGHTS_DIR), indent=2))
