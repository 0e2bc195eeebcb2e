"""Checks of the test-only `mini` assignment."""
import numpy as np

from interplab.checking import Exercise, Probe

ASSIGNMENT = "mini"


def _matrix(rng: np.random.Generator) -> dict:
    rows, cols = rng.integers(2, 6, size=2)
    return {"x": rng.normal(size=(rows, cols)).astype(np.float32)}


def _softmax_axis0(x):
    z = np.exp(x - x.max(axis=0, keepdims=True))
    return z / z.sum(axis=0, keepdims=True)


EXERCISES = [
    Exercise(
        id="mini.softmax",
        make_case=_matrix,
        probes=[Probe("axis0", _softmax_axis0, "you normalised over the wrong axis (rows instead of the last axis)")],
        hint="subtract the max of each row before exponentiating",
    ),
    Exercise(
        id="mini.row_norms",
        make_case=_matrix,
        probes=[Probe("squared", lambda x: (x ** 2).sum(axis=1), "you returned the squared norm; take the square root")],
    ),
]
