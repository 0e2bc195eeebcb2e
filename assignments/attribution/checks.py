"""Checks of the attribution assignment (see interplab.checking for the contract).

Every input is generated from the case's ``rng``:

* transcoder and fidelity exercises: random weights with non-zero biases, random activations;
* error nodes and interventions: the zoo model with a randomly perturbed copy of the zoo
  transcoders, on fresh toy-world documents and dialogue prompts, with random interventions;
* the local replacement model and the adjacency: a small *random* TransformerLens model of the
  zoo's architecture (every weight and bias random) with random transcoders and random tokens, and,
  for the replacement model, random node values away from the prompt's own (so that a model that
  recomputes attention or LayerNorm scales, or ignores a node, gives different outputs);
* graph algorithms (normalisation, influence, pruning, scores): random attribution-shaped DAGs
  (features by layer, errors, tokens, logits; signed weights; exact zeros) and random logit
  probabilities.

Reference values are those of the master's solutions; probes are known-wrong variants that name the
mistake (the build strips their code from the released copy). Inputs are drawn so that each mistake
shows: a real layer-0 edit in every intervention case, heavy-tailed edge weights and targets on
different scales in the random graphs (on rare graphs an unnormalised influence still picks the same
nodes: the wrong variant then earns that case).
"""
from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from interplab import attribution as attr
from interplab.checking import Exercise, Probe, torch_generator

ASSIGNMENT = "attribution"
FLOAT_TOL = {"float32": (1e-4, 1e-5), "float64": (1e-6, 1e-8)}
MODEL_TOL = {"float32": (1e-3, 1e-3), "float64": (1e-6, 1e-8)}
LOGPROB_TOL = {"float32": (1e-4, 2e-4)}  # log-probabilities of a float32 model: ~1e-5 apart between implementations
GRAPH_TOL = {"float32": (1e-4, 1e-6), "float64": (1e-6, 1e-9)}


@functools.lru_cache(maxsize=1)
def _shipped() -> tuple[Any, Any, Any]:
    from interplab import zoo
    from interplab.toyworld import ToyWorld

    return zoo.load("toyworld-lm"), zoo.load("toyworld-transcoders"), ToyWorld()


def _perturbed_transcoders(transcoders: attr.Transcoders, g: torch.Generator, scale: float) -> attr.Transcoders:
    out = copy.deepcopy(transcoders)
    with torch.no_grad():
        for tc in out.layers:
            tc.W_dec.mul_(1 + scale * torch.randn(tc.W_dec.shape, generator=g))
            tc.b_enc.add_(scale * torch.randn(tc.b_enc.shape, generator=g))
    return out


def _tuple_call(fn, case: dict[str, Any]) -> list[Any]:
    return list(fn(**case))


def _dict_call(fn, case: dict[str, Any]) -> dict[str, Any]:
    out = fn(**case)
    return {k: float(torch.as_tensor(out[k]).item()) for k in sorted(out)}


# --------------------------------------------------------------------------------------------
# Part 1: transcoders
# --------------------------------------------------------------------------------------------


def _tc_weights(g: torch.Generator, d_model: int, d_tc: int) -> dict[str, torch.Tensor]:
    return {"W_enc": torch.randn(d_model, d_tc, generator=g) * 0.5, "b_enc": torch.randn(d_tc, generator=g) * 0.5,
            "W_dec": torch.randn(d_tc, d_model, generator=g), "b_dec": torch.randn(d_model, generator=g)}


def _tc_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    d_model, d_tc, batch = int(rng.integers(4, 17)), int(rng.integers(8, 41)), int(rng.integers(2, 11))
    return {"x": torch.randn(batch, d_model, generator=g) * 2, **_tc_weights(g, d_model, d_tc)}


def _tc_sae_style(x, W_enc, b_enc, W_dec, b_dec):
    f = F.relu((x - b_dec) @ W_enc + b_enc)
    return f, f @ W_dec + b_dec


def _tc_no_relu(x, W_enc, b_enc, W_dec, b_dec):
    f = x @ W_enc + b_enc
    return f, f @ W_dec + b_dec


def _fidelity_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    n, d, d_tc = int(rng.integers(10, 80)), int(rng.integers(3, 16)), int(rng.integers(8, 40))
    y = torch.randn(n, d, generator=g) + torch.randn(d, generator=g) * 3  # a large mean: it must be subtracted
    f = F.relu(torch.randn(n, d_tc, generator=g) - 0.7)
    y_hat = y + torch.randn(n, d, generator=g) * float(rng.uniform(0.1, 1.0))
    # float64: the results leave as Python floats, compared at float64's tolerance, which float32
    # arithmetic (a different summation order, a float64 mean) missed on some inputs.
    return {"y": y.double(), "y_hat": y_hat.double(), "f": f.double()}


def _fidelity_uncentred(y, y_hat, f):
    nmse = ((y - y_hat) ** 2).sum(-1).mean() / (y ** 2).sum(-1).mean()
    return {"nmse": nmse, "explained_variance": 1 - nmse, "l0": (f > 0).float().sum(-1).mean()}


def _fidelity_per_dim(y, y_hat, f):
    nmse = (((y - y_hat) ** 2).mean(0) / y.var(0, unbiased=False)).mean()
    return {"nmse": nmse, "explained_variance": 1 - nmse, "l0": (f > 0).float().sum(-1).mean()}


def _errors_case(rng: np.random.Generator) -> dict[str, Any]:
    model, transcoders, world = _shipped()
    g = torch_generator(rng)
    batch = world.sample(int(rng.integers(2, 5)), np.random.default_rng(int(rng.integers(2**32))))
    n = int(rng.integers(8, 21))
    return {"model": model, "transcoders": _perturbed_transcoders(transcoders, g, float(rng.uniform(0.0, 0.2))),
            "tokens": batch.tokens[:, :n]}


def _errors_variant(model, transcoders, tokens, affine: bool = True, from_resid: bool = False, sign: float = 1.0):
    names = [f"blocks.{l}.{h}" for l in range(model.cfg.n_layers)
             for h in ("ln2.hook_normalized", "hook_resid_mid", "hook_mlp_out")]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names)
        out = []
        for l in range(model.cfg.n_layers):
            ln2 = model.blocks[l].ln2
            x = cache[f"blocks.{l}.ln2.hook_normalized"]
            x = x * ln2.w + ln2.b if affine else x
            if from_resid:
                x = cache[f"blocks.{l}.hook_resid_mid"]
            out.append(sign * (cache[f"blocks.{l}.hook_mlp_out"] - transcoders[l](x)))
    return torch.stack(out)


# --------------------------------------------------------------------------------------------
# Part 2: the local replacement model and the adjacency
# --------------------------------------------------------------------------------------------


def _tiny_instance(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    model = attr.tiny_model(g, d_vocab=int(rng.integers(15, 30)))
    transcoders = attr.random_transcoders(g, model.cfg.n_layers, model.cfg.d_model, int(rng.integers(12, 25)))
    tokens = torch.randint(model.cfg.d_vocab, (int(rng.integers(3, 9)),), generator=g)
    w = attr.Weights.of(model, transcoders)
    run = attr.full_forward(w, model, tokens)
    while not (run["feature_acts"][-1, -1] > 0).any():  # last-layer features at the last position read the logits
        with torch.no_grad():
            transcoders[-1].b_enc.add_(0.5)
        w = attr.Weights.of(model, transcoders)
        run = attr.full_forward(w, model, tokens)
    return {"g": g, "model": model, "transcoders": transcoders, "tokens": tokens, "w": w, "run": run}


def _replacement_case(rng: np.random.Generator) -> dict[str, Any]:
    inst = _tiny_instance(rng)
    g, run = inst["g"], inst["run"]
    acts = run["feature_acts"] * (0.5 + torch.rand(run["feature_acts"].shape, generator=g, dtype=torch.float64))
    acts = acts + (torch.rand(acts.shape, generator=g, dtype=torch.float64) < 0.1) * 0.7  # some new features on
    return {"model": inst["model"], "transcoders": inst["transcoders"], "frozen": run["frozen"],
            "embeddings": run["embeddings"] * (1 + 0.3 * torch.randn(run["embeddings"].shape, generator=g, dtype=torch.float64)),
            "feature_acts": acts,
            "errors": run["errors"] + 0.3 * torch.randn(run["errors"].shape, generator=g, dtype=torch.float64)}


def _replacement_variant(model, transcoders, frozen, embeddings, feature_acts, errors, live_attention: bool = False,
                         live_ln: bool = False, use_errors: bool = True):
    w = attr.Weights.of(model, transcoders)
    d = lambda t: t.detach().to(torch.float64)
    resid = embeddings
    n = resid.shape[0]
    mask = torch.tril(torch.ones(n, n, dtype=torch.bool))

    def ln(x, frozen_scale, weight, bias):
        x = x - x.mean(-1, keepdim=True)
        scale = (x.pow(2).mean(-1, keepdim=True) + w.eps).sqrt() if live_ln else frozen_scale
        return x / scale * weight + bias

    pres = []
    for l in range(model.cfg.n_layers):
        x = ln(resid, frozen.ln1[l], w.ln1_w[l], w.ln1_b[l])
        v = torch.einsum("kd,hde->khe", x, w.W_V[l]) + w.b_V[l]
        pattern = frozen.patterns[l]
        if live_attention:
            attn = model.blocks[l].attn
            q = torch.einsum("pd,hde->phe", x, d(attn.W_Q)) + d(attn.b_Q)
            k = torch.einsum("pd,hde->phe", x, d(attn.W_K)) + d(attn.b_K)
            pattern = (torch.einsum("qhe,khe->hqk", q, k) / attn.attn_scale).masked_fill(~mask, float("-inf")).softmax(-1)
        z = torch.einsum("hqk,khe->qhe", pattern, v)
        resid = resid + torch.einsum("qhe,hed->qd", z, w.W_O[l]) + w.b_O[l]
        x2 = ln(resid, frozen.ln2[l], w.ln2_w[l], w.ln2_b[l])
        pres.append(x2 @ w.W_enc[l] + w.b_enc[l])
        resid = resid + feature_acts[l] @ w.W_dec[l] + w.b_dec[l] + (errors[l] if use_errors else 0)
    final = ln(resid, frozen.ln_final, w.lnf_w, w.lnf_b)
    return torch.stack(pres), final @ w.W_U + w.b_U


def _adjacency_case(rng: np.random.Generator) -> dict[str, Any]:
    inst = _tiny_instance(rng)
    w, run, g = inst["w"], inst["run"], inst["g"]
    frozen = run["frozen"]
    features = (run["feature_acts"] > 0).nonzero()
    d_vocab = inst["model"].cfg.d_vocab
    logit_tokens = torch.randperm(d_vocab, generator=g)[: int(rng.integers(1, 4))]
    return {"forward": lambda e, a, r: attr.replacement_forward(w, frozen, e, a, r),
            "embeddings": run["embeddings"], "feature_acts": run["feature_acts"], "errors": run["errors"],
            "features": features, "logit_tokens": logit_tokens}


def _adjacency_variant(forward, embeddings, feature_acts, errors, features, logit_tokens, times_activation: bool = True,
                       demean: bool = True, leak: bool = False, transpose: bool = False):
    e = embeddings.detach().clone().requires_grad_(True)
    a = feature_acts.detach().clone().requires_grad_(True)
    r = errors.detach().clone().requires_grad_(True)
    n_f, (n_layers, n_pos) = len(features), errors.shape[:2]
    n_nodes = n_f + n_layers * n_pos + n_pos + len(logit_tokens)
    A = torch.zeros(n_nodes, n_nodes, dtype=torch.float64)
    if leak:  # downstream features respond (ReLU gate frozen) instead of being held fixed
        def run():
            gate = (feature_acts > 0).to(torch.float64)
            current = a
            for layer in range(1, n_layers):
                pres, _ = forward(e, current, r)
                updated = current.clone()
                updated[layer] = pres[layer] * gate[layer] + (a[layer] - a[layer].detach())
                current = updated
            return forward(e, current, r)
    else:
        run = lambda: forward(e, a, r)
    pres, logits = run()
    last = logits[-1] - logits[-1].mean() if demean else logits[-1]
    targets = list(pres[tuple(features.T)]) + list(last[logit_tokens])
    rows = list(range(n_f)) + list(range(n_nodes - len(logit_tokens), n_nodes))
    for row, target in zip(rows, targets):
        ge, ga, gr = torch.autograd.grad(target, (e, a, r), retain_graph=True)
        if times_activation:
            ge, ga, gr = ge * e.detach(), ga * a.detach(), gr * r.detach()
        A[row, :n_f] = ga[features[:, 0], features[:, 1], features[:, 2]]
        A[row, n_f:n_f + n_layers * n_pos] = gr.sum(-1).flatten()
        A[row, n_f + n_layers * n_pos:n_nodes - len(logit_tokens)] = ge.sum(-1)
    return A.T.contiguous() if transpose else A


# --------------------------------------------------------------------------------------------
# Part 3: graph algorithms on random attribution-shaped DAGs
# --------------------------------------------------------------------------------------------


def random_graph(rng: np.random.Generator) -> dict[str, Any]:
    """A random adjacency in circuit-tracer's node order (features by layer, errors, tokens, logits):
    an edge from ``s`` to ``t`` only when ``s`` sits in a lower layer; token and error rows are zero;
    logit nodes have no outgoing edges. Signed weights, many exact zeros."""
    g = torch_generator(rng)
    n_layers, n_pos = int(rng.integers(1, 4)), int(rng.integers(3, 7))
    n_f, n_logits = int(rng.integers(15, 40)), int(rng.integers(1, 5))
    f_layers = torch.sort(torch.randint(n_layers, (n_f,), generator=g)).values.double()
    layers = torch.cat([f_layers, torch.arange(n_layers).repeat_interleave(n_pos).double(),
                        torch.full((n_pos,), -1.0), torch.full((n_logits,), float(n_layers))])
    n = len(layers)
    allowed = layers[:, None] > layers[None, :]
    allowed[n_f:n_f + n_layers * n_pos + n_pos] = False  # errors and tokens have no inputs
    keep = torch.rand(n, n, generator=g) < float(rng.uniform(0.3, 0.8))
    heavy = torch.exp(torch.randn(n, n, generator=g, dtype=torch.float64))  # heavy-tailed: a few edges dominate
    A = torch.randn(n, n, generator=g, dtype=torch.float64) * heavy * (allowed & keep)
    A[:, n_f + n_layers * n_pos:n_f + n_layers * n_pos + n_pos] *= 0.2  # tokens (always kept) must not carry everything
    A *= torch.exp(1.5 * torch.randn(n, 1, generator=g, dtype=torch.float64))  # targets on different scales: normalising matters
    probs = torch.rand(n_logits, generator=g, dtype=torch.float64)
    probs = probs / probs.sum() * float(rng.uniform(0.6, 1.0))
    logit_weights = torch.zeros(n, dtype=torch.float64)
    logit_weights[n - n_logits:] = probs
    return {"A": A, "logit_weights": logit_weights, "n_features": n_f, "n_errors": n_layers * n_pos,
            "n_tokens": n_pos, "n_logits": n_logits}


def _normalise_case(rng: np.random.Generator) -> dict[str, Any]:
    return {"A": random_graph(rng)["A"]}


def _influence_case(rng: np.random.Generator) -> dict[str, Any]:
    graph = random_graph(rng)
    return {"A_normalised": attr.normalise(graph["A"]), "logit_weights": graph["logit_weights"]}


def _prune_nodes_case(rng: np.random.Generator) -> dict[str, Any]:
    graph = random_graph(rng)
    return {"A": graph["A"], "logit_weights": graph["logit_weights"], "n_tokens": graph["n_tokens"],
            "n_logits": graph["n_logits"], "threshold": float(rng.choice([0.8, 0.85, 0.9]))}


def _prune_edges_case(rng: np.random.Generator) -> dict[str, Any]:
    graph = random_graph(rng)
    mask = attr.prune_nodes(graph["A"], graph["logit_weights"], graph["n_tokens"], graph["n_logits"], 0.8)
    return {"A": graph["A"], "node_mask": mask, "logit_weights": graph["logit_weights"],
            "threshold": float(rng.choice([0.8, 0.9, 0.98]))}


def _scores_case(rng: np.random.Generator) -> dict[str, Any]:
    graph = random_graph(rng)
    return {k: graph[k] for k in ("A", "logit_weights", "n_features", "n_errors", "n_tokens")}


def _normalise_no_abs(A):
    return A / A.sum(1, keepdim=True).clamp(min=1e-10)


def _normalise_columns(A):
    a = A.abs()
    return a / a.sum(0, keepdim=True).clamp(min=1e-10)


def _influence_with_identity(A_normalised, logit_weights):
    return attr.influence(A_normalised, logit_weights) + logit_weights


def _influence_direct_only(A_normalised, logit_weights):
    return logit_weights @ A_normalised


def _influence_transposed(A_normalised, logit_weights):
    return attr.influence(A_normalised.T.contiguous(), logit_weights)


def _prune_nodes_per_node(A, logit_weights, n_tokens, n_logits, threshold):
    scores = attr.influence(attr.normalise(A), logit_weights)
    mask = scores / scores.sum().clamp(min=1e-30) >= 1 - threshold
    mask[-(n_tokens + n_logits):] = True
    return mask


def _prune_nodes_unnormalised(A, logit_weights, n_tokens, n_logits, threshold):
    scores = attr.influence(A.abs(), logit_weights).abs()
    mask = scores >= attr.cumulative_threshold(scores, threshold)
    mask[-(n_tokens + n_logits):] = True
    return mask


def _prune_nodes_drops_inputs(A, logit_weights, n_tokens, n_logits, threshold):
    scores = attr.influence(attr.normalise(A), logit_weights)
    return scores >= attr.cumulative_threshold(scores, threshold)


def _prune_edges_unrestricted(A, node_mask, logit_weights, threshold):
    return attr.prune_edges(A, torch.ones_like(node_mask), logit_weights, threshold)


def _prune_edges_unweighted(A, node_mask, logit_weights, threshold):
    pruned = A.clone()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    scores = attr.normalise(pruned)
    return (scores >= attr.cumulative_threshold(scores, threshold)) & (scores > 0)


def _scores_unweighted(A, logit_weights, n_features, n_errors, n_tokens):
    out = attr.graph_scores(A, logit_weights, n_features, n_errors, n_tokens)
    An = attr.normalise(A)
    non_error = 1 - An[:, n_features:n_features + n_errors].sum(1)
    out["completeness"] = float(non_error.mean())
    return out


def _scores_raw(A, logit_weights, n_features, n_errors, n_tokens):
    inf = attr.influence(attr.normalise(A), logit_weights)
    out = attr.graph_scores(A, logit_weights, n_features, n_errors, n_tokens)
    errors = inf[n_features:n_features + n_errors].sum()
    out["replacement"] = float(1 - errors / inf.sum())
    return out


# --------------------------------------------------------------------------------------------
# Part 4: interventions
# --------------------------------------------------------------------------------------------


def _intervene_case(rng: np.random.Generator) -> dict[str, Any]:
    model, transcoders, world = _shipped()
    g = torch_generator(rng)
    persona = ["child", "expert", "assistant"][int(rng.integers(3))]
    prompts = world.persona_prompts(persona, held_out=False, n_context=0, rng=int(rng.integers(2**31)))
    prompt = prompts[int(rng.integers(len(prompts)))][0]
    tokens = torch.tensor(world.tokenizer.encode(prompt))
    run = attr.full_forward(attr.Weights.of(model, transcoders), model, tokens)
    errors = run["errors"].float()
    n_pos, d_tc = len(tokens), transcoders.d_tc
    interventions = [(int(rng.integers(2)), int(rng.integers(n_pos)), int(torch.randint(d_tc, (1,), generator=g)),
                      float(rng.choice([0.0, rng.uniform(1, 8)]))) for _ in range(int(rng.integers(0, 3)))]
    # always one real change in layer 0 (an active feature set to another value), so layer 1 must respond
    last_acts = run["feature_acts"][0, -1]
    feature = int(last_acts.argsort(descending=True)[int(rng.integers(3))])
    value = float(last_acts[feature]) * float(rng.choice([0.0, rng.uniform(2, 4)]))
    interventions.insert(0, (0, n_pos - 1, feature, value))
    return {"model": model, "transcoders": transcoders, "tokens": tokens, "errors": errors, "interventions": interventions}


def _intervene_no_errors(model, transcoders, tokens, errors, interventions):
    logits = attr.spliced_logits(model, transcoders, tokens[None], None, interventions)
    return logits[0, -1].log_softmax(-1)


def _intervene_live_mlps(model, transcoders, tokens, errors, interventions):
    return attr.patched_logits(model, transcoders, tokens[None], interventions)[0, -1].log_softmax(-1)


EXERCISES = [
    Exercise("attribution.transcoder_forward", _tc_case, call=_tuple_call, tolerances=FLOAT_TOL, probes=[
        Probe("sae_style", _tc_sae_style, "a transcoder reads the MLP input and writes the MLP output: these live in "
              "different spaces, so do not subtract b_dec from the input (that is the SAE convention)"),
        Probe("no_relu", _tc_no_relu, "the feature activations go through a ReLU"),
    ]),
    Exercise("attribution.transcoder_fidelity", _fidelity_case, call=_dict_call, tolerances=FLOAT_TOL, probes=[
        Probe("uncentred", _fidelity_uncentred, "normalise by the variance of y (subtract its mean), not by E||y||^2"),
        Probe("per_dim", _fidelity_per_dim, "sum the squared error and the variance over dimensions before dividing, "
              "not one ratio per dimension"),
    ]),
    Exercise("attribution.error_nodes", _errors_case, tolerances=MODEL_TOL, probes=[
        Probe("no_affine", lambda **c: _errors_variant(**c, affine=False),
              "the MLP reads the LayerNorm's output after its weight and bias (ln2.w, ln2.b), not hook_normalized alone"),
        Probe("resid", lambda **c: _errors_variant(**c, from_resid=True),
              "the transcoder reads the MLP's input ln2(resid_mid), not the residual stream itself"),
        Probe("sign", lambda **c: _errors_variant(**c, sign=-1.0), "error = true MLP output minus the transcoder's output"),
    ]),
    Exercise("attribution.replacement_forward", _replacement_case, call=_tuple_call, tolerances=MODEL_TOL, probes=[
        Probe("live_attention", lambda **c: _replacement_variant(**c, live_attention=True),
              "the attention patterns must stay frozen (frozen.patterns): recomputing them makes the model non-linear"),
        Probe("live_ln", lambda **c: _replacement_variant(**c, live_ln=True),
              "LayerNorm scales must stay frozen (frozen.ln1, ln2, ln_final): only the centring is recomputed"),
        Probe("no_errors", lambda **c: _replacement_variant(**c, use_errors=False),
              "add each layer's error node to its transcoder's output: without it the model is not reproduced"),
    ]),
    Exercise("attribution.adjacency", _adjacency_case, tolerances=GRAPH_TOL, n_hidden=3, probes=[
        Probe("gradient_only", lambda **c: _adjacency_variant(**c, times_activation=False),
              "an edge is gradient times the source's activation (summed over d_model for vectors), not the gradient alone"),
        Probe("raw_logit", lambda **c: _adjacency_variant(**c, demean=False),
              "a logit node's value is its logit minus the mean logit"),
        Probe("leak", lambda **c: _adjacency_variant(**c, leak=True),
              "indirect effects leaked into direct ones: keep a stop-gradient at every feature output "
              "(activations are inputs of the replacement model)"),
        Probe("transposed", lambda **c: _adjacency_variant(**c, transpose=True),
              "rows are targets and columns sources: A[target, source]"),
    ]),
    Exercise("attribution.normalise_adjacency", _normalise_case, tolerances=GRAPH_TOL, probes=[
        Probe("no_abs", _normalise_no_abs, "normalise absolute values: negative edges matter as much as positive ones"),
        Probe("columns", _normalise_columns, "normalise each row (a target's inputs), not each column"),
    ]),
    Exercise("attribution.influence", _influence_case, tolerances=GRAPH_TOL, probes=[
        Probe("identity", _influence_with_identity, "subtract the identity: (I - A)^-1 - I counts paths of length >= 1"),
        Probe("direct", _influence_direct_only, "influence counts paths of every length (A + A^2 + ...), not only direct edges"),
        Probe("transposed", _influence_transposed, "A[target, source]: weight the rows by the logit weights (w @ B)"),
    ]),
    Exercise("attribution.prune_nodes", _prune_nodes_case, probes=[
        Probe("per_node", _prune_nodes_per_node, "the threshold is cumulative: keep the highest-influence nodes until they "
              "cover that fraction of the total, not every node above a per-node cut"),
        Probe("unnormalised", _prune_nodes_unnormalised, "compute influence on the normalised adjacency (absolute values, rows summing to 1)"),
        Probe("inputs", _prune_nodes_drops_inputs, "always keep every token and logit node"),
    ]),
    Exercise("attribution.prune_edges", _prune_edges_case, probes=[
        Probe("unrestricted", _prune_edges_unrestricted, "first zero the rows and columns of pruned nodes, then score edges"),
        Probe("unweighted", _prune_edges_unweighted, "weight each normalised edge by its target's influence plus logit weight"),
    ]),
    Exercise("attribution.graph_scores", _scores_case, call=_dict_call, tolerances=GRAPH_TOL, probes=[
        Probe("unweighted", _scores_unweighted, "completeness weights each node by its influence plus logit weight"),
        Probe("raw", _scores_raw, "the replacement score compares token influence with token + error influence only"),
    ]),
    Exercise("attribution.intervene", _intervene_case, tolerances=LOGPROB_TOL, probes=[
        Probe("no_errors", _intervene_no_errors, "add the frozen error nodes to every transcoder's output"),
        Probe("live_mlps", _intervene_live_mlps, "this exercise replaces every MLP by its transcoder plus the frozen "
              "error; you let the real MLPs recompute downstream of the edit (that is attr.patched_logits, the "
              "unconstrained variant)"),
    ]),
]
