"""Attribution graphs on a transformer with per-layer transcoders (Ameisen et al. 2025).

This is the library side of the ``attribution`` assignment: the notebook's locked cells, the
checks and the persona vignette use it; students write the same pieces themselves.

Definitions (the same in the notebook, on the zoo card and in the tests), following
*Circuit Tracing: Revealing Computational Graphs in Language Models*
(https://transformer-circuits.pub/2025/attribution-graphs/methods.html) with per-layer
transcoders instead of cross-layer ones:

* **Transcoder** for layer ``l``: reads the MLP's input ``x = ln2(resid_mid)`` (after the
  LayerNorm's weight and bias: exactly what the MLP reads) and predicts the MLP's output:
  ``f = ReLU(x @ W_enc + b_enc)``, ``mlp_out_hat = f @ W_dec + b_dec``. ReLU, not JumpReLU or TopK.
* **Error node** ``(l, p)``: ``mlp_out - mlp_out_hat`` at layer ``l`` and position ``p`` in the
  real model's forward pass on the prompt, held constant in the replacement model.
* **Local replacement model** of one prompt: the model with every MLP replaced by its transcoder
  plus its error node, attention patterns and every LayerNorm's scale frozen at their values on
  the prompt (LayerNorm's centring stays: it is linear). Given the frozen quantities, every
  feature pre-activation and every logit is an affine function of the *node outputs*: token
  embeddings (token + positional embedding, one node per position), feature activations, errors.
  On the prompt it reproduces the model's logits exactly (up to floating point).
* **Nodes**, in circuit-tracer's order: active features ``(layer, pos, feature)`` sorted
  lexicographically, then error nodes (layer-major: ``l * n_pos + p``), then token nodes (one per
  position), then logit nodes (the chosen next-token candidates at the last position).
* **Target value** of a node: a feature's pre-activation (the encoder's input to its ReLU); a logit
  node's logit *minus the mean logit* over the vocabulary (as in the paper: a constant shift of
  every logit changes no probability).
* **Direct-effect adjacency** ``A[target, source]``: the source's activation times the gradient
  of the target's value with respect to that activation, in the local replacement model with a
  stop-gradient at every feature and error output (so the effect is direct: paths through other
  nodes do not count). Because the model is affine in node outputs, each target's value is the sum
  of its row plus a constant (biases), and ``A[t, s]`` equals a finite-difference intervention that
  scales source ``s`` with every other node held fixed. Token and error rows are zero (no inputs).
* **Normalised adjacency**: ``|A|`` with each row divided by its sum (rows summing to zero stay 0).
* **Influence** of every node on the logits: ``w @ ((I - A_n)^-1 - I)``, where ``A_n`` is the
  normalised adjacency and ``w`` puts each logit node's probability on it (zero elsewhere): the
  sum over all paths of length >= 1 of products of normalised edge weights.
* **Pruning**: keep the smallest set of highest-influence nodes whose influence adds up to
  ``node_threshold`` (0.8) of the total, plus every token and logit node; on the graph restricted
  to those nodes, an edge's score is its normalised weight times its target's influence (plus the
  target's logit weight); keep the highest-scoring edges adding up to ``edge_threshold`` (0.98).
* **Replacement score**: of the influence reaching the logits from the graph's inputs (tokens and
  errors), the fraction that starts at tokens: ``I_tokens / (I_tokens + I_errors)``.
* **Completeness score**: the average over nodes, weighted by ``influence + logit weight``, of the
  fraction of a node's normalised input that comes from non-error nodes.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

# ------------------------------------------------------------------------------------------------
# Transcoders
# ------------------------------------------------------------------------------------------------


class Transcoder(nn.Module):
    """One layer's ReLU transcoder: ``W_enc [d_model, d_tc]``, ``b_enc [d_tc]``,
    ``W_dec [d_tc, d_model]``, ``b_dec [d_model]``."""

    def __init__(self, d_model: int, d_tc: int, generator: torch.Generator | None = None):
        super().__init__()
        w = torch.randn(d_tc, d_model, generator=generator)
        w = w / w.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(w.clone() * 0.1)
        self.W_enc = nn.Parameter(w.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(d_tc))
        self.b_dec = nn.Parameter(torch.zeros(d_model))

    @property
    def d_tc(self) -> int:
        return self.W_enc.shape[1]

    def pre_activations(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_tc"]:
        return x @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_tc"]:
        return self.pre_activations(x).relu()

    def decode(self, f: Float[Tensor, "... d_tc"]) -> Float[Tensor, "... d_model"]:
        return f @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return self.decode(self.encode(x))


class Transcoders(nn.Module):
    """One :class:`Transcoder` per layer: ``transcoders[l]``."""

    def __init__(self, layers: Sequence[Transcoder]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def __getitem__(self, layer: int) -> Transcoder:
        return self.layers[layer]

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def d_tc(self) -> int:
        return self.layers[0].d_tc


@torch.no_grad()
def mlp_io(model, tokens: Int[Tensor, "batch pos"]) -> tuple[Tensor, Tensor]:
    """The MLPs' inputs (``ln2(resid_mid)``, what the MLP reads) and outputs on ``tokens``:
    two ``[n_layers, batch, pos, d_model]`` tensors."""
    names = [f"blocks.{l}.{h}" for l in range(model.cfg.n_layers) for h in ("ln2.hook_normalized", "hook_mlp_out")]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    ins, outs = [], []
    for l in range(model.cfg.n_layers):
        ln2 = model.blocks[l].ln2
        ins.append(cache[f"blocks.{l}.ln2.hook_normalized"] * ln2.w + ln2.b)
        outs.append(cache[f"blocks.{l}.hook_mlp_out"])
    return torch.stack(ins), torch.stack(outs)


def fidelity(y: Float[Tensor, "n d"], y_hat: Float[Tensor, "n d"], f: Float[Tensor, "n d_tc"]) -> dict[str, float]:
    """Normalised MSE ``E||y - y_hat||^2 / E||y - E y||^2``, explained variance ``1 - nmse``, and
    L0 (mean number of active features per token)."""
    y, y_hat, f = y.detach(), y_hat.detach(), f.detach()
    mse = ((y - y_hat) ** 2).sum(-1).mean()
    var = ((y - y.mean(0)) ** 2).sum(-1).mean()
    nmse = float(mse / var)
    return {"nmse": nmse, "explained_variance": 1 - nmse, "l0": float((f > 0).float().sum(-1).mean())}


def _splice_hooks(model, transcoders: Transcoders, errors: Tensor | None = None,
                  interventions: Iterable[tuple[int, int, int, float]] = (), zero: bool = False) -> list:
    """Hooks that replace each MLP's output by its transcoder's (plus ``errors[l]`` when given),
    with ``interventions`` ``(layer, pos, feature, value)`` setting feature activations."""
    by_layer: dict[int, list[tuple[int, int, float]]] = {}
    for layer, pos, feature, value in interventions:
        by_layer.setdefault(int(layer), []).append((int(pos), int(feature), float(value)))
    store: dict[int, Tensor] = {}
    hooks = []
    for l in range(model.cfg.n_layers):
        def grab(act, hook, l=l):
            store[l] = act
            return act

        def splice(act, hook, l=l):
            if zero:
                return torch.zeros_like(act)
            ln2 = model.blocks[l].ln2
            tc = transcoders[l]
            f = tc.encode((store[l] * ln2.w + ln2.b).to(tc.W_enc.dtype))
            if l in by_layer:
                f = f.clone()
                for pos, feature, value in by_layer[l]:
                    f[:, pos, feature] = value
            out = tc.decode(f).to(act.dtype)
            if errors is not None:
                out = out + errors[l].to(act.dtype)
            return out

        hooks += [(f"blocks.{l}.ln2.hook_normalized", grab), (f"blocks.{l}.hook_mlp_out", splice)]
    return hooks


@torch.no_grad()
def spliced_logits(model, transcoders: Transcoders, tokens: Int[Tensor, "batch pos"],
                   errors: Float[Tensor, "n_layers batch pos d_model"] | None = None,
                   interventions: Iterable[tuple[int, int, int, float]] = ()) -> Tensor:
    """Logits of the real model (attention and LayerNorm recomputed) with every MLP replaced by its
    transcoder, plus ``errors`` (held constant) when given, and feature activations set by
    ``interventions`` ``(layer, pos, feature, value)``. With the prompt's own errors and no
    interventions this is the model itself."""
    return model.run_with_hooks(tokens, fwd_hooks=_splice_hooks(model, transcoders, errors, interventions))


@torch.no_grad()
def patched_logits(model, transcoders: Transcoders, tokens: Int[Tensor, "batch pos"],
                   interventions: Iterable[tuple[int, int, int, float]]) -> Tensor:
    """Logits of the real model (every MLP real) where each edited feature's change is added to its
    layer's MLP output: ``mlp_out + (f_edited - f) @ W_dec``. Downstream MLPs recompute on the edited
    residual stream (no transcoders, no frozen errors there): the unconstrained counterpart of
    :func:`spliced_logits`."""
    by_layer: dict[int, list[tuple[int, int, float]]] = {}
    for layer, pos, feature, value in interventions:
        by_layer.setdefault(int(layer), []).append((int(pos), int(feature), float(value)))
    store: dict[int, Tensor] = {}
    hooks = []
    for l, edits in by_layer.items():
        def grab(act, hook, l=l):
            store[l] = act
            return act

        def edit(act, hook, l=l, edits=edits):
            ln2, tc = model.blocks[l].ln2, transcoders[l]
            f = tc.encode(store[l] * ln2.w + ln2.b)
            new = f.clone()
            for pos, feature, value in edits:
                new[:, pos, feature] = value
            return act + (new - f) @ tc.W_dec

        hooks += [(f"blocks.{l}.ln2.hook_normalized", grab), (f"blocks.{l}.hook_mlp_out", edit)]
    return model.run_with_hooks(tokens, fwd_hooks=hooks)


@torch.no_grad()
def ce_losses(model, transcoders: Transcoders, tokens: Tensor, loss_mask: Tensor) -> dict[str, float]:
    """Mean next-token loss of the model, with every MLP replaced by its transcoder (no error
    nodes), and with every MLP zero-ablated; ``recovered = (zero - tc) / (zero - clean)``."""

    def loss(logits: Tensor) -> float:
        per = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
        m = loss_mask[:, 1:].flatten().float()
        return float((per * m).sum() / m.sum())

    clean = loss(model(tokens))
    tc = loss(model.run_with_hooks(tokens, fwd_hooks=_splice_hooks(model, transcoders)))
    zero = loss(model.run_with_hooks(tokens, fwd_hooks=_splice_hooks(model, transcoders, zero=True)))
    return {"ce_clean": clean, "ce_transcoders": tc, "ce_zero_mlps": zero,
            "ce_recovered": (zero - tc) / (zero - clean)}


# ------------------------------------------------------------------------------------------------
# The local replacement model
# ------------------------------------------------------------------------------------------------


@dataclass
class Frozen:
    """What the local replacement model freezes on one prompt (all float64):
    ``patterns [n_layers, head, q, k]``, LayerNorm scales ``ln1, ln2 [n_layers, pos, 1]`` and
    ``ln_final [pos, 1]``."""

    patterns: Tensor
    ln1: Tensor
    ln2: Tensor
    ln_final: Tensor


@dataclass
class Weights:
    """The model's and transcoders' weights in float64, named as in TransformerLens."""

    W_E: Tensor
    W_pos: Tensor
    ln1_w: Tensor
    ln1_b: Tensor
    W_V: Tensor
    b_V: Tensor
    W_O: Tensor
    b_O: Tensor
    ln2_w: Tensor
    ln2_b: Tensor
    W_enc: Tensor
    b_enc: Tensor
    W_dec: Tensor
    b_dec: Tensor
    lnf_w: Tensor
    lnf_b: Tensor
    W_U: Tensor
    b_U: Tensor
    eps: float

    @classmethod
    def of(cls, model, transcoders: Transcoders) -> "Weights":
        d = lambda t: t.detach().to(torch.float64)
        L = model.cfg.n_layers
        stack = lambda get: torch.stack([d(get(l)) for l in range(L)])
        b = model.blocks
        return cls(
            W_E=d(model.W_E), W_pos=d(model.W_pos),
            ln1_w=stack(lambda l: b[l].ln1.w), ln1_b=stack(lambda l: b[l].ln1.b),
            W_V=stack(lambda l: b[l].attn.W_V), b_V=stack(lambda l: b[l].attn.b_V),
            W_O=stack(lambda l: b[l].attn.W_O), b_O=stack(lambda l: b[l].attn.b_O),
            ln2_w=stack(lambda l: b[l].ln2.w), ln2_b=stack(lambda l: b[l].ln2.b),
            W_enc=stack(lambda l: transcoders[l].W_enc), b_enc=stack(lambda l: transcoders[l].b_enc),
            W_dec=stack(lambda l: transcoders[l].W_dec), b_dec=stack(lambda l: transcoders[l].b_dec),
            lnf_w=d(model.ln_final.w), lnf_b=d(model.ln_final.b), W_U=d(model.W_U), b_U=d(model.b_U),
            eps=float(model.cfg.eps),
        )


def _centre(x: Tensor) -> Tensor:
    return x - x.mean(-1, keepdim=True)


def replacement_forward(w: Weights, frozen: Frozen, embeddings: Float[Tensor, "pos d_model"],
                        feature_acts: Float[Tensor, "n_layers pos d_tc"], errors: Float[Tensor, "n_layers pos d_model"]
                        ) -> tuple[Float[Tensor, "n_layers pos d_tc"], Float[Tensor, "pos d_vocab"]]:
    """The local replacement model: feature pre-activations and logits as (affine) functions of the
    node outputs, with attention patterns and LayerNorm scales taken from ``frozen``."""
    resid = embeddings
    pres = []
    for l in range(w.W_V.shape[0]):
        x = _centre(resid) / frozen.ln1[l] * w.ln1_w[l] + w.ln1_b[l]
        v = torch.einsum("kd,hde->khe", x, w.W_V[l]) + w.b_V[l]
        z = torch.einsum("hqk,khe->qhe", frozen.patterns[l], v)
        resid = resid + torch.einsum("qhe,hed->qd", z, w.W_O[l]) + w.b_O[l]
        x2 = _centre(resid) / frozen.ln2[l] * w.ln2_w[l] + w.ln2_b[l]
        pres.append(x2 @ w.W_enc[l] + w.b_enc[l])
        resid = resid + feature_acts[l] @ w.W_dec[l] + w.b_dec[l] + errors[l]
    final = _centre(resid) / frozen.ln_final * w.lnf_w + w.lnf_b
    return torch.stack(pres), final @ w.W_U + w.b_U


def full_forward(w: Weights, model, tokens: Int[Tensor, " pos"]) -> dict[str, Tensor]:
    """The real model's forward pass in float64, written out (softmax attention, GELU MLPs, live
    LayerNorm scales), recording what the replacement model freezes and the node values.
    Returns ``logits``, ``frozen`` (a :class:`Frozen`), ``embeddings``, ``feature_acts``,
    ``feature_pre``, ``mlp_in``, ``mlp_out``, ``errors``."""
    b = model.blocks
    d = lambda t: t.detach().to(torch.float64)
    n = len(tokens)
    resid = w.W_E[tokens] + w.W_pos[:n]
    embeddings = resid.clone()

    def ln(x: Tensor) -> tuple[Tensor, Tensor]:
        x = _centre(x)
        scale = (x.pow(2).mean(-1, keepdim=True) + w.eps).sqrt()
        return x / scale, scale

    patterns, ln1s, ln2s, acts, pres, ins, outs, errs = [], [], [], [], [], [], [], []
    mask = torch.tril(torch.ones(n, n, dtype=torch.bool))
    for l in range(w.W_V.shape[0]):
        xn, s1 = ln(resid)
        x = xn * w.ln1_w[l] + w.ln1_b[l]
        q = torch.einsum("pd,hde->phe", x, d(b[l].attn.W_Q)) + d(b[l].attn.b_Q)
        k = torch.einsum("pd,hde->phe", x, d(b[l].attn.W_K)) + d(b[l].attn.b_K)
        v = torch.einsum("pd,hde->phe", x, w.W_V[l]) + w.b_V[l]
        scores = torch.einsum("qhe,khe->hqk", q, k) / b[l].attn.attn_scale
        pattern = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        z = torch.einsum("hqk,khe->qhe", pattern, v)
        resid = resid + torch.einsum("qhe,hed->qd", z, w.W_O[l]) + w.b_O[l]
        xn2, s2 = ln(resid)
        x2 = xn2 * w.ln2_w[l] + w.ln2_b[l]
        mlp = b[l].mlp
        hidden = F.gelu(x2 @ d(mlp.W_in) + d(mlp.b_in))
        out = hidden @ d(mlp.W_out) + d(mlp.b_out)
        pre = x2 @ w.W_enc[l] + w.b_enc[l]
        f = pre.relu()
        errs.append(out - (f @ w.W_dec[l] + w.b_dec[l]))
        patterns.append(pattern), ln1s.append(s1), ln2s.append(s2), acts.append(f), pres.append(pre)
        ins.append(x2), outs.append(out)
        resid = resid + out
    xf, sf = ln(resid)
    logits = (xf * w.lnf_w + w.lnf_b) @ w.W_U + w.b_U
    return {"logits": logits, "frozen": Frozen(torch.stack(patterns), torch.stack(ln1s), torch.stack(ln2s), sf),
            "embeddings": embeddings, "feature_acts": torch.stack(acts), "feature_pre": torch.stack(pres),
            "mlp_in": torch.stack(ins), "mlp_out": torch.stack(outs), "errors": torch.stack(errs)}


# ------------------------------------------------------------------------------------------------
# Attribution graphs
# ------------------------------------------------------------------------------------------------


@dataclass
class Graph:
    """An attribution graph of one prompt. Nodes in circuit-tracer's order: ``features`` rows
    ``(layer, pos, feature)``, errors (``n_layers * n_pos``, layer-major), tokens (``n_pos``),
    logits (``logit_tokens``). ``adjacency[target, source]`` (float64)."""

    tokens: Tensor
    features: Tensor  # [n_features, 3] long
    activations: Tensor  # [n_features]
    logit_tokens: Tensor  # [n_logits]
    logit_probabilities: Tensor  # [n_logits]
    adjacency: Tensor  # [n_nodes, n_nodes]
    n_layers: int
    words: list[str] = field(default_factory=list)

    @property
    def n_pos(self) -> int:
        return len(self.tokens)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_errors(self) -> int:
        return self.n_layers * self.n_pos

    @property
    def n_logits(self) -> int:
        return len(self.logit_tokens)

    @property
    def logit_weights(self) -> Tensor:
        w = torch.zeros(self.adjacency.shape[0], dtype=self.adjacency.dtype)
        w[-self.n_logits:] = self.logit_probabilities.to(w.dtype)
        return w

    def node_kind(self, i: int) -> str:
        if i < self.n_features:
            return "feature"
        i -= self.n_features
        if i < self.n_errors:
            return "error"
        i -= self.n_errors
        return "token" if i < self.n_pos else "logit"

    def node_layer_pos(self, i: int) -> tuple[float, int]:
        """(layer, position) for layout: tokens at layer -1, logits at ``n_layers``."""
        kind = self.node_kind(i)
        if kind == "feature":
            return float(self.features[i, 0]), int(self.features[i, 1])
        if kind == "error":
            j = i - self.n_features
            return float(j // self.n_pos), j % self.n_pos
        if kind == "token":
            return -1.0, i - self.n_features - self.n_errors
        return float(self.n_layers), self.n_pos - 1


def logit_targets(logits: Float[Tensor, " d_vocab"], max_logits: int = 10, desired_probability: float = 0.95,
                  tokens: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """The logit nodes: ``tokens`` when given, otherwise the most likely next tokens until their
    cumulative probability reaches ``desired_probability`` (at most ``max_logits``). Returns
    ``(token ids, their probabilities)``."""
    probs = logits.softmax(-1)
    if tokens is not None:
        ids = torch.as_tensor(list(tokens), dtype=torch.long)
        return ids, probs[ids]
    values, ids = probs.sort(descending=True)
    n = int((values.cumsum(0) < desired_probability).sum()) + 1
    n = min(n, max_logits)
    return ids[:n], values[:n]


def attribute(model, transcoders: Transcoders, tokens: Int[Tensor, " pos"], logit_tokens: Sequence[int] | None = None,
              max_logits: int = 10, desired_probability: float = 0.95, words: Sequence[str] | None = None) -> Graph:
    """The attribution graph of one prompt (``tokens`` 1-d, ``<bos>`` included): every active
    transcoder feature at every position, every error node, every token, and the logit nodes at the
    last position (``logit_tokens``, or the top ones by :func:`logit_targets`)."""
    w = Weights.of(model, transcoders)
    run = full_forward(w, model, tokens)
    acts = run["feature_acts"]
    features = (acts > 0).nonzero()  # lexicographic (layer, pos, feature)
    ids, probs = logit_targets(run["logits"][-1], max_logits, desired_probability, logit_tokens)
    adjacency = direct_effects(w, run["frozen"], run["embeddings"], acts, run["errors"], features, ids)
    return Graph(tokens=tokens.clone(), features=features, activations=acts[tuple(features.T)],
                 logit_tokens=ids, logit_probabilities=probs, adjacency=adjacency,
                 n_layers=w.W_V.shape[0], words=list(words) if words is not None else [])


def direct_effects(w: Weights, frozen: Frozen, embeddings: Tensor, feature_acts: Tensor, errors: Tensor,
                   features: Tensor, logit_tokens: Tensor) -> Tensor:
    """The direct-effect adjacency (see the module docstring), by one batched backward pass per
    target through :func:`replacement_forward`."""
    embeddings = embeddings.detach().clone().requires_grad_(True)
    feature_acts = feature_acts.detach().clone().requires_grad_(True)
    errors = errors.detach().clone().requires_grad_(True)
    pres, logits = replacement_forward(w, frozen, embeddings, feature_acts, errors)
    last = logits[-1] - logits[-1].mean()
    targets = torch.cat([pres[tuple(features.T)], last[logit_tokens]])
    n_t = len(targets)
    grads = torch.autograd.grad(targets, (embeddings, feature_acts, errors),
                                grad_outputs=torch.eye(n_t, dtype=targets.dtype), is_grads_batched=True)
    g_emb, g_acts, g_err = grads
    n_f, n_layers, n_pos = len(features), errors.shape[0], errors.shape[1]
    n_nodes = n_f + n_layers * n_pos + n_pos + len(logit_tokens)
    A = torch.zeros(n_nodes, n_nodes, dtype=torch.float64)
    rows = list(range(n_f)) + list(range(n_nodes - len(logit_tokens), n_nodes))
    A[rows, :n_f] = (g_acts * feature_acts.detach())[:, features[:, 0], features[:, 1], features[:, 2]]
    A[rows, n_f:n_f + n_layers * n_pos] = (g_err * errors.detach()).sum(-1).flatten(1)
    A[rows, n_f + n_layers * n_pos:n_f + n_layers * n_pos + n_pos] = (g_emb * embeddings.detach()).sum(-1)
    return A


def normalise(A: Tensor) -> Tensor:
    """``|A|`` with each row divided by its sum (zero rows stay zero)."""
    a = A.abs()
    return a / a.sum(1, keepdim=True).clamp(min=1e-10)


def influence(A_normalised: Tensor, logit_weights: Tensor) -> Tensor:
    """``logit_weights @ ((I - A)^-1 - I)``: each node's total influence on the weighted logits."""
    n = A_normalised.shape[0]
    eye = torch.eye(n, dtype=A_normalised.dtype)
    # w @ ((I - A)^-1 - I) = solve((I - A)^T, w) - w
    return torch.linalg.solve((eye - A_normalised).T, logit_weights.to(A_normalised.dtype)) - logit_weights.to(A_normalised.dtype)


def total_effects(graph: "Graph", target_weights: Tensor) -> Tensor:
    """Signed total effect of every node on ``target_weights @ values``: the change of the weighted
    target values per unit of scaling a node (``a_s -> (1 + eps) a_s``, divided by eps), when every
    downstream feature responds linearly (its ReLU gate frozen: active features stay active) and
    tokens and errors stay fixed. With ``J = A / a`` (each feature column divided by its activation;
    token and error columns are already per unit of scaling), it is ``(w @ ((I - J)^-1 - I)) * a``."""
    A = graph.adjacency
    scale = torch.ones(A.shape[0], dtype=A.dtype)
    scale[:graph.n_features] = graph.activations.to(A.dtype)
    J = A / scale[None, :]
    w = target_weights.to(A.dtype)
    return (torch.linalg.solve((torch.eye(A.shape[0], dtype=A.dtype) - J).T, w) - w) * scale


def cumulative_threshold(scores: Tensor, fraction: float) -> Tensor:
    """The score of the last element (highest first) needed for the kept scores to add up to at
    least ``fraction`` of the total; keep ``scores >= threshold``."""
    ordered = scores.flatten().sort(descending=True).values
    cumulative = ordered.cumsum(0) / ordered.sum().clamp(min=1e-30)
    index = int(torch.searchsorted(cumulative, torch.tensor(fraction, dtype=cumulative.dtype)))
    return ordered[min(index, len(ordered) - 1)]


def prune_nodes(A: Tensor, logit_weights: Tensor, n_tokens: int, n_logits: int, threshold: float = 0.8) -> Tensor:
    """Node mask: highest-influence nodes covering ``threshold`` of the total influence, plus every
    token and logit node."""
    scores = influence(normalise(A), logit_weights)
    mask = scores >= cumulative_threshold(scores, threshold)
    mask[-(n_tokens + n_logits):] = True
    return mask


def prune_edges(A: Tensor, node_mask: Tensor, logit_weights: Tensor, threshold: float = 0.98) -> Tensor:
    """Edge mask on the graph restricted to ``node_mask``: normalised edge weight times its target's
    influence plus logit weight, highest first, covering ``threshold`` of the total."""
    pruned = A.clone()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    An = normalise(pruned)
    target_score = influence(An, logit_weights) + logit_weights.to(An.dtype)
    scores = An * target_score[:, None]
    return (scores >= cumulative_threshold(scores, threshold)) & (scores > 0)


def graph_scores(A: Tensor, logit_weights: Tensor, n_features: int, n_errors: int, n_tokens: int) -> dict[str, float]:
    """Replacement and completeness scores (module docstring)."""
    An = normalise(A)
    inf = influence(An, logit_weights)
    errors = slice(n_features, n_features + n_errors)
    toks = slice(n_features + n_errors, n_features + n_errors + n_tokens)
    error_inf, token_inf = float(inf[errors].sum()), float(inf[toks].sum())
    weight = inf + logit_weights.to(inf.dtype)
    non_error = 1 - An[:, errors].sum(1)
    return {"replacement": token_inf / (token_inf + error_inf),
            "completeness": float((non_error * weight).sum() / weight.sum())}


@dataclass
class Pruned:
    node_mask: Tensor
    edge_mask: Tensor
    influence: Tensor


def prune(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Pruned:
    """Prune ``graph``; afterwards drop feature/error nodes left without outgoing edges and features
    without incoming ones (repeatedly), as circuit-tracer does."""
    w = graph.logit_weights
    A = graph.adjacency
    nodes = prune_nodes(A, w, graph.n_pos, graph.n_logits, node_threshold)
    edges = prune_edges(A, nodes, w, edge_threshold)
    inner = A.shape[0] - graph.n_pos - graph.n_logits
    while True:
        before = nodes.clone()
        edges[~nodes] = False
        edges[:, ~nodes] = False
        nodes[:inner] &= edges[:, :inner].any(0)
        nodes[:graph.n_features] &= edges[:graph.n_features].any(1)
        if torch.equal(before, nodes):
            break
    return Pruned(nodes, edges, influence(normalise(A), w))


# ------------------------------------------------------------------------------------------------
# Rendering (offline: a self-contained SVG, no scripts, no network)
# ------------------------------------------------------------------------------------------------


def node_label(graph: Graph, i: int, vocab: Sequence[str], feature_labels: dict[tuple[int, int], str] | None = None) -> str:
    kind = graph.node_kind(i)
    layer, pos = graph.node_layer_pos(i)
    if kind == "feature":
        l, f = int(graph.features[i, 0]), int(graph.features[i, 2])
        name = (feature_labels or {}).get((l, f))
        return f"L{l}/{f}" + (f" {name}" if name else "")
    if kind == "error":
        return f"err L{int(layer)}"
    if kind == "token":
        return vocab[int(graph.tokens[pos])]
    return f"logit '{vocab[int(graph.logit_tokens[i - (graph.adjacency.shape[0] - graph.n_logits)])]}'"


def render_svg(graph: Graph, pruned: Pruned, vocab: Sequence[str],
               feature_labels: dict[tuple[int, int], str] | None = None, width: int = 980) -> str:
    """The pruned graph as a self-contained SVG: rows are layers (tokens at the bottom, logits at
    the top), columns positions; edges are coloured by sign (blue +, red -) with width by weight."""
    keep = pruned.node_mask.nonzero().flatten().tolist()
    n_rows = graph.n_layers + 2
    col_w = (width - 40) / graph.n_pos
    row_h = 110
    height = n_rows * row_h + 40
    # nodes at the same (layer, pos) are spread horizontally
    groups: dict[tuple[float, int], list[int]] = {}
    for i in keep:
        groups.setdefault(graph.node_layer_pos(i), []).append(i)
    xy: dict[int, tuple[float, float]] = {}
    for (layer, pos), members in groups.items():
        for k, i in enumerate(members):
            spread = col_w * 0.8
            x = 20 + col_w * (pos + 0.5) + (k - (len(members) - 1) / 2) * min(spread / max(len(members), 1), 40)
            y = height - 30 - (layer + 1) * row_h
            xy[i] = (x, y)
    A = graph.adjacency
    edges = pruned.edge_mask.nonzero().tolist()
    biggest = max((abs(float(A[t, s])) for t, s in edges), default=1.0) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="10">',
             '<rect width="100%" height="100%" fill="white"/>']
    for p in range(graph.n_pos):
        word = vocab[int(graph.tokens[p])]
        parts.append(f'<text x="{20 + col_w * (p + 0.5):.1f}" y="{height - 8}" text-anchor="middle" fill="#555">{html.escape(word)}</text>')
    for r, name in enumerate(["tokens", *[f"layer {l}" for l in range(graph.n_layers)], "logits"]):
        parts.append(f'<text x="4" y="{height - 30 - r * row_h - 12:.1f}" fill="#999">{name}</text>')
    for t, s in edges:
        if t not in xy or s not in xy:
            continue
        v = float(A[t, s])
        (x1, y1), (x2, y2) = xy[s], xy[t]
        colour = "#2b6cb0" if v > 0 else "#c53030"
        parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
                     f'stroke-opacity="0.6" stroke-width="{0.5 + 4 * abs(v) / biggest:.2f}"/>')
    fills = {"feature": "#f6e05e", "error": "#a0aec0", "token": "#9ae6b4", "logit": "#fbb6ce"}
    for i, (x, y) in xy.items():
        kind = graph.node_kind(i)
        label = html.escape(node_label(graph, i, vocab, feature_labels))
        shape = (f'<rect x="{x - 6:.1f}" y="{y - 6:.1f}" width="12" height="12" fill="{fills[kind]}" stroke="#333"/>'
                 if kind in ("error", "token") else
                 f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{fills[kind]}" stroke="#333"/>')
        parts.append(f'<g><title>{label}</title>{shape}'
                     f'<text x="{x:.1f}" y="{y - 9:.1f}" text-anchor="middle" transform="rotate(-20 {x:.1f} {y - 9:.1f})">{label}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------
# Small random instances (for checks and tests: every weight random, biases included)
# ------------------------------------------------------------------------------------------------


def tiny_model(g: torch.Generator, n_layers: int = 2, d_model: int = 16, n_heads: int = 2, d_head: int = 8,
               d_mlp: int = 32, d_vocab: int = 23, n_ctx: int = 12):
    """A TransformerLens model of the zoo's architecture (LayerNorm, GELU MLPs) with random weights
    drawn from ``g``: non-zero biases and LayerNorm weights away from 1, so no term can hide."""
    import warnings

    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_head=d_head, d_mlp=d_mlp,
                                  n_ctx=n_ctx, d_vocab=d_vocab, act_fn="gelu", normalization_type="LN",
                                  default_prepend_bos=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".w",)):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1 or name.endswith(("b_Q", "b_K", "b_V")):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-2] if p.ndim >= 2 else 1
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / fan_in ** 0.5))
    return model.eval()


def random_transcoders(g: torch.Generator, n_layers: int, d_model: int, d_tc: int) -> Transcoders:
    """Random transcoders, biased so that roughly a third of the features fire on a typical input."""
    layers = []
    for _ in range(n_layers):
        tc = Transcoder(d_model, d_tc, generator=g)
        with torch.no_grad():
            tc.W_enc.mul_(0.5)
            tc.b_enc.copy_(0.3 * torch.randn(d_tc, generator=g) - 0.4)
            tc.W_dec.copy_(torch.randn(d_tc, d_model, generator=g) * 0.3)
            tc.b_dec.copy_(0.2 * torch.randn(d_model, generator=g))
        layers.append(tc.eval())
    return Transcoders(layers).eval()
