"""Alternative correct implementations of every graded exercise of `discovery`, written differently
from the reference (loops instead of einsum, float64 intermediates cast back, TransformerLens's
patching utilities, the edge graph instead of hooks, a backward hook instead of retain_grad), as
complete replacements of the solution cells (keyed by grade_id)."""

ALTERNATIVES: dict[str, str] = {
    "impl_head_dla": '''
def head_dla(model: HookedTransformer, cache: ActivationCache, io: Int[Tensor, "batch"],
             s: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers n_heads"]:
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, dtype=torch.float64)
    for b in range(io.shape[0]):
        direction = (model.W_U[:, io[b]] - model.W_U[:, s[b]]).double()
        for layer in range(model.cfg.n_layers):
            out[layer] += cache["result", layer][b, -1].double() @ direction
    return (out / io.shape[0]).float()
''',
    "impl_component_dla": '''
def component_dla(model: HookedTransformer, cache: ActivationCache, io: Int[Tensor, "batch"],
                  s: Int[Tensor, "batch"]) -> Float[Tensor, "1+2*n_layers"]:
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_{k}" for l in range(model.cfg.n_layers)
                                           for k in ("attn_out", "mlp_out")]
    direction = (model.W_U[:, io] - model.W_U[:, s]).T.double()  # batch d_model
    return torch.stack([(cache[n][:, -1].double() * direction).sum(-1).mean() for n in names]).float()
''',
    "impl_patch_by_position": '''
def patch_by_position(model: HookedTransformer, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
                      io: Int[Tensor, "batch"], s: Int[Tensor, "batch"], kind: str) -> Float[Tensor, "n_layers pos"]:
    from transformer_lens import patching
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(clean)
        base = logit_diff(model(corrupted), io, s).mean()
        span = logit_diff(clean_logits, io, s).mean() - base
        utility = {"resid_pre": patching.get_act_patch_resid_pre, "attn_out": patching.get_act_patch_attn_out,
                   "mlp_out": patching.get_act_patch_mlp_out}[kind]
        return utility(model, corrupted, cache, lambda logits: (logit_diff(logits, io, s).mean() - base) / span)
''',
    "impl_patch_heads": '''
def patch_heads(model: HookedTransformer, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
                io: Int[Tensor, "batch"], s: Int[Tensor, "batch"], per_position: bool) -> Float[Tensor, "..."]:
    from transformer_lens import patching
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(clean)
        base = logit_diff(model(corrupted), io, s).mean()
        span = logit_diff(clean_logits, io, s).mean() - base
        utility = patching.get_act_patch_attn_head_out_by_pos if per_position else patching.get_act_patch_attn_head_out_all_pos
        return utility(model, corrupted, cache, lambda logits: (logit_diff(logits, io, s).mean() - base) / span)
''',
    "impl_path_patch_to_logits": '''
def path_patch_to_logits(model: HookedTransformer, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
                         io: Int[Tensor, "batch"], s: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers n_heads"]:
    # No LayerNorm: the path to the logits is linear, so it is the direct logit attribution of the
    # difference between the runs (the unembedding bias cancels).
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean)
        corrupted_logits, corrupted_cache = model.run_with_cache(corrupted)
        span = (logit_diff(clean_logits, io, s) - logit_diff(corrupted_logits, io, s)).double().mean()
        direction = (model.W_U[:, io] - model.W_U[:, s]).double()
        out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, dtype=torch.float64)
        for layer in range(model.cfg.n_layers):
            delta = (corrupted_cache["result", layer][:, -1] - clean_cache["result", layer][:, -1]).double()
            for head in range(model.cfg.n_heads):
                out[layer, head] = torch.diagonal(delta[:, head] @ direction).mean() / span
        return out.float()
''',
    "impl_path_patch_to_heads": '''
def path_patch_to_heads(model: HookedTransformer, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
                        io: Int[Tensor, "batch"], s: Int[Tensor, "batch"], receivers: list[tuple[int, int]],
                        component: str) -> Float[Tensor, "n_layers n_heads"]:
    # The same experiment through the edge graph: remove exactly the sender -> receiver edges.
    graph = Graph(model)
    with torch.no_grad():
        ablated = ablated_senders(model, graph, corrupted)
        ld_clean = logit_diff(model(clean), io, s).mean()
        ld_corrupted = logit_diff(model(corrupted), io, s).mean()
        out = torch.full((model.cfg.n_layers, model.cfg.n_heads), float("nan"))
        for layer in range(receivers[0][0]):
            for head in range(model.cfg.n_heads):
                names = [f"a{layer}.{head}->a{l}.{h}<{component}>" for l, h in receivers]
                logits = run_with_edges(model, graph, graph.mask() & ~graph.mask(names), clean, ablated)
                out[layer, head] = (logit_diff(logits, io, s).mean() - ld_clean) / (ld_clean - ld_corrupted)
        return out
''',
    "impl_attribution_patching": '''
def attribution_patching(model: HookedTransformer, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
                         io: Int[Tensor, "batch"], s: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers pos n_heads"]:
    grads, acts = {}, {}

    def save_grad(grad, hook):
        grads[hook.name] = grad.detach()

    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean)
    with torch.enable_grad():
        for layer in range(model.cfg.n_layers):
            model.add_hook(get_act_name("z", layer), save_grad, "bwd")
        try:
            logits, cache = model.run_with_cache(corrupted)
            ld_corrupted = logit_diff(logits, io, s).mean()
            ld_corrupted.backward()
        finally:
            model.reset_hooks()
            model.zero_grad(set_to_none=True)
    span = (logit_diff(clean_logits, io, s).mean() - ld_corrupted).detach()
    out = []
    for layer in range(model.cfg.n_layers):
        name = get_act_name("z", layer)
        delta = clean_cache[name] - cache[name].detach()
        out.append(torch.einsum("bphd,bphd->ph", delta, grads[name]))
    return torch.stack(out) / span
''',
    "impl_faithfulness": '''
def faithfulness(model: HookedTransformer, graph: Graph, mask: Bool[Tensor, "n_edges"], clean: Int[Tensor, "batch pos"],
                 corrupted: Int[Tensor, "batch pos"], io: Int[Tensor, "batch"], s: Int[Tensor, "batch"],
                 ablation: str = "resample") -> float:
    with torch.no_grad():
        ablated = ablated_senders(model, graph, corrupted, ablation)
        lds = [float(logit_diff(run_with_edges(model, graph, m, clean, ablated), io, s).double().mean())
               for m in (mask, torch.ones_like(mask), torch.zeros_like(mask))]
    circuit, full, empty = lds
    return (circuit - empty) / (full - empty)
''',
    "impl_edge_attribution_patching": '''
def edge_attribution_patching(model: HookedTransformer, graph: Graph, clean: Int[Tensor, "batch pos"],
                              corrupted: Int[Tensor, "batch pos"], io: Int[Tensor, "batch"],
                              s: Int[Tensor, "batch"]) -> Float[Tensor, "n_edges"]:
    grads = {}

    def save_grad(grad, hook):
        grads[hook.name] = grad.detach()

    with torch.no_grad():
        corrupted_logits, corrupted_cache = model.run_with_cache(corrupted)
    names = sorted({graph.receiver_hook(n, i)[0] for n, i in graph.receivers()})
    with torch.enable_grad():
        for name in names:
            model.add_hook(name, save_grad, "bwd")
        try:
            logits, clean_cache = model.run_with_cache(clean)
            ld_clean = logit_diff(logits, io, s).mean()
            ld_clean.backward()
        finally:
            model.reset_hooks()
            model.zero_grad(set_to_none=True)
    span = float(ld_clean - logit_diff(corrupted_logits, io, s).mean())
    out = torch.zeros(len(graph))
    for i, edge in enumerate(graph.edges):
        hook, head = graph.sender_hook(edge.sender)
        delta = corrupted_cache[hook] - clean_cache[hook].detach()
        if head is not None:
            delta = delta[:, :, head]
        rname, rhead = graph.receiver_hook(edge.receiver, edge.input)
        grad = grads[rname] if rhead is None else grads[rname][:, :, rhead]
        out[i] = float((delta.double() * grad.double()).sum()) / span
    return out
''',
    "impl_acdc": '''
def acdc(model: HookedTransformer, graph: Graph, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
         io: Int[Tensor, "batch"], s: Int[Tensor, "batch"], threshold: float) -> Bool[Tensor, "n_edges"]:
    order = [i for node, input in graph.receivers()[::-1] for i in graph.incoming(node, input)[::-1]]
    keep = [True] * len(graph)
    with torch.no_grad():
        ablated = ablated_senders(model, graph, corrupted)

        def metric(kept):
            return float(logit_diff(run_with_edges(model, graph, torch.tensor(kept), clean, ablated), io, s).mean())

        full, empty = metric(keep), metric([False] * len(graph))
        previous = full
        for i in order:
            keep[i] = False
            value = metric(keep)
            if abs(value - previous) / abs(full - empty) < threshold:
                previous = value
            else:
                keep[i] = True
    return torch.tensor(keep)
''',
    "impl_completeness_gap": '''
def completeness_gap(model: HookedTransformer, graph: Graph, mask: Bool[Tensor, "n_edges"], knockout: list[str],
                     clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
                     io: Int[Tensor, "batch"], s: Int[Tensor, "batch"]) -> float:
    gone = set(knockout)
    keep_circuit = torch.tensor([bool(m) and e.sender not in gone and e.receiver not in gone for m, e in zip(mask, graph.edges)])
    keep_model = torch.tensor([e.sender not in gone and e.receiver not in gone for e in graph.edges])
    with torch.no_grad():
        ablated = ablated_senders(model, graph, corrupted)
        ld = lambda m: float(logit_diff(run_with_edges(model, graph, m, clean, ablated), io, s).mean())
        full, empty = ld(graph.mask()), ld(~graph.mask())
    return abs(ld(keep_circuit) - ld(keep_model)) / abs(full - empty)
''',
    "impl_minimality": '''
def minimality(model: HookedTransformer, graph: Graph, mask: Bool[Tensor, "n_edges"], clean: Int[Tensor, "batch pos"],
               corrupted: Int[Tensor, "batch pos"], io: Int[Tensor, "batch"], s: Int[Tensor, "batch"]) -> Float[Tensor, "n_senders"]:
    with torch.no_grad():
        ablated = ablated_senders(model, graph, corrupted)
        ld = lambda m: logit_diff(run_with_edges(model, graph, m, clean, ablated), io, s).double().mean()
        span = ld(graph.mask()) - ld(~graph.mask())
        base = ld(mask)
        in_circuit = {graph.edges[i].sender for i in mask.nonzero().flatten().tolist()}
        values = []
        for node in graph.senders:
            if node in in_circuit:
                values.append(float((base - ld(mask & ~graph.node_edges([node]))) / span))
            else:
                values.append(float("nan"))
    return torch.tensor(values, dtype=torch.float32)
''',
}
