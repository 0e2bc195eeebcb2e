"""Alternative correct implementations of every graded exercise of the probing assignment, written
differently from the master's solutions (loops, numpy and scipy, float64, other parametrisations),
so the checks are shown to accept every correct answer the text allows. Keys are the solution cells'
grade ids; values replace those cells' source."""
from __future__ import annotations

ALTERNATIVES: dict[str, str] = {
    "impl_probe_dataset": '''
def probe_dataset(acts, classes, is_test_doc):
    rows = {False: ([], []), True: ([], [])}
    for doc in range(acts.shape[0]):  # document by document, position by position
        for pos in range(acts.shape[1]):
            if int(classes[doc, pos]) >= 0:
                xs, ys = rows[bool(is_test_doc[doc])]
                xs.append(acts[doc, pos])
                ys.append(classes[doc, pos])
    def stack(xs, ys):
        if not xs:
            return acts.new_zeros(0, acts.shape[-1]), classes.new_zeros(0)
        return torch.stack(xs), torch.stack(ys)
    return (*stack(*rows[False]), *stack(*rows[True]))
''',
    "impl_fit_probe": '''
def fit_probe(X, y, n_classes, l2):
    from scipy.optimize import minimize

    Xn, yn = X.double().numpy(), y.numpy()
    n, d = Xn.shape
    onehot = np.eye(n_classes)[yn]

    def objective(theta):
        W, b = theta[:n_classes * d].reshape(n_classes, d), theta[n_classes * d:]
        z = Xn @ W.T + b
        z -= z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        loss = -(onehot * logp).sum() / n + l2 / 2 * (W ** 2).sum()
        residual = (np.exp(logp) - onehot) / n
        grad = np.concatenate([(residual.T @ Xn + l2 * W).ravel(), residual.sum(0)])
        return loss, grad

    result = minimize(objective, np.zeros(n_classes * (d + 1)), jac=True, method="L-BFGS-B",
                      options={"maxiter": 5000, "gtol": 1e-10, "ftol": 1e-14})
    W = torch.tensor(result.x[:n_classes * d].reshape(n_classes, d), dtype=torch.float32)
    return W, torch.tensor(result.x[n_classes * d:], dtype=torch.float32)
''',
    "impl_control_labels": '''
def control_labels(tokens, labels, n_classes, generator):
    counts = [int((labels == c).sum()) for c in range(n_classes)]
    cdf = torch.tensor(counts, dtype=torch.float64).cumsum(0) / sum(counts)
    assigned = {}
    out = torch.empty_like(tokens)
    for i, token in enumerate(tokens.tolist()):
        if token not in assigned:  # inverse-CDF draw, once per type
            u = torch.rand(1, generator=generator, dtype=torch.float64)
            assigned[token] = int((cdf <= u).sum().clamp(max=n_classes - 1))
        out[i] = assigned[token]
    return out
''',
    "impl_probe_scores": '''
def probe_scores(W, b, W_control, b_control, X, y, y_control):
    Xn = X.double().numpy()
    real = np.mean(np.argmax(Xn @ W.double().numpy().T + b.double().numpy(), axis=1) == y.numpy())
    control = np.mean(np.argmax(Xn @ W_control.double().numpy().T + b_control.double().numpy(), axis=1) == y_control.numpy())
    return {"accuracy": float(real), "control_accuracy": float(control), "selectivity": float(real - control)}
''',
    "impl_logit_lens": '''
def logit_lens(model, resid):
    centred = resid - resid.mean(-1, keepdim=True)
    normed = centred / torch.sqrt((centred ** 2).mean(-1, keepdim=True) + model.cfg.eps)
    normed = normed * model.ln_final.w + model.ln_final.b
    return torch.einsum("npd,dv->npv", normed, model.W_U) + model.b_U
''',
    "impl_lens_metrics": '''
def lens_metrics(lens_logits, final_logits, mask):
    per_position = F.kl_div(F.log_softmax(lens_logits.double(), -1), F.log_softmax(final_logits.double(), -1),
                            log_target=True, reduction="none").sum(-1)
    weights = mask.double()
    kl = (per_position * weights).sum() / weights.sum()
    top1 = ((lens_logits.argmax(-1) == final_logits.argmax(-1)).double() * weights).sum() / weights.sum()
    return {"kl": float(kl), "top1": float(top1)}
''',
    "impl_train_tuned_lens": '''
def train_tuned_lens(model, resid, final_logits, steps, lr):
    d = resid.shape[-1]
    delta = torch.zeros(d, d, requires_grad=True)  # the paper's parametrisation: h + h @ delta.T + bias
    bias = torch.zeros(d, requires_grad=True)
    target = F.log_softmax(final_logits, -1)
    opt = torch.optim.Adam([delta, bias], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            translated = resid + resid @ delta.T + bias
            logq = F.log_softmax(model.unembed(model.ln_final(translated[None]))[0], -1)
            loss = F.kl_div(logq, target, log_target=True, reduction="batchmean")
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (torch.eye(d) + delta).detach(), bias.detach()
''',
    "impl_leace_eraser": '''
def leace_eraser(X, y, n_classes):
    Xn = X.double().numpy()
    mean = Xn.mean(0)
    Xc = Xn - mean
    Z = np.eye(n_classes)[y.numpy()]
    # whitening from the SVD of the centred data: S_xx = V diag(s^2 / n) V^T
    _, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    lam = s ** 2 / (len(Xn) - 1)
    keep = lam > 1e-6 * lam.max()
    V, lam = Vt[keep].T, lam[keep]
    W = (V / np.sqrt(lam)) @ V.T
    W_pinv = (V * np.sqrt(lam)) @ V.T
    S_xz = Xc.T @ (Z - Z.mean(0)) / (len(Xn) - 1)
    U, sv, _ = np.linalg.svd(W @ S_xz, full_matrices=False)
    U = U[:, sv > 1e-6 * sv.max()]
    M = W_pinv @ U @ U.T @ W
    return torch.tensor(M, dtype=torch.float32), torch.tensor(mean, dtype=torch.float32)
''',
    "impl_erased_logits": '''
def erased_logits(model, tokens, hook_name, M, mean, positions):
    def erase(activation, hook):
        out = activation.clone()
        for i, j in positions.nonzero().tolist():
            x = activation[i, j]
            out[i, j] = x - M @ (x - mean)
        return out

    with model.hooks(fwd_hooks=[(hook_name, erase)]):
        return model(tokens)
''',
    "impl_interchange_logits": '''
def interchange_logits(model, base, source, base_at, source_at, hook_name, basis=None):
    saved = {}

    def save(activation, hook):
        saved["source"] = activation.detach().clone()

    model.run_with_hooks(source, fwd_hooks=[(hook_name, save)])
    projector = None if basis is None else torch.einsum("kd,ke->de", basis, basis)

    def swap(activation, hook):
        activation = activation.clone()
        for i in range(len(base)):
            old, new = activation[i, base_at[i]], saved["source"][i, source_at[i]]
            activation[i, base_at[i]] = new if projector is None else old + projector @ (new - old)
        return activation

    return model.run_with_hooks(base, fwd_hooks=[(hook_name, swap)])
''',
    "impl_interchange_accuracy": '''
def interchange_accuracy(model, base, source, base_at, source_at, hook_name, counterfactual, basis=None):
    logits = interchange_logits(model, base, source, base_at, source_at, hook_name, basis)
    hits = [int(logits[i, base_at[i]].argmax()) == int(counterfactual[i]) for i in range(len(base))]
    return sum(hits) / len(hits)
''',
    "impl_train_das": '''
def train_das(model, base, source, base_at, source_at, hook_name, counterfactual, steps, lr, seed):
    rows = torch.arange(len(base))
    _, cache = model.run_with_cache(source, names_filter=[hook_name])
    source_act = cache[hook_name][rows, source_at]
    u = torch.randn(source_act.shape[-1], generator=torch.Generator().manual_seed(seed))
    u = (u / u.norm()).requires_grad_(True)
    opt = torch.optim.Adam([u], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            def patch(activation, hook):
                edited = activation.clone()
                old = activation[rows, base_at]
                edited[rows, base_at] = old + torch.outer((source_act - old) @ u, u)
                return edited

            logits = model.run_with_hooks(base, fwd_hooks=[(hook_name, patch)])[rows, base_at]
            loss = -F.log_softmax(logits, -1)[rows, counterfactual].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():  # stay on the unit sphere (projected gradient)
                u /= u.norm()
    return u.detach().clone()
''',
}
