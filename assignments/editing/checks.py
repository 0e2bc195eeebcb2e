"""Checks of the editing assignment (see interplab.checking for the contract).

Every input is generated from the case's ``rng``: fact prompts of random countries after a random
context sentence (``interplab.editing.CONTEXTS``) or none, fresh Gaussian noise of the notebook's
scale, random layers, hooks and positions, toy-world documents for the key covariance, random
positive-definite covariances and random weights for the rank-one update, random logits with ties
for the success rate. The model is always the shipped ``toyworld-lm``.

Conventions fixed here and in the notebook:

* noise is added to ``hook_embed`` where ``subject_mask`` is True; probabilities are read at the
  last position and averaged over the noise samples (probabilities, not logits);
* the indirect effect is P(restored) - P(corrupted), averaged over the prompts;
* the key is ``blocks.{layer}.mlp.hook_post`` at the last position; its second moment is uncentred,
  over the positions where ``mask`` is True, in float64;
* the update is ``u r^T / (u . k)`` with ``u = C^-1 k`` and ``r = v - (k W_out + b_out)``, float64;
* a success is a strictly larger logit for ``preferred`` than for ``other``;
* ``target_value`` and ``finetune_mlp_out`` optimise and are judged by what their result does.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from interplab.checking import Exercise, Probe, torch_generator
from interplab.editing import CONTEXTS, capital_ids, counterfactual, fact_batch, fact_prompt, with_mlp_out
from interplab.toyworld import COUNTRIES

ASSIGNMENT = "editing"
MODEL_TOL = {"float32": (1e-3, 1e-4), "float64": (1e-4, 1e-6)}
UPDATE_TOL = {"float64": (1e-6, 1e-9), "float32": (1e-4, 1e-6)}
KINDS = ("resid_post", "mlp_out", "attn_out")


@functools.lru_cache(maxsize=1)
def _shipped() -> tuple[Any, Any]:
    from interplab import zoo
    from interplab.toyworld import ToyWorld

    torch.set_num_threads(1)
    return zoo.load("toyworld-lm"), ToyWorld()


def _noise_std(model) -> float:
    return 3 * float(model.W_E.detach().std())


def _pick(rng: np.random.Generator, items) -> Any:
    items = list(items)
    return items[int(rng.integers(len(items)))]


def _answer_probs(logits: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    return logits[:, -1].softmax(-1)[torch.arange(len(answer)), answer]


# --------------------------------------------------------------------------------------------
# Causal tracing
# --------------------------------------------------------------------------------------------


def _trace_case(rng: np.random.Generator, n_samples: int = 3, n_countries: int | None = None) -> dict[str, Any]:
    model, world = _shipped()
    countries = [str(c) for c in rng.choice(COUNTRIES, size=n_countries or int(rng.integers(2, 4)), replace=False)]
    context = _pick(rng, ("",) + CONTEXTS)
    tokens, subject_mask = fact_batch(world, [fact_prompt(c, context) for c in countries])
    noise = torch.randn(n_samples, *tokens.shape, model.cfg.d_model, generator=torch_generator(rng)) * _noise_std(model)
    return {"model": model, "tokens": tokens, "subject_mask": subject_mask, "noise": noise,
            "answer": capital_ids(world, countries)}


def _corrupted(model, tokens, subject_mask, noise, answer, extra_hooks=(), everywhere=False, mean_logits=False):
    samples, n = noise.shape[0], len(tokens)
    mask = torch.ones_like(subject_mask) if everywhere else subject_mask
    added = (noise * mask[None, ..., None]).flatten(0, 1)
    with torch.no_grad():
        logits = model.run_with_hooks(tokens.repeat(samples, 1), fwd_hooks=[("hook_embed", lambda x, hook: x + added), *extra_hooks])
    if mean_logits:
        return logits[:, -1].view(samples, n, -1).mean(0).softmax(-1)[torch.arange(n), answer]
    return _answer_probs(logits, answer.repeat(samples)).view(samples, n).mean(0)


# States whose restoration at the last position changes the answer a lot (measured by the trace):
# the probes below differ from the reference on every case only where the restoration matters.
RESTORED_HOOKS = ("blocks.0.hook_resid_post", "blocks.0.hook_mlp_out", "blocks.0.hook_attn_out",
                  "blocks.1.hook_resid_post", "blocks.1.hook_mlp_out")


def _restore_case(rng: np.random.Generator) -> dict[str, Any]:
    case = _trace_case(rng)
    case["hook_name"] = _pick(rng, RESTORED_HOOKS)
    case["position"] = case["tokens"].shape[1] - 1
    return case


def _restored(model, tokens, subject_mask, noise, answer, hook_name, position, source="clean", first_sample_only=False):
    if source == "clean":
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=[hook_name])
        stored = cache[hook_name].repeat(noise.shape[0], 1, 1)
    else:  # the activation of the corrupted run itself: restores nothing
        stored = None

    def restore(x, hook):
        if stored is None:
            return x
        x = x.clone()
        rows = len(tokens) if first_sample_only else len(x)
        x[:rows, position] = stored[:rows, position]
        return x

    return _corrupted(model, tokens, subject_mask, noise, answer, extra_hooks=[(hook_name, restore)])


def _traced_case(rng: np.random.Generator) -> dict[str, Any]:
    case = _trace_case(rng, n_samples=2, n_countries=2)
    case["kind"] = _pick(rng, KINDS)
    return case


def _trace(model, tokens, subject_mask, noise, answer, kind, normalised=False, raw=False):
    base = _corrupted(model, tokens, subject_mask, noise, answer)
    out = torch.zeros(model.cfg.n_layers, tokens.shape[1])
    for layer in range(model.cfg.n_layers):
        for pos in range(tokens.shape[1]):
            restored = _restored(model, tokens, subject_mask, noise, answer, f"blocks.{layer}.hook_{kind}", pos)
            out[layer, pos] = restored.mean() if raw else (restored - base).mean()
    if normalised:
        with torch.no_grad():
            clean = _answer_probs(model(tokens), answer)
        out = out / (clean - base).mean()
    return out


# --------------------------------------------------------------------------------------------
# ROME
# --------------------------------------------------------------------------------------------


def _moment_case(rng: np.random.Generator) -> dict[str, Any]:
    model, world = _shipped()
    docs = world.sample(int(rng.integers(4, 9)), np.random.default_rng(int(rng.integers(2**32))))
    return {"model": model, "tokens": docs.tokens, "mask": docs.labels["loss_mask"].bool(),
            "layer": int(rng.integers(model.cfg.n_layers)),
            "compared": torch.from_numpy(rng.choice(model.cfg.d_mlp, size=48, replace=False))}


def _moment_call(fn, case: dict[str, Any]) -> Any:
    """The 48 x 48 block of C at random rows and columns: the whole 512 x 512 matrix in float64 is
    2 MiB per input, more than a grading kernel may send for one cell with every input."""
    index = case["compared"]
    with torch.no_grad():
        C = fn(**{k: v for k, v in case.items() if k != "compared"})
    return C[index][:, index] if isinstance(C, torch.Tensor) else np.asarray(C)[np.ix_(index.numpy(), index.numpy())]


def _keys(model, tokens, layer):
    hook_name = f"blocks.{layer}.mlp.hook_post"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[hook_name])
    return cache[hook_name]


def _moment(model, tokens, mask, layer, centred=False, padding=False, total=False):
    keys = _keys(model, tokens, layer)
    keys = (keys.flatten(0, 1) if padding else keys[mask]).double()
    if centred:
        keys = keys - keys.mean(0)
    return keys.T @ keys / (1 if total else len(keys))


def _key_case(rng: np.random.Generator) -> dict[str, Any]:
    model, world = _shipped()
    country = _pick(rng, COUNTRIES)
    contexts = [str(c) for c in rng.choice(CONTEXTS, size=int(rng.integers(2, 5)), replace=False)]
    tokens, _ = fact_batch(world, [fact_prompt(country, c) for c in contexts])
    return {"model": model, "tokens": tokens, "layer": int(rng.integers(model.cfg.n_layers))}


def _key(model, tokens, layer, at_subject=False, all_positions=False):
    keys = _keys(model, tokens, layer)
    if all_positions:
        return keys.mean((0, 1))
    return keys[:, -2 if at_subject else -1].mean(0)


def _value_case(rng: np.random.Generator) -> dict[str, Any]:
    case = _key_case(rng)
    _, world = _shipped()
    country = world.tokenizer.vocab[int(case["tokens"][0, -2])]
    case["new_token"] = world.tokenizer.index[counterfactual(world, country, rng)]
    case["target_prob"] = float(_pick(rng, (0.5, 0.7, 0.9)))
    return case


def _value_call(fn, case: dict[str, Any]) -> dict[str, Any]:
    return {"value": fn(**case), "tokens": case["tokens"], "layer": case["layer"], "new_token": case["new_token"],
            "target_prob": case["target_prob"]}


def _mean_mlp_out(model, tokens, layer) -> torch.Tensor:
    hook_name = f"blocks.{layer}.hook_mlp_out"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[hook_name])
    return cache[hook_name][:, -1].mean(0)


def _p_with_delta(model, tokens, layer, new_token, delta) -> float:
    def add(x, hook):
        return torch.cat([x[:, :-1], (x[:, -1] + delta)[:, None]], dim=1)

    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_mlp_out", add)])
    return float(_answer_probs(logits, torch.full((len(tokens),), new_token)).mean())


def _value_without_early_stop(model, tokens, layer, new_token, target_prob, lr, max_steps):
    """The optimisation run for ``max_steps`` whatever the probability reached (a known mistake)."""
    delta = torch.zeros(model.cfg.d_model, requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=lr)
    new = torch.full((len(tokens),), new_token)
    hook_name = f"blocks.{layer}.hook_mlp_out"

    def add(x, hook):
        return torch.cat([x[:, :-1], (x[:, -1] + delta)[:, None]], dim=1)

    with torch.enable_grad():
        for _ in range(max_steps):
            p = _answer_probs(model.run_with_hooks(tokens, fwd_hooks=[(hook_name, add)]), new)
            optimiser.zero_grad()
            (-p.log().mean()).backward()
            optimiser.step()
    return _mean_mlp_out(model, tokens, layer) + delta.detach()


def _same_inputs(output: Any, reference: Any, keys: tuple[str, ...]) -> bool:
    return isinstance(output, dict) and all(np.array_equal(np.asarray(output.get(k)), np.asarray(reference[k])) for k in keys)


def _array_problem(value: Any, ref: np.ndarray, what: str) -> str | None:
    """Why ``value`` is not a finite float array shaped like ``ref`` (None when it is)."""
    if not isinstance(value, np.ndarray) or value.shape != ref.shape or value.dtype.kind != "f" or not np.isfinite(value).all():
        return f"expected {what}: a finite float array of shape {tuple(ref.shape)}"
    return None


def _value_judge(output: Any, reference: Any) -> tuple[bool, str]:
    if not _same_inputs(output, reference, ("tokens", "layer", "new_token", "target_prob")):
        return False, "the check's inputs were changed"
    value, ref = output.get("value"), reference["value"]
    problem = _array_problem(value, ref, "the value v*")
    if problem:
        return False, problem
    model, _ = _shipped()
    tokens, layer, new_token = torch.as_tensor(reference["tokens"]), int(reference["layer"]), int(reference["new_token"])
    start = _mean_mlp_out(model, tokens, layer)
    delta = torch.as_tensor(value, dtype=torch.float32) - start
    ref_delta = torch.as_tensor(ref, dtype=torch.float32) - start
    p = _p_with_delta(model, tokens, layer, new_token, delta)
    if p < reference["target_prob"] - 0.01:
        return False, (f"with your value the mean P(new token) is {p:.3f}, below target_prob {reference['target_prob']}: "
                       "v* is the mean MLP output at the last position plus the optimised change")
    if float(delta.norm()) > 2 * float(ref_delta.norm()) + 0.5:
        return False, (f"your change |v* - mean MLP output| = {float(delta.norm()):.2f} is more than twice the reference's "
                       f"({float(ref_delta.norm()):.2f}): stop as soon as the mean probability reaches target_prob")
    return True, "ok"


def _update_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    d_mlp, d_model = int(rng.integers(24, 80)), int(rng.integers(8, 24))
    A = torch.randn(d_mlp, 3 * d_mlp, generator=g, dtype=torch.float64)
    C = A @ A.T / (3 * d_mlp) + 0.05 * torch.eye(d_mlp, dtype=torch.float64)
    return {"W_out": torch.randn(d_mlp, d_model, generator=g) * 0.1, "b_out": torch.randn(d_model, generator=g),
            "C": C, "key": torch.rand(d_mlp, generator=g) * 2, "value": torch.randn(d_model, generator=g) * 3}


def _update(W_out, b_out, C, key, value, covariance="solve", bias=True):
    key = key.double()
    u = {"solve": lambda: torch.linalg.solve(C, key), "identity": lambda: key, "multiply": lambda: C @ key}[covariance]()
    r = value.double() - (key @ W_out.double() + (b_out.double() if bias else 0))
    return torch.outer(u, r) / (u @ key)


def _success_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    n, vocab = int(rng.integers(8, 20)), int(rng.integers(5, 12))
    logits = torch.randn(n, vocab, generator=g)
    preferred = torch.randint(vocab, (n,), generator=g)
    other = torch.randint(vocab, (n,), generator=g)
    tied = torch.rand(n, generator=g) < 0.3  # rows where the two tokens have the same logit
    other_logit = logits[torch.arange(n), other]
    logits[torch.arange(n)[tied], preferred[tied]] = other_logit[tied]
    return {"logits": logits, "preferred": preferred, "other": other}


def _success(logits, preferred, other, ties=False, reversed_=False):
    rows = torch.arange(len(logits))
    a, b = logits[rows, preferred], logits[rows, other]
    if reversed_:
        a, b = b, a
    return float(((a >= b) if ties else (a > b)).float().mean())


def _finetune_case(rng: np.random.Generator) -> dict[str, Any]:
    case = _value_case(rng)
    del case["target_prob"]
    case.update(steps=int(rng.integers(5, 11)), lr=0.01, linf=_pick(rng, (None, 0.003, 0.005)))
    return case


def _finetune_call(fn, case: dict[str, Any]) -> dict[str, Any]:
    return {"W_out": fn(**case), "tokens": case["tokens"], "layer": case["layer"], "new_token": case["new_token"],
            "linf": -1.0 if case["linf"] is None else case["linf"]}


def _untrained(model, tokens, layer, **_):
    return model.blocks[layer].mlp.W_out.detach().clone()


def _finetune_judge(output: Any, reference: Any) -> tuple[bool, str]:
    if not _same_inputs(output, reference, ("tokens", "layer", "new_token", "linf")):
        return False, "the check's inputs were changed"
    W, ref = output.get("W_out"), reference["W_out"]
    problem = _array_problem(W, ref, "the fine-tuned W_out of the layer")
    if problem:
        return False, problem
    model, _ = _shipped()
    layer, linf = int(reference["layer"]), float(reference["linf"])
    tokens, new = torch.as_tensor(reference["tokens"]), torch.full((len(reference["tokens"]),), int(reference["new_token"]))
    original = model.blocks[layer].mlp.W_out.detach().double().numpy()
    if linf >= 0 and np.abs(W - original).max() > linf * (1 + 1e-4):
        return False, (f"a weight moved {np.abs(W - original).max():.4f} from its original value, more than linf = {linf}: "
                       "clamp to [original - linf, original + linf] after every step")

    def p_new(weights: np.ndarray) -> float:
        with torch.no_grad():
            return float(_answer_probs(with_mlp_out(model, layer, torch.as_tensor(weights))(tokens), new).mean())

    mine, best = p_new(W), p_new(ref)
    if mine < min(0.5, 0.8 * best):
        return False, (f"with your weights the mean P(new token) is {mine:.3f}, the reference's {best:.3f}: "
                       "minimise the mean -log P(new token) at the last position with Adam for `steps` steps")
    return True, "ok"


def _no_grad_call(fn, case: dict[str, Any]) -> Any:
    with torch.no_grad():
        return fn(**case)


EXERCISES = [
    Exercise("editing.corrupted_probs", _trace_case, call=_no_grad_call, tolerances=MODEL_TOL, probes=[
        Probe("everywhere", lambda **c: _corrupted(**c, everywhere=True),
              "you added noise at every position; add it only where subject_mask is True (the subject's tokens)"),
        Probe("mean_logits", lambda **c: _corrupted(**c, mean_logits=True),
              "you averaged the logits over the noise samples; average the probabilities of the samples' runs"),
    ]),
    Exercise("editing.restored_probs", _restore_case, call=_no_grad_call, tolerances=MODEL_TOL, probes=[
        Probe("corrupted_source", lambda **c: _restored(**c, source="corrupted"),
              "nothing was restored: record the activation in a clean run (no noise) and write it into the corrupted run"),
        Probe("first_sample_only", lambda **c: _restored(**c, first_sample_only=True),
              "only the first noise sample's runs were restored: repeat the clean activation for every sample"),
    ]),
    Exercise("editing.causal_trace", _traced_case, call=_no_grad_call, tolerances=MODEL_TOL, n_public=1, n_hidden=2, probes=[
        Probe("raw", lambda **c: _trace(**c, raw=True),
              "you returned P(restored); the indirect effect is P(restored) - P(corrupted)"),
        Probe("normalised", lambda **c: _trace(**c, normalised=True),
              "you divided by the total effect; return the indirect effect itself, P(restored) - P(corrupted)"),
    ]),
    Exercise("editing.key_second_moment", _moment_case, call=_moment_call, tolerances=MODEL_TOL, probes=[
        Probe("centred", lambda **c: _moment(**c, centred=True),
              "you centred the keys (a covariance); ROME's C is the uncentred second moment E[k k^T]"),
        Probe("padding", lambda **c: _moment(**c, padding=True), "you included padding positions; use the rows where mask is True"),
        Probe("sum", lambda **c: _moment(**c, total=True), "you summed k k^T; C is the mean over the keys"),
    ]),
    Exercise("editing.fact_key", _key_case, call=_no_grad_call, tolerances=MODEL_TOL, probes=[
        Probe("subject", lambda **c: _key(**c, at_subject=True),
              "you read the key at the subject's token; in this model the fact is read at the last position (see the trace)"),
        Probe("all_positions", lambda **c: _key(**c, all_positions=True),
              "you averaged over every position; read the last position of each prompt, then average over the prompts"),
    ]),
    Exercise("editing.target_value", _value_case, call=_value_call, judge=_value_judge, n_public=1, n_hidden=2, probes=[
        Probe("unchanged", lambda model, tokens, layer, **_: _mean_mlp_out(model, tokens, layer),
              "your value is the MLP's own output: optimise a change that makes the model say the new token"),
        Probe("no_early_stop", lambda **c: _value_without_early_stop(**c, lr=0.5, max_steps=40),
              "your change is far larger than needed: stop as soon as the mean probability reaches target_prob"),
    ]),
    Exercise("editing.rank_one_update", _update_case, tolerances=UPDATE_TOL, probes=[
        Probe("identity", lambda **c: _update(**c, covariance="identity"),
              "you used u = k (C ignored): u = C^-1 k, the direction that is cheapest in the keys' own metric"),
        Probe("multiply", lambda **c: _update(**c, covariance="multiply"), "you multiplied by C; u solves C u = k (C^-1 k)"),
        Probe("no_bias", lambda **c: _update(**c, bias=False),
              "the residual must include b_out: r = v - (k W_out + b_out), so the layer's output at k is exactly v"),
    ]),
    Exercise("editing.success_rate", _success_case, call=lambda fn, c: float(fn(**c)), probes=[
        Probe("ties", lambda **c: _success(**c, ties=True), "a tie is not a success: count strictly larger logits only"),
        Probe("reversed", lambda **c: _success(**c, reversed_=True), "you counted the other token winning; count preferred > other"),
    ]),
    Exercise("editing.finetune_mlp_out", _finetune_case, call=_finetune_call, judge=_finetune_judge, n_public=1, n_hidden=2,
             probes=[Probe("untrained", _untrained,
                           "the weights did not move: minimise the mean -log P(new token) with Adam for `steps` steps")]),
]
