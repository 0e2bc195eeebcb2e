"""Checks of the discovery assignment (see interplab.checking for the contract).

Inputs: fresh IOI prompt batches (any template, held-out or not, small batches) for the shipped
``ioi-3l`` model, loaded afresh for every case (hooks or edits cannot leak between cases), random
edge masks and knockouts, and for ACDC and minimality a 2-layer model with a planted circuit
(``ioi_3l.planted_circuit_model``: whose effects are exact zeros or far from any threshold, so a
correct greedy search cannot flip a decision on rounding). Conventions the checks hold students to
are stated in the notebook: denoising for activation patching and AtP (gradient on the corrupted
run), noising for path patching and EAP (gradient on the clean run), normalisation by
``LD_clean - LD_corrupted`` of batch means, ``nan`` where a value is undefined, ACDC's visiting
order and absolute threshold.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformer_lens.utilities import get_act_name

from interplab.checking import Exercise, Probe, torch_generator
from interplab.circuit_graph import Graph, ablated_senders, run_with_edges
from interplab.ioi import ioi_prompts
from interplab.zoo import ioi_3l

ASSIGNMENT = "discovery"
MODEL_TOL = {"float32": (1e-3, 1e-4), "float64": (1e-4, 1e-5)}  # whole-model runs: summation order may differ
# Normalised effects divide by LD_clean - LD_corrupted; gradients and sums in another order differ more.
GRAD_TOL = {"float32": (3e-3, 3e-4), "float64": (3e-3, 3e-4)}
logit_diff = ioi_3l.logit_diff


# --------------------------------------------------------------------------------------------
# Input generators
# --------------------------------------------------------------------------------------------


def _prompts(rng: np.random.Generator, low: int = 3, high: int = 7) -> dict[str, Any]:
    p = ioi_prompts(int(rng.integers(low, high)), torch_generator(rng), split="all")
    return {"clean": p["clean"], "corrupted": p["corrupted"], "io": p["io"], "s": p["s"]}


def _cache_case(rng: np.random.Generator) -> dict[str, Any]:
    model = ioi_3l.load()
    p = _prompts(rng)
    with torch.no_grad():
        _, cache = model.run_with_cache(p["clean"])
    return {"model": model, "cache": cache, "io": p["io"], "s": p["s"]}


def _patch_case(rng: np.random.Generator) -> dict[str, Any]:
    return {"model": ioi_3l.load(), **_prompts(rng)}


def _by_position_case(rng: np.random.Generator) -> dict[str, Any]:
    return {**_patch_case(rng), "kind": str(rng.choice(["resid_pre", "attn_out", "mlp_out"]))}


def _heads_case(rng: np.random.Generator) -> dict[str, Any]:
    return {**_patch_case(rng), "per_position": bool(rng.integers(2))}


def _receivers_case(rng: np.random.Generator) -> dict[str, Any]:
    case = _patch_case(rng)
    layer = int(rng.integers(1, case["model"].cfg.n_layers))
    heads = sorted(rng.choice(case["model"].cfg.n_heads, size=int(rng.integers(1, 3)), replace=False).tolist())
    return {**case, "receivers": [(layer, h) for h in heads], "component": str(rng.choice(["q", "k", "v"]))}


def _graph_case(rng: np.random.Generator) -> dict[str, Any]:
    case = _patch_case(rng)
    return {**case, "graph": Graph(case["model"])}


def _mask_case(rng: np.random.Generator) -> dict[str, Any]:
    case = _graph_case(rng)
    return {**case, "mask": torch.from_numpy(rng.random(len(case["graph"])) < rng.uniform(0.2, 0.8))}


def _knockout_case(rng: np.random.Generator) -> dict[str, Any]:
    case = _mask_case(rng)
    graph = case["graph"]
    senders = sorted({graph.edges[i].sender for i in case["mask"].nonzero().flatten().tolist()} - {"embed"})
    case["knockout"] = sorted(rng.choice(senders, size=min(len(senders), int(rng.integers(1, 3))), replace=False).tolist())
    return case


def _acdc_case(rng: np.random.Generator) -> dict[str, Any]:
    model, _ = ioi_3l.planted_circuit_model(torch_generator(rng))
    return {"model": model, "graph": Graph(model), **_prompts(rng, 4, 9), "threshold": float(rng.uniform(0.05, 0.3))}


def _planted_mask_case(rng: np.random.Generator) -> dict[str, Any]:
    """The planted circuit plus random extra edges, never from a layer-0 head the circuit does not
    use (so some senders are always outside the circuit)."""
    model, edges = ioi_3l.planted_circuit_model(torch_generator(rng))
    graph = Graph(model)
    used = {name.split("->")[0] for name in edges}
    outside = [node for node in graph.senders if node.startswith("a0.") and node not in used][0]
    extra = torch.from_numpy(rng.random(len(graph)) < 0.1) & torch.tensor([e.sender != outside for e in graph.edges])
    return {"model": model, "graph": graph, "mask": graph.mask(edges) | extra, **_prompts(rng, 4, 9)}


# --------------------------------------------------------------------------------------------
# Known mistakes (probes)
# --------------------------------------------------------------------------------------------


def _runs(model, clean, corrupted, io, s):
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean)
        corrupted_logits, corrupted_cache = model.run_with_cache(corrupted)
    return (clean_cache, corrupted_cache, logit_diff(clean_logits, io, s).mean(),
            logit_diff(corrupted_logits, io, s).mean())


def _head_dla_probe(direction_of, last_only=True):
    def probe(model, cache, io, s):
        direction = direction_of(model, io, s)
        out = []
        for layer in range(model.cfg.n_layers):
            result = cache["result", layer][:, -1] if last_only else cache["result", layer].sum(1)
            out.append(torch.einsum("bhd,db->h", result, direction) / io.shape[0])
        return torch.stack(out)
    return probe


_DIFF = lambda model, io, s: model.W_U[:, io] - model.W_U[:, s]  # noqa: E731
_IO_ONLY = lambda model, io, s: model.W_U[:, io]  # noqa: E731
_FLIPPED = lambda model, io, s: model.W_U[:, s] - model.W_U[:, io]  # noqa: E731


def _component_probe(kinds=("attn_out", "mlp_out"), sign=1.0):
    def probe(model, cache, io, s):
        direction = sign * _DIFF(model, io, s)
        parts = [cache["resid_pre", 0][:, -1]]
        for layer in range(model.cfg.n_layers):
            for kind in kinds:
                parts.append(cache["result", layer][:, -1].sum(1) if kind == "result_sum" else cache[kind, layer][:, -1])
        return torch.einsum("cbd,db->c", torch.stack(parts), direction) / io.shape[0]
    return probe


def _position_probe(denoise=True, normalise=True):
    def probe(model, clean, corrupted, io, s, kind):
        clean_cache, corrupted_cache, ld_clean, ld_corrupted = _runs(model, clean, corrupted, io, s)
        source, target, base = (clean_cache, corrupted, ld_corrupted) if denoise else (corrupted_cache, clean, ld_clean)
        out = torch.zeros(model.cfg.n_layers, clean.shape[1])
        with torch.no_grad():
            for layer in range(model.cfg.n_layers):
                for pos in range(clean.shape[1]):
                    def hook(act, hook, pos=pos):
                        act[:, pos] = source[hook.name][:, pos]
                        return act
                    ld = logit_diff(model.run_with_hooks(target, fwd_hooks=[(get_act_name(kind, layer), hook)]), io, s).mean()
                    out[layer, pos] = (ld - base) / (ld_clean - ld_corrupted) if normalise else ld - base
        return out
    return probe


def _heads_probe(denoise=True, normalise=True):
    def probe(model, clean, corrupted, io, s, per_position):
        clean_cache, corrupted_cache, ld_clean, ld_corrupted = _runs(model, clean, corrupted, io, s)
        source, target, base = (clean_cache, corrupted, ld_corrupted) if denoise else (corrupted_cache, clean, ld_clean)
        positions = list(range(clean.shape[1])) if per_position else [slice(None)]
        out = torch.zeros(model.cfg.n_layers, len(positions), model.cfg.n_heads)
        with torch.no_grad():
            for layer in range(model.cfg.n_layers):
                for p, pos in enumerate(positions):
                    for head in range(model.cfg.n_heads):
                        def hook(z, hook, index=(slice(None), pos, head)):
                            z[index] = source[hook.name][index]
                            return z
                        ld = logit_diff(model.run_with_hooks(target, fwd_hooks=[(get_act_name("z", layer), hook)]), io, s).mean()
                        out[layer, p, head] = (ld - base) / (ld_clean - ld_corrupted) if normalise else ld - base
        return out if per_position else out[:, 0]
    return probe


def _path_to_logits_probe(whole_head=False, denoise=False):
    """``whole_head``: activation-patch the head (everything downstream), not its path to the logits."""
    def probe(model, clean, corrupted, io, s):
        clean_cache, corrupted_cache, ld_clean, ld_corrupted = _runs(model, clean, corrupted, io, s)
        source, target, other, base = ((clean_cache, corrupted, corrupted_cache, ld_corrupted) if denoise
                                       else (corrupted_cache, clean, clean_cache, ld_clean))
        final = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
        out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        with torch.no_grad():
            for layer in range(model.cfg.n_layers):
                for head in range(model.cfg.n_heads):
                    if whole_head:
                        def hook(act, hook, head=head):
                            act[:, :, head] = source[hook.name][:, :, head]
                            return act
                        hooks = [(get_act_name("result", layer), hook)]
                    else:
                        delta = source["result", layer][:, :, head] - other["result", layer][:, :, head]
                        hooks = [(final, lambda x, hook, delta=delta: x + delta)]
                    out[layer, head] = (logit_diff(model.run_with_hooks(target, fwd_hooks=hooks), io, s).mean() - base) / (ld_clean - ld_corrupted)
        return out
    return probe


def _path_to_heads_probe(freeze=True, denoise=False):
    """``freeze=False``: activation-patch the sender and let the change reach the receivers through
    every path (the receivers' inputs recorded from that run)."""
    def probe(model, clean, corrupted, io, s, receivers, component):
        clean_cache, corrupted_cache, ld_clean, ld_corrupted = _runs(model, clean, corrupted, io, s)
        source, target, other, base = ((clean_cache, corrupted, corrupted_cache, ld_corrupted) if denoise
                                       else (corrupted_cache, clean, clean_cache, ld_clean))
        layer_r, heads = receivers[0][0], [h for _, h in receivers]
        name = f"blocks.{layer_r}.hook_{component}_input"
        out = torch.full((model.cfg.n_layers, model.cfg.n_heads), float("nan"))
        with torch.no_grad():
            for layer in range(layer_r):
                for head in range(model.cfg.n_heads):
                    if freeze:
                        delta = source["result", layer][:, :, head] - other["result", layer][:, :, head]
                        new_input = other[name].clone()
                        new_input[:, :, heads] += delta[:, :, None]
                    else:
                        def sender(act, hook, head=head):
                            act[:, :, head] = source[hook.name][:, :, head]
                            return act
                        with model.hooks(fwd_hooks=[(get_act_name("result", layer), sender)]):
                            _, run = model.run_with_cache(target, names_filter=lambda n: n == name)
                        new_input = other[name].clone()
                        new_input[:, :, heads] = run[name][:, :, heads]

                    def patch(act, hook, new_input=new_input):
                        act[:, :, heads] = new_input[:, :, heads]
                        return act
                    ld = logit_diff(model.run_with_hooks(target, fwd_hooks=[(name, patch)]), io, s).mean()
                    out[layer, head] = (ld - base) / (ld_clean - ld_corrupted)
        return out
    return probe


def _atp_probe(grad_on_clean=False, sign=1.0, normalise=True):
    def probe(model, clean, corrupted, io, s):
        clean_cache, corrupted_cache, ld_clean, ld_corrupted = _runs(model, clean, corrupted, io, s)
        kept = {}

        def keep(z, hook):
            z.retain_grad()
            kept[hook.name] = z
        with torch.enable_grad():
            logits = model.run_with_hooks(clean if grad_on_clean else corrupted,
                                          fwd_hooks=[(lambda n: n.endswith("hook_z"), keep)])
            logit_diff(logits, io, s).mean().backward()
        model.zero_grad(set_to_none=True)
        out = torch.stack([((clean_cache["z", l] - corrupted_cache["z", l]) * kept[get_act_name("z", l)].grad).sum(-1).mean(0)
                           for l in range(model.cfg.n_layers)]) * sign
        return (out / (ld_clean - ld_corrupted) if normalise else out).detach()
    return probe


def _ld_with(model, graph, clean, io, s, ablated):
    return lambda edges: logit_diff(run_with_edges(model, graph, edges, clean, ablated), io, s).mean().item()


def _faithfulness_probe(ratio=False, always_resample=False):
    def probe(model, graph, mask, clean, corrupted, io, s, ablation="resample"):
        with torch.no_grad():
            ld = _ld_with(model, graph, clean, io, s,
                          ablated_senders(model, graph, corrupted, "resample" if always_resample else ablation))
            full, empty = ld(graph.mask()), ld(~graph.mask())
            return ld(mask) / full if ratio else (ld(mask) - empty) / (full - empty)
    return probe


def _eap_probe(grad_on_corrupted=False, sign=1.0, absolute=False):
    def probe(model, graph, clean, corrupted, io, s):
        clean_cache, corrupted_cache, ld_clean, ld_corrupted = _runs(model, clean, corrupted, io, s)
        hooks = {graph.receiver_hook(n, i)[0] for n, i in graph.receivers()}
        kept = {}

        def keep(act, hook):
            act.retain_grad()
            kept[hook.name] = act
        with torch.enable_grad():
            logits = model.run_with_hooks(corrupted if grad_on_corrupted else clean, fwd_hooks=[(lambda n: n in hooks, keep)])
            logit_diff(logits, io, s).mean().backward()
        model.zero_grad(set_to_none=True)
        diff = sign * (graph.sender_outputs(corrupted_cache) - graph.sender_outputs(clean_cache))
        out = torch.zeros(len(graph))
        for i, e in enumerate(graph.edges):
            name, head = graph.receiver_hook(e.receiver, e.input)
            grad = kept[name].grad if head is None else kept[name].grad[:, :, head]
            out[i] = (diff[graph.senders.index(e.sender)] * grad).sum()
        out = out / (ld_clean - ld_corrupted)
        return (out.abs() if absolute else out).detach()
    return probe


def _acdc_signed(model, graph, clean, corrupted, io, s, threshold):
    """Removes an edge when removing it costs less than the threshold: edges whose removal *raises*
    the metric always go."""
    with torch.no_grad():
        ld = _ld_with(model, graph, clean, io, s, ablated_senders(model, graph, corrupted))
        mask = graph.mask()
        full, empty = ld(mask), ld(~mask)
        current = 1.0
        for node, input in reversed(graph.receivers()):
            for i in reversed(graph.incoming(node, input)):
                mask[i] = False
                score = (ld(mask) - empty) / (full - empty)
                if current - score < threshold:
                    current = score
                else:
                    mask[i] = True
    return mask


_faith = _faithfulness_probe()


def _completeness_vs_circuit(model, graph, mask, knockout, clean, corrupted, io, s):
    gone = graph.node_edges(knockout)
    return abs(_faith(model, graph, mask & ~gone, clean, corrupted, io, s) - _faith(model, graph, mask, clean, corrupted, io, s))


def _completeness_whole_model(model, graph, mask, knockout, clean, corrupted, io, s):
    gone = graph.node_edges(knockout)
    return abs(_faith(model, graph, mask & ~gone, clean, corrupted, io, s) - 1.0)


def _minimality_probe(outside=float("nan"), sign=1.0, difference=True):
    def probe(model, graph, mask, clean, corrupted, io, s):
        base = _faith(model, graph, mask, clean, corrupted, io, s)
        out = torch.full((len(graph.senders),), outside)
        for j, node in enumerate(graph.senders):
            if any(mask[i] for i, e in enumerate(graph.edges) if e.sender == node):
                knocked = _faith(model, graph, mask & ~graph.node_edges([node]), clean, corrupted, io, s)
                out[j] = sign * (base - knocked) if difference else knocked
        return out
    return probe


def _both_ablations(fn, case):
    return {ablation: fn(**case, ablation=ablation) for ablation in ("resample", "mean")}


# --------------------------------------------------------------------------------------------
# Exercises
# --------------------------------------------------------------------------------------------

WRONG_DIRECTION = ("you patched in the wrong direction: the corrupted activation into the clean run (noising); "
                   "this exercise denoises, clean into corrupted")
UNNORMALISED = "you returned the raw change of the logit difference; divide by LD_clean - LD_corrupted"

EXERCISES = [
    Exercise(
        id="discovery.head_dla",
        make_case=_cache_case,
        tolerances=MODEL_TOL,
        probes=[
            Probe("io_only", _head_dla_probe(_IO_ONLY), "you projected on W_U[:, IO] alone; the metric is the "
                  "logit *difference*, so project on W_U[:, IO] - W_U[:, S]"),
            Probe("flipped", _head_dla_probe(_FLIPPED), "your sign is flipped: the direction is W_U[:, IO] - W_U[:, S]"),
            Probe("all_positions", _head_dla_probe(_DIFF, last_only=False),
                  "you summed over every position; only the last position's residual stream makes the prediction"),
        ],
    ),
    Exercise(
        id="discovery.component_dla",
        make_case=_cache_case,
        tolerances=MODEL_TOL,
        probes=[
            Probe("heads_without_bias", _component_probe(("result_sum", "mlp_out")),
                  "you summed the heads' hook_result for the attention layers, which leaves out b_O; use hook_attn_out"),
            Probe("attention_only", _component_probe(("attn_out",)), "you left out the MLP outputs "
                  "(order: embed, attn0, mlp0, attn1, mlp1, ...)"),
            Probe("flipped", _component_probe(sign=-1.0), "your sign is flipped: the direction is W_U[:, IO] - W_U[:, S]"),
        ],
    ),
    Exercise(
        id="discovery.patch_by_position",
        make_case=_by_position_case,
        tolerances=MODEL_TOL,
        probes=[Probe("noising", _position_probe(denoise=False), WRONG_DIRECTION),
                Probe("unnormalised", _position_probe(normalise=False), UNNORMALISED)],
    ),
    Exercise(
        id="discovery.patch_heads",
        make_case=_heads_case,
        tolerances=MODEL_TOL,
        probes=[Probe("noising", _heads_probe(denoise=False), WRONG_DIRECTION),
                Probe("unnormalised", _heads_probe(normalise=False), UNNORMALISED)],
    ),
    Exercise(
        id="discovery.path_patch_to_logits",
        make_case=_patch_case,
        tolerances=MODEL_TOL,
        probes=[
            Probe("whole_head", _path_to_logits_probe(whole_head=True),
                  "you patched the head's whole output (activation patching): its effect through later heads and "
                  "MLPs is included; path patching changes only its direct path to the logits"),
            Probe("denoising", _path_to_logits_probe(denoise=True),
                  "you patched the clean sender into the corrupted run; path patching here is noising "
                  "(corrupted sender into the clean run), normalised as (LD_patched - LD_clean) / (LD_clean - LD_corrupted)"),
        ],
    ),
    Exercise(
        id="discovery.path_patch_to_heads",
        make_case=_receivers_case,
        tolerances=MODEL_TOL,
        n_public=3,
        probes=[
            Probe("not_frozen", _path_to_heads_probe(freeze=False),
                  "you let the sender's change reach the receivers through every path (activation patching the "
                  "sender and recording the receivers' inputs): freeze every other head and MLP so only the direct "
                  "sender -> receiver path changes"),
            Probe("denoising", _path_to_heads_probe(denoise=True),
                  "you patched the clean sender into the corrupted run; path patching here is noising "
                  "(corrupted sender into the clean run)"),
        ],
    ),
    Exercise(
        id="discovery.attribution_patching",
        make_case=_patch_case,
        tolerances=GRAD_TOL,
        probes=[
            Probe("clean_gradient", _atp_probe(grad_on_clean=True),
                  "you took the gradient on the clean run; to approximate denoising (patching into the corrupted "
                  "run) the Taylor expansion is around the corrupted run"),
            Probe("flipped", _atp_probe(sign=-1.0), "your sign is flipped: the change is z_clean - z_corrupted"),
            Probe("unnormalised", _atp_probe(normalise=False), UNNORMALISED),
        ],
    ),
    Exercise(
        id="discovery.faithfulness",
        make_case=_mask_case,
        call=_both_ablations,
        tolerances=MODEL_TOL,
        probes=[
            Probe("ratio", _faithfulness_probe(ratio=True),
                  "you returned LD(C) / LD(M); subtract the empty circuit's LD from both (then the empty circuit scores 0)"),
            Probe("ablation_ignored", _faithfulness_probe(always_resample=True),
                  "you always resample-ablated; with ablation='mean' removed edges carry the senders' mean outputs"),
        ],
    ),
    Exercise(
        id="discovery.edge_attribution_patching",
        make_case=_graph_case,
        tolerances=GRAD_TOL,
        probes=[
            Probe("corrupted_gradient", _eap_probe(grad_on_corrupted=True),
                  "you took the gradient on the corrupted run; removing edges starts from the clean run, so the "
                  "gradient is the clean run's"),
            Probe("flipped", _eap_probe(sign=-1.0), "your sign is flipped: removing an edge changes the receiver's "
                  "input by out_corrupted - out_clean"),
            Probe("absolute", _eap_probe(absolute=True), "you returned |score|; return the signed estimate "
                  "(rank by the absolute value afterwards)"),
        ],
    ),
    Exercise(
        id="discovery.acdc",
        make_case=_acdc_case,
        probes=[Probe("signed_threshold", _acdc_signed,
                      "you thresholded the signed change (removing every edge whose removal raises the metric); "
                      "threshold the absolute change, so components working against the answer stay")],
    ),
    Exercise(
        id="discovery.completeness_gap",
        make_case=_knockout_case,
        tolerances=MODEL_TOL,
        probes=[
            Probe("against_circuit", _completeness_vs_circuit,
                  "you compared the circuit without K with the circuit; compare it with the whole model without K"),
            Probe("against_model", _completeness_whole_model,
                  "you compared the circuit without K with the whole model; knock K out of the whole model too"),
        ],
    ),
    Exercise(
        id="discovery.minimality",
        make_case=_planted_mask_case,
        tolerances=MODEL_TOL,
        probes=[
            Probe("zero_outside", _minimality_probe(outside=0.0), "senders outside the circuit must be nan, not 0"),
            Probe("flipped", _minimality_probe(sign=-1.0), "your sign is flipped: F(C) - F(C without v)"),
            Probe("knocked_out_only", _minimality_probe(difference=False),
                  "you returned F(C without v); return how much it drops, F(C) - F(C without v)"),
        ],
    ),
]
