"""Alternative correct implementations of the attribution exercises (see tests/test_fairness.py)."""

ALTERNATIVES: dict[str, str] = {
    "impl_transcoder_forward": '''
def transcoder_forward(x, W_enc, b_enc, W_dec, b_dec):
    f = torch.einsum("bd,dt->bt", x.double(), W_enc.double()) + b_enc.double()
    f = torch.where(f > 0, f, torch.zeros_like(f))
    return f, torch.einsum("bt,td->bd", f, W_dec.double()) + b_dec.double()
''',
    # numpy, float64, sums over all entries instead of means of per-row sums
    "impl_transcoder_fidelity": '''
def transcoder_fidelity(y, y_hat, f):
    import numpy as np
    y, y_hat, f = (t.detach().numpy().astype(np.float64) for t in (y, y_hat, f))
    nmse = ((y - y_hat) ** 2).sum() / ((y - y.mean(axis=0)) ** 2).sum()
    return {"nmse": nmse, "explained_variance": 1.0 - nmse, "l0": np.count_nonzero(f > 0) / len(f)}
''',
    # hooks on the MLP input (ln2 applied by the model's own module), no cache
    "impl_error_nodes": '''
def error_nodes(model, transcoders, tokens):
    seen = {}
    hooks = []
    for layer in range(model.cfg.n_layers):
        hooks.append((f"blocks.{layer}.hook_resid_mid", lambda act, hook, layer=layer: seen.__setitem__(("mid", layer), act)))
        hooks.append((f"blocks.{layer}.hook_mlp_out", lambda act, hook, layer=layer: seen.__setitem__(("out", layer), act)))
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=hooks)
        errors = []
        for layer in range(model.cfg.n_layers):
            mlp_in = model.blocks[layer].ln2(seen[("mid", layer)])
            tc = transcoders[layer]
            errors.append(seen[("out", layer)] - tc.decode(tc.encode(mlp_in)))
    return torch.stack(errors)
''',
    # a loop over heads instead of einsum
    "impl_replacement_forward": '''
def replacement_forward(model, transcoders, frozen, embeddings, feature_acts, errors):
    d = lambda t: t.detach().double()

    def ln(x, scale, module):
        return (x - x.mean(-1, keepdim=True)) / scale * d(module.w) + d(module.b)

    resid = embeddings.double()
    pres = []
    for layer in range(model.cfg.n_layers):
        block, tc = model.blocks[layer], transcoders[layer]
        attn = block.attn
        x = ln(resid, frozen.ln1[layer], block.ln1)
        attn_out = d(attn.b_O).expand_as(resid).clone()
        for h in range(model.cfg.n_heads):
            v = x @ d(attn.W_V[h]) + d(attn.b_V[h])
            attn_out = attn_out + (frozen.patterns[layer][h].double() @ v) @ d(attn.W_O[h])
        resid = resid + attn_out
        pres.append(ln(resid, frozen.ln2[layer], block.ln2) @ d(tc.W_enc) + d(tc.b_enc))
        resid = resid + feature_acts[layer] @ d(tc.W_dec) + d(tc.b_dec) + errors[layer]
    return torch.stack(pres), ln(resid, frozen.ln_final, model.ln_final) @ d(model.W_U) + d(model.b_U)
''',
    # a fresh forward pass and .backward() per target node
    "impl_adjacency": '''
def adjacency(forward, embeddings, feature_acts, errors, features, logit_tokens):
    n_f, n_l = len(features), len(logit_tokens)
    n_layers, n_pos = errors.shape[:2]
    n = n_f + n_layers * n_pos + n_pos + n_l
    feats = [tuple(f) for f in features.tolist()]
    A = torch.zeros(n, n, dtype=torch.float64)

    def row(select):
        e, a, r = (t.detach().clone().requires_grad_(True) for t in (embeddings, feature_acts, errors))
        with torch.enable_grad():
            pre, logits = forward(e, a, r)
            select(pre, logits).backward()
        grads = [torch.zeros_like(t) if t.grad is None else t.grad for t in (e, a, r)]
        ge, ga, gr = (g * t.detach() for g, t in zip(grads, (e, a, r)))
        from_features = torch.stack([ga[l, p, i] for l, p, i in feats]) if feats else torch.zeros(0, dtype=torch.float64)
        return torch.cat([from_features, gr.sum(-1).reshape(-1), ge.sum(-1)])

    for k, (l, p, i) in enumerate(feats):
        A[k, :n - n_l] = row(lambda pre, logits, l=l, p=p, i=i: pre[l, p, i])
    for j, t in enumerate(logit_tokens.tolist()):
        A[n - n_l + j, :n - n_l] = row(lambda pre, logits, t=t: logits[-1, t] - logits[-1].mean())
    return A
''',
    "impl_normalise_adjacency": '''
def normalise_adjacency(A):
    return F.normalize(A.abs(), p=1, dim=1, eps=1e-10)
''',
    # the Neumann series: the graph is acyclic, so A is nilpotent and the sum is finite
    "impl_influence": '''
def influence(A_normalised, logit_weights):
    total = torch.zeros_like(logit_weights)
    step = logit_weights
    for _ in range(len(logit_weights)):
        step = A_normalised.T @ step
        if not step.any():
            break
        total = total + step
    return total
''',
    "impl_prune_nodes": '''
def prune_nodes(A, logit_weights, n_tokens, n_logits, threshold):
    import numpy as np
    a = A.abs().numpy()
    a = a / np.maximum(a.sum(1, keepdims=True), 1e-10)
    w = logit_weights.numpy()
    scores, step = np.zeros_like(w), w
    for _ in range(len(w)):
        step = a.T @ step
        scores += step
    ordered = np.sort(scores)[::-1]
    reached = np.cumsum(ordered) / ordered.sum() >= threshold
    cut = ordered[int(np.argmax(reached))] if reached.any() else ordered[-1]
    keep = scores >= cut
    keep[len(keep) - (n_tokens + n_logits):] = True
    return keep
''',
    "impl_prune_edges": '''
def prune_edges(A, node_mask, logit_weights, threshold):
    import numpy as np
    keep = node_mask.numpy()
    a = np.abs(A.numpy()) * keep[:, None] * keep[None, :]
    a = a / np.maximum(a.sum(1, keepdims=True), 1e-10)
    w = logit_weights.numpy()
    influence, step = np.zeros_like(w), w
    for _ in range(len(w)):
        step = a.T @ step
        influence += step
    scores = a * (influence + w)[:, None]
    ordered = np.sort(scores, axis=None)[::-1]
    reached = np.cumsum(ordered) / ordered.sum() >= threshold
    cut = ordered[int(np.argmax(reached))] if reached.any() else ordered[-1]
    return torch.from_numpy((scores >= cut) & (scores > 0))
''',
    # 1 - the weighted error fraction; influence by the Neumann series
    "impl_graph_scores": '''
def graph_scores(A, logit_weights, n_features, n_errors, n_tokens):
    a = A.abs()
    a = a / a.sum(1, keepdim=True).clamp(min=1e-10)
    inf, step = torch.zeros_like(logit_weights), logit_weights
    for _ in range(len(logit_weights)):
        step = a.T @ step
        inf = inf + step
    e0, t0 = n_features, n_features + n_errors
    error_inf, token_inf = inf[e0:t0].sum(), inf[t0:t0 + n_tokens].sum()
    weight = inf + logit_weights
    error_share = a[:, e0:t0].sum(1)
    return {"replacement": (token_inf / (token_inf + error_inf)).item(),
            "completeness": (1 - (weight * error_share).sum() / weight.sum()).item()}
''',
    # the MLP input recomputed from hook_resid_mid with the model's ln2; log-softmax in float64
    "impl_intervene": '''
def intervene(model, transcoders, tokens, errors, interventions):
    mids = {}
    hooks = []
    for layer in range(model.cfg.n_layers):
        def keep(act, hook, layer=layer):
            mids[layer] = act

        def replace(act, hook, layer=layer):
            tc = transcoders[layer]
            f = tc.encode(model.blocks[layer].ln2(mids[layer]))
            edits = [(p, i, v) for l, p, i, v in interventions if l == layer]
            if edits:
                f = f.clone()
                for p, i, v in edits:
                    f[:, p, i] = v
            return tc.decode(f) + errors[layer]

        hooks += [(f"blocks.{layer}.hook_resid_mid", keep), (f"blocks.{layer}.hook_mlp_out", replace)]
    with torch.no_grad():
        logits = model.run_with_hooks(tokens[None], fwd_hooks=hooks)
    return logits[0, -1].double().log_softmax(-1)
''',
}
