"""The computational graph of a TransformerLens model, and runs of the model with edges removed.

The graph is the one of ACDC (Conmy et al. 2023) and edge attribution patching (Syed et al. 2023):

- nodes: ``embed`` (token + position embeddings), every attention head ``a{layer}.{head}``, every
  MLP ``m{layer}``, and ``logits`` (the final residual stream, read by the unembedding);
- an edge goes from a node that writes into the residual stream (a *sender*) to a later node's
  input (a *receiver*): a head's query, key or value input (three separate edges, as in ACDC), an
  MLP's input, or the logits.

Without LayerNorm (the ``ioi-3l`` model), a receiver's input is exactly the sum of the outputs of
every earlier sender (plus constant biases), so "removing" an edge is well defined: the receiver
sees the sender's *ablated* output (from the corrupted run for resample ablation, or its mean)
instead of its actual one, and nothing else changes. The model needs ``use_attn_result``,
``use_split_qkv_input`` and ``use_hook_mlp_in`` (``interplab.zoo.ioi_3l.config`` sets them).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.hook_points import HookPoint

INPUTS = ("q", "k", "v")  # the three inputs of a head


@dataclass(frozen=True)
class Edge:
    sender: str  # "embed", "a{l}.{h}" or "m{l}"
    receiver: str  # "a{l}.{h}", "m{l}" or "logits"
    input: str  # "q", "k", "v" for a head, "in" for an MLP or the logits

    @property
    def name(self) -> str:
        suffix = f"<{self.input}>" if self.input in INPUTS else ""
        return f"{self.sender}->{self.receiver}{suffix}"


class Graph:
    """Nodes and edges of a model, in topological order, and where each lives among the hooks."""

    def __init__(self, model: HookedTransformer) -> None:
        cfg = model.cfg
        missing = [flag for flag in ("use_attn_result", "use_split_qkv_input") if not getattr(cfg, flag)]
        if not cfg.attn_only and not cfg.use_hook_mlp_in:
            missing.append("use_hook_mlp_in")
        if missing or cfg.normalization_type is not None:
            raise ValueError(f"the edge graph needs a model without LayerNorm and with {', '.join(missing) or 'these'} set; "
                             "build it with interplab.zoo.ioi_3l.config()")
        self.n_layers, self.n_heads, self.attn_only = cfg.n_layers, cfg.n_heads, cfg.attn_only
        senders = ["embed"]
        for layer in range(self.n_layers):
            senders += [f"a{layer}.{h}" for h in range(self.n_heads)] + ([] if self.attn_only else [f"m{layer}"])
        self.senders: list[str] = senders  # topological order
        self.nodes: list[str] = senders + ["logits"]
        edges = []
        for layer in range(self.n_layers):
            earlier = self._senders_before(layer, mlp=False)
            edges += [Edge(s, f"a{layer}.{h}", i) for h in range(self.n_heads) for i in INPUTS for s in earlier]
            if not self.attn_only:
                edges += [Edge(s, f"m{layer}", "in") for s in self._senders_before(layer, mlp=True)]
        edges += [Edge(s, "logits", "in") for s in senders]
        self.edges: list[Edge] = edges

    def _senders_before(self, layer: int, mlp: bool) -> list[str]:
        """Senders whose output reaches layer ``layer``'s heads (``mlp=False``) or its MLP."""
        count = 1 + layer * (self.n_heads + (0 if self.attn_only else 1)) + (self.n_heads if mlp else 0)
        return self.senders[:count]

    def __len__(self) -> int:
        return len(self.edges)

    @cached_property
    def index(self) -> dict[str, int]:
        """Edge name -> position in ``edges`` (and in every edge mask or score vector)."""
        return {edge.name: i for i, edge in enumerate(self.edges)}

    def mask(self, names: list[str] | None = None) -> Bool[Tensor, "n_edges"]:  # noqa: F821 (a jaxtyping dimension)
        """The edge mask holding exactly the edges ``names`` (``None``: every edge)."""
        if names is None:
            return torch.ones(len(self.edges), dtype=torch.bool)
        unknown = [n for n in names if n not in self.index]
        if unknown:
            raise KeyError(f"no edges {unknown} in the graph")
        out = torch.zeros(len(self.edges), dtype=torch.bool)
        out[[self.index[n] for n in names]] = True
        return out

    # -- where nodes live among the hook points ------------------------------------------------

    @staticmethod
    def _layer_head(node: str) -> tuple[int, int | None]:
        if node.startswith("a"):
            layer, head = node[1:].split(".")
            return int(layer), int(head)
        return int(node[1:]), None

    def sender_hook(self, node: str) -> tuple[str, int | None]:
        """The hook whose value is ``node``'s output, and the head axis index (None: no head axis).
        A head's output is ``hook_result[:, :, head]`` (``[batch, pos, d_model]``, without ``b_O``)."""
        if node == "embed":
            return "blocks.0.hook_resid_pre", None
        layer, head = self._layer_head(node)
        return (f"blocks.{layer}.attn.hook_result", head) if head is not None else (f"blocks.{layer}.hook_mlp_out", None)

    def receiver_hook(self, node: str, input: str) -> tuple[str, int | None]:
        """The hook whose value is ``node``'s ``input`` (a sum of sender outputs), and the head index."""
        if node == "logits":
            return f"blocks.{self.n_layers - 1}.hook_resid_post", None
        layer, head = self._layer_head(node)
        if head is not None:
            return f"blocks.{layer}.hook_{input}_input", head
        return f"blocks.{layer}.hook_mlp_in", None

    def sender_outputs(self, cache) -> Float[Tensor, "n_senders batch pos d_model"]:
        """Every sender's output, stacked in ``senders`` order, from an ActivationCache."""
        outs = []
        for node in self.senders:
            hook, head = self.sender_hook(node)
            outs.append(cache[hook] if head is None else cache[hook][:, :, head])
        return torch.stack(outs)

    @property
    def sender_hooks(self) -> set[str]:
        return {self.sender_hook(node)[0] for node in self.senders}

    def receivers(self) -> list[tuple[str, str]]:
        """Every (receiver node, input) pair, in topological order."""
        seen: dict[tuple[str, str], None] = {}
        for edge in self.edges:
            seen.setdefault((edge.receiver, edge.input))
        return list(seen)

    def incoming(self, receiver: str, input: str) -> list[int]:
        """Indices of the edges into (receiver, input), in the senders' topological order."""
        return [i for i, e in enumerate(self.edges) if e.receiver == receiver and e.input == input]

    def node_edges(self, nodes: list[str]) -> Bool[Tensor, "n_edges"]:  # noqa: F821 (a jaxtyping dimension)
        """The edges that leave or enter any of ``nodes``: removing them knocks the nodes out."""
        chosen = set(nodes)
        unknown = chosen - set(self.nodes)
        if unknown:
            raise KeyError(f"no nodes {sorted(unknown)} in the graph")
        return torch.tensor([e.sender in chosen or e.receiver in chosen for e in self.edges])


def ablated_senders(model: HookedTransformer, graph: Graph, corrupted: Int[Tensor, "batch pos"],
                    ablation: str = "resample") -> Float[Tensor, "n_senders batch pos d_model"]:
    """What a removed edge carries: each sender's output on the corrupted prompts (``"resample"``),
    or its mean over the corrupted batch, at each position (``"mean"``)."""
    if ablation not in ("resample", "mean"):
        raise ValueError(f"ablation must be 'resample' or 'mean', got {ablation!r}")
    with torch.no_grad():
        _, cache = model.run_with_cache(corrupted, names_filter=lambda name: name in graph.sender_hooks)
    outs = graph.sender_outputs(cache)
    return outs.mean(dim=1, keepdim=True).expand_as(outs) if ablation == "mean" else outs


def run_with_edges(model: HookedTransformer, graph: Graph, mask: Bool[Tensor, "n_edges"],  # noqa: F821 (a jaxtyping dimension)
                   tokens: Int[Tensor, "batch pos"],
                   ablated: Float[Tensor, "n_senders batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits of ``model`` on ``tokens`` where every edge with ``mask`` False is removed: its
    receiver sees the sender's ``ablated`` output instead of the sender's actual output in this run
    (every other edge, and so every other path, is untouched)."""
    if mask.shape != (len(graph),) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape ({len(graph)},), got {mask.dtype} {tuple(mask.shape)}")
    if ablated.shape[0] != len(graph.senders) or ablated.shape[1:3] != tokens.shape:
        raise ValueError(f"ablated must be [n_senders={len(graph.senders)}, batch, pos, d_model] for tokens "
                         f"{tuple(tokens.shape)}, got {tuple(ablated.shape)}")
    sender_of = {node: i for i, node in enumerate(graph.senders)}
    actual: dict[str, Tensor] = {}  # sender -> its output in this run, filled as the forward pass goes

    def record(act: Tensor, hook: HookPoint) -> None:
        for node in graph.senders:
            name, head = graph.sender_hook(node)
            if name == hook.name:
                actual[node] = act if head is None else act[:, :, head]

    def patch(act: Tensor, hook: HookPoint, receiver: str, input: str, removed: list[int]) -> Tensor:
        _, head = graph.receiver_hook(receiver, input)
        senders = [graph.edges[i].sender for i in removed]
        delta = sum(ablated[sender_of[s]] - actual[s] for s in senders)
        act = act.clone()
        if head is None:
            act += delta
        else:
            act[:, :, head] += delta
        return act

    hooks = [(name, record) for name in graph.sender_hooks]
    for receiver, input in graph.receivers():
        removed = [i for i in graph.incoming(receiver, input) if not mask[i]]
        if removed:
            name, _ = graph.receiver_hook(receiver, input)
            hooks.append((name, lambda act, hook, r=receiver, i=input, rm=removed: patch(act, hook, r, i, rm)))
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    return logits
