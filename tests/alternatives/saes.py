"""Alternative correct implementations of the saes exercises (see tests/test_fairness.py)."""

ALTERNATIVES: dict[str, str] = {
    # Bernoulli masks and float64 magnitudes (the check judges the distribution, not the draws)
    "impl_sparse_features": '''
def sparse_features(batch, n_features, feature_probability, generator):
    keep = torch.bernoulli(torch.full((batch, n_features), float(feature_probability)), generator=generator)
    return keep.double() * torch.rand(batch, n_features, generator=generator, dtype=torch.float64)
''',
    "impl_toy_forward": '''
def toy_forward(W, b, x):
    hidden = torch.einsum("hf,bf->bh", W.double(), x.double())
    return torch.clamp(torch.einsum("hf,bh->bf", W.double(), hidden) + b.double(), min=0)
''',
    # an explicit loop over the batch in float64
    "impl_importance_loss": '''
def importance_loss(x, x_hat, importance):
    total = torch.zeros((), dtype=torch.float64)
    for row, row_hat in zip(x.double(), x_hat.double()):
        total = total + (importance.double() * (row - row_hat) ** 2).sum()
    return total / x.shape[0]
''',
    # a module, Xavier-normal written out (the text fixes the initialisation), the loop written out
    "impl_train_toy_model": '''
def train_toy_model(n_features, d_hidden, feature_probability, importance, steps, generator):
    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            std = (2 / (n_features + d_hidden)) ** 0.5
            self.W = torch.nn.Parameter(torch.randn(d_hidden, n_features, generator=generator) * std)
            self.b = torch.nn.Parameter(torch.zeros(n_features))

        def forward(self, x):
            return torch.relu((x @ self.W.T) @ self.W + self.b)

    toy = Toy()
    optimiser = torch.optim.Adam(toy.parameters(), lr=1e-2)
    with torch.enable_grad():
        for _ in range(steps):
            x = torch.rand(1024, n_features, generator=generator) * (torch.rand(1024, n_features, generator=generator) < feature_probability)
            loss = (importance * (x - toy(x)) ** 2).sum(-1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return toy.W.detach(), toy.b.detach()
''',
    # numpy, one feature at a time
    "impl_feature_dimensionality": '''
def feature_dimensionality(W):
    import numpy as np
    w = W.detach().numpy().astype(np.float64)
    out = np.zeros(w.shape[1])
    for i in range(w.shape[1]):
        norm = np.linalg.norm(w[:, i])
        unit = w[:, i] / max(norm, 1e-8)
        out[i] = norm**2 / max(float(((unit @ w) ** 2).sum()), 1e-8)
    return out
''',
    "impl_sae_forward": '''
def sae_forward(x, W_enc, b_enc, W_dec, b_dec):
    centred = x.double() - b_dec.double()
    f = torch.clamp(torch.einsum("bi,is->bs", centred, W_enc.double()) + b_enc.double(), min=0)
    return f, torch.einsum("bs,si->bi", f, W_dec.double()) + b_dec.double()
''',
    "impl_sae_loss": '''
def sae_loss(x, W_enc, b_enc, W_dec, b_dec, l1_coefficient):
    x, W_enc, b_enc, W_dec, b_dec = (t.double() for t in (x, W_enc, b_enc, W_dec, b_dec))
    f = torch.relu((x - b_dec) @ W_enc + b_enc)
    x_hat = f @ W_dec + b_dec
    decoder_norms = (W_dec**2).sum(-1).sqrt()
    per_example = ((x - x_hat) ** 2).sum(-1) + l1_coefficient * (f @ decoder_norms)
    return per_example.sum() / len(x)
''',
    # the k-th largest value as a threshold instead of scatter
    "impl_topk_activation": '''
def topk_activation(pre, k):
    kth = pre.sort(dim=-1, descending=True).values[..., k - 1:k]
    return torch.where(pre >= kth, pre.clamp(min=0), torch.zeros_like(pre))
''',
    # a module, independent encoder initialisation, the loss written out
    "impl_train_sae": '''
def train_sae(x, d_sae, l1_coefficient, steps, generator):
    d_in = x.shape[-1]
    directions = torch.randn(d_sae, d_in, generator=generator)
    directions = directions / directions.norm(dim=-1, keepdim=True)

    class SAE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.W_enc = torch.nn.Parameter(directions.T.clone())
            self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
            self.W_dec = torch.nn.Parameter(directions.clone())
            self.b_dec = torch.nn.Parameter(x.mean(0).clone())

        def forward(self, batch):
            f = torch.relu((batch - self.b_dec) @ self.W_enc + self.b_enc)
            return f, f @ self.W_dec + self.b_dec

    sae = SAE()
    optimiser = torch.optim.Adam(sae.parameters(), lr=3e-3)
    with torch.enable_grad():
        for _ in range(steps):
            batch = x[torch.randint(0, len(x), (256,), generator=generator)]
            f, x_hat = sae(batch)
            loss = ((batch - x_hat) ** 2).sum(-1).mean() + l1_coefficient * (f * sae.W_dec.norm(dim=-1)).sum(-1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return {name: p.detach() for name, p in sae.named_parameters()}
''',
    # the centred form (no cancellation), float64
    "impl_explained_variance": '''
def explained_variance(x, x_hat):
    x, x_hat = x.double(), x_hat.double()
    residual = ((x - x_hat) ** 2).sum()
    total = ((x - x.mean(dim=0, keepdim=True)) ** 2).sum()
    return 1 - residual / total
''',
    "impl_sparsity_stats": '''
def sparsity_stats(f):
    import numpy as np
    a = f.detach().numpy()
    return {"l0": np.count_nonzero(a, axis=1).mean(), "dead": torch.from_numpy((a == 0).all(axis=0))}
''',
    # log_softmax by hand, the mask as weights, float64
    "impl_ce_loss_recovered": '''
def ce_loss_recovered(model, sae, tokens, loss_mask, hook_name):
    def loss(logits):
        log_probs = logits[:, :-1].double().log_softmax(-1)
        nll = -log_probs.gather(-1, tokens[:, 1:, None])[..., 0]
        weights = loss_mask.double()
        return (nll * weights).sum() / weights.sum()

    with torch.no_grad():
        clean = loss(model(tokens))
        spliced = loss(model.run_with_hooks(tokens, fwd_hooks=[(hook_name, lambda act, hook: sae(act))]))
        zero = loss(model.run_with_hooks(tokens, fwd_hooks=[(hook_name, lambda act, hook: act * 0)]))
    return 1 - (spliced - clean) / (zero - clean)
''',
    # one dead feature at a time, in a loop
    "impl_resample_dead": '''
def resample_dead(W_enc, b_enc, W_dec, b_dec, dead, x):
    f = torch.relu((x - b_dec) @ W_enc + b_enc)
    error = ((x - (f @ W_dec + b_dec)) ** 2).sum(-1)
    worst = torch.sort(error, descending=True).indices.tolist()
    live_norm = torch.stack([W_enc[:, j].norm() for j in range(len(dead)) if not dead[j]]).mean()
    new = {"W_enc": W_enc.clone(), "b_enc": b_enc.clone(), "W_dec": W_dec.clone(), "b_dec": b_dec.clone()}
    dead_ids = [j for j in range(len(dead)) if dead[j]]
    for rank, j in enumerate(dead_ids):
        direction = x[worst[rank]] - b_dec
        direction = direction / direction.norm()
        new["W_dec"][j] = direction
        new["W_enc"][:, j] = 0.2 * live_norm * direction
        new["b_enc"][j] = 0.0
    return new
''',
    # numpy cosine similarities, the assignment as a minimisation of -similarity
    "impl_feature_recovery": '''
def feature_recovery(true_features, learned):
    import numpy as np
    t = true_features.double().numpy()
    l = learned.double().numpy()
    sims = (t / np.linalg.norm(t, axis=1, keepdims=True)) @ (l / np.linalg.norm(l, axis=1, keepdims=True)).T
    rows, cols = linear_sum_assignment(-sims)
    return {"mmcs": float(sims.max(axis=1).mean()), "matched": float(sims[rows, cols].mean())}
''',
    "impl_max_activating": '''
def max_activating(acts, k):
    import numpy as np
    a = acts.numpy()
    flat = np.argsort(-a, axis=None, kind="stable")[:k]
    docs, positions = np.unravel_index(flat, a.shape)
    return a[docs, positions], docs, positions
''',
    "impl_precision_recall": '''
def precision_recall(fired, truth):
    fired_f, truth_f = fired.double(), truth.double()
    hits = truth_f @ fired_f
    n_fired = fired_f.sum(0)
    precision = torch.where(n_fired > 0, hits / n_fired.clamp(min=1), torch.zeros_like(hits))
    return precision, hits / max(float(truth_f.sum()), 1.0)
''',
}
