"""Alternative correct implementations of the grokking exercises, written differently from the
reference (numpy instead of torch, complex exponentials, loops, least squares instead of
orthogonal projection, ...). See tests/test_fairness.py."""

ALTERNATIVES: dict[str, str] = {
    "impl_fourier_basis": '''
def fourier_basis(p: int) -> Float[Tensor, "p p"]:
    # From the complex DFT matrix: real and imaginary parts of exp(-2 pi i k x / p), float32.
    x = np.arange(p)
    waves = np.exp(-2j * np.pi * np.outer(np.arange(p), x) / p)
    out = np.zeros((p, p), dtype=np.float32)
    out[0] = 1 / np.sqrt(p)
    for k in range(1, (p - 1) // 2 + 1):
        out[2 * k - 1] = waves[k].real * np.sqrt(2 / p)
        out[2 * k] = -waves[k].imag * np.sqrt(2 / p)
    return torch.from_numpy(out)
''',
    "impl_fourier_2d": '''
def fourier_2d(values: Float[Tensor, "n p p"], basis: Float[Tensor, "p p"]) -> Float[Tensor, "n p p"]:
    B = basis.double().numpy()
    return torch.from_numpy(np.einsum("ia,nab,jb->nij", B, values.double().numpy(), B))
''',
    "impl_frequency_norms": '''
def frequency_norms(W_E: Float[Tensor, "p d_model"], basis: Float[Tensor, "p p"]) -> Float[Tensor, "n_freq"]:
    out = []
    for k in range(1, (basis.shape[0] - 1) // 2 + 1):
        rows = basis[[2 * k - 1, 2 * k]].double() @ W_E.double()
        out.append(float((rows * rows).sum()))
    return torch.tensor(out, dtype=torch.float64)
''',
    "impl_neuron_frequency_fractions": '''
def neuron_frequency_fractions(acts_fourier: Float[Tensor, "neuron p p"]) -> Float[Tensor, "neuron n_freq"]:
    sq = acts_fourier.double().numpy() ** 2
    p = sq.shape[-1]
    n_freq = (p - 1) // 2
    out = np.zeros((sq.shape[0], n_freq))
    for k in range(1, n_freq + 1):
        own = np.zeros((p, p), dtype=bool)
        for i in (0, 2 * k - 1, 2 * k):
            for j in (0, 2 * k - 1, 2 * k):
                own[i, j] = True
        own[0, 0] = False
        without_constant = sq.reshape(len(sq), -1).sum(1) - sq[:, 0, 0]
        out[:, k - 1] = sq[:, own].sum(1) / without_constant
    return torch.from_numpy(out)
''',
    "impl_project_onto_sums": '''
def project_onto_sums(values: Float[Tensor, "p p n"], freqs: list[int]) -> Float[Tensor, "p p n"]:
    # Least squares on an explicit design matrix (constant, cos, sin per frequency).
    p = values.shape[0]
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    cols = [np.ones(p * p)]
    for k in freqs:
        cols += [np.cos(2 * np.pi * k * (a + b) / p).ravel(), np.sin(2 * np.pi * k * (a + b) / p).ravel()]
    X = np.stack(cols, axis=1)
    Y = values.double().numpy().reshape(p * p, -1)
    coef, *_ = np.linalg.lstsq(X, Y, rcond=None)
    return torch.from_numpy((X @ coef).reshape(values.shape))
''',
    "impl_sum_fraction": '''
def sum_fraction(values: Float[Tensor, "p p n"], freqs: list[int]) -> Float[Tensor, "n"]:
    # 1 - residual variance / variance, with the residual of the projection.
    v = values.double()
    residual = v - project_onto_sums(v, freqs).double()
    variance = ((v - v.mean(dim=(0, 1))) ** 2).sum(dim=(0, 1))
    return 1 - (residual ** 2).sum(dim=(0, 1)) / variance
''',
    "impl_restricted_loss": '''
def restricted_loss(logits: Float[Tensor, "p p p"], labels: Int[Tensor, "p p"],
                    train_mask: Bool[Tensor, "p p"], freqs: list[int]) -> float:
    restricted = project_onto_sums(logits, freqs).double().numpy()
    log_probs = restricted - np.log(np.exp(restricted - restricted.max(-1, keepdims=True)).sum(-1, keepdims=True)) \\
        - restricted.max(-1, keepdims=True)
    picked = np.take_along_axis(log_probs, labels.numpy()[..., None], axis=-1)
    return float(-picked.mean())
''',
    "impl_excluded_loss": '''
def excluded_loss(logits: Float[Tensor, "p p p"], labels: Int[Tensor, "p p"],
                  train_mask: Bool[Tensor, "p p"], freqs: list[int]) -> float:
    # The residual of the least-squares fit, plus the mean back.
    p = logits.shape[0]
    x = logits.double()
    kept = x - project_onto_sums(x, freqs).double() + x.mean(dim=(0, 1), keepdim=True)
    total, count = 0.0, 0
    for a in range(p):
        for b in range(p):
            if train_mask[a, b]:
                total -= float(torch.log_softmax(kept[a, b], dim=-1)[labels[a, b]])
                count += 1
    return total / count
''',
    "impl_phase_boundaries": '''
def phase_boundaries(steps: Int[Tensor, "n"], train_loss: Float[Tensor, "n"],
                     test_loss: Float[Tensor, "n"]) -> tuple[int, int, int]:
    steps, train, test = list(np.asarray(steps)), list(np.asarray(train_loss)), list(np.asarray(test_loss))
    peak = test.index(max(test))
    memorised = next((int(s) for s, l in zip(steps, train) if l < 0.05), -1)
    cleanup = next((int(steps[i]) for i in range(peak, len(steps)) if test[i] < test[peak] / 2), -1)
    grokked = next((int(s) for s, l in zip(steps, test) if l < 0.05), -1)
    return memorised, cleanup, grokked
''',
    "impl_weight_norm": '''
def weight_norm(params: dict[str, Tensor]) -> float:
    flat = np.concatenate([t.detach().double().numpy().ravel() for t in params.values()])
    return float(np.linalg.norm(flat))
''',
}
