"""Alternative correct implementations of the tsxai exercises (see tests/test_fairness.py)."""

ALTERNATIVES: dict[str, str] = {
    # a batch of one at a time, backward() instead of autograd.grad
    "impl_saliency": '''
def saliency(model, inputs, target, absolute=True):
    grads = []
    for i in range(len(inputs)):
        x = inputs[i:i + 1].detach().clone().requires_grad_(True)
        model(x)[0, int(target[i])].backward()
        grads.append(x.grad[0])
    grad = torch.stack(grads)
    return torch.abs(grad) if absolute else grad
''',
    # one forward/backward per integration step instead of one batched path
    "impl_integrated_gradients": '''
def integrated_gradients(model, inputs, target, baselines=None, n_steps=50):
    base = torch.zeros_like(inputs) if baselines is None else torch.as_tensor(baselines, dtype=inputs.dtype).expand_as(inputs)
    total = torch.zeros_like(inputs)
    for k in range(n_steps):
        alpha = (k + 0.5) / n_steps
        x = (base + alpha * (inputs - base)).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
        total += grad
    return (inputs - base) * total / n_steps
''',
    # inputs and baselines in one batch, float64 differences
    "impl_completeness_gap": '''
def completeness_gap(model, inputs, target, attributions, baselines=None):
    base = torch.zeros_like(inputs) if baselines is None else torch.as_tensor(baselines, dtype=inputs.dtype).expand_as(inputs)
    with torch.no_grad():
        logits = model(torch.cat([inputs, base])).double()
    rows = torch.arange(len(inputs))
    f_x, f_b = logits[rows, target], logits[len(inputs) + rows, target]
    return attributions.detach().double().sum(dim=(1, 2)) - (f_x - f_b)
''',
    # explicit loops over channels and windows
    "impl_occlusion": '''
def occlusion(model, inputs, target, window, stride, baselines=0.0):
    batch, channels, length = inputs.shape
    base = torch.as_tensor(baselines, dtype=inputs.dtype).expand_as(inputs)
    rows = torch.arange(batch)
    total = torch.zeros(inputs.shape, dtype=torch.float64)
    counts = torch.zeros(inputs.shape, dtype=torch.float64)
    with torch.no_grad():
        clean = model(inputs)[rows, target].double()
        start = 0
        while True:
            for c in range(channels):
                x = inputs.clone()
                x[:, c, start:start + window] = base[:, c, start:start + window]
                drop = clean - model(x)[rows, target].double()
                total[:, c, start:start + window] += drop[:, None]
                counts[:, c, start:start + window] += 1
            if start + window >= length:
                break
            start += stride
    return total / counts
''',
    # a loop over the segments, writing each segment's drop into its mask
    "impl_feature_ablation": '''
def feature_ablation(model, inputs, target, n_segments, baselines=0.0):
    batch, channels, length = inputs.shape
    ids = segment_ids(channels, length, n_segments)
    base = torch.as_tensor(baselines, dtype=inputs.dtype).expand_as(inputs)
    rows = torch.arange(batch)
    out = torch.zeros_like(inputs)
    with torch.no_grad():
        clean = model(inputs)[rows, target]
        for g in range(channels * n_segments):
            mask = (ids == g)[None].expand_as(inputs)
            drop = clean - model(torch.where(mask, base, inputs))[rows, target]
            out = torch.where(mask, drop[:, None, None].expand_as(inputs), out)
    return out
''',
    "impl_class_activation_map": '''
def class_activation_map(model, inputs, target):
    with torch.no_grad():
        maps = model.features(inputs).double()
        weights = model.classifier.weight.double()[target]
    return (weights[:, :, None] * maps).sum(dim=1)
''',
    # analytic: behind a global average pool, d logit_c / d A_k(t) = W[c, k] / T for every t
    "impl_grad_cam": '''
def grad_cam(model, inputs, target):
    with torch.no_grad():
        maps = model.features(inputs).double()
        alpha = model.classifier.weight.double()[target] / maps.shape[-1]
    return torch.einsum("bk,bkt->bt", alpha, maps).clamp(min=0)
''',
    # one masked copy at a time, feature relevance only where the example's own time step is relevant
    "impl_temporal_saliency_rescaling": '''
def temporal_saliency_rescaling(model, inputs, target, base_method, baselines=0.0):
    batch, channels, length = inputs.shape
    base = torch.as_tensor(baselines, dtype=inputs.dtype).expand_as(inputs)
    reference_map = base_method(model, inputs, target).detach()

    def change(mask):  # mask: channels x time -> one number per example
        masked = torch.where(mask[None], base, inputs)
        return (base_method(model, masked, target).detach() - reference_map).abs().sum(dim=(1, 2))

    tau = torch.zeros(batch, length, dtype=inputs.dtype)
    for t in range(length):
        mask = torch.zeros(channels, length, dtype=torch.bool)
        mask[:, t] = True
        tau[:, t] = change(mask)
    relevant = tau > tau.mean(dim=1, keepdim=True)
    out = torch.zeros(batch, channels, length, dtype=inputs.dtype)
    for t in range(length):
        if not relevant[:, t].any():
            continue
        for c in range(channels):
            if channels == 1:
                phi = tau[:, t]
            else:
                mask = torch.zeros(channels, length, dtype=torch.bool)
                mask[c, t] = True
                phi = change(mask)
            out[:, c, t] = torch.where(relevant[:, t], tau[:, t] * phi, torch.zeros_like(phi))
    return out
''',
    # a loop over examples, the top-k set by sorting each example's scores
    "impl_perturbation_curves": '''
def perturbation_curves(model, inputs, attributions, n_steps=20, baselines=0.0, ranking="signed", output="probability"):
    if ranking not in ("signed", "absolute") or output not in ("probability", "logit"):
        raise ValueError(f"ranking={ranking!r}, output={output!r}")
    batch = inputs.shape[0]
    n = inputs[0].numel()
    base = torch.as_tensor(baselines, dtype=inputs.dtype).expand_as(inputs)
    curves = {"deletion": torch.zeros(batch, n_steps + 1, dtype=torch.float64),
              "insertion": torch.zeros(batch, n_steps + 1, dtype=torch.float64)}
    with torch.no_grad():
        for b in range(batch):
            x, x0 = inputs[b].flatten(), base[b].flatten()
            target = int(model(inputs[b:b + 1]).argmax())
            s = attributions[b].flatten()
            order = torch.sort(s.abs() if ranking == "absolute" else s, descending=True, stable=True).indices
            for j in range(n_steps + 1):
                top = torch.zeros(n, dtype=torch.bool)
                top[order[: (j * n) // n_steps]] = True
                for key, series in (("deletion", torch.where(top, x0, x)), ("insertion", torch.where(top, x, x0))):
                    logits = model(series.reshape(1, *inputs.shape[1:]))[0]
                    values = logits.softmax(-1) if output == "probability" else logits
                    curves[key][b, j] = float(values[target])
    for key in ("deletion", "insertion"):
        c = curves[key]
        curves[key + "_auc"] = torch.trapezoid(c, dx=1.0 / n_steps, dim=1)
    return curves
''',
    "impl_comprehensiveness_sufficiency": '''
def comprehensiveness_sufficiency(model, inputs, attributions, percents=(1, 5, 10, 20, 50), baselines=0.0,
                                  ranking="signed", output="probability"):
    if ranking not in ("signed", "absolute") or output not in ("probability", "logit"):
        raise ValueError(f"ranking={ranking!r}, output={output!r}")
    batch, n = inputs.shape[0], inputs[0].numel()
    base = torch.as_tensor(baselines, dtype=inputs.dtype).expand_as(inputs)

    def score(x, target):
        logits = model(x)
        values = logits.softmax(-1) if output == "probability" else logits
        return values.gather(1, target[:, None])[:, 0].double()

    comp = torch.zeros(batch, dtype=torch.float64)
    suff = torch.zeros(batch, dtype=torch.float64)
    with torch.no_grad():
        target = model(inputs).argmax(-1)
        clean = score(inputs, target)
        s = attributions.flatten(1)
        order = torch.sort(s.abs() if ranking == "absolute" else s, dim=1, descending=True, stable=True).indices
        for pc in percents:
            k = (pc * n) // 100
            top = torch.zeros(batch, n, dtype=torch.bool)
            top.scatter_(1, order[:, :k], True)
            top = top.reshape(inputs.shape)
            comp += clean - score(torch.where(top, base, inputs), target)
            suff += clean - score(torch.where(top, inputs, base), target)
    return {"comprehensiveness": comp / len(percents), "sufficiency": suff / len(percents)}
''',
    # numpy distances, a loop over queries (the smallest index wins a tie, as the text says)
    "impl_nearest_unlike_neighbour": '''
def nearest_unlike_neighbour(model, queries, references):
    import numpy as np
    with torch.no_grad():
        q_class = model(queries).argmax(-1).numpy()
        r_class = model(references).argmax(-1).numpy()
    q = queries.flatten(1).double().numpy()
    r = references.flatten(1).double().numpy()
    out = []
    for i in range(len(q)):
        d = np.sqrt(((r - q[i]) ** 2).sum(1))
        d[r_class == q_class[i]] = np.inf
        out.append(int(np.argmin(d)))
    return torch.tensor(out)
''',
    # explicit window sums, strict > so that the earliest start wins a tie
    "impl_native_guide": '''
def native_guide(model, query, nun, importance):
    batch, channels, length = query.shape
    with torch.no_grad():
        desired = model(nun).argmax(-1)
    out = {"counterfactual": query.clone(), "start": torch.zeros(batch, dtype=torch.long),
           "length": torch.zeros(batch, dtype=torch.long)}
    for b in range(batch):
        imp = [float(v) for v in importance[b].double()]
        for L in range(1, length + 1):
            best_s, best = 0, None
            for s in range(length - L + 1):
                total = sum(imp[s:s + L])
                if best is None or total > best:
                    best_s, best = s, total
            candidate = query[b].clone()
            candidate[:, best_s:best_s + L] = nun[b][:, best_s:best_s + L]
            with torch.no_grad():
                if int(model(candidate[None]).argmax()) == int(desired[b]):
                    out["counterfactual"][b], out["start"][b], out["length"][b] = candidate, best_s, L
                    break
    return out
''',
    "impl_counterfactual_metrics": '''
def counterfactual_metrics(model, original, counterfactual):
    import numpy as np
    with torch.no_grad():
        validity = (model(counterfactual).argmax(-1) != model(original).argmax(-1)).numpy()
    d = (counterfactual - original).flatten(1).double().numpy()
    return {"validity": validity, "l1": np.abs(d).sum(1), "l2": np.sqrt((d ** 2).sum(1)),
            "linf": np.abs(d).max(1), "sparsity": (d == 0).mean(1)}
''',
    # numpy weighted least squares through the normal equations, float64 output
    "impl_lime_segments": '''
def lime_segments(model, inputs, target, n_segments, masks, baselines=0.0, kernel_width=0.25):
    import numpy as np
    batch, channels, length = inputs.shape
    ids = segment_ids(channels, length, n_segments)
    z = masks.double().numpy()
    base = torch.as_tensor(baselines, dtype=inputs.dtype).expand_as(inputs)
    distance = 1 - np.sqrt(z.sum(1) / z.shape[1])
    weights = np.exp(-distance**2 / kernel_width**2)
    design = np.concatenate([np.ones((len(z), 1)), z], axis=1)
    out = torch.zeros(inputs.shape, dtype=torch.float64)
    for b in range(batch):
        ys = []
        with torch.no_grad():
            for row in masks:
                keep = row[ids].bool()
                x = torch.where(keep, inputs[b], base[b])
                ys.append(float(model(x[None]).softmax(-1)[0, int(target[b])]))
        y = np.array(ys)
        lhs = design.T @ (weights[:, None] * design)
        coef = np.linalg.lstsq(lhs, design.T @ (weights * y), rcond=None)[0][1:]
        out[b] = torch.from_numpy(coef)[ids]
    return out
''',

    # new exercises (science)
    "impl_randomisation_similarity": '''
def randomisation_similarity(model, inputs, target, method, seed=0):
    # scipy's average ranks and numpy correlation, example by example
    import numpy as np
    from scipy.stats import rankdata

    def spearman(a, b):
        ra, rb = rankdata(a), rankdata(b)
        if ra.std() == 0 or rb.std() == 0:
            return float("nan")
        return float(np.corrcoef(ra, rb)[0, 1])

    trained = method(model, inputs, target).detach().abs().reshape(inputs.shape[0], -1).numpy()
    rows = []
    for _, randomised in cascading_randomisation(model, seed):
        maps = method(randomised, inputs, target).detach().abs().reshape(inputs.shape[0], -1).numpy()
        rows.append([spearman(trained[i], maps[i]) for i in range(inputs.shape[0])])
    return torch.tensor(rows, dtype=inputs.dtype)
''',
}
