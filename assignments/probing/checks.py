"""Checks of the probing assignment (see interplab.checking for the contract).

Inputs are generated from each case's ``rng``: synthetic Gaussian classes for the probe and the
eraser (anisotropic, unbalanced, with class-dependent means, so that the bias, the whitening and the
centring all matter), Zipf-distributed token streams with skewed labels for the control task, real
residual activations of fresh toy-world documents at random points of ``toyworld-lm-4l`` for the
lenses, random low-rank erasers and position masks, and fresh child/expert dialogue pairs
(:func:`interplab.probing.persona_swap_pairs`) for the interchange exercises. The lenses read the
shipped ``toyworld-lm-4l`` (as in the notebook's Part 2), every other exercise the shipped ``toyworld-lm``.

Training exercises are judged by properties the grader computes in its own process:

* ``fit_probe``: the objective (mean cross-entropy + ``l2/2 |W|^2``) the returned weights reach on the
  case's data, within 0.1 % of the reference's minimum (the problem is convex);
* ``control_labels``: one class per token type, two generators give two labellings, and the share of
  types per class follows the real labels' class distribution;
* ``train_tuned_lens``: ``KL(P_final || P_lens)`` of the returned translator on held-out documents it
  never saw must beat the logit lens and be within 25 % (+0.05 nats) of the reference translator's;
* ``train_das``: the IIA of the returned unit direction on held-out pairs (other questions, other
  contexts) must be within 0.1 of the reference direction's.

Conventions fixed here and in the notebook: KL is ``KL(P_final || P_lens)`` averaged over the mask;
the LEACE eraser is ``r(x) = x - (x - mean) @ M.T`` with ``M = W⁺ P W`` and ranks cut at ``1e-6`` of
the largest eigen/singular value; interchange sets the base run's activation at ``base_at`` to the
source's at ``source_at`` (or only its component in the span of the orthonormal ``basis`` rows).
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from interplab.checking import Exercise, Probe, torch_generator
from interplab.probing import LENS_MODEL, LENS_POINTS, RESID_POINTS, persona_swap_pairs

ASSIGNMENT = "probing"
FLOAT_TOL = {"float32": (1e-4, 1e-5), "float64": (1e-5, 1e-7)}  # float64: float32 results returned as Python floats
MODEL_TOL = {"float32": (1e-3, 1e-4), "float64": (1e-4, 1e-6)}
LEACE_TOL = {"float32": (2e-3, 2e-4)}  # eigen-decompositions in float32 or float64 both pass
HELD_OUT_SEED = 31_337  # documents and pairs the training exercises are judged on (never given to the student)


@functools.lru_cache(maxsize=2)
def _shipped(name: str = "toyworld-lm") -> tuple[Any, Any]:
    from interplab import zoo
    from interplab.toyworld import ToyWorld

    model = zoo.load(name)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, ToyWorld()


def _pick(rng: np.random.Generator, items) -> Any:
    items = list(items)
    return items[int(rng.integers(len(items)))]


def _docs(rng: np.random.Generator, n: int) -> Any:
    _, world = _shipped()
    return world.sample(n, np.random.default_rng(int(rng.integers(2**32))))


def _lens(model, resid: torch.Tensor) -> torch.Tensor:
    return model.unembed(model.ln_final(resid))


def _kl(final_logits: torch.Tensor, lens_logits: torch.Tensor) -> torch.Tensor:
    """KL(P_final || P_lens) per row (last axis: vocabulary)."""
    logp, logq = final_logits.log_softmax(-1), lens_logits.log_softmax(-1)
    return (logp.exp() * (logp - logq)).sum(-1)


# --------------------------------------------------------------------------------------------
# 1. Probes
# --------------------------------------------------------------------------------------------


def _dataset_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    n_doc, pos, d = int(rng.integers(5, 10)), int(rng.integers(4, 9)), int(rng.integers(3, 7))
    classes = torch.from_numpy(rng.integers(-1, 3, size=(n_doc, pos)))
    is_test = torch.from_numpy(rng.random(n_doc) < 0.4)
    is_test[0], is_test[1] = False, True  # both splits are never empty
    return {"acts": torch.randn(n_doc, pos, d, generator=g), "classes": classes, "is_test_doc": is_test}


def _probe_data(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Unbalanced Gaussian classes with distinct means in anisotropic noise."""
    g = torch_generator(rng)
    n, d, c = int(rng.integers(150, 300)), int(rng.integers(6, 16)), int(rng.integers(2, 5))
    p = torch.from_numpy(rng.dirichlet(np.ones(c)) * 0.6 + 0.4 / c)
    y = torch.multinomial(p, n, replacement=True, generator=g)
    y[:c] = torch.arange(c)  # every class occurs
    means = torch.randn(c, d, generator=g) * 1.2 + 1.5
    mixing = torch.randn(d, d, generator=g) / d ** 0.5 + torch.eye(d)
    X = means[y] + torch.randn(n, d, generator=g) @ mixing
    return X.float(), y, c


def _fit_probe_case(rng: np.random.Generator) -> dict[str, Any]:
    X, y, c = _probe_data(rng)
    return {"X": X, "y": y, "n_classes": c, "l2": float(rng.choice([1e-3, 1e-2, 5e-2]))}


def _call_fit_probe(fn, case: dict[str, Any]) -> dict[str, Any]:
    W, b = fn(**case)
    return {"W": W, "b": b, "X": case["X"], "y": case["y"], "l2": float(case["l2"])}


def _probe_objective(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, l2: float) -> float:
    logits = torch.from_numpy(X.astype(np.float64)) @ torch.from_numpy(W.astype(np.float64)).T + torch.from_numpy(b.astype(np.float64))
    return float(F.cross_entropy(logits, torch.from_numpy(y)) + l2 / 2 * float((W.astype(np.float64) ** 2).sum()))


def _fit_probe_judge(output: Any, reference: Any) -> tuple[bool, str]:
    if not isinstance(output, dict) or not {"W", "b"} <= set(output):
        return False, "return (W, b)"
    W, b, ref_W = output["W"], output["b"], reference["W"]
    if not isinstance(W, np.ndarray) or not isinstance(b, np.ndarray) or W.shape != ref_W.shape or b.shape != reference["b"].shape:
        return False, f"expected W of shape {tuple(ref_W.shape)} ([n_classes, d]) and b of shape {tuple(reference['b'].shape)}"
    if not (np.array_equal(output["X"], reference["X"]) and np.array_equal(output["y"], reference["y"])):
        return False, "the training data do not match the check's"
    if W.dtype.kind != "f" or not (np.isfinite(W).all() and np.isfinite(b).all()):
        return False, "W and b must be finite float tensors"
    l2 = float(reference["l2"])
    mine = _probe_objective(W, b, output["X"], output["y"], l2)
    best = _probe_objective(ref_W, reference["b"], reference["X"], reference["y"], l2)
    if mine > best + 1e-3 * abs(best) + 1e-6:
        return False, (f"your probe reaches objective {mine:.5f}, the minimum is {best:.5f}: minimise the *mean* "
                       "cross-entropy plus l2/2 * (W**2).sum() (bias not penalised) until it converges")
    return True, ""


def _fit_probe_bias_penalised(X, y, n_classes, l2):
    Z = torch.cat([X.double(), torch.ones(len(X), 1, dtype=torch.float64)], 1)
    Wb = torch.zeros(n_classes, Z.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([Wb], max_iter=500, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(Z @ Wb.T, y) + l2 / 2 * (Wb ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return Wb[:, :-1].detach().float(), Wb[:, -1].detach().float()


def _fit_probe_summed(X, y, n_classes, l2):
    """Sum of the cross-entropies (the penalty is then n times weaker)."""
    W = torch.zeros(n_classes, X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=500, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (F.cross_entropy(X.double() @ W.T + b, y, reduction="sum") + l2 / 2 * (W ** 2).sum()) / len(X)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return W.detach().float(), b.detach().float()


def _control_case(rng: np.random.Generator) -> dict[str, Any]:
    n_types, n = int(rng.integers(250, 400)), 3000
    weights = 1 / np.arange(1, n_types + 1)  # Zipf: a few frequent types, many rare ones
    tokens = torch.from_numpy(rng.choice(np.arange(5, 5 + n_types) * 3, size=n, p=weights / weights.sum()))
    c = int(rng.integers(2, 5))
    p = np.r_[0.75, 0.25 * rng.dirichlet(np.ones(c - 1))]  # skewed: far from uniform, so the distribution matters
    return {"tokens": tokens, "labels": torch.from_numpy(rng.choice(c, size=n, p=p)), "n_classes": c,
            "seeds": [int(s) for s in rng.integers(0, 2**62, size=2)]}


def _call_control(fn, case: dict[str, Any]) -> dict[str, Any]:
    first, second = (fn(case["tokens"], case["labels"], case["n_classes"], torch.Generator().manual_seed(s))
                     for s in case["seeds"])
    return {"first": first, "second": second, "tokens": case["tokens"], "labels": case["labels"],
            "n_classes": case["n_classes"]}


def _control_judge(output: Any, reference: Any) -> tuple[bool, str]:
    tokens, labels, c = reference["tokens"], reference["labels"], int(reference["n_classes"])
    if not (np.array_equal(output.get("tokens"), tokens) and np.array_equal(output.get("labels"), labels)):
        return False, "the tokens do not match the check's"
    shares = []
    for key in ("first", "second"):
        out = output.get(key)
        if not isinstance(out, np.ndarray) or out.shape != tokens.shape or out.dtype.kind not in "iu":
            return False, f"expected an integer tensor of shape {tuple(tokens.shape)}"
        if out.min() < 0 or out.max() >= c:
            return False, f"classes must be in 0..{c - 1}"
        types, first_index, inverse = np.unique(tokens, return_index=True, return_inverse=True)
        per_type = out[first_index]
        if not np.array_equal(per_type[inverse.reshape(-1)], out):
            return False, "two occurrences of the same token type got different classes: draw one class per type"
        shares.append(np.bincount(per_type, minlength=c) / len(types))
    if np.array_equal(output["first"], output["second"]):
        return False, "two different generators gave the same labelling: draw with the generator you are given"
    target = np.bincount(labels, minlength=c) / len(labels)
    share = (shares[0] + shares[1]) / 2
    n_types = len(np.unique(tokens))
    allowed = 4 * np.sqrt(target * (1 - target) / (2 * n_types)) + 0.01
    if np.any(np.abs(share - target) > allowed):
        return False, (f"the share of types per class is {np.round(share, 2).tolist()}, the real labels' class "
                       f"distribution is {np.round(target, 2).tolist()}: draw each type's class from the real classes' frequencies")
    return True, ""


def _control_per_token(tokens, labels, n_classes, generator):
    freq = torch.bincount(labels, minlength=n_classes).double()
    return torch.multinomial(freq / freq.sum(), len(tokens), replacement=True, generator=generator)


def _control_uniform(tokens, labels, n_classes, generator):
    types, inverse = tokens.unique(return_inverse=True)
    return torch.randint(n_classes, (len(types),), generator=generator)[inverse]


def _scores_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    m, d, c = int(rng.integers(40, 120)), int(rng.integers(3, 9)), int(rng.integers(2, 5))
    X = torch.randn(m, d, generator=g)
    W = torch.randn(c, d, generator=g)
    y = (X @ W.T + torch.randn(m, c, generator=g)).argmax(-1)  # the real probe is good, not perfect
    return {"W": W, "b": torch.randn(c, generator=g) * 0.3, "W_control": torch.randn(c, d, generator=g),
            "b_control": torch.randn(c, generator=g), "X": X, "y": y, "y_control": torch.randint(c, (m,), generator=g)}


def _scores_reversed(W, b, W_control, b_control, X, y, y_control):
    real = float(((X @ W.T + b).argmax(-1) == y).float().mean())
    control = float(((X @ W_control.T + b_control).argmax(-1) == y_control).float().mean())
    return {"accuracy": real, "control_accuracy": control, "selectivity": control - real}


def _scores_control_on_real(W, b, W_control, b_control, X, y, y_control):
    real = float(((X @ W.T + b).argmax(-1) == y).float().mean())
    control = float(((X @ W_control.T + b_control).argmax(-1) == y).float().mean())
    return {"accuracy": real, "control_accuracy": control, "selectivity": real - control}


# --------------------------------------------------------------------------------------------
# 2. Lenses
# --------------------------------------------------------------------------------------------


def _logit_lens_case(rng: np.random.Generator) -> dict[str, Any]:
    model, _ = _shipped(LENS_MODEL)
    docs = _docs(rng, int(rng.integers(2, 5)))
    hook = _pick(rng, LENS_POINTS)
    _, cache = model.run_with_cache(docs.tokens[:, :int(rng.integers(8, 30))], names_filter=[hook])
    return {"model": model, "resid": cache[hook]}


def _lens_no_ln(model, resid):
    return model.unembed(resid)


def _lens_ln_twice(model, resid):
    return model.unembed(model.ln_final(model.ln_final(resid)))


def _metrics_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    n, pos, vocab = int(rng.integers(2, 6)), int(rng.integers(4, 12)), int(rng.integers(5, 40))
    final = torch.randn(n, pos, vocab, generator=g) * float(rng.uniform(1, 4))
    lens = final * float(rng.uniform(0.2, 0.8)) + torch.randn(n, pos, vocab, generator=g) * 2
    lengths = torch.from_numpy(rng.integers(1, pos + 1, size=n))
    lengths[0], lengths[-1] = pos, max(1, pos // 2)
    return {"lens_logits": lens, "final_logits": final, "mask": torch.arange(pos)[None] < lengths[:, None]}


def _metrics_reversed(lens_logits, final_logits, mask):
    kl = _kl(lens_logits, final_logits)
    agree = (lens_logits.argmax(-1) == final_logits.argmax(-1)).float()
    return {"kl": float(kl[mask].mean()), "top1": float(agree[mask].mean())}


def _metrics_unmasked(lens_logits, final_logits, mask):
    agree = (lens_logits.argmax(-1) == final_logits.argmax(-1)).float()
    return {"kl": float(_kl(final_logits, lens_logits).mean()), "top1": float(agree.mean())}


def _tuned_case(rng: np.random.Generator) -> dict[str, Any]:
    model, _ = _shipped(LENS_MODEL)
    docs = _docs(rng, 16)
    hook = _pick(rng, LENS_POINTS[:-1])
    logits, cache = model.run_with_cache(docs.tokens, names_filter=[hook])
    mask = docs.labels["loss_mask"].bool()
    return {"model": model, "resid": cache[hook][mask], "final_logits": logits[mask], "steps": 120, "lr": 3e-3,
            "hook": hook}


def _call_tuned(fn, case: dict[str, Any]) -> dict[str, Any]:
    A, b = fn(case["model"], case["resid"], case["final_logits"], case["steps"], case["lr"])
    return {"A": A, "b": b, "hook": case["hook"]}


@functools.lru_cache(maxsize=8)
def _held_out_lens_data(hook: str) -> tuple[torch.Tensor, torch.Tensor]:
    model, world = _shipped(LENS_MODEL)
    docs = world.sample(48, HELD_OUT_SEED)
    logits, cache = model.run_with_cache(docs.tokens, names_filter=[hook])
    mask = docs.labels["loss_mask"].bool()
    return cache[hook][mask], logits[mask]


def _held_out_kl(A: np.ndarray, b: np.ndarray, hook: str) -> float:
    model, _ = _shipped(LENS_MODEL)
    resid, final = _held_out_lens_data(hook)
    with torch.no_grad():
        translated = resid @ torch.from_numpy(A.astype(np.float32)).T + torch.from_numpy(b.astype(np.float32))
        return float(_kl(final, _lens(model, translated[:, None])[:, 0]).mean())


def _tuned_judge(output: Any, reference: Any) -> tuple[bool, str]:
    hook = reference["hook"]
    A, b = output.get("A"), output.get("b")
    if output.get("hook") != hook:
        return False, "the check's inputs were changed"
    if not isinstance(A, np.ndarray) or not isinstance(b, np.ndarray) or A.shape != reference["A"].shape or b.shape != reference["b"].shape:
        return False, f"expected A of shape {tuple(reference['A'].shape)} and b of shape {tuple(reference['b'].shape)}"
    if A.dtype.kind != "f" or not (np.isfinite(A).all() and np.isfinite(b).all()):
        return False, "A and b must be finite float tensors"
    d = A.shape[0]
    mine = _held_out_kl(A, b, hook)
    logit_lens = _held_out_kl(np.eye(d), np.zeros(d), hook)
    best = _held_out_kl(reference["A"], reference["b"], hook)
    if mine >= logit_lens:
        return False, (f"on held-out documents your tuned lens has KL {mine:.3f} nats, no better than the logit "
                       f"lens ({logit_lens:.3f}): is the translator trained, starting from the identity?")
    if mine > 1.25 * best + 0.05:
        return False, f"on held-out documents your tuned lens has KL {mine:.3f} nats, the reference reaches {best:.3f}"
    return True, ""


def _tuned_identity(model, resid, final_logits, steps, lr):
    return torch.eye(resid.shape[-1]), torch.zeros(resid.shape[-1])


# --------------------------------------------------------------------------------------------
# 3. Erasure
# --------------------------------------------------------------------------------------------


def _leace_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    n, d, c = int(rng.integers(200, 400)), int(rng.integers(5, 12)), int(rng.integers(2, 5))
    y = torch.from_numpy(rng.integers(c, size=n))
    y[:c] = torch.arange(c)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    scales = torch.from_numpy(rng.uniform(0.6, 1.8, size=d))
    X = torch.randn(n, d, generator=g, dtype=torch.float64) * scales @ Q.T  # anisotropic: whitening matters
    X += (torch.randn(c, d, generator=g, dtype=torch.float64) * 1.5)[y] + 3.0  # class means, far from 0
    return {"X": X.float(), "y": y, "n_classes": c}


def _leace_no_whitening(X, y, n_classes):
    X64 = X.double()
    mean = X64.mean(0)
    Z = F.one_hot(y, n_classes).double()
    S_xz = (X64 - mean).T @ (Z - Z.mean(0)) / len(X)
    U, s, _ = torch.linalg.svd(S_xz, full_matrices=False)
    U = U[:, s > 1e-6 * s.max()]
    return (U @ U.T).float(), mean.float()


def _leace_uncentred(X, y, n_classes):
    X64 = X.double()
    Z = F.one_hot(y, n_classes).double()
    S_xx, S_xz = X64.T @ X64 / len(X), X64.T @ Z / len(X)
    evals, evecs = torch.linalg.eigh(S_xx)
    W = evecs @ torch.diag(evals ** -0.5) @ evecs.T
    W_pinv = evecs @ torch.diag(evals ** 0.5) @ evecs.T
    U, s, _ = torch.linalg.svd(W @ S_xz, full_matrices=False)
    U = U[:, s > 1e-6 * s.max()]
    return (W_pinv @ U @ U.T @ W).float(), torch.zeros(X.shape[1])


def _erased_case(rng: np.random.Generator) -> dict[str, Any]:
    model, _ = _shipped()
    g = torch_generator(rng)
    docs = _docs(rng, int(rng.integers(3, 6)))
    tokens = docs.tokens[:, :int(rng.integers(10, 30))]
    d, k = model.cfg.d_model, int(rng.integers(1, 4))
    A = torch.randn(d, k, generator=g)
    M = A @ torch.linalg.pinv(A) + 0.1 * torch.randn(d, d, generator=g) / d ** 0.5  # oblique, like LEACE's
    positions = torch.rand(tokens.shape, generator=g) < 0.4
    positions[:, 0] = False
    return {"model": model, "tokens": tokens, "hook_name": _pick(rng, RESID_POINTS), "M": M * 3,
            "mean": torch.randn(d, generator=g) * 4, "positions": positions}


def _erased_everywhere(model, tokens, hook_name, M, mean, positions):
    return model.run_with_hooks(tokens, fwd_hooks=[(hook_name, lambda a, hook: a - (a - mean) @ M.T)])


def _erased_no_mean(model, tokens, hook_name, M, mean, positions):
    return model.run_with_hooks(tokens, fwd_hooks=[(hook_name, lambda a, hook: torch.where(positions[..., None], a - a @ M.T, a))])


# --------------------------------------------------------------------------------------------
# 4-5. Interchange interventions and DAS
# --------------------------------------------------------------------------------------------


def _pairs(rng: np.random.Generator, n: int, same_question: bool) -> Any:
    _, world = _shipped()
    return persona_swap_pairs(world, n, np.random.default_rng(int(rng.integers(2**32))), same_question=same_question)


def _orthonormal(g: torch.Generator, k: int, d: int) -> torch.Tensor:
    Q, _ = torch.linalg.qr(torch.randn(d, k, generator=g))
    return Q.T.contiguous()


def _interchange_case(rng: np.random.Generator) -> dict[str, Any]:
    model, _ = _shipped()
    g = torch_generator(rng)
    pairs = _pairs(rng, int(rng.integers(4, 9)), same_question=False)
    # always a subspace here (a whole-vector swap is checked by interchange_accuracy's cases)
    basis = _orthonormal(g, int(rng.integers(1, 4)), model.cfg.d_model)
    return {"model": model, "base": pairs.base, "source": pairs.source, "base_at": pairs.base_at,
            "source_at": pairs.source_at, "hook_name": _pick(rng, RESID_POINTS[1:]), "basis": basis}


def _interchange_reversed(model, base, source, base_at, source_at, hook_name, basis=None):
    """The source run, patched with the base's activation."""
    rows = torch.arange(len(base))
    _, cache = model.run_with_cache(base, names_filter=[hook_name])
    base_act = cache[hook_name][rows, base_at]

    def patch(activation, hook):
        activation = activation.clone()
        old = activation[rows, source_at]
        activation[rows, source_at] = base_act if basis is None else old + (base_act - old) @ basis.T @ basis
        return activation

    return model.run_with_hooks(source, fwd_hooks=[(hook_name, patch)])


def _interchange_whole_vector(model, base, source, base_at, source_at, hook_name, basis=None):
    rows = torch.arange(len(base))
    _, cache = model.run_with_cache(source, names_filter=[hook_name])
    source_act = cache[hook_name][rows, source_at]

    def patch(activation, hook):
        activation = activation.clone()
        activation[rows, base_at] = source_act
        return activation

    return model.run_with_hooks(base, fwd_hooks=[(hook_name, patch)])


def _iia_case(rng: np.random.Generator) -> dict[str, Any]:
    model, _ = _shipped()
    g = torch_generator(rng)
    pairs = _pairs(rng, int(rng.integers(8, 16)), same_question=True)
    basis = None if rng.random() < 0.5 else _orthonormal(g, 100, model.cfg.d_model)  # a large random subspace: partial IIA
    return {"model": model, "base": pairs.base, "source": pairs.source, "base_at": pairs.base_at,
            "source_at": pairs.source_at, "hook_name": _pick(rng, RESID_POINTS[3:]),
            "counterfactual": pairs.counterfactual, "basis": basis}


def _iia_reversed(model, base, source, base_at, source_at, hook_name, counterfactual, basis=None):
    logits = _interchange_reversed(model, base, source, base_at, source_at, hook_name, basis)
    return float((logits[torch.arange(len(source)), source_at].argmax(-1) == counterfactual).float().mean())


def _interchange_reference(model, base, source, base_at, source_at, hook_name, basis=None):
    rows = torch.arange(len(base))
    _, cache = model.run_with_cache(source, names_filter=[hook_name])
    source_act = cache[hook_name][rows, source_at]

    def patch(activation, hook):
        activation = activation.clone()
        old = activation[rows, base_at]
        activation[rows, base_at] = source_act if basis is None else old + (source_act - old) @ basis.T @ basis
        return activation

    return model.run_with_hooks(base, fwd_hooks=[(hook_name, patch)])


def _iia_last_column(model, base, source, base_at, source_at, hook_name, counterfactual, basis=None):
    logits = _interchange_reference(model, base, source, base_at, source_at, hook_name, basis)
    return float((logits[:, -1].argmax(-1) == counterfactual).float().mean())


DAS_HOOK = "blocks.1.hook_resid_mid"


def _das_case(rng: np.random.Generator) -> dict[str, Any]:
    model, _ = _shipped()
    pairs = _pairs(rng, 32, same_question=False)
    return {"model": model, "base": pairs.base, "source": pairs.source, "base_at": pairs.base_at,
            "source_at": pairs.source_at, "hook_name": DAS_HOOK, "counterfactual": pairs.counterfactual,
            "steps": 40, "lr": 0.05, "seed": int(rng.integers(1000))}


def _call_das(fn, case: dict[str, Any]) -> dict[str, Any]:
    return {"direction": fn(**case), "hook": case["hook_name"]}


@functools.lru_cache(maxsize=1)
def _held_out_pairs() -> Any:
    _, world = _shipped()
    return persona_swap_pairs(world, 64, HELD_OUT_SEED)


def _held_out_iia(direction: np.ndarray, hook: str) -> float:
    model, _ = _shipped()
    pairs = _held_out_pairs()
    u = torch.from_numpy(direction.astype(np.float32))[None]
    with torch.no_grad():
        logits = _interchange_reference(model, pairs.base, pairs.source, pairs.base_at, pairs.source_at, hook, u)
    return float((logits[torch.arange(len(pairs)), pairs.base_at].argmax(-1) == pairs.counterfactual).float().mean())


def _das_judge(output: Any, reference: Any) -> tuple[bool, str]:
    v, ref = output.get("direction"), reference["direction"]
    if output.get("hook") != reference["hook"]:
        return False, "the check's inputs were changed"
    if not isinstance(v, np.ndarray) or v.shape != ref.shape or v.dtype.kind != "f" or not np.isfinite(v).all():
        return False, f"expected a float tensor of shape {tuple(ref.shape)}"
    if abs(float(np.linalg.norm(v)) - 1) > 1e-3:
        return False, f"return a unit vector (norm {float(np.linalg.norm(v)):.4f})"
    mine, best = _held_out_iia(v, reference["hook"]), _held_out_iia(ref, reference["hook"])
    if mine < best - 0.1:
        return False, (f"your direction's IIA on held-out pairs is {mine:.3f}, the reference's {best:.3f}: is the "
                       "cross-entropy of the counterfactual token minimised under the 1-D interchange?")
    return True, ""


def _das_untrained(model, base, source, base_at, source_at, hook_name, counterfactual, steps, lr, seed):
    v = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def _das_not_normalised(model, base, source, base_at, source_at, hook_name, counterfactual, steps, lr, seed):
    return torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(seed)) * 3


# --------------------------------------------------------------------------------------------


def _dataset_all_train(acts, classes, is_test_doc):
    has = classes >= 0
    test = has & is_test_doc[:, None]
    return acts[has], classes[has], acts[test], classes[test]


def _dataset_keeps_unlabelled(acts, classes, is_test_doc):
    train = (~is_test_doc[:, None]).expand_as(classes)
    test = is_test_doc[:, None].expand_as(classes)
    return acts[train], classes[train], acts[test], classes[test]


EXERCISES = [
    Exercise(
        "probing.probe_dataset", _dataset_case,
        probes=[Probe("trained_on_test_documents", _dataset_all_train,
                      "the training rows include the test documents: train and test on disjoint prompts."),
                Probe("kept_unlabelled", _dataset_keeps_unlabelled,
                      "rows with class -1 (variable not applicable, padding, <bos>) were kept: keep classes >= 0 only.")],
    ),
    Exercise(
        "probing.fit_probe", _fit_probe_case, call=_call_fit_probe, judge=_fit_probe_judge, n_public=2, n_hidden=3,
        probes=[Probe("bias_penalised", _fit_probe_bias_penalised, "the bias is penalised too: only W carries the L2 penalty."),
                Probe("summed_cross_entropy", _fit_probe_summed,
                      "the cross-entropy is summed over the rows, which makes the penalty n times weaker: use the mean.")],
    ),
    Exercise(
        "probing.control_labels", _control_case, call=_call_control, judge=_control_judge,
        probes=[Probe("per_token", _control_per_token,
                      "each token got its own random class: the control task gives one class per word type."),
                Probe("uniform", _control_uniform,
                      "classes were drawn uniformly: draw them from the real labels' class distribution.")],
    ),
    Exercise(
        "probing.probe_scores", _scores_case, tolerances=FLOAT_TOL,
        probes=[Probe("reversed", _scores_reversed, "selectivity is the real accuracy minus the control accuracy, not the reverse."),
                Probe("control_on_real_labels", _scores_control_on_real,
                      "the control probe was scored against the real labels: score it against y_control.")],
    ),
    Exercise(
        "probing.logit_lens", _logit_lens_case, tolerances=MODEL_TOL,
        probes=[Probe("no_final_ln", _lens_no_ln, "the final LayerNorm is missing: apply model.ln_final before the unembedding."),
                Probe("ln_twice", _lens_ln_twice, "the final LayerNorm was applied twice: apply it once, to the residual stream.")],
    ),
    Exercise(
        "probing.lens_metrics", _metrics_case, tolerances=FLOAT_TOL,
        probes=[Probe("kl_reversed", _metrics_reversed, "KL is reversed: use KL(P_final || P_lens), the final distribution first."),
                Probe("unmasked", _metrics_unmasked, "padding was averaged in: average over the positions where mask is True.")],
    ),
    Exercise(
        "probing.train_tuned_lens", _tuned_case, call=_call_tuned, judge=_tuned_judge, n_public=1, n_hidden=2,
        probes=[Probe("identity", _tuned_identity, "the translator is the identity: that is the logit lens; train A and b.")],
    ),
    Exercise(
        "probing.leace_eraser", _leace_case, tolerances=LEACE_TOL,
        probes=[Probe("no_whitening", _leace_no_whitening,
                      "the cross-covariance directions were projected out without whitening: M = W⁺ P W with W = S_xx^(-1/2)."),
                Probe("uncentred", _leace_uncentred, "the covariances are not centred (and mean is not the data's mean).")],
    ),
    Exercise(
        "probing.erased_logits", _erased_case, tolerances=MODEL_TOL,
        probes=[Probe("everywhere", _erased_everywhere, "the eraser was applied at every position: apply it where positions is True only."),
                Probe("no_mean", _erased_no_mean, "the mean was dropped: r(x) = x - (x - mean) @ M.T.")],
    ),
    Exercise(
        "probing.interchange_logits", _interchange_case, tolerances=MODEL_TOL,
        probes=[Probe("wrong_direction", _interchange_reversed,
                      "the interchange goes the wrong way: run the base, with the source's activation swapped in."),
                Probe("whole_vector", _interchange_whole_vector,
                      "the whole vector was swapped although a basis was given: swap only its component in the subspace.")],
    ),
    Exercise(
        "probing.interchange_accuracy", _iia_case, tolerances=FLOAT_TOL,
        probes=[Probe("wrong_direction", _iia_reversed,
                      "the interchange goes the wrong way: run the base, with the source's activation swapped in."),
                Probe("last_column", _iia_last_column, "the prediction was read in the padding: read it at base_at.")],
    ),
    Exercise(
        "probing.train_das", _das_case, call=_call_das, judge=_das_judge, n_public=1, n_hidden=1,
        probes=[Probe("untrained", _das_untrained, "the direction is not trained: minimise the counterfactual's cross-entropy."),
                Probe("not_normalised", _das_not_normalised, "return the unit direction.")],
    ),
]
