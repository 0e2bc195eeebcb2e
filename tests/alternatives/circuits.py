"""Alternative correct implementations of the circuits exercises (see tests/test_fairness.py)."""

ALTERNATIVES: dict[str, str] = {
    # cross_entropy on the shifted logits, in float64
    "impl_per_token_loss": '''
def per_token_loss(logits, tokens):
    import torch.nn.functional as F
    shifted = logits[:, :-1].double()
    return F.cross_entropy(shifted.transpose(1, 2), tokens[:, 1:], reduction="none")
''',
    # explicit loop over the queries of the repeated half
    "impl_induction_score": '''
def induction_score(pattern):
    seq_len = (pattern.shape[-1] - 1) // 2
    scores = [pattern[:, :, q, q - seq_len + 1] for q in range(seq_len + 1, 2 * seq_len + 1)]
    return torch.stack(scores, dim=-1).mean(dim=(0, -1))
''',
    # hooks that build a new tensor (no in-place edit), float64 result
    "impl_ablation_loss_increase": '''
def ablation_loss_increase(model, tokens, ablation):
    clean = model(tokens, return_type="loss").item()
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    out = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    for layer in range(n_layers):
        for head in range(n_heads):
            keep = torch.ones(n_heads)
            keep[head] = 0.0

            def hook(z, hook, keep=keep, head=head):
                replacement = torch.zeros_like(z) if ablation == "zero" else z.mean(0, keepdim=True).expand_as(z)
                return z * keep[:, None] + replacement * (1 - keep)[:, None]

            loss = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook)])
            out[layer, head] = loss.item() - clean
    return out
''',
    # advanced indexing instead of gather
    "impl_logit_diff": '''
def logit_diff(logits, correct, wrong):
    rows = torch.arange(logits.shape[0])
    return logits[rows, -1, correct] - logits[rows, -1, wrong]
''',
    # a full cache, logit differences by indexing, float64 normalisation
    "impl_head_patching_effect": '''
def head_patching_effect(model, clean, corrupted, correct, wrong):
    rows = torch.arange(len(correct))

    def ld(logits):
        return (logits[rows, -1, correct] - logits[rows, -1, wrong]).double().mean()

    clean_logits, cache = model.run_with_cache(clean)
    clean_ld, corrupted_ld = ld(clean_logits), ld(model(corrupted))
    effect = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, dtype=torch.float64)
    for layer in range(model.cfg.n_layers):
        name = f"blocks.{layer}.attn.hook_z"
        for head in range(model.cfg.n_heads):
            def hook(z, hook, head=head):
                z = z.clone()
                z[:, :, head] = cache[name][:, :, head]
                return z

            patched = ld(model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)]))
            effect[layer, head] = (patched - corrupted_ld) / (clean_ld - corrupted_ld)
    return effect
''',
    # the dense matrix (a correct answer: the text asks for the circuit, the factored form is a convenience)
    "impl_full_ov_circuit": '''
def full_ov_circuit(model, layer, head):
    return model.W_E @ (model.W_V[layer, head] @ model.W_O[layer, head]) @ model.W_U
''',
    "impl_pos_qk_circuit": '''
def pos_qk_circuit(model, layer, head):
    W_QK = model.W_Q[layer, head] @ model.W_K[layer, head].T
    return model.W_pos @ W_QK @ model.W_pos.T
''',
    # dense matrices and Frobenius norms in float64
    "impl_composition_score": '''
def composition_score(W_A, W_B):
    A, B = W_A.AB.double(), W_B.AB.double()
    return torch.linalg.matrix_norm(A @ B) / (torch.linalg.matrix_norm(A) * torch.linalg.matrix_norm(B))
''',
    # dense d_model x d_model circuits from the weights, without FactoredMatrix
    "impl_composition_scores": '''
def composition_scores(model, kind):
    n = model.cfg.n_heads
    W_OV0 = [(model.W_V[0, h] @ model.W_O[0, h]).double() for h in range(n)]
    W_QK1 = [(model.W_Q[1, h] @ model.W_K[1, h].T).double() for h in range(n)]
    W_OV1 = [(model.W_V[1, h] @ model.W_O[1, h]).double() for h in range(n)]
    readers = {"Q": W_QK1, "K": [m.T for m in W_QK1], "V": W_OV1}[kind]
    scores = torch.zeros(n, n, dtype=torch.float64)
    for h0 in range(n):
        for h1 in range(n):
            product = W_OV0[h0] @ readers[h1]
            scores[h0, h1] = product.norm() / (W_OV0[h0].norm() * readers[h1].norm())
    return scores
''',

    # new exercises (science)
    "impl_attention_score": '''
def attention_score(pattern, target):
    # explicit loops over queries, float64 accumulation, numpy mask
    import numpy as np
    mask = np.asarray(target, dtype=bool)
    total = torch.zeros(pattern.shape[1], dtype=torch.float64)
    count = 0
    for q in range(1, mask.shape[0]):
        keys = np.flatnonzero(mask[q])
        if len(keys) == 0:
            continue
        total += pattern[:, :, q, torch.from_numpy(keys)].double().sum(dim=-1).mean(dim=0)
        count += 1
    return (total / count).float()
''',
    "impl_find_offset_heads": '''
def find_offset_heads(model):
    # content-free inputs of mid length, a relative rule (the best offset vs the runner-up) instead of
    # a fixed threshold, queries q >= 8 only (no row is short of candidates)
    pos = 40
    tokens = torch.randint(1, model.cfg.d_vocab, (8, pos), generator=torch.Generator().manual_seed(123))
    found = []
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    for layer in range(model.cfg.n_layers):
        pattern = cache["pattern", layer][:, :, 8:, :]  # queries 8..pos-1
        for head in range(model.cfg.n_heads):
            mean_by_offset = [pattern[:, head].diagonal(offset=8 - k, dim1=-2, dim2=-1).mean().item() for k in range(0, 5)]
            bos = pattern[:, head, :, 0].mean().item()
            best = max(range(1, 5), key=lambda k: mean_by_offset[k])
            others = [v for k, v in enumerate(mean_by_offset) if k != best] + [bos]
            if mean_by_offset[best] > 4 * max(others) and mean_by_offset[best] > 0.15:
                found.append((layer, head, best))
    return found
''',
    "impl_head_position_patching_effect": '''
def head_position_patching_effect(model, clean, corrupted, correct, wrong):
    # one hook per layer with a mutable target cell, logits read by explicit indexing, float64 ratio
    rows = torch.arange(clean.shape[0])

    def ld(logits):
        return (logits[rows, -1, correct] - logits[rows, -1, wrong]).double().mean()

    clean_cache = {}
    def save(z, hook):
        clean_cache[hook.name] = z.clone()
    clean_ld = ld(model.run_with_hooks(clean, fwd_hooks=[(lambda name: name.endswith("hook_z"), save)]))
    corrupted_ld = ld(model(corrupted))
    n_pos = clean.shape[1]
    effect = torch.empty(model.cfg.n_layers, model.cfg.n_heads, n_pos)
    for layer in range(model.cfg.n_layers):
        name = f"blocks.{layer}.attn.hook_z"
        for head in range(model.cfg.n_heads):
            for pos in range(n_pos):
                def patch(z, hook):
                    out = z.clone()
                    out[:, pos, head, :] = clean_cache[name][:, pos, head, :]
                    return out
                patched = ld(model.run_with_hooks(corrupted, fwd_hooks=[(name, patch)]))
                effect[layer, head, pos] = float((patched - corrupted_ld) / (clean_ld - corrupted_ld))
    return effect
''',
    "impl_head_logit_attribution": '''
def head_logit_attribution(model, tokens, correct, wrong):
    # per prompt and per head with explicit matrix products, float64, then the batch mean
    _, cache = model.run_with_cache(tokens)
    out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, dtype=torch.float64)
    for b in range(tokens.shape[0]):
        direction = (model.W_U[:, correct[b]] - model.W_U[:, wrong[b]]).double()
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads):
                written = cache["z", layer][b, -1, head].double() @ model.W_O[layer, head].double()
                out[layer, head] += written @ direction
    return (out / tokens.shape[0]).float()
''',
}
