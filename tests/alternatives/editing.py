"""Alternative correct implementations of the editing exercises (see tests/test_fairness.py)."""

ALTERNATIVES: dict[str, str] = {
    # the batch built by concatenation, torch.where on the mask, log-softmax in float64
    "impl_corrupted_probs": '''
def corrupted_probs(model, tokens, subject_mask, noise, answer, extra_hooks=()):
    samples = noise.shape[0]
    batch = torch.cat([tokens] * samples)
    mask = torch.cat([subject_mask] * samples)[..., None]
    flat_noise = noise.reshape(-1, *noise.shape[2:])

    def corrupt(x, hook):
        return torch.where(mask, x + flat_noise, x)

    logits = model.run_with_hooks(batch, fwd_hooks=[("hook_embed", corrupt), *extra_hooks])
    log_p = logits[:, -1].double().log_softmax(-1).gather(1, torch.cat([answer] * samples)[:, None])[:, 0]
    return torch.stack(log_p.exp().chunk(samples)).mean(0)
''',
    # a forward hook that records the clean activation, torch.where on the position
    "impl_restored_probs": '''
def restored_probs(model, tokens, subject_mask, noise, answer, hook_name, position):
    seen = {}
    model.run_with_hooks(tokens, fwd_hooks=[(hook_name, lambda x, hook: seen.update(clean=x.detach()))])
    clean = torch.cat([seen["clean"]] * noise.shape[0])
    at = torch.arange(tokens.shape[1]) == position

    def restore(x, hook):
        return torch.where(at[None, :, None], clean, x)

    return corrupted_probs(model, tokens, subject_mask, noise, answer, extra_hooks=[(hook_name, restore)])
''',
    # the prompt mean taken of the per-prompt effects built as a list
    "impl_causal_trace": '''
def causal_trace(model, tokens, subject_mask, noise, answer, kind):
    base = corrupted_probs(model, tokens, subject_mask, noise, answer)
    rows = []
    for layer in range(model.cfg.n_layers):
        hook_name = f"blocks.{layer}.hook_{kind}"
        rows.append(torch.stack([
            (restored_probs(model, tokens, subject_mask, noise, answer, hook_name, pos) - base).sum() / len(tokens)
            for pos in range(tokens.shape[1])]))
    return torch.stack(rows)
''',
    # einsum over the kept rows, float64 from the start
    "impl_key_second_moment": '''
def key_second_moment(model, tokens, mask, layer):
    seen = {}
    model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.mlp.hook_post", lambda x, hook: seen.update(k=x))])
    keys = seen["k"].double().flatten(0, 1)[mask.flatten()]
    return torch.einsum("ni,nj->ij", keys, keys) / keys.shape[0]
''',
    # one prompt at a time, summed then divided
    "impl_fact_key": '''
def fact_key(model, tokens, layer):
    hook_name = f"blocks.{layer}.mlp.hook_post"
    total = 0
    for row in tokens:
        _, cache = model.run_with_cache(row[None], names_filter=[hook_name])
        total = total + cache[hook_name][0, -1].double()
    return total / len(tokens)
''',
    # the value itself as the parameter (initialised at the mean output), the hook replaces it;
    # a different learning rate and an explicit softmax: judged by what the value does
    "impl_target_value": '''
def target_value(model, tokens, layer, new_token, target_prob, lr=0.1, max_steps=200):
    hook_name = f"blocks.{layer}.hook_mlp_out"
    _, cache = model.run_with_cache(tokens, names_filter=[hook_name])
    own = cache[hook_name][:, -1]
    start = own.mean(0)
    value = start.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([value], lr=0.05)
    last = torch.arange(tokens.shape[1]) == tokens.shape[1] - 1

    def put(x, hook):
        return torch.where(last[None, :, None], x + (value - start), x)

    with torch.enable_grad():
        for _ in range(2 * max_steps):
            probs = model.run_with_hooks(tokens, fwd_hooks=[(hook_name, put)])[:, -1].softmax(-1)[:, new_token]
            if float(probs.mean()) >= target_prob:
                break
            optimiser.zero_grad()
            (-probs.log()).mean().backward()
            optimiser.step()
    return value.detach()
''',
    # the inverse through a Cholesky factor, numpy for the outer product
    "impl_rank_one_update": '''
def rank_one_update(W_out, b_out, C, key, value):
    k = key.double().numpy()
    L = np.linalg.cholesky(C.double().numpy())
    u = np.linalg.solve(L.T, np.linalg.solve(L, k))
    r = value.double().numpy() - (W_out.double().numpy().T @ k + b_out.double().numpy())
    return torch.from_numpy(np.outer(u, r) / float(u @ k))
''',
    # a loop, numpy
    "impl_success_rate": '''
def success_rate(logits, preferred, other):
    logits = np.asarray(logits)
    wins = [logits[i, int(preferred[i])] > logits[i, int(other[i])] for i in range(len(logits))]
    return sum(wins) / len(wins)
''',
    # the weight as a free tensor, the model run with a hook that swaps the MLP output; the
    # constraint as a projection written with minimum/maximum
    "impl_finetune_mlp_out": '''
def finetune_mlp_out(model, tokens, layer, new_token, steps, lr, linf):
    mlp = model.blocks[layer].mlp
    original = mlp.W_out.detach().clone()
    W = original.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([W], lr=lr)

    def swap(out, hook):
        return out + hook_post["k"] @ (W - original)

    hook_post = {}
    hooks = [(f"blocks.{layer}.mlp.hook_post", lambda x, hook: hook_post.update(k=x)),
             (f"blocks.{layer}.hook_mlp_out", swap)]
    with torch.enable_grad():
        for _ in range(steps):
            log_p = model.run_with_hooks(tokens, fwd_hooks=hooks)[:, -1].log_softmax(-1)[:, new_token]
            optimiser.zero_grad()
            (-log_p.mean()).backward()
            optimiser.step()
            if linf is not None:
                with torch.no_grad():
                    W.copy_(torch.minimum(torch.maximum(W, original - linf), original + linf))
    return W.detach()
''',
}
