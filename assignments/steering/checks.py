"""Checks of the steering assignment (see interplab.checking for the contract).

Every input is generated from the case's ``rng``: fresh toy-world contrast pairs (sentiment stories
that differ only in the adjective, dialogues that differ only in the persona) padded to different
lengths, random hooks among the residual-stream hooks of both layers, random steering vectors,
coefficients and position masks, random logits with padding for the metrics, random decoder
matrices and feature activations for the SAE exercise. The model is always the shipped
``toyworld-lm`` (its behaviour is what the notebook is about); what varies is everything it is fed.

Conventions fixed here and in the notebook:

* residual hooks are ``blocks.{l}.hook_resid_pre|mid|post``; the sweep steers at every position
  from 1 on (never ``<bos>``);
* KL is ``KL(P_unsteered || P_steered)`` per position, averaged over the positions a mask selects;
* cross-entropy is next-token CE averaged over the predictions whose target is a real token
  (``mask[:, 1:]``);
* directional ablation projects the unit direction out of every ``hook_resid_pre``, ``hook_resid_mid``
  and ``hook_resid_post`` of every layer, at every position.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from interplab.checking import Exercise, Probe, torch_generator
from interplab.steering import persona_pair, prompt_tokens, sentiment_pair

ASSIGNMENT = "steering"
FLOAT_TOL = {"float32": (1e-4, 1e-5), "float64": (1e-5, 1e-7)}  # float64: float32 results returned as Python floats
MODEL_TOL = {"float32": (1e-3, 1e-4), "float64": (1e-4, 1e-6)}
RESID_HOOKS = ("blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.0.hook_resid_post",
               "blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid", "blocks.1.hook_resid_post")


@functools.lru_cache(maxsize=1)
def _shipped() -> tuple[Any, Any]:
    from interplab import zoo
    from interplab.toyworld import ToyWorld

    model = zoo.load("toyworld-lm")
    return model, ToyWorld()


def _scalar(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


# --------------------------------------------------------------------------------------------
# Toy-world prompts
# --------------------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, items) -> Any:
    items = list(items)
    return items[int(rng.integers(len(items)))]


def _documents(rng: np.random.Generator, world: Any, n: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch = world.sample(n, np.random.default_rng(int(rng.integers(2**32))))
    return batch.tokens[:, :width], batch.labels["loss_mask"][:, :width].bool()


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


def _contrastive_case(rng: np.random.Generator) -> dict[str, Any]:
    model, world = _shipped()
    n = int(rng.integers(4, 9))
    sentiment = rng.random() < 0.5
    first, second = (str(p) for p in rng.choice(["child", "expert", "assistant"], size=2, replace=False))
    while True:  # prompts of different lengths, so that the batch has padding
        pairs = [sentiment_pair(rng) if sentiment else persona_pair(rng, world, first, second) for _ in range(n)]
        if len({len(a.split()) for a, _ in pairs}) > 1 and len({len(b.split()) for _, b in pairs}) > 1:
            break
    positive, positive_at = prompt_tokens(world, [a for a, _ in pairs])
    negative, negative_at = prompt_tokens(world, [b for _, b in pairs])
    return {"model": model, "positive": positive, "negative": negative, "positive_at": positive_at,
            # not blocks.0.hook_resid_pre: read at the last token, both prompts hold the same word there
            "negative_at": negative_at, "hook_name": _pick(rng, RESID_HOOKS[1:])}


def _coefficient(rng: np.random.Generator, largest: float) -> float:
    """A coefficient of either sign, never so small that a mistake could hide inside the tolerance."""
    return float(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, largest))


def _random_vector(g: torch.Generator, d: int, norm: float) -> torch.Tensor:
    v = torch.randn(d, generator=g)
    return v / v.norm() * norm


def _steered_case(rng: np.random.Generator) -> dict[str, Any]:
    model, world = _shipped()
    g = torch_generator(rng)
    tokens, real = _documents(rng, world, int(rng.integers(3, 7)), int(rng.integers(12, 30)))
    positions = (torch.rand(tokens.shape, generator=g) < 0.4) & real
    positions[0, -1] = True  # padding or not, the mask says where to add
    return {"model": model, "tokens": tokens, "vector": _random_vector(g, model.cfg.d_model, float(rng.uniform(3, 15))),
            "hook_name": _pick(rng, RESID_HOOKS), "coeff": _coefficient(rng, 3.0), "positions": positions}


def _actadd_case(rng: np.random.Generator) -> dict[str, Any]:
    from interplab.toyworld import NEGATIVE, POSITIVE

    model, world = _shipped()
    if rng.random() < 0.5:
        first, second = rng.choice(["child", "expert", "assistant"], size=2, replace=False)
        plus, minus = [str(first), ":"], [str(second), ":"]
    else:
        plus, minus = ["it", "was", _pick(rng, POSITIVE)], ["it", "was", _pick(rng, NEGATIVE)]
    tokens, _ = _documents(rng, world, int(rng.integers(3, 7)), int(rng.integers(12, 30)))
    return {"model": model, "tokens": tokens, "plus": torch.tensor(world.tokenizer.encode(plus)),
            "minus": torch.tensor(world.tokenizer.encode(minus)), "hook_name": _pick(rng, RESID_HOOKS),
            "coeff": _coefficient(rng, 4.0)}


def _padded_logits(g: torch.Generator, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n, pos, vocab = int(rng.integers(2, 7)), int(rng.integers(4, 12)), int(rng.integers(5, 40))
    lengths = torch.from_numpy(rng.integers(1, pos + 1, size=n))
    lengths[0], lengths[-1] = pos, pos // 2  # at least one full row and one padded row
    mask = torch.arange(pos)[None] < lengths[:, None]
    return torch.randn(n, pos, vocab, generator=g) * float(rng.uniform(1, 4)), mask


def _target_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    clean, mask = _padded_logits(g, rng)
    steered = clean + torch.randn(clean.shape, generator=g) * 2
    n, _, vocab = clean.shape
    read_at = torch.tensor([int(rng.integers(int(m.sum()))) for m in mask])
    target = torch.from_numpy(rng.integers(vocab, size=n))
    other = (target + torch.from_numpy(rng.integers(1, vocab, size=n))) % vocab
    return {"clean_logits": clean, "steered_logits": steered, "read_at": read_at, "target": target, "other": other}


def _kl_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    clean, mask = _padded_logits(g, rng)
    steered = clean + torch.randn(clean.shape, generator=g) * float(rng.uniform(0.5, 3))
    steered[~mask] += 50 * torch.randn(steered[~mask].shape, generator=g)  # padding: huge, meaningless divergence
    return {"clean_logits": clean, "steered_logits": steered, "mask": mask}


def _project_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    d = int(rng.integers(3, 20))
    lead = [int(s) for s in rng.integers(1, 6, size=int(rng.integers(1, 4)))]
    direction = torch.randn(d, generator=g) * float(rng.uniform(0.2, 5))
    x = torch.randn(*lead, d, generator=g) + direction * float(rng.uniform(-2, 2))  # a sizeable component along it
    return {"x": x, "direction": direction}


def _ablated_case(rng: np.random.Generator) -> dict[str, Any]:
    model, world = _shipped()
    g = torch_generator(rng)
    tokens, _ = _documents(rng, world, int(rng.integers(3, 7)), int(rng.integers(12, 30)))
    # A direction the model uses (an unembedding row) plus noise, at an arbitrary scale.
    word = int(rng.integers(2, model.cfg.d_vocab))
    direction = model.W_U[:, word].detach() + 0.3 * model.W_U[:, word].norm() * torch.randn(model.cfg.d_model, generator=g)
    return {"model": model, "tokens": tokens, "direction": direction * float(rng.uniform(0.1, 10))}


def _sae_vector_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    d_sae, d = int(rng.integers(8, 40)), int(rng.integers(4, 17))
    n = int(rng.integers(10, 60))
    W_dec = torch.randn(d_sae, d, generator=g) * (torch.rand(d_sae, 1, generator=g) + 0.3)
    acts = F.relu(torch.randn(n, d_sae, generator=g) * 2 - 1.5)
    feature = int(rng.integers(d_sae))
    acts[int(rng.integers(n)), feature] = float(rng.uniform(1, 3))  # it fires at least once
    return {"W_dec": W_dec, "feature_acts": acts, "feature": feature}


def _sweep_case(rng: np.random.Generator) -> dict[str, Any]:
    model, world = _shipped()
    g = torch_generator(rng)
    n = int(rng.integers(3, 7))
    if rng.random() < 0.5:
        texts = [sentiment_pair(rng)[1] for _ in range(n)]  # negative stories, steered towards "happy"
        target = torch.full((n,), world.tokenizer.index["happy"])
    else:
        texts = [persona_pair(rng, world, "expert", "child")[0] for _ in range(n)]  # the expert, steered to refuse
        target = torch.full((n,), world.tokenizer.index["i"])
    prompts, read_at = prompt_tokens(world, texts)
    neutral, neutral_mask = _documents(rng, world, int(rng.integers(3, 6)), int(rng.integers(12, 25)))
    hook_names = [RESID_HOOKS[int(i)] for i in rng.permutation(len(RESID_HOOKS))[: int(rng.integers(1, 3))]]
    coeffs = [0.0, *sorted(_coefficient(rng, 5.0) for _ in range(2))]
    vectors = torch.stack([_random_vector(g, model.cfg.d_model, float(rng.uniform(3, 12))) for _ in hook_names])
    return {"model": model, "vectors": vectors, "hook_names": hook_names, "coeffs": coeffs, "prompts": prompts,
            "read_at": read_at, "target": target, "neutral": neutral, "neutral_mask": neutral_mask}


def _budget_case(rng: np.random.Generator) -> dict[str, Any]:
    """Random tables with three planted cells, so that every known mistake gives another answer: the
    overall best effect is over budget, the best within budget is in a row >= 1 (a row/column mix-up
    moves it; the table is never square), and the smallest side effect has no effect at all. The
    call also asks with a budget nothing meets."""
    g = torch_generator(rng)
    n_layers = int(rng.integers(2, 5))
    n_coeffs = n_layers + int(rng.integers(1, 4))
    budget = float(rng.uniform(0.3, 0.7))
    effect = torch.rand(n_layers, n_coeffs, generator=g) * 0.9
    side = 0.01 + torch.rand(n_layers, n_coeffs, generator=g) * 0.99
    cells = [(int(i), int(j)) for i, j in np.ndindex(n_layers, n_coeffs)]
    order = [cells[int(k)] for k in rng.permutation(len(cells))]
    best = next(c for c in order if c[0] >= 1)
    over, cheapest = [c for c in order if c != best][:2]
    effect[over], side[over] = 1.0, float(rng.uniform(budget + 0.05, 1.0))
    effect[best], side[best] = 0.95, float(rng.uniform(0.05, budget))
    effect[cheapest], side[cheapest] = 0.0, 0.001
    return {"effect": effect, "side_effect": side, "budget": budget, "_impossible": 0.0005}


# --------------------------------------------------------------------------------------------
# Calls
# --------------------------------------------------------------------------------------------


def _no_grad_call(fn, case: dict[str, Any]) -> Any:
    with torch.no_grad():
        return fn(**case)


def _target_call(fn, case: dict[str, Any]) -> dict[str, Any]:
    out = fn(**case)
    return {"prob_change": out["prob_change"], "logit_diff_change": out["logit_diff_change"]}


def _sweep_call(fn, case: dict[str, Any]) -> dict[str, Any]:
    with torch.no_grad():
        out = fn(**case)
    return {k: torch.as_tensor(out[k]).float() for k in ("effect", "kl", "ce")}


def _budget_call(fn, case: dict[str, Any]) -> list[list[int]]:
    out = []
    for budget in (case["budget"], case["_impossible"]):
        layer, coeff = fn(effect=case["effect"], side_effect=case["side_effect"], budget=budget)
        out.append([int(layer), int(coeff)])
    return out


# --------------------------------------------------------------------------------------------
# Known mistakes (independent, deliberately wrong re-implementations)
# --------------------------------------------------------------------------------------------


def _acts(model, tokens, hook_name):
    _, cache = model.run_with_cache(tokens, names_filter=[hook_name])
    return cache[hook_name]


def _contrastive(model, positive, negative, positive_at, negative_at, hook_name, read="given", sign=1.0):
    a, b = _acts(model, positive, hook_name), _acts(model, negative, hook_name)
    if read == "given":
        a, b = a[torch.arange(len(a)), positive_at], b[torch.arange(len(b)), negative_at]
    elif read == "last_column":
        a, b = a[:, -1], b[:, -1]
    else:  # every position, padding included
        a, b = a.flatten(0, 1), b.flatten(0, 1)
    return sign * (a.mean(0) - b.mean(0))


def _add_hook(vector_at):
    return lambda act, hook: act + vector_at.to(act.dtype)


def _steered(model, tokens, vector, hook_name, coeff, positions, everywhere=False, normalise=False, hook=None):
    v = vector / vector.norm() if normalise else vector
    mask = torch.ones_like(positions) if everywhere else positions
    return model.run_with_hooks(tokens, fwd_hooks=[(hook or hook_name, _add_hook(coeff * mask[..., None].float() * v))])


# The next point of the residual stream after each hook (blocks.0.hook_resid_post and
# blocks.1.hook_resid_pre are the same point, so the next one after either is blocks.1.hook_resid_mid).
_LATER = {"blocks.0.hook_resid_pre": "blocks.0.hook_resid_mid", "blocks.0.hook_resid_mid": "blocks.0.hook_resid_post",
          "blocks.0.hook_resid_post": "blocks.1.hook_resid_mid", "blocks.1.hook_resid_pre": "blocks.1.hook_resid_mid",
          "blocks.1.hook_resid_mid": "blocks.1.hook_resid_post", "blocks.1.hook_resid_post": "ln_final.hook_normalized"}


def _later_hook(hook_name: str) -> str:
    return _LATER[hook_name]


def _actadd(model, tokens, plus, minus, hook_name, coeff, where="front", sign=1.0):
    diff = sign * (_acts(model, plus[None], hook_name)[0] - _acts(model, minus[None], hook_name)[0])
    k = diff.shape[0]
    add = torch.zeros(tokens.shape[1], diff.shape[1])
    if where == "front":
        add[:k] = diff
    elif where == "end":
        add[-k:] = diff
    else:
        add[:] = diff.mean(0)
    return model.run_with_hooks(tokens, fwd_hooks=[(hook_name, _add_hook(coeff * add))])


def _kl(clean_logits, steered_logits, mask, reverse=False, all_positions=False, total=False):
    p, q = clean_logits.log_softmax(-1), steered_logits.log_softmax(-1)
    if reverse:
        p, q = q, p
    per = (p.exp() * (p - q)).sum(-1)
    m = torch.ones_like(mask) if all_positions else mask
    return per[m].sum() if total else per[m].mean()


def _target(clean_logits, steered_logits, read_at, target, other, at_last=False, log_probs=False):
    rows = torch.arange(len(read_at))
    at = torch.full_like(read_at, clean_logits.shape[1] - 1) if at_last else read_at
    c, s = clean_logits[rows, at], steered_logits[rows, at]
    prob = (lambda z: z.log_softmax(-1)) if log_probs else (lambda z: z.softmax(-1))
    return {"prob_change": prob(s)[rows, target] - prob(c)[rows, target],
            "logit_diff_change": (s[rows, target] - s[rows, other]) - (c[rows, target] - c[rows, other])}


def _project(x, direction, normalise=True, onto=False):
    r = direction / direction.norm() if normalise else direction
    along = (x @ r)[..., None] * r
    return along if onto else x - along


def _ablated(model, tokens, direction, hooks=("hook_resid_pre", "hook_resid_mid", "hook_resid_post"), normalise=True):
    names = [f"blocks.{l}.{h}" for l in range(model.cfg.n_layers) for h in hooks]
    fn = lambda act, hook: _project(act, direction, normalise=normalise)
    return model.run_with_hooks(tokens, fwd_hooks=[(n, fn) for n in names])


def _sae_vector(W_dec, feature_acts, feature, over="firing", normalise=False):
    a = feature_acts[:, feature]
    typical = a[a > 0].mean() if over == "firing" else a.mean()
    row = W_dec[feature] / W_dec[feature].norm() if normalise else W_dec[feature]
    return typical * row


def _next_token_ce(logits, tokens, mask):
    per = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    return per[mask[:, 1:].flatten()].mean()


def _sweep(model, vectors, hook_names, coeffs, prompts, read_at, target, neutral, neutral_mask,
           reverse_kl=False, from_bos=False, absolute_ce=False):
    rows = torch.arange(len(prompts))
    clean_p = model(prompts)[rows, read_at].softmax(-1)[rows, target]
    clean_n = model(neutral)
    start = 0 if from_bos else 1
    clean_ce = 0.0 if absolute_ce else _next_token_ce(clean_n, neutral, neutral_mask)
    out = {k: torch.zeros(len(hook_names), len(coeffs)) for k in ("effect", "kl", "ce")}
    for i, name in enumerate(hook_names):
        for j, c in enumerate(coeffs):
            def hook(act, hook, v=vectors[i], c=c):
                act = act.clone()
                act[:, start:] += c * v
                return act
            p = model.run_with_hooks(prompts, fwd_hooks=[(name, hook)])[rows, read_at].softmax(-1)[rows, target]
            n = model.run_with_hooks(neutral, fwd_hooks=[(name, hook)])
            out["effect"][i, j] = (p - clean_p).mean()
            out["kl"][i, j] = _kl(clean_n, n, neutral_mask, reverse=reverse_kl)
            out["ce"][i, j] = _next_token_ce(n, neutral, neutral_mask) - clean_ce
    return out


def _budget(effect, side_effect, budget, ignore_budget=False, min_side=False, swap_unravel=False):
    ok = torch.ones_like(side_effect, dtype=torch.bool) if ignore_budget else side_effect <= budget
    if not ok.any():
        return -1, -1
    score = -side_effect if min_side else effect
    flat = int(torch.where(ok, score, torch.tensor(-float("inf"))).flatten().argmax())
    width = effect.shape[0] if swap_unravel else effect.shape[1]
    return flat // width, flat % width


EXERCISES = [
    Exercise("steering.contrastive_vector", _contrastive_case, call=_no_grad_call, tolerances=MODEL_TOL, probes=[
        Probe("sign", lambda **c: _contrastive(**c, sign=-1.0),
              "the sign is flipped: the vector points from the negative to the positive prompts (positive minus negative)"),
        Probe("last_column", lambda **c: _contrastive(**c, read="last_column"),
              "you read the last column of the batch, which is padding for shorter prompts: read at positive_at / negative_at"),
        Probe("all_positions", lambda **c: _contrastive(**c, read="all"),
              "you averaged over every position (padding included); read one position per prompt"),
    ]),
    Exercise("steering.steered_logits", _steered_case, call=_no_grad_call, tolerances=MODEL_TOL, probes=[
        Probe("everywhere", lambda **c: _steered(**c, everywhere=True),
              "you added the vector at every position; add it only where `positions` is True"),
        Probe("sign", lambda **c: _steered(**{**c, "coeff": -c["coeff"]}), "the sign is flipped: add coeff * vector"),
        Probe("normalised", lambda **c: _steered(**c, normalise=True),
              "you normalised the vector; add coeff * vector as given (its norm is part of the steering strength)"),
        Probe("later_hook", lambda **c: _steered(**c, hook=_later_hook(c["hook_name"])),
              "you added the vector at a later hook than hook_name (resid_pre is before a block, resid_post after it)"),
    ]),
    Exercise("steering.actadd_logits", _actadd_case, call=_no_grad_call, tolerances=MODEL_TOL, probes=[
        Probe("sign", lambda **c: _actadd(**c, sign=-1.0), "the sign is flipped: the vector is plus minus minus"),
        Probe("end", lambda **c: _actadd(**c, where="end"),
              "you added the difference at the last positions; ActAdd adds it at the front, aligned with <bos>"),
        Probe("mean_everywhere", lambda **c: _actadd(**c, where="mean"),
              "you added the mean difference at every position; ActAdd adds row j of the difference at position j"),
    ]),
    Exercise("steering.target_effect", _target_case, call=_target_call, tolerances=FLOAT_TOL, probes=[
        Probe("last_column", lambda **c: _target(**c, at_last=True),
              "you read the last position of the batch; read each prompt at read_at (the others are padding)"),
        Probe("log_probs", lambda **c: _target(**c, log_probs=True),
              "prob_change is a change in probability (softmax), not in log-probability"),
    ]),
    Exercise("steering.kl_from_unsteered", _kl_case, call=lambda fn, c: _scalar(fn(**c)), tolerances=FLOAT_TOL, probes=[
        Probe("reversed", lambda **c: float(_kl(**c, reverse=True)),
              "KL in the wrong direction: it is KL(P_unsteered || P_steered) = sum P_unsteered (log P_unsteered - log P_steered)"),
        Probe("padding", lambda **c: float(_kl(**c, all_positions=True)),
              "you averaged over padding positions too; average only where mask is True"),
        Probe("sum", lambda **c: float(_kl(**c, total=True)), "average the per-position KL over the masked positions, do not sum it"),
    ]),
    Exercise("steering.project_out", _project_case, tolerances=FLOAT_TOL, probes=[
        Probe("not_normalised", lambda **c: _project(**c, normalise=False),
              "normalise the direction first: x - (x . r) r is a projection only when |r| = 1"),
        Probe("onto", lambda **c: _project(**c, onto=True), "you returned the component along the direction; remove it instead"),
    ]),
    Exercise("steering.ablated_logits", _ablated_case, call=_no_grad_call, tolerances=MODEL_TOL, probes=[
        Probe("one_hook", lambda **c: _ablated(**c, hooks=("hook_resid_pre",)),
              "ablate at every resid_pre, resid_mid and resid_post: attention and MLP outputs write the direction back"),
        Probe("layer0_only", lambda model, tokens, direction: model.run_with_hooks(
            tokens, fwd_hooks=[("blocks.0.hook_resid_pre", lambda a, hook: _project(a, direction))]),
              "you ablated only the embedding (blocks.0.hook_resid_pre); every layer writes into the residual stream"),
        Probe("not_normalised", lambda **c: _ablated(**c, normalise=False), "normalise the direction before projecting it out"),
    ]),
    Exercise("steering.sae_feature_vector", _sae_vector_case, tolerances=FLOAT_TOL, probes=[
        Probe("all_tokens", lambda **c: _sae_vector(**c, over="all"),
              "the typical activation is the mean over the tokens where the feature fires (> 0), not over all tokens"),
        Probe("normalised", lambda **c: _sae_vector(**c, normalise=True),
              "keep the decoder row's norm: the feature writes activation * W_dec[feature] into the residual stream"),
    ]),
    Exercise("steering.steering_sweep", _sweep_case, call=_sweep_call, tolerances=MODEL_TOL, n_public=2, n_hidden=2, probes=[
        Probe("absolute_ce", lambda **c: _sweep(**c, absolute_ce=True),
              "ce is the increase of the cross-entropy over the unsteered model's, not the steered cross-entropy itself"),
        Probe("reversed_kl", lambda **c: _sweep(**c, reverse_kl=True), "the side effect is KL(P_unsteered || P_steered): yours is reversed"),
        Probe("from_bos", lambda **c: _sweep(**c, from_bos=True), "do not steer position 0 (<bos>): add from position 1 on"),
    ]),
    Exercise("steering.best_under_budget", _budget_case, call=_budget_call, probes=[
        Probe("ignore_budget", lambda **c: _budget(**c, ignore_budget=True),
              "you ignored the budget: only settings with side_effect <= budget are allowed"),
        Probe("min_side", lambda **c: _budget(**c, min_side=True),
              "you picked the smallest side effect; pick the largest effect among the settings within budget"),
        Probe("swap_unravel", lambda **c: _budget(**c, swap_unravel=True),
              "a flat index i of a [layer, coeff] table is at layer i // n_coeffs, coefficient i % n_coeffs"),
    ]),
]
