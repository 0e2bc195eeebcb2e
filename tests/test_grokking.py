"""The grokking assignment and the ``modadd-1l`` zoo model: every check passes the master's own
solution and names each known mistake; the solutions agree with independent computations; the
numbers the notebook reads from the card are what the model and its training script give.

Independent oracles:

* ``numpy.fft.fft`` for the Fourier basis (the library's and the notebook's);
* the card's key frequencies, logged by the training script with ``interplab.grokking``;
* a least-squares fit with ``numpy.linalg.lstsq`` of every output's logits on the constant and the
  key-frequency waves of ``a + b`` (a model rebuilt from those frequencies alone), and its loss
  computed with ``scipy.special.logsumexp``, for the restricted and excluded losses;
* the card's phases and weight norms, computed by the library during training;
* a second short training run, for bit-reproducibility of the recipe.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from interplab import grokking, zoo
from interplab.zoo import modadd_1l

from conftest import Master

GROKKING = Master("grokking", hidden_seed=1616)


@pytest.fixture(scope="module")
def ns() -> dict[str, Any]:
    """The master's locked and solution cells, executed (the notebook's own reference code)."""
    torch.set_num_threads(1)
    yield GROKKING.namespace()
    torch.set_grad_enabled(True)  # the setup cell turns gradients off for the notebook


def test_master_structure() -> None:
    GROKKING.assert_structure(min_exercises=8)


@pytest.mark.parametrize("exercise_id", sorted(GROKKING.exercises))
def test_reference_passes_and_probes_are_named(ns, exercise_id) -> None:
    GROKKING.assert_reference_passes_and_probes_are_named(exercise_id, ns[exercise_id.split(".")[1]])


# ------------------------------------------------------------------------------------------------
# The Fourier analysis against numpy's FFT
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [3, 7, 31, 59, 113])
def test_fourier_basis_matches_numpy_fft(ns, p) -> None:
    """Coefficients on cos k / sin k are sqrt(2/p) Re / -Im of the DFT; on the constant, the mean
    times sqrt(p)."""
    v = np.random.default_rng(p).normal(size=(p, 4))
    fft = np.fft.fft(v, axis=0)
    half = (p - 1) // 2
    expected = np.empty((p, 4))
    expected[0] = fft[0].real / math.sqrt(p)
    expected[1::2] = math.sqrt(2 / p) * fft[1:half + 1].real
    expected[2::2] = -math.sqrt(2 / p) * fft[1:half + 1].imag
    for basis, atol in ((ns["fourier_basis"](p), 1e-5), (grokking.fourier_basis(p), 1e-10)):  # float32, float64
        np.testing.assert_allclose((basis.double() @ torch.from_numpy(v)).numpy(), expected, atol=atol)


def test_fourier_2d_matches_numpy_fft2(ns) -> None:
    p = ns["p"]
    values = np.random.default_rng(1).normal(size=(2, p, p))
    coeffs = ns["fourier_2d"](torch.from_numpy(values), grokking.fourier_basis(p)).numpy()
    fft2 = np.fft.fft2(values)
    # [cos k, cos l] = (2/p) * (Re F[k, l] + Re F[k, -l]) / 2 for the real 2D DFT.
    k, l_ = 2, 3
    expected = (2 / p) * (fft2[:, k, l_].real + fft2[:, k, p - l_].real) / 2
    np.testing.assert_allclose(coeffs[:, 2 * k - 1, 2 * l_ - 1], expected, atol=1e-10)


def test_bad_modulus_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="odd"):
        grokking.fourier_basis(8)


# ------------------------------------------------------------------------------------------------
# Key frequencies, phases and weight norms against the card the training script wrote
# ------------------------------------------------------------------------------------------------


def reference_key_frequencies(ns) -> list[int]:
    """The notebook's rule (Part 3) with the notebook's own Fourier functions."""
    p = ns["p"]
    norms = ns["frequency_norms"](ns["model"].W_E[:p], ns["fourier_basis"](p))
    return [k + 1 for k in range(len(norms)) if norms[k] >= ns["KEY_FREQUENCY_SHARE"] * norms.sum()]


def test_key_frequencies_of_the_reference_match_the_card(ns) -> None:
    card = zoo.card("modadd-1l")
    assert reference_key_frequencies(ns) == card["key_frequencies"] == grokking.key_frequencies(ns["model"].W_E[:ns["p"]])
    assert 2 <= len(card["key_frequencies"]) <= 6


def test_phases_of_the_reference_match_the_card(ns) -> None:
    card = zoo.card("modadd-1l")
    curve = card["curve"]
    steps = torch.tensor([e["step"] for e in curve])
    found = ns["phase_boundaries"](steps, torch.tensor([e["train_loss"] for e in curve]),
                                   torch.tensor([e["test_loss"] for e in curve]))
    phases = card["phases"]
    assert tuple(found) == (phases["memorised"], phases["cleanup_start"], phases["grokked"])
    assert 0 < phases["memorised"] < phases["cleanup_start"] < phases["grokked"], phases


def test_weight_norms_of_the_checkpoints_match_the_card(ns) -> None:
    logged = {e["step"]: e["weight_norm"] for e in zoo.card("modadd-1l")["curve"]}
    for step, model in ns["checkpoints"].items():
        params = {name: param.detach() for name, param in model.named_parameters()}
        norm = ns["weight_norm"](params)
        assert norm == pytest.approx(modadd_1l.weight_norm(params), rel=1e-12)
        assert norm == pytest.approx(logged[step], abs=1e-3)


def test_the_shipped_model_grokked_and_checkpoints_load() -> None:
    model = zoo.load("modadd-1l")
    assert all(modadd_1l.verify(model).values()), modadd_1l.verify(model)
    checkpoints = modadd_1l.load_checkpoints()
    final = max(checkpoints)
    for name, param in model.state_dict().items():
        torch.testing.assert_close(checkpoints[final].state_dict()[name], param, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# Restricted and excluded loss against a model rebuilt from the key frequencies alone
# ------------------------------------------------------------------------------------------------


def rebuilt_logits(logits: np.ndarray, freqs: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Logits of the model rebuilt from ``freqs`` alone: per output c, the least-squares fit on the
    constant and cos/sin(2 pi k (a + b) / p); returned with the fitted constant part alone."""
    p = logits.shape[0]
    s = np.add.outer(np.arange(p), np.arange(p)).ravel()
    design = np.column_stack([np.ones(p * p)] + [f(2 * np.pi * k * s / p) for k in freqs for f in (np.cos, np.sin)])
    coef, *_ = np.linalg.lstsq(design, logits.reshape(p * p, p), rcond=None)
    return (design @ coef).reshape(p, p, p), np.broadcast_to(coef[0], (p, p, p))


def mean_ce(logits: np.ndarray, answers: np.ndarray, mask: np.ndarray) -> float:
    rows = logits[mask]
    return float(np.mean(logsumexp(rows, axis=-1) - np.take_along_axis(rows, answers[mask][:, None], -1)[:, 0]))


@pytest.mark.parametrize("which", ["final", "first", "middle"])
def test_restricted_and_excluded_loss_equal_the_rebuilt_model(ns, which) -> None:
    steps = sorted(ns["checkpoints"])
    model = {"final": ns["model"], "first": ns["checkpoints"][steps[0]], "middle": ns["checkpoints"][steps[len(steps) // 2]]}[which]
    with torch.no_grad():  # the suite switches autograd back on after every test
        logits = ns["grid_logits"](model).double()
    answers, is_train, freqs = ns["answers"], ns["is_train"], reference_key_frequencies(ns)
    rebuilt, constant = rebuilt_logits(logits.numpy(), freqs)
    everywhere = np.ones(is_train.shape, dtype=bool)
    assert ns["restricted_loss"](logits, answers, is_train, freqs) == pytest.approx(
        mean_ce(rebuilt, answers.numpy(), everywhere), rel=1e-6)
    excluded = logits.numpy() - (rebuilt - constant)
    assert ns["excluded_loss"](logits, answers, is_train, freqs) == pytest.approx(
        mean_ce(excluded, answers.numpy(), is_train.numpy()), rel=1e-6)


def test_final_restricted_loss_is_low_and_excluded_loss_high(ns) -> None:
    """The claims of Part 5 on the final model: the key frequencies alone answer well; without them
    the training pairs are no longer answered."""
    logits = ns["logits"].detach()
    args = (ns["answers"], ns["is_train"], reference_key_frequencies(ns))
    train = ns["cross_entropy"](logits, ns["is_train"])
    assert ns["restricted_loss"](logits, *args) < 0.5
    assert ns["excluded_loss"](logits, *args) > 100 * max(train, 1e-3)


# ------------------------------------------------------------------------------------------------
# The training script is bit-reproducible
# ------------------------------------------------------------------------------------------------


def test_training_is_bit_reproducible(tmp_path) -> None:
    short = replace(modadd_1l.TrainConfig(), steps=20, log_every=10, checkpoint_steps=(0, 20))
    cards = [modadd_1l.train(tmp_path / name, short) for name in ("one", "two")]
    assert cards[0]["curve"] == cards[1]["curve"]
    one = (tmp_path / "one" / "modadd-1l.safetensors").read_bytes()
    assert one == (tmp_path / "two" / "modadd-1l.safetensors").read_bytes()
    assert cards[0]["curve"][0] == zoo.card("modadd-1l")["curve"][0]  # the shipped run starts the same
