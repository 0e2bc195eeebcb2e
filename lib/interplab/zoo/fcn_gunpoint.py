"""``fcn-gunpoint``: the FCN of Wang et al. (2017) trained on GunPoint (univariate, 150 time steps, 2 classes (Gun, Point)).

Used by the ``tsxai`` assignment. The recipe (architecture, optimiser, schedule, seed) is
:mod:`interplab.zoo.fcn`; the data is aeon's bundled copy, shipped as
``interplab/tsxai_data/gunpoint.npz``. ``python -m interplab.zoo.fcn_gunpoint`` (or
``interplab zoo train fcn-gunpoint``) retrains it in about two minutes on one CPU thread.
"""
from __future__ import annotations

import json

from interplab.zoo import fcn

ZOO_NAME = "fcn-gunpoint"
CONFIG = fcn.FCNConfig(dataset="gunpoint")
MIN_TEST_ACCURACY = 0.97


train, load, verify = fcn.zoo_entry(ZOO_NAME, CONFIG, MIN_TEST_ACCURACY)


if __name__ == "__main__":
    from interplab.zoo import WEIGHTS_DIR

    print(json.dumps(train(WEIGHTS_DIR), indent=2))
