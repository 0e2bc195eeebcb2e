"""``fcn-basicmotions``: the FCN of Wang et al. (2017) trained on BasicMotions (6 channels (3-axis accelerometer, 3-axis gyroscope), 100 time steps, 4 classes).

Used by the ``tsxai`` assignment. The recipe (architecture, optimiser, schedule, seed) is
:mod:`interplab.zoo.fcn`; the data is aeon's bundled copy, shipped as
``interplab/tsxai_data/basicmotions.npz``. ``python -m interplab.zoo.fcn_basicmotions`` (or
``interplab zoo train fcn-basicmotions``) retrains it in about two minutes on one CPU thread.
"""
from __future__ import annotations

import json

from interplab.zoo import fcn

ZOO_NAME = "fcn-basicmotions"
CONFIG = fcn.FCNConfig(dataset="basicmotions")
MIN_TEST_ACCURACY = 0.95


train, load, verify = fcn.zoo_entry(ZOO_NAME, CONFIG, MIN_TEST_ACCURACY)


if __name__ == "__main__":
    from interplab.zoo import WEIGHTS_DIR

    print(json.dumps(train(WEIGHTS_DIR), indent=2))
