"""Alternative correct implementations of the foundations exercises (see tests/test_fairness.py)."""

ALTERNATIVES: dict[str, str] = {
    # one predict call on every shuffled copy at once, importances built repeat-major then transposed
    "impl_permutation_importance": '''
def permutation_importance(predict, X, y, score, permutations):
    n, d = X.shape
    copies = np.broadcast_to(X, (len(permutations), d, n, d)).copy()
    for r, p in enumerate(permutations):
        for j in range(d):
            copies[r, j, :, j] = X[p, j]
    predictions = predict(copies.reshape(-1, d)).reshape(len(permutations), d, n)
    base = score(y, predict(X))
    return np.array([[base - score(y, predictions[r, j]) for r in range(len(permutations))] for j in range(d)])
''',
    # a loop over the grid, a list of columns, Python floats in the average
    "impl_partial_dependence": '''
def partial_dependence(predict, X, feature, grid):
    columns = []
    for value in grid:
        modified = np.array(X, dtype=np.float64)
        modified[:, feature] = value
        columns.append(predict(modified))
    ice = np.stack(columns, axis=1)
    return {"ice": ice, "average": np.array([float(sum(col)) / len(col) for col in columns])}
''',
    # a loop over coalitions, one predict per coalition
    "impl_coalition_values": '''
def coalition_values(predict, x, background, coalitions):
    out = []
    for mask in coalitions:
        rows = background.copy()
        rows[:, mask] = x[mask]
        out.append(predict(rows).mean())
    return np.array(out)
''',
    # the permutation definition: average marginal contribution over all M! orders (M <= 6)
    "impl_exact_shapley": '''
def exact_shapley(predict, x, background):
    import itertools
    M = len(x)
    coalitions = all_coalitions(M)
    values = coalition_values(predict, x, background, coalitions)
    index = lambda members: sum(2**i for i in members)
    phi = np.zeros(M)
    orders = list(itertools.permutations(range(M)))
    for order in orders:
        joined = []
        for i in order:
            phi[i] += values[index(joined + [i])] - values[index(joined)]
            joined.append(i)
    return phi / len(orders)
''',
    # the constraint by a Lagrange multiplier: the KKT system solved directly
    "impl_kernel_shap": '''
def kernel_shap(predict, x, background, coalitions):
    from scipy.special import comb
    M = len(x)
    Z = coalitions.astype(np.float64)
    s = Z.sum(1)
    w = (M - 1) / (comb(M, s) * s * (M - s))
    phi0 = float(np.mean(predict(background)))
    fx = float(predict(x.reshape(1, -1))[0])
    target = coalition_values(predict, x, background, coalitions) - phi0
    ZtW = Z.T * w
    kkt = np.zeros((M + 1, M + 1))
    kkt[:M, :M] = ZtW @ Z
    kkt[:M, M] = kkt[M, :M] = 1.0
    rhs = np.append(ZtW @ target, fx - phi0)
    return np.linalg.lstsq(kkt, rhs, rcond=None)[0][:M]
''',
    # closed-form weighted normal equations on centred data (weighted means), torch float64
    "impl_lime_tabular": '''
def lime_tabular(predict, x, scale, noise, kernel_width):
    Z = torch.from_numpy(np.asarray(noise, dtype=np.float64))
    y = torch.from_numpy(np.asarray(predict(x + noise * scale), dtype=np.float64))
    w = torch.exp(-(Z ** 2).sum(1) / kernel_width ** 2)
    w = w / w.sum()
    z_bar, y_bar = w @ Z, w @ y
    Zc, yc = Z - z_bar, y - y_bar
    coef = torch.linalg.solve(Zc.T @ (w[:, None] * Zc), Zc.T @ (w * yc))
    intercept = y_bar - z_bar @ coef
    fitted = intercept + Z @ coef
    fidelity = 1 - (w * (y - fitted) ** 2).sum() / (w * yc ** 2).sum()
    return {"coef": coef.numpy(), "intercept": float(intercept), "fidelity": fidelity}
''',
    # one example at a time with backward()
    "impl_saliency": '''
def saliency(model, inputs, target, absolute=True):
    rows = []
    for i in range(len(inputs)):
        x = inputs[i:i + 1].detach().clone().requires_grad_(True)
        model(x)[0, int(target[i])].backward()
        rows.append(x.grad[0])
    grad = torch.stack(rows)
    return grad.abs() if absolute else grad
''',
    # one forward/backward per step, summing in a loop
    "impl_integrated_gradients": '''
def integrated_gradients(model, inputs, target, baselines=None, n_steps=50):
    base = torch.zeros_like(inputs) if baselines is None else torch.as_tensor(baselines, dtype=inputs.dtype) + torch.zeros_like(inputs)
    total = torch.zeros_like(inputs)
    rows = torch.arange(len(inputs))
    for k in range(n_steps):
        point = (base + (k + 0.5) / n_steps * (inputs - base)).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(point)[rows, target].sum(), point)
        total = total + grad
    return (inputs - base) * total / n_steps
''',
    # a loop over the noise samples, one backward each
    "impl_smoothgrad": '''
def smoothgrad(model, inputs, target, noise, sigma):
    total = torch.zeros_like(inputs)
    for eps in noise:
        x = (inputs + sigma * eps).detach().requires_grad_(True)
        model(x).gather(1, target.view(-1, 1)).sum().backward()
        total += x.grad
    return total / len(noise)
''',
    # scipy's spearmanr per example, numpy throughout
    "impl_randomisation_similarity": '''
def randomisation_similarity(method, model, others, inputs, target):
    from scipy.stats import rankdata
    def spearman(a, b):
        ra, rb = rankdata(a), rankdata(b)
        if ra.std() == 0 or rb.std() == 0:
            return float("nan")
        return float(np.corrcoef(ra, rb)[0, 1])
    first = method(model, inputs, target).detach().abs().numpy()
    table = []
    for other in others:
        second = method(other, inputs, target).detach().abs().numpy()
        table.append([spearman(first[b], second[b]) for b in range(len(first))])
    return np.array(table)
''',
    # numpy: a stable argsort of -|a|, then fancy indexing
    "impl_remove_top_features": '''
def remove_top_features(inputs, attributions, k, fill):
    out = inputs.detach().numpy().copy()
    order = np.argsort(-np.abs(attributions.detach().numpy()), axis=1, kind="stable")[:, :k]
    rows = np.arange(len(out))[:, None]
    out[rows, order] = fill.detach().numpy()[order]
    return torch.from_numpy(out)
''',
    # a loop over subsets, numpy's corrcoef per example
    "impl_faithfulness_correlation": '''
def faithfulness_correlation(model, inputs, target, attributions, subsets, fill):
    rows = torch.arange(len(inputs))
    with torch.no_grad():
        clean = model(inputs)[rows, target]
        drops, masses = [], []
        for s in subsets:
            removed = inputs.clone()
            removed[:, s] = fill[s].to(inputs.dtype)
            drops.append((clean - model(removed)[rows, target]).numpy())
            masses.append(attributions[:, s].sum(1).detach().numpy())
    drops, masses = np.stack(drops, 1), np.stack(masses, 1)
    return np.array([np.corrcoef(masses[b], drops[b])[0, 1] for b in range(len(inputs))])
''',
}
