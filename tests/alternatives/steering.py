"""Alternative correct implementations of the steering exercises (see tests/test_fairness.py)."""

ALTERNATIVES: dict[str, str] = {
    # forward hooks that record the activation, one prompt at a time, float64 means
    "impl_contrastive_vector": '''
def contrastive_vector(model, positive, negative, positive_at, negative_at, hook_name):
    def mean_activation(tokens, at):
        rows = []
        for i in range(len(tokens)):
            seen = {}
            model.run_with_hooks(tokens[i:i + 1], fwd_hooks=[(hook_name, lambda act, hook: seen.update(a=act))])
            rows.append(seen["a"][0, int(at[i])].double())
        return torch.stack(rows).mean(0)

    return mean_activation(positive, positive_at) - mean_activation(negative, negative_at)
''',
    # torch.where on the positions instead of a multiplicative mask
    "impl_steered_logits": '''
def steered_logits(model, tokens, vector, hook_name, coeff, positions):
    def hook(activation, hook):
        return torch.where(positions[..., None], activation + coeff * vector, activation)

    return model.run_with_hooks(tokens, fwd_hooks=[(hook_name, hook)])
''',
    # the prompt activations from a hook, the addition by concatenation
    "impl_actadd_logits": '''
def actadd_logits(model, tokens, plus, minus, hook_name, coeff):
    seen = {}

    def record(key):
        return lambda act, hook: seen.update({key: act[0]})

    model.run_with_hooks(plus[None], fwd_hooks=[(hook_name, record("plus"))])
    model.run_with_hooks(minus[None], fwd_hooks=[(hook_name, record("minus"))])
    steer = coeff * (seen["plus"] - seen["minus"])
    k = len(steer)

    def add(activation, hook):
        return torch.cat([activation[:, :k] + steer, activation[:, k:]], dim=1)

    return model.run_with_hooks(tokens, fwd_hooks=[(hook_name, add)])
''',
    # a loop over prompts, log-softmax in float64
    "impl_target_effect": '''
def target_effect(clean_logits, steered_logits, read_at, target, other):
    prob, diff = [], []
    for i in range(len(read_at)):
        c = clean_logits[i, int(read_at[i])].double()
        s = steered_logits[i, int(read_at[i])].double()
        t, o = int(target[i]), int(other[i])
        prob.append(s.log_softmax(-1)[t].exp() - c.log_softmax(-1)[t].exp())
        diff.append((s[t] - s[o]) - (c[t] - c[o]))
    return {"prob_change": torch.stack(prob), "logit_diff_change": torch.stack(diff)}
''',
    # torch's kl_div on the selected positions, float64
    "impl_kl_from_unsteered": '''
def kl_from_unsteered(clean_logits, steered_logits, mask):
    log_p = clean_logits[mask].double().log_softmax(-1)
    log_q = steered_logits[mask].double().log_softmax(-1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
''',
    # the projection matrix I - r r^T / |r|^2
    "impl_project_out": '''
def project_out(x, direction):
    r = direction.double()
    projector = torch.eye(len(r), dtype=torch.float64) - torch.outer(r, r) / (r @ r)
    return (x.double() @ projector).to(x.dtype)
''',
    # one hook function for every residual point, the component subtracted with einsum
    "impl_ablated_logits": '''
def ablated_logits(model, tokens, direction):
    unit = direction / torch.linalg.vector_norm(direction)

    def remove(activation, hook):
        return activation - torch.einsum("...d,d->...", activation, unit)[..., None] * unit

    names = [f"blocks.{layer}.hook_resid_{kind}" for layer in range(model.cfg.n_layers) for kind in ("pre", "mid", "post")]
    return model.run_with_hooks(tokens, fwd_hooks=[(name, remove) for name in names])
''',
    "impl_sae_feature_vector": '''
def sae_feature_vector(W_dec, feature_acts, feature):
    acts = feature_acts[:, feature].double()
    active = acts > 0
    return (acts.sum() / active.sum()) * W_dec[feature].double()
''',
    # the loop written out with its own helpers (no call to the earlier exercises)
    "impl_steering_sweep": '''
def steering_sweep(model, vectors, hook_names, coeffs, prompts, read_at, target, neutral, neutral_mask):
    def run(tokens, hook_name=None, vector=None, coeff=0.0):
        if hook_name is None:
            return model(tokens)
        after_first = torch.zeros(tokens.shape, dtype=torch.bool)
        after_first[:, 1:] = True
        hook = lambda act, hook: act + coeff * after_first[..., None] * vector
        return model.run_with_hooks(tokens, fwd_hooks=[(hook_name, hook)])

    def target_prob(logits):
        rows = torch.arange(len(read_at))
        return logits[rows, read_at].double().softmax(-1)[rows, target]

    def ce(logits):
        log_probs = logits[:, :-1].double().log_softmax(-1)
        nll = -log_probs.gather(-1, neutral[:, 1:, None])[..., 0]
        return nll[neutral_mask[:, 1:]].mean()

    base_prompts, base_neutral = run(prompts), run(neutral)
    base_p = base_prompts[:, :].double()
    log_p = base_neutral.double().log_softmax(-1)
    out = {key: torch.zeros(len(hook_names), len(coeffs), dtype=torch.float64) for key in ("effect", "kl", "ce")}
    for i, hook_name in enumerate(hook_names):
        for j, coeff in enumerate(coeffs):
            steered = run(prompts, hook_name, vectors[i], coeff)
            out["effect"][i, j] = (target_prob(steered) - target_prob(base_p)).mean()
            steered_neutral = run(neutral, hook_name, vectors[i], coeff)
            log_q = steered_neutral.double().log_softmax(-1)
            out["kl"][i, j] = (log_p.exp() * (log_p - log_q)).sum(-1)[neutral_mask].mean()
            out["ce"][i, j] = ce(steered_neutral) - ce(base_neutral)
    return out
''',
    # a plain search over the cells
    "impl_best_under_budget": '''
def best_under_budget(effect, side_effect, budget):
    best, best_cell = None, (-1, -1)
    for i in range(effect.shape[0]):
        for j in range(effect.shape[1]):
            if side_effect[i, j] <= budget and (best is None or effect[i, j] > best):
                best, best_cell = effect[i, j], (i, j)
    return best_cell
''',
}
