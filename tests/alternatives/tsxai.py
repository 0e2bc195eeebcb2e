"""Alternative correct implementations of the tsxai exercises, written differently from the
reference: grade_id of the solution cell -> the complete replacement source of that cell."""

ALTERNATIVES: dict[str, str] = {
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
