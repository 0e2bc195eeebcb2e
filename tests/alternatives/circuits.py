"""Alternative correct implementations of the circuits exercises, written differently from the
reference (see tests/alternatives/__init__ or the shared fairness test for how they are used):
grade_id of the solution cell -> the complete replacement source of that cell."""

ALTERNATIVES: dict[str, str] = {
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
