"""Checks of the saes assignment (see interplab.checking for the contract).

Every input is generated from the case's ``rng``: random weights with non-zero biases and
non-unit decoder rows (so that no term of a formula can hide), random activations, fresh toy-world
documents for the language-model exercises, and, for ``ce_loss_recovered``, a randomly perturbed
copy of the zoo SAE (so that the fraction recovered differs between cases).

Training exercises (``sparse_features``, ``train_toy_model``, ``train_sae``) are judged by
properties that the grader computes itself from the returned data: statistics of the batch, the
loss of the returned toy model on the grader's own batches, and the returned SAE's explained
variance, L0 and feature recovery on held-out activations the student's function never saw.
"""
from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from interplab.checking import Exercise, Probe, torch_generator

ASSIGNMENT = "saes"
FLOAT_TOL = {"float32": (1e-4, 1e-5), "float64": (1e-5, 1e-6)}
MODEL_TOL = {"float32": (1e-3, 1e-4), "float64": (1e-4, 1e-5)}


@functools.lru_cache(maxsize=1)
def _shipped() -> tuple[Any, Any, Any]:
    from interplab import zoo
    from interplab.toyworld import ToyWorld

    return zoo.load("toyworld-lm"), zoo.load("toyworld-sae"), ToyWorld()


def _scalar(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


# --------------------------------------------------------------------------------------------
# Part 1: toy models of superposition
# --------------------------------------------------------------------------------------------


def _sparse_case(rng: np.random.Generator) -> dict[str, Any]:
    return {"batch": int(rng.integers(4000, 8001)), "n_features": int(rng.integers(3, 9)),
            "feature_probability": float(rng.uniform(0.05, 0.9)), "generator": torch_generator(rng)}


def _sparse_call(fn, case: dict[str, Any]) -> dict[str, Any]:
    return {"x": fn(**case), "p": case["feature_probability"]}


def _sparse_judge(output: Any, reference: Any) -> tuple[bool, str]:
    x, ref, p = output["x"], reference["x"], float(reference["p"])
    if not isinstance(x, np.ndarray) or x.shape != ref.shape:
        return False, f"expected a tensor of shape {tuple(ref.shape)}"
    if x.dtype.kind != "f" or np.isnan(x).any() or x.min() < 0 or x.max() > 1:
        return False, "entries must be floats in [0, 1]"
    active = x != 0
    n = x.size
    frac = active.mean()
    if abs(frac - p) > 5 * np.sqrt(p * (1 - p) / n) + 0.005:
        return False, f"fraction of non-zero entries is {frac:.3f}, expected about the feature probability"
    per_feature = active.mean(0)
    if np.abs(per_feature - p).max() > 5 * np.sqrt(p * (1 - p) / x.shape[0]) + 0.01:
        return False, "some feature is non-zero much more or less often than the feature probability"
    mean_active = x[active].mean()
    if abs(mean_active - 0.5) > 0.03:
        return False, f"non-zero entries have mean {mean_active:.3f}; uniform on [0, 1] has mean 0.5"
    return True, ""


def _toy_forward_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    d_hidden = int(rng.integers(2, 6))
    n_features = int(rng.integers(d_hidden + 1, 11))
    batch = int(rng.integers(3, 21))
    x = torch.rand(batch, n_features, generator=g) * (torch.rand(batch, n_features, generator=g) < 0.5)
    return {"W": torch.randn(d_hidden, n_features, generator=g), "b": torch.randn(n_features, generator=g) * 0.5, "x": x}


def _importance_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    batch, n = int(rng.integers(2, 30)), int(rng.integers(2, 12))
    return {"x": torch.rand(batch, n, generator=g), "x_hat": torch.rand(batch, n, generator=g),
            "importance": torch.rand(n, generator=g) + 0.1}


def _toy_loss(W: np.ndarray, b: np.ndarray, p: float, importance: np.ndarray) -> float:
    """The importance-weighted loss of a toy model on the grader's own batch (numpy, fixed seed)."""
    rng = np.random.default_rng(1234)
    n = W.shape[1]
    x = rng.random((20000, n)) * (rng.random((20000, n)) < p)
    x_hat = np.maximum(x @ W.T @ W + b, 0)
    return float((importance * (x - x_hat) ** 2).sum(-1).mean())


def _train_toy_case(rng: np.random.Generator) -> dict[str, Any]:
    decay = float(rng.uniform(0.7, 0.95))
    return {"n_features": 5, "d_hidden": 2, "feature_probability": float(rng.choice([1.0, 0.3, 0.1])),
            "importance": decay ** torch.arange(5, dtype=torch.float32), "steps": 400,
            "generator": torch_generator(rng)}


def _train_toy_call(fn, case: dict[str, Any]) -> dict[str, Any]:
    W, b = fn(**case)
    return {"W": torch.as_tensor(W).detach().float(), "b": torch.as_tensor(b).detach().float(),
            "p": case["feature_probability"], "importance": case["importance"]}


def _train_toy_judge(output: Any, reference: Any) -> tuple[bool, str]:
    W, b = output["W"], output["b"]
    if W.shape != reference["W"].shape or b.shape != reference["b"].shape:
        return False, f"expected W of shape {tuple(reference['W'].shape)} and b of shape {tuple(reference['b'].shape)}"
    p, importance = float(reference["p"]), reference["importance"]
    mine = _toy_loss(W.astype(np.float64), b.astype(np.float64), p, importance)
    ref = _toy_loss(reference["W"].astype(np.float64), reference["b"].astype(np.float64), p, importance)
    if not np.isfinite(mine) or mine > 1.1 * ref + 0.01:
        return False, (f"your model's loss on fresh batches is {mine:.4f}, the reference reaches {ref:.4f}: "
                       "is it training (Adam, lr 1e-2, a new batch every step, the importance-weighted loss)?")
    return True, ""


def _dimensionality_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    d_hidden = int(rng.integers(2, 7))
    return {"W": torch.randn(d_hidden, int(rng.integers(3, 13)), generator=g)}


# --------------------------------------------------------------------------------------------
# Part 2: SAE forward, loss, TopK, training
# --------------------------------------------------------------------------------------------


def _sae_weights(g: torch.Generator, d_in: int, d_sae: int) -> dict[str, torch.Tensor]:
    W_dec = torch.randn(d_sae, d_in, generator=g) * (torch.rand(d_sae, 1, generator=g) + 0.3)
    return {"W_enc": torch.randn(d_in, d_sae, generator=g) * 0.5, "b_enc": torch.randn(d_sae, generator=g) * 0.3,
            "W_dec": W_dec, "b_dec": torch.randn(d_in, generator=g)}


def _sae_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    d_in, d_sae, batch = int(rng.integers(4, 17)), int(rng.integers(8, 41)), int(rng.integers(2, 11))
    return {"x": torch.randn(batch, d_in, generator=g) * 2, **_sae_weights(g, d_in, d_sae)}


def _sae_loss_case(rng: np.random.Generator) -> dict[str, Any]:
    return {**_sae_case(rng), "l1_coefficient": float(rng.uniform(0.1, 3.0))}


def _topk_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    d_sae = int(rng.integers(6, 40))
    # Shifted down so that some of the top-k pre-activations are negative (ReLU must zero them).
    return {"pre": torch.randn(int(rng.integers(2, 12)), d_sae, generator=g) - 1.0, "k": int(rng.integers(1, d_sae // 2 + 1))}


def synthetic_activations(g: torch.Generator, n: int, true_features: torch.Tensor, p: float = 0.06) -> torch.Tensor:
    """``n`` rows of ``c @ true_features`` with sparse coefficients ``c`` (non-zero with probability ``p``)."""
    n_true = true_features.shape[0]
    c = torch.rand(n, n_true, generator=g) * (torch.rand(n, n_true, generator=g) < p)
    return c @ true_features


def _train_sae_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    d_in, n_true = 12, 20
    true_features = F.normalize(torch.randn(n_true, d_in, generator=g), dim=-1)
    return {"x": synthetic_activations(g, 6000, true_features), "d_sae": 32, "l1_coefficient": 0.03,
            "steps": 800, "generator": g,
            "_test": synthetic_activations(g, 2000, true_features), "_true": true_features}


def _train_sae_call(fn, case: dict[str, Any]) -> dict[str, Any]:
    args = {k: v for k, v in case.items() if not k.startswith("_")}
    weights = fn(**args)
    return {"weights": {k: torch.as_tensor(weights[k]).detach().float() for k in ("W_enc", "b_enc", "W_dec", "b_dec")},
            "x_test": case["_test"], "true_features": case["_true"]}


def _sae_metrics(w: dict[str, np.ndarray], x: np.ndarray, true_features: np.ndarray) -> dict[str, float]:
    from scipy.optimize import linear_sum_assignment

    f = np.maximum((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"], 0)
    x_hat = f @ w["W_dec"] + w["b_dec"]
    mse = ((x - x_hat) ** 2).sum(-1).mean()
    ev = 1 - mse / ((x**2).sum(-1).mean() - (x.mean(0) ** 2).sum())
    dec = w["W_dec"] / np.maximum(np.linalg.norm(w["W_dec"], axis=-1, keepdims=True), 1e-12)
    sims = true_features @ dec.T
    rows, cols = linear_sum_assignment(sims, maximize=True)
    return {"ev": float(ev), "l0": float((f != 0).sum(-1).mean()), "matched": float(sims[rows, cols].mean())}


def _train_sae_judge(output: Any, reference: Any) -> tuple[bool, str]:
    ref_w = reference["weights"]
    if not isinstance(output.get("weights"), dict) or set(output["weights"]) != set(ref_w):
        return False, "return a dict with W_enc, b_enc, W_dec, b_dec"
    for k in ref_w:
        if output["weights"][k].shape != ref_w[k].shape:
            return False, f"{k}: expected shape {tuple(ref_w[k].shape)}, got {tuple(output['weights'][k].shape)}"
    if not np.array_equal(output["x_test"], reference["x_test"]):
        return False, "the held-out activations do not match the check's"
    x, true = reference["x_test"].astype(np.float64), reference["true_features"].astype(np.float64)
    mine = _sae_metrics({k: v.astype(np.float64) for k, v in output["weights"].items()}, x, true)
    ref = _sae_metrics({k: v.astype(np.float64) for k, v in ref_w.items()}, x, true)
    if not all(np.isfinite(v) for v in mine.values()):
        return False, "your SAE produces non-finite values"
    problems = []
    if mine["ev"] < ref["ev"] - 0.05:
        problems.append(f"explained variance on held-out activations {mine['ev']:.3f} (reference {ref['ev']:.3f})")
    if mine["l0"] > 1.5 * ref["l0"] + 1:
        problems.append(f"L0 {mine['l0']:.1f} (reference {ref['l0']:.1f}): too dense, is the L1 term in the loss?")
    if mine["matched"] < ref["matched"] - 0.1:
        problems.append(f"matched cosine with the true features {mine['matched']:.3f} (reference {ref['matched']:.3f})")
    return (False, "; ".join(problems)) if problems else (True, "")


# --------------------------------------------------------------------------------------------
# Part 3-6: metrics, resampling, recovery, features
# --------------------------------------------------------------------------------------------


def _ev_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    n, d = int(rng.integers(5, 60)), int(rng.integers(2, 16))
    x = torch.randn(n, d, generator=g) + torch.randn(d, generator=g) * 3  # a large mean: it must be subtracted
    x_hat = x + torch.randn(n, d, generator=g) * float(rng.uniform(0.1, 1.0))
    # float64, so that the reference is exact: in float32, E|x|^2 - |Ex|^2 loses digits to cancellation
    # on a large mean and rejected other correct formulas (the centred sum) on ~7 % of inputs.
    return {"x": x.double(), "x_hat": x_hat.double()}


def _sparsity_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    n, d = int(rng.integers(3, 40)), int(rng.integers(4, 30))
    f = F.relu(torch.randn(n, d, generator=g) - 0.5)
    f[:, torch.rand(d, generator=g) < 0.3] = 0.0  # some dead features
    return {"f": f}


def _sparsity_call(fn, case: dict[str, Any]) -> dict[str, Any]:
    out = fn(**case)
    return {"l0": _scalar(out["l0"]), "dead": torch.as_tensor(out["dead"]).bool()}


class _PerturbedSAE(torch.nn.Module):
    """The zoo SAE with noise on its decoder: ``forward(x)`` returns the reconstruction."""

    def __init__(self, sae: Any, g: torch.Generator, scale: float):
        super().__init__()
        self.sae = copy.deepcopy(sae)
        with torch.no_grad():
            self.sae.W_dec.add_(torch.randn(self.sae.W_dec.shape, generator=g) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sae(x)


def _ce_case(rng: np.random.Generator) -> dict[str, Any]:
    from interplab.zoo.toyworld_sae import HOOK_NAME

    model, sae, world = _shipped()
    g = torch_generator(rng)
    batch = world.sample(int(rng.integers(8, 17)), np.random.default_rng(int(rng.integers(2**32))))
    return {"model": model, "sae": _PerturbedSAE(sae, g, float(rng.uniform(0.0, 0.15))), "tokens": batch.tokens,
            "loss_mask": batch.labels["loss_mask"][:, 1:].bool(), "hook_name": HOOK_NAME}


def _resample_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    d_in, d_sae = int(rng.integers(4, 13)), int(rng.integers(8, 30))
    batch = int(rng.integers(d_sae, d_sae + 20))  # never more dead features than rows
    dead = torch.rand(d_sae, generator=g) < 0.3
    dead[int(rng.integers(d_sae))] = True  # at least one dead
    dead[0] = False  # at least one live
    return {**_sae_weights(g, d_in, d_sae), "dead": dead, "x": torch.randn(batch, d_in, generator=g) * 2}


def _recovery_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    d, n_true = int(rng.integers(4, 16)), int(rng.integers(3, 12))
    true = torch.randn(n_true, d, generator=g) * 2
    # two nearly parallel true features share their best learned match: the max per row counts that
    # learned feature twice, a one-to-one matching cannot (so every input tells the two apart)
    true[1] = true[0] + 0.2 * torch.randn(d, generator=g)
    learned = torch.cat([true[torch.randperm(n_true, generator=g)[: n_true // 2]] + torch.randn(n_true // 2, d, generator=g) * 0.3,
                         torch.randn(int(rng.integers(n_true, 2 * n_true)), d, generator=g)])
    return {"true_features": true, "learned": learned[torch.randperm(len(learned), generator=g)]}


def _max_act_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    docs, pos = int(rng.integers(3, 20)), int(rng.integers(4, 30))
    return {"acts": F.relu(torch.randn(docs, pos, generator=g)) + 0.01 * torch.rand(docs, pos, generator=g),
            "k": int(rng.integers(1, 11))}


def _pr_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    n, d = int(rng.integers(20, 200)), int(rng.integers(3, 30))
    truth = torch.rand(n, generator=g) < 0.3
    fired = (torch.rand(n, d, generator=g) < 0.2) | (truth[:, None] & (torch.rand(n, d, generator=g) < 0.5))
    fired[:, 0] = False  # a feature that never fires: precision 0
    return {"fired": fired, "truth": truth}


# --------------------------------------------------------------------------------------------
# Known mistakes
# --------------------------------------------------------------------------------------------


def _sae_forward_no_bdec(x, W_enc, b_enc, W_dec, b_dec):
    f = F.relu(x @ W_enc + b_enc)
    return f, f @ W_dec + b_dec


def _sae_forward_no_relu(x, W_enc, b_enc, W_dec, b_dec):
    f = (x - b_dec) @ W_enc + b_enc
    return f, f @ W_dec + b_dec


def _sae_loss_parts(x, W_enc, b_enc, W_dec, b_dec):
    f = F.relu((x - b_dec) @ W_enc + b_enc)
    return f, f @ W_dec + b_dec


def _sae_loss_plain_l1(x, W_enc, b_enc, W_dec, b_dec, l1_coefficient):
    f, x_hat = _sae_loss_parts(x, W_enc, b_enc, W_dec, b_dec)
    return (((x - x_hat) ** 2).sum(-1) + l1_coefficient * f.sum(-1)).mean()


def _sae_loss_mean_mse(x, W_enc, b_enc, W_dec, b_dec, l1_coefficient):
    f, x_hat = _sae_loss_parts(x, W_enc, b_enc, W_dec, b_dec)
    return (((x - x_hat) ** 2).mean(-1) + l1_coefficient * (f * W_dec.norm(dim=-1)).sum(-1)).mean()


def _topk_no_relu(pre, k):
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values)


def _ev_no_mean(x, x_hat):
    return 1 - ((x - x_hat) ** 2).sum(-1).mean() / (x**2).sum(-1).mean()


def _ev_legacy(x, x_hat):
    return (1 - ((x - x_hat) ** 2).sum(-1) / ((x - x.mean(0)) ** 2).sum(-1)).mean()


def _ce_masked(tokens, loss_mask, logits):
    per_token = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    return per_token[loss_mask.flatten()].mean()


def _ce_three(model, sae, tokens, loss_mask, hook_name, mask_all=False):
    mask = torch.ones_like(loss_mask) if mask_all else loss_mask
    with torch.no_grad():
        clean = _ce_masked(tokens, mask, model(tokens))
        spliced = _ce_masked(tokens, mask, model.run_with_hooks(tokens, fwd_hooks=[(hook_name, lambda a, hook: sae(a))]))
        zero = _ce_masked(tokens, mask, model.run_with_hooks(tokens, fwd_hooks=[(hook_name, lambda a, hook: torch.zeros_like(a))]))
    return clean, spliced, zero


def _ce_inverted(model, sae, tokens, loss_mask, hook_name):
    clean, spliced, zero = _ce_three(model, sae, tokens, loss_mask, hook_name)
    return (spliced - clean) / (zero - clean)


def _ce_unmasked(model, sae, tokens, loss_mask, hook_name):
    clean, spliced, zero = _ce_three(model, sae, tokens, loss_mask, hook_name, mask_all=True)
    return (zero - spliced) / (zero - clean)


def _resample(W_enc, b_enc, W_dec, b_dec, dead, x, subtract_b_dec=True, normalise=True, live_only=True):
    f = F.relu((x - b_dec) @ W_enc + b_enc)
    error = ((x - (f @ W_dec + b_dec)) ** 2).sum(-1)
    idx = dead.nonzero().flatten()
    worst = error.argsort(descending=True)[: len(idx)]
    directions = x[worst] - b_dec if subtract_b_dec else x[worst]
    if normalise:
        directions = directions / directions.norm(dim=-1, keepdim=True)
    norm = W_enc[:, ~dead].norm(dim=0).mean() if live_only else W_enc.norm(dim=0).mean()
    W_enc, b_enc, W_dec = W_enc.clone(), b_enc.clone(), W_dec.clone()
    W_dec[idx] = directions
    W_enc[:, idx] = 0.2 * norm * directions.T
    b_enc[idx] = 0.0
    return {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec.clone()}


def _recovery_unnormalised(true_features, learned):
    from scipy.optimize import linear_sum_assignment

    sims = true_features @ learned.T
    rows, cols = linear_sum_assignment(sims.double().numpy(), maximize=True)
    return {"mmcs": float(sims.max(-1).values.mean()), "matched": float(sims[rows, cols].sum() / len(true_features))}


def _recovery_no_matching(true_features, learned):
    sims = F.normalize(true_features, dim=-1) @ F.normalize(learned, dim=-1).T
    best = float(sims.max(-1).values.mean())
    return {"mmcs": best, "matched": best}


def _max_act_wrong_divmod(acts, k):
    values, flat = acts.flatten().topk(k)
    return values, flat % acts.shape[0], flat // acts.shape[0]


def _pr_swapped(fired, truth):
    tp = (fired & truth[:, None]).sum(0).float()
    return tp / truth.sum().clamp(min=1).float(), tp / fired.sum(0).clamp(min=1).float()


def _tuple_call(fn, case):
    return list(fn(**case))


def _recovery_call(fn, case):
    out = fn(**case)
    return {"mmcs": float(out["mmcs"]), "matched": float(out["matched"])}


EXERCISES = [
    Exercise("saes.sparse_features", _sparse_case, call=_sparse_call, judge=_sparse_judge, n_public=1, n_hidden=2,
             hint="each entry: non-zero with probability feature_probability, then uniform on [0, 1]"),
    Exercise("saes.toy_forward", _toy_forward_case, tolerances=FLOAT_TOL, probes=[
        Probe("no_relu", lambda W, b, x: x @ W.T @ W + b, "you left out the ReLU on the output"),
        Probe("bias_outside", lambda W, b, x: F.relu(x @ W.T @ W) + b, "the bias goes inside the ReLU"),
    ]),
    Exercise("saes.importance_loss", _importance_case, call=lambda fn, c: _scalar(fn(**c)), tolerances=FLOAT_TOL, probes=[
        Probe("unweighted", lambda x, x_hat, importance: float(((x - x_hat) ** 2).sum(-1).mean()),
              "you forgot to weight the squared errors by the importance"),
        Probe("mean_over_features", lambda x, x_hat, importance: float((importance * (x - x_hat) ** 2).mean()),
              "sum over features (then mean over the batch), not mean over both"),
    ]),
    Exercise("saes.train_toy_model", _train_toy_case, call=_train_toy_call, judge=_train_toy_judge, n_public=1, n_hidden=2,
             hint="Adam with lr 1e-2, a fresh sparse_features batch of 1024 per step, importance_loss of toy_forward"),
    Exercise("saes.feature_dimensionality", _dimensionality_case, tolerances=FLOAT_TOL, probes=[
        Probe("not_normalised", lambda W: W.norm(dim=0) ** 2 / ((W.T @ W) ** 2).sum(1),
              "the projection uses the unit vector of W_i (divide by ||W_i|| before the dot product)"),
        Probe("wrong_axis", lambda W: W.norm(dim=0) ** 2 / (((W / W.norm(dim=0)).T @ W) ** 2).sum(0),
              "you summed the interference over the wrong axis (sum over j of (W_i-hat . W_j)^2, per feature i)"),
    ]),
    Exercise("saes.sae_forward", _sae_case, call=_tuple_call, tolerances=FLOAT_TOL, probes=[
        Probe("no_b_dec", _sae_forward_no_bdec, "subtract b_dec from x before encoding"),
        Probe("no_relu", _sae_forward_no_relu, "the feature activations need a ReLU"),
    ]),
    Exercise("saes.sae_loss", _sae_loss_case, call=lambda fn, c: _scalar(fn(**c)), tolerances=FLOAT_TOL, probes=[
        Probe("plain_l1", lambda **c: float(_sae_loss_plain_l1(**c)), "weight each feature's activation by its decoder row norm"),
        Probe("mean_mse", lambda **c: float(_sae_loss_mean_mse(**c)), "sum the squared error over dimensions, do not average it"),
    ]),
    Exercise("saes.topk_activation", _topk_case, tolerances=FLOAT_TOL, probes=[
        Probe("no_relu", _topk_no_relu, "apply ReLU to the kept values: a negative top-k pre-activation must become 0"),
    ]),
    Exercise("saes.train_sae", _train_sae_case, call=_train_sae_call, judge=_train_sae_judge, n_public=1, n_hidden=2,
             hint="train with sae_loss and Adam (lr 3e-3) on random batches of 256 rows; start b_dec at the mean"),
    Exercise("saes.explained_variance", _ev_case, call=lambda fn, c: _scalar(fn(**c)), tolerances=FLOAT_TOL, probes=[
        Probe("no_mean", lambda x, x_hat: float(_ev_no_mean(x, x_hat)),
              "the denominator is the variance: E||x||^2 minus ||E x||^2"),
        Probe("legacy", lambda x, x_hat: float(_ev_legacy(x, x_hat)),
              "you averaged a per-token ratio (SAELens's explained_variance_legacy); divide the means instead"),
    ]),
    Exercise("saes.sparsity_stats", _sparsity_case, call=_sparsity_call, tolerances=FLOAT_TOL, probes=[
        Probe("l0_per_feature", lambda f: {"l0": float((f != 0).sum(0).float().mean()), "dead": (f == 0).all(0)},
              "L0 counts active features per row (token), then averages over rows"),
        Probe("dead_any_zero", lambda f: {"l0": float((f != 0).sum(-1).float().mean()), "dead": (f == 0).any(0)},
              "a feature is dead only if it is zero on every row"),
    ]),
    Exercise("saes.ce_loss_recovered", _ce_case, call=lambda fn, c: _scalar(fn(**c)), tolerances=MODEL_TOL, probes=[
        Probe("inverted", lambda **c: float(_ce_inverted(**c)), "that is the fraction lost (L_SAE - L_clean over the gap), not recovered"),
        Probe("unmasked", lambda **c: float(_ce_unmasked(**c)), "average only over the predictions selected by loss_mask"),
    ]),
    Exercise("saes.resample_dead", _resample_case, tolerances=FLOAT_TOL, probes=[
        Probe("no_b_dec", lambda **c: _resample(**c, subtract_b_dec=False), "the new direction is x - b_dec"),
        Probe("not_normalised", lambda **c: _resample(**c, normalise=False), "normalise the new decoder rows to unit length"),
        Probe("all_norms", lambda **c: _resample(**c, live_only=False), "m is the mean encoder norm of the live features only"),
    ]),
    Exercise("saes.feature_recovery", _recovery_case, call=_recovery_call, tolerances=FLOAT_TOL, probes=[
        Probe("unnormalised", _recovery_unnormalised, "use cosine similarities: normalise both sets of vectors"),
        Probe("no_matching", _recovery_no_matching, "'matched' needs a one-to-one (Hungarian) matching, not the max per row"),
    ]),
    Exercise("saes.max_activating", _max_act_case, call=_tuple_call, tolerances=FLOAT_TOL, probes=[
        Probe("wrong_divmod", _max_act_wrong_divmod, "a flat index i is at document i // pos, position i % pos"),
    ]),
    Exercise("saes.precision_recall", _pr_case, call=_tuple_call, tolerances=FLOAT_TOL, probes=[
        Probe("swapped", _pr_swapped, "precision divides by how often the feature fires, recall by how often the value occurs"),
    ]),
]
