# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Foundations: what an explanation is, model-agnostic methods, and their sanity checks
#
# Before circuits and attribution graphs, this week asks what it means to *explain* a prediction,
# and how the classic methods answer. An explanation here is a number per input feature that
# claims to say how much that feature mattered to one prediction (a *local* explanation) or to the
# model as a whole (a *global* one). Every method makes that claim precise in its own way: what
# "removing" a feature means, which baseline it is compared with, which output is explained. The
# same words ("importance", "attribution") hide different questions, and the methods fail in
# different ways. You implement each one, then test them: do they depend on the model at all
# (sanity checks), and does removing what they call important hurt the model (faithfulness)?
#
# **After this assignment you will be able to**
#
# - compute permutation feature importance and explain why it misleads when features are
#   correlated; draw partial dependence and ICE curves and say what averaging hides;
# - compute Shapley values exactly for a few features, check the efficiency and symmetry axioms,
#   and approximate them with KernelSHAP (a weighted linear regression with the Shapley kernel);
# - fit a LIME surrogate on tabular data (sampling around the instance, the kernel, the
#   surrogate's fidelity) and say when its coefficients can be trusted;
# - implement gradient saliency, gradient x input, Integrated Gradients and SmoothGrad on a small
#   image model;
# - run the sanity checks of Adebayo et al. (cascading model randomisation and label
#   randomisation) and remove-and-retrain (ROAR), and tell which methods survive each;
# - rank methods by faithfulness on the same instances, and say what each ranking means.
#
# **Read first** (the parts named are enough, about two and a half hours):
#
# - Molnar, [Interpretable Machine Learning](https://christophm.github.io/interpretable-ml-book/): the chapters on permutation feature importance, PDP and ICE, Shapley values, SHAP and LIME.
# - Fisher, Rudin & Dominici (2019), [All models are wrong, but many are useful](https://arxiv.org/abs/1801.01489): model reliance (permutation importance), section 3; Hooker, Mentch & Zhou (2021), [Unrestricted permutation forces extrapolation](https://arxiv.org/abs/1905.03151), sections 1-3.
# - Goldstein et al. (2015), [Peeking inside the black box: ICE plots](https://arxiv.org/abs/1309.6392), section 2.
# - Lundberg & Lee (2017), [A unified approach to interpreting model predictions](https://arxiv.org/abs/1705.07874): Shapley values and KernelSHAP (sections 2-4, Theorem 2).
# - Ribeiro, Singh & Guestrin (2016), ["Why should I trust you?"](https://arxiv.org/abs/1602.04938): LIME (section 3).
# - Simonyan et al. (2014), [Deep inside convolutional networks](https://arxiv.org/abs/1312.6034), section 3; Sundararajan et al. (2017), [Axiomatic attribution for deep networks](https://arxiv.org/abs/1703.01365), sections 2-3; Smilkov et al. (2017), [SmoothGrad](https://arxiv.org/abs/1706.03825), sections 2-3.
# - Adebayo et al. (2018), [Sanity checks for saliency maps](https://arxiv.org/abs/1810.03292), sections 1-4.
# - Hooker et al. (2019), [A benchmark for interpretability methods in deep neural networks](https://arxiv.org/abs/1806.10758) (ROAR), sections 1-3.
#
# **The data and the models.** Everything is offline: scikit-learn's bundled data sets only.
# *Tabular*: the diabetes data (442 patients, 10 standardised features, a measure of disease
# progression one year later as the target), with a gradient-boosted regressor trained here in
# about a second. *Images*: the 8x8 handwritten digits (1797 images, pixels scaled to [-1, 1], so
# -1 is blank paper), with a small MLP (64-32-32-10, ReLU, logits out) trained here in a second or two.
#
# **Conventions used everywhere.** A tabular model is a black box `predict(X) -> y` on rows of
# features (numpy, float64). An image model takes `Float[Tensor, "batch 64"]` and returns
# **logits**; attributions explain the **target logit** and have the shape of the inputs.
#
# **How the checks work.** Each exercise ends with `check("foundations.<name>", your_function)`. It
# runs your function on freshly generated inputs (hand-built tabular models, small random MLPs in
# float64, random targets and baselines) and compares with the reference; when your answer matches
# a known mistake, the check names it.
#
# What counts as the same answer: a torch tensor or a numpy array; for a single number, a 0-d tensor,
# a NumPy scalar or a Python float; integers of any width; float64 where float32 is expected (held to
# the float32 tolerance). A less precise dtype fails with a message naming the dtype to return. Where
# a convention matters (which output, how ties are broken), the exercise text states it and a
# failure names it.

# %% role="locked" grade_id="setup"
import math
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from interplab import check
from interplab.foundations import (ModelFn, accuracy, all_coalitions, cascading_randomisation, format_table,
                                   load_diabetes_split, plot_digit_maps, proper_coalitions, random_coalitions,
                                   train_classifier)
from interplab.subliminal import digits_tensors

torch.manual_seed(0)
torch.set_num_threads(1)  # small models: one thread is as fast, and graders run one kernel per core
diabetes = load_diabetes_split()
X_digits, y_digits, X_digits_test, y_digits_test = digits_tensors()
print(f"diabetes: {diabetes.X_train.shape[0]} train / {diabetes.X_test.shape[0]} test patients, "
      f"features {', '.join(diabetes.feature_names)}")
print(f"digits: {X_digits.shape[0]} train / {X_digits_test.shape[0]} test images of 64 pixels")

# %% [markdown]
# The tabular model: a gradient-boosted regressor (scikit-learn, 100 trees of depth 3, fixed
# seed). `predict_diabetes` is all the methods of sections 1-5 may use: they are *model-agnostic*.

# %%
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.metrics import r2_score

regressor = GradientBoostingRegressor(n_estimators=100, max_depth=3, learning_rate=0.05, random_state=0)
regressor.fit(diabetes.X_train, diabetes.y_train)
predict_diabetes: ModelFn = regressor.predict
print(f"test R^2 = {r2_score(diabetes.y_test, predict_diabetes(diabetes.X_test)):.3f} "
      f"(train {r2_score(diabetes.y_train, predict_diabetes(diabetes.X_train)):.3f})")
correlation = np.corrcoef(diabetes.X_train.T)
print("the most correlated pair:", diabetes.feature_names[4], diabetes.feature_names[5],
      f"r = {correlation[4, 5]:.2f}")

# %% [markdown]
# ## 1. Permutation feature importance
#
# A global question: how much does the model's *score* depend on feature $j$? Breiman's answer,
# made model-agnostic by Fisher et al.: shuffle column $j$ (breaking its link with the target and
# with the other features, but keeping its distribution), score again, and report the loss of
# score. Repeat with several shuffles, because one shuffle is noisy.
#
# **Task** (difficulty 1/5, ~10 min): implement
# `permutation_importance(predict, X, y, score, permutations) -> Float[ndarray, "features repeats"]`:
# entry $[j, r]$ is `score(y, predict(X))` minus the score with column $j$ replaced by
# `X[permutations[r], j]` (every other column unchanged). `score(y_true, y_pred)` is higher-is-better
# (e.g. $R^2$). The shuffles are given, so the answer is deterministic. This is
# `sklearn.inspection.permutation_importance`'s `importances` array.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# One baseline score; then for every feature and every shuffle, a copy of `X` with only that column
# shuffled, scored again. The importance is the drop.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `shuffled = X.copy(); shuffled[:, j] = X[permutation, j]`; two nested loops over `j` and the rows of
# `permutations`; `baseline - score(y, predict(shuffled))`.
# </details>

# %% role="solution" grade_id="impl_permutation_importance"
def permutation_importance(predict: ModelFn, X: Float[np.ndarray, "n features"], y: Float[np.ndarray, " n"],
                           score: Callable[[np.ndarray, np.ndarray], float],
                           permutations: Int[np.ndarray, "repeats n"]) -> Float[np.ndarray, "features repeats"]:
    """Drop of ``score`` when each column in turn is shuffled by each permutation."""
    ### BEGIN SOLUTION
    baseline = score(y, predict(X))
    importances = np.empty((X.shape[1], len(permutations)))
    for j in range(X.shape[1]):
        for r, permutation in enumerate(permutations):
            shuffled = X.copy()
            shuffled[:, j] = X[permutation, j]
            importances[j, r] = baseline - score(y, predict(shuffled))
    return importances
    ### END SOLUTION


# %% role="test" grade_id="test_permutation_importance" points=1
check("foundations.permutation_importance", permutation_importance)

# %%
rng = np.random.default_rng(0)
shuffles = np.stack([rng.permutation(len(diabetes.y_test)) for _ in range(10)])
importance = permutation_importance(predict_diabetes, diabetes.X_test, diabetes.y_test, r2_score, shuffles)
for j in np.argsort(-importance.mean(1)):
    print(f"{diabetes.feature_names[j]:>4s}: {importance[j].mean():+.3f} +- {importance[j].std():.3f} (R^2 lost)")

# %% [markdown]
# **The correlated-feature pitfall.** Add a near copy of `bmi` (the copy plus 5% noise) and train the
# same regressor. The model can now read body-mass index from either column. What happens to the
# importance of `bmi`?

# %%
def with_bmi_copy(X: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 0.05 * X[:, 2].std(), len(X))
    return np.column_stack([X, X[:, 2] + noise])


X_train_copy, X_test_copy = with_bmi_copy(diabetes.X_train, 1), with_bmi_copy(diabetes.X_test, 2)
regressor_copy = GradientBoostingRegressor(n_estimators=100, max_depth=3, learning_rate=0.05, random_state=0)
regressor_copy.fit(X_train_copy, diabetes.y_train)
importance_copy = permutation_importance(regressor_copy.predict, X_test_copy, diabetes.y_test, r2_score, shuffles)
print(f"test R^2 with the copy: {r2_score(diabetes.y_test, regressor_copy.predict(X_test_copy)):.3f}")
print(f"importance of bmi alone:              {importance[2].mean():.3f}")
print(f"importance of bmi next to its copy:   {importance_copy[2].mean():.3f}")
print(f"importance of the copy:               {importance_copy[10].mean():.3f}")
print(f"importance of bmi and copy together:  "
      f"{r2_score(diabetes.y_test, regressor_copy.predict(X_test_copy)) - np.mean([r2_score(diabetes.y_test, regressor_copy.predict(np.column_stack([X_test_copy[:, :2], X_test_copy[p, 2], X_test_copy[:, 3:10], X_test_copy[p, 10]]))) for p in shuffles]):.3f}")

# %% [markdown]
# **Questions.** The information in `bmi` did not change, yet its importance split between two
# columns, and shuffling both together costs more than the two importances added: permutation
# importance measures what the *model* relies on, given the other columns, not what the data
# contain. Shuffling `bmi` alone also creates patients whose two bmi columns disagree, points the
# model never saw (Hooker, Mentch & Zhou call this forced extrapolation). `s1` and `s2` correlate at
# about 0.9 in the real data: would you report their importances separately? What would you do
# instead (permute them as a group; drop-column importance with retraining; conditional
# permutation)?

# %% [markdown]
# ## 2. Partial dependence and ICE curves
#
# How does the prediction change as one feature moves? An **ICE curve** (individual conditional
# expectation, Goldstein et al.) sets feature $j$ of one patient to each value of a grid, keeping the
# patient's other features, and records the prediction. The **partial dependence** (Friedman 2001) is
# the average of the ICE curves over the data: $\mathrm{PD}_j(v) = \frac1n \sum_i f(x_i \text{ with }
# x_{ij} = v)$.
#
# **Task** (difficulty 1/5, ~10 min): implement
# `partial_dependence(predict, X, feature, grid) -> dict` with `"ice"`: `Float[ndarray, "n grid"]`
# (row $i$ is patient $i$'s curve) and `"average"`: `Float[ndarray, "grid"]` (the partial dependence).
# This is `sklearn.inspection.partial_dependence(..., method="brute", kind="both")` on a custom grid.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# One copy of `X` per grid value, with column `feature` overwritten by that value; predict; the
# average is the mean over patients.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `copies = np.repeat(X[None], len(grid), axis=0)`; `copies[:, :, feature] = grid[:, None]`; predict
# on `copies.reshape(-1, X.shape[1])` and reshape to `(grid, n)`, then transpose.
# </details>

# %% role="solution" grade_id="impl_partial_dependence"
def partial_dependence(predict: ModelFn, X: Float[np.ndarray, "n features"], feature: int,
                       grid: Float[np.ndarray, " grid"]) -> dict[str, np.ndarray]:
    """ICE curves (one per row of X) and their average, the partial dependence, over ``grid``."""
    ### BEGIN SOLUTION
    copies = np.repeat(X[None], len(grid), axis=0)
    copies[:, :, feature] = np.asarray(grid)[:, None]
    ice = predict(copies.reshape(-1, X.shape[1])).reshape(len(grid), len(X)).T
    return {"ice": ice, "average": ice.mean(0)}
    ### END SOLUTION


# %% role="test" grade_id="test_partial_dependence" points=1
check("foundations.partial_dependence", partial_dependence)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
for ax, name in zip(axes, ("bmi", "s5")):
    j = diabetes.feature_names.index(name)
    grid = np.quantile(diabetes.X_train[:, j], np.linspace(0.05, 0.95, 15))
    curves = partial_dependence(predict_diabetes, diabetes.X_train, j, grid)
    ax.plot(grid, curves["ice"][:60].T, color="gray", alpha=0.25, linewidth=0.8)
    ax.plot(grid, curves["average"], color="crimson", linewidth=2.5, label="partial dependence")
    ax.set_xlabel(name)
    ax.set_ylabel("predicted progression")
    ax.legend(fontsize=7)
    centred = curves["ice"] - curves["ice"][:, :1]
    print(f"{name}: PD rises by {curves['average'][-1] - curves['average'][0]:.1f} over the grid; "
          f"the patients' own rises range from {centred[:, -1].min():.1f} to {centred[:, -1].max():.1f}")
plt.show()

# %% [markdown]
# **Questions.** Are the ICE curves parallel? The printout gives the range of the patients' own
# rises: for `bmi` they run from about a tenth to nearly twice the average rise. Curves that fan out
# like this mean the effect of the feature depends on the others (trees of depth 3 model
# interactions of up to three features), and the partial dependence reports only their average.
# Where curves cross, even the sign of the effect differs between patients: which would you report? The grid runs from the 5th to the 95th percentile:
# why not from the minimum to the maximum? And for `s1` (correlated with `s2` at 0.9), what does
# the partial dependence average over that is not a real patient?

# %% [markdown]
# ## 3. Shapley values, exactly
#
# A local question now: why does the model predict $f(x)$ for *this* patient rather than the
# average prediction? Shapley values share the difference among the features as a fair division
# of a cooperative game. The game needs a **value** for every coalition $S$ of features: the
# prediction when only the features in $S$ are known. We use the *interventional* value (the one
# KernelSHAP estimates): the features in $S$ come from $x$, the others from each row $b$ of a
# background data set, and the predictions are averaged:
#
# $$v(S) = \frac{1}{|B|} \sum_{b \in B} f(x_S, b_{\bar S}).$$
#
# **Task** (difficulty 2/5, ~10 min): implement
# `coalition_values(predict, x, background, coalitions) -> Float[ndarray, "coalitions"]`, $v(S)$ for
# every row of the boolean `coalitions` (`True` = the feature is in $S$, taken from `x`).
#
# <details><summary>Hint 1 (the idea)</summary>
#
# For each coalition, build one hybrid row per background row: `x` where the coalition is True,
# the background row elsewhere; predict and average over the background.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `np.where(coalitions[:, None, :], x[None, None, :], background[None, :, :])` has shape
# `(coalitions, background, features)`: one `predict` call on it reshaped to 2-d.
# </details>

# %% role="solution" grade_id="impl_coalition_values"
def coalition_values(predict: ModelFn, x: Float[np.ndarray, " features"], background: Float[np.ndarray, "background features"],
                     coalitions: Bool[np.ndarray, "coalitions features"]) -> Float[np.ndarray, " coalitions"]:
    """v(S): the mean prediction over the background with the features of S taken from x."""
    ### BEGIN SOLUTION
    hybrids = np.where(coalitions[:, None, :], x[None, None, :], background[None, :, :])
    predictions = predict(hybrids.reshape(-1, len(x)))
    return predictions.reshape(len(coalitions), len(background)).mean(1)
    ### END SOLUTION


# %% role="test" grade_id="test_coalition_values" points=1
check("foundations.coalition_values", coalition_values)

# %% [markdown]
# The Shapley value of feature $i$ is its marginal contribution averaged over every order in which
# the features could join, which comes to a weighted sum over the coalitions without $i$:
#
# $$\phi_i = \sum_{S \subseteq N \setminus \{i\}} \frac{|S|!\,(M - |S| - 1)!}{M!} \big(v(S \cup \{i\}) - v(S)\big).$$
#
# **Task** (difficulty 3/5, ~20 min): implement `exact_shapley(predict, x, background) ->
# Float[ndarray, "features"]` by enumerating all $2^M$ coalitions (use your `coalition_values` and
# `all_coalitions(M)`, which lists them in binary order: row $k$ holds the bits of $k$, feature 0 as
# the lowest bit, so adding feature $i$ to row $k$ gives row $k + 2^i$).
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Compute $v$ once for all $2^M$ coalitions. For each feature, pair every coalition without it with
# the same coalition plus it, weight the difference by the formula, and sum.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `values = coalition_values(predict, x, background, all_coalitions(M))`; for feature `i`:
# `rows = np.flatnonzero(~coalitions[:, i])`, `s = coalitions[rows].sum(1)`, weights
# `math.factorial(s) * math.factorial(M - s - 1) / math.factorial(M)` (element by element), and
# `values[rows + 2**i] - values[rows]`.
# </details>

# %% role="solution" grade_id="impl_exact_shapley"
def exact_shapley(predict: ModelFn, x: Float[np.ndarray, " features"],
                  background: Float[np.ndarray, "background features"]) -> Float[np.ndarray, " features"]:
    """Exact interventional Shapley values by enumerating every coalition."""
    ### BEGIN SOLUTION
    n_features = len(x)
    coalitions = all_coalitions(n_features)
    values = coalition_values(predict, x, background, coalitions)
    phi = np.zeros(n_features)
    for i in range(n_features):
        rows = np.flatnonzero(~coalitions[:, i])
        sizes = coalitions[rows].sum(1)
        weights = np.array([math.factorial(s) * math.factorial(n_features - s - 1) for s in sizes]) / math.factorial(n_features)
        phi[i] = np.sum(weights * (values[rows + 2**i] - values[rows]))
    return phi
    ### END SOLUTION


# %% role="test" grade_id="test_exact_shapley" points=1
check("foundations.exact_shapley", exact_shapley)

# %% [markdown]
# The axioms, in numbers. **Efficiency**: the values add up to $f(x) - \mathbb{E}_B f(b)$.
# **Symmetry**: two features that play the same role get the same value; **dummy**: a feature the
# model ignores gets 0. A hand-built model shows the last two, the diabetes patient the first.

# %%
background = diabetes.X_train[:50]
patient = diabetes.X_test[0]
phi_exact = exact_shapley(predict_diabetes, patient, background)
gap = phi_exact.sum() - (predict_diabetes(patient[None])[0] - predict_diabetes(background).mean())
print("Shapley values:", dict(zip(diabetes.feature_names, np.round(phi_exact, 2))))
print(f"efficiency: sum = {phi_exact.sum():.4f}, f(x) - E f(b) = "
      f"{predict_diabetes(patient[None])[0] - predict_diabetes(background).mean():.4f}, gap {gap:.1e}")


def toy_model(X: np.ndarray) -> np.ndarray:  # features 0 and 1 symmetric, feature 3 ignored
    return X[:, 0] * X[:, 1] + X[:, 0] + X[:, 1] + 2 * X[:, 2]


toy_x, toy_background = np.array([1.0, 1.0, 0.5, 3.0]), np.random.default_rng(0).normal(size=(20, 4))
toy_background[:, 1] = toy_background[:, 0]  # symmetry needs the two features interchangeable in the background too
phi_toy = exact_shapley(toy_model, toy_x, toy_background)
print("toy model: phi =", np.round(phi_toy, 4), f"(|phi_0 - phi_1| = {abs(phi_toy[0] - phi_toy[1]):.1e}, phi_3 = {phi_toy[3]:.1e})")

# %% [markdown]
# **Questions.** $2^{10} = 1024$ coalitions times 50 background rows is 51,200 predictions for one
# patient: how does that scale to 30 features? The value function replaced missing features by
# background rows *independently* of the known ones (interventional): for `s1` known and `s2`
# "missing", which unrealistic patients does it average over? A conditional value function would
# avoid them, at the price that a feature the model never reads can get credit (Janzing et al. 2020;
# Chen et al. 2020, "True to the model or true to the data?").

# %% [markdown]
# ## 4. KernelSHAP: Shapley values by weighted regression
#
# Lundberg & Lee show that the Shapley values are the solution of a weighted linear regression over
# coalitions $z \in \{0,1\}^M$: find $\phi$ minimising
#
# $$\sum_z \pi(z)\, \Big(v(z) - \phi_0 - \sum_i z_i \phi_i\Big)^2, \qquad \pi(z) = \frac{M-1}{\binom{M}{|z|}\,|z|\,(M - |z|)},$$
#
# with $\phi_0 = v(\emptyset)$ and the efficiency constraint $\sum_i \phi_i = v(N) - v(\emptyset)$
# (the two coalitions whose kernel weight is infinite). With every coalition the solution is exact;
# with a sample of coalitions it is an estimate that converges as the sample grows.
#
# **Task** (difficulty 3/5, ~25 min): implement `kernel_shap(predict, x, background, coalitions) ->
# Float[ndarray, "features"]`: the **constrained** weighted least-squares solution over the given rows
# of `coalitions` (each neither empty nor full; a row may repeat: each row is one term of the sum),
# with $v$ from your `coalition_values`, $v(\emptyset)$ = the mean prediction on the background, and
# $v(N) = f(x)$.
#
# **Where this differs from the `shap` package.** `shap.KernelExplainer` draws coalition *sizes* from
# the kernel's distribution and pairs each coalition with its complement, and then gives the samples
# equal weight; with `nsamples` at least $2^M - 2$ it enumerates every coalition, and then it and
# this function both return the exact values (the course's tests check this against `shap`). Our
# notebook samples coalitions uniformly (`random_coalitions`), which is why each row keeps its kernel
# weight. `shap` also adds an L1 feature-selection step by default when it samples few coalitions;
# we never do.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Eliminate the constraint: write the last value as $\phi_M = (v(N) - \phi_0) - \sum_{i<M} \phi_i$
# and substitute. The problem becomes an ordinary weighted least-squares fit of $M - 1$ unknowns
# with no intercept (any other correct way of imposing the constraint gives the same answer).
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# Targets `v - phi0 - z[:, -1] * (fx - phi0)`, design `z[:, :-1] - z[:, -1:]`, both rows scaled by
# `sqrt(weight)`; `np.linalg.lstsq`; append `fx - phi0 - head.sum()`. `math.comb` for the binomial.
# </details>

# %% role="solution" grade_id="impl_kernel_shap"
def kernel_shap(predict: ModelFn, x: Float[np.ndarray, " features"], background: Float[np.ndarray, "background features"],
                coalitions: Bool[np.ndarray, "samples features"]) -> Float[np.ndarray, " features"]:
    """Shapley values as the efficiency-constrained, Shapley-kernel-weighted regression over ``coalitions``."""
    ### BEGIN SOLUTION
    n_features = len(x)
    z = coalitions.astype(np.float64)
    sizes = coalitions.sum(1)
    weights = (n_features - 1) / (np.array([math.comb(n_features, int(s)) for s in sizes]) * sizes * (n_features - sizes))
    values = coalition_values(predict, x, background, coalitions)
    phi0 = predict(background).mean()
    fx = predict(x[None])[0]
    targets = values - phi0 - z[:, -1] * (fx - phi0)
    design = z[:, :-1] - z[:, -1:]
    root = np.sqrt(weights)
    head = np.linalg.lstsq(design * root[:, None], targets * root, rcond=None)[0]
    return np.append(head, fx - phi0 - head.sum())
    ### END SOLUTION


# %% role="test" grade_id="test_kernel_shap" points=1
check("foundations.kernel_shap", kernel_shap)

# %%
phi_all = kernel_shap(predict_diabetes, patient, background, proper_coalitions(10))
print(f"every coalition (1022 rows): max |KernelSHAP - exact| = {np.abs(phi_all - phi_exact).max():.1e}")
rng = np.random.default_rng(0)
convergence = {}
for n_samples in (25, 50, 100, 200, 400, 800):
    errors = [np.abs(kernel_shap(predict_diabetes, patient, background, random_coalitions(10, n_samples, rng))
                     - phi_exact).max() for _ in range(5)]
    convergence[n_samples] = float(np.mean(errors))
    print(f"{n_samples:4d} sampled coalitions: max |error| = {convergence[n_samples]:.3f} "
          f"(mean of 5 draws; largest |phi| = {np.abs(phi_exact).max():.2f})")

# %% [markdown]
# **Questions.** How fast does the error fall with the number of sampled coalitions (compare with
# $1/\sqrt{n}$)? Which coalitions carry the largest kernel weights, and why does drawing sizes from
# the kernel (as `shap` does) converge faster than drawing uniformly? The efficiency axiom holds by
# construction for every sample size: why does that make it a weak check of an estimate?

# %% [markdown]
# ## 5. LIME on tabular data
#
# LIME explains one prediction with a simple model fitted *around* it. For tabular data (the
# `lime_tabular` recipe): draw samples near the instance, $s_k = x + \sigma \odot \epsilon_k$ with
# standard-normal $\epsilon_k$ and $\sigma$ the features' standard deviations; query the black box;
# weight each sample by its closeness, $\pi_k = \exp(-d_k^2 / w^2)$ with $d_k = \lVert \epsilon_k
# \rVert$ (the Euclidean distance in standardised units) and kernel width $w$; fit a weighted linear
# model $f(s_k) \approx \beta_0 + \sum_i \beta_i \epsilon_{k,i}$ on the standardised offsets, so each
# $\beta_i$ is "the change of the prediction per standard deviation of feature $i$", and $\beta_0$ is
# the surrogate's prediction at $x$. The surrogate's **fidelity** is its weighted $R^2$ on the
# samples: $1 - \sum_k \pi_k (f(s_k) - \hat f_k)^2 / \sum_k \pi_k (f(s_k) - \bar f_\pi)^2$, with
# $\bar f_\pi$ the weighted mean. (The `lime` package reports the same number as `score`.)
#
# **Where this differs from the `lime` package.** `lime_tabular` weighs with the *square root* of
# this kernel, $\exp(-d^2/(2w^2))$ (pass $\sqrt2\,w$ to our function for its weights), defaults to
# $w = 0.75\sqrt{M}$, discretises features into quartiles unless told not to, selects features and
# fits a ridge regression (`Ridge(alpha=1)`). We sample continuously around the instance and fit
# unregularised weighted least squares on all features.
#
# **Task** (difficulty 2/5, ~20 min): implement `lime_tabular(predict, x, scale, noise,
# kernel_width) -> dict` with `"coef"` (`Float[ndarray, "features"]`, the $\beta_i$), `"intercept"`
# ($\beta_0$) and `"fidelity"`. `noise` holds the $\epsilon_k$, `"samples features"`.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Build the samples, predict, weight by distance, solve weighted least squares with an intercept
# column, then measure how well the weighted fit explains the weighted variance.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# Design `np.column_stack([np.ones(n), noise])`; rows and targets scaled by `np.sqrt(weights)`;
# `np.linalg.lstsq`; `np.average(y, weights=weights)` for the weighted mean.
# </details>

# %% role="solution" grade_id="impl_lime_tabular"
def lime_tabular(predict: ModelFn, x: Float[np.ndarray, " features"], scale: Float[np.ndarray, " features"],
                 noise: Float[np.ndarray, "samples features"], kernel_width: float) -> dict[str, np.ndarray]:
    """A weighted linear surrogate around x on standardised offsets: coefficients, intercept, fidelity."""
    ### BEGIN SOLUTION
    y = predict(x[None, :] + noise * scale[None, :])
    weights = np.exp(-np.sum(noise**2, axis=1) / kernel_width**2)
    design = np.column_stack([np.ones(len(noise)), noise])
    root = np.sqrt(weights)
    beta = np.linalg.lstsq(design * root[:, None], y * root, rcond=None)[0]
    residual = y - design @ beta
    spread = y - np.average(y, weights=weights)
    fidelity = 1 - np.sum(weights * residual**2) / np.sum(weights * spread**2)
    return {"coef": beta[1:], "intercept": beta[0], "fidelity": fidelity}
    ### END SOLUTION


# %% role="test" grade_id="test_lime_tabular" points=1
check("foundations.lime_tabular", lime_tabular)

# %%
scale = diabetes.X_train.std(0)
rng = np.random.default_rng(0)
print(f"{'kernel width':>12s} {'fidelity':>9s}  top-3 LIME features (coef per std)")
for width in (0.5, 1.0, 2.0, 0.75 * np.sqrt(10), 10.0):
    fit = lime_tabular(predict_diabetes, patient, scale, rng.normal(size=(1000, 10)), width)
    top = np.argsort(-np.abs(fit["coef"]))[:3]
    print(f"{width:12.2f} {fit['fidelity']:9.3f}  " + ", ".join(f"{diabetes.feature_names[i]} {fit['coef'][i]:+.1f}" for i in top))
print("Shapley top-3 for the same patient:", ", ".join(f"{diabetes.feature_names[i]} {phi_exact[i]:+.1f}"
                                                      for i in np.argsort(-np.abs(phi_exact))[:3]))

# %% [markdown]
# **Questions.** As the kernel widens, the surrogate describes the model over a larger region: what
# happens to its fidelity, and to the top features? A step-function model (trees) has zero gradient
# almost everywhere: what does a very narrow kernel then fit? LIME's coefficient answers "how does
# the prediction change per standard deviation near $x$", a Shapley value "how much of $f(x) -
# \mathbb{E} f$ is due to feature $i$": they need not agree, and here they only partly do. Which
# kernel width would you report, and how would you justify it?

# %% [markdown]
# ## 6. Gradient methods on an image model
#
# Now a differentiable model: an MLP on the 8x8 digits. Gradients give explanations for the price
# of one backward pass. `train_classifier` (in `interplab.foundations`) trains it with full-batch
# Adam in a second or two.

# %%
digits_model = train_classifier(X_digits, y_digits, seed=0, steps=150)
print(f"digits MLP: test accuracy {accuracy(digits_model, X_digits_test, y_digits_test):.3f}, "
      f"train {accuracy(digits_model, X_digits, y_digits):.3f}")
x_explain = X_digits_test[:6]
with torch.no_grad():
    t_explain = digits_model(x_explain).argmax(-1)

# %% [markdown]
# **Saliency** (Simonyan et al.) is the gradient of the target logit with respect to the input,
# usually its absolute value; **gradient x input** multiplies it by the input, element by element
# (for a linear model, exactly each pixel's contribution to the logit).
#
# **Task** (difficulty 1/5, ~10 min): implement `saliency(model, inputs, target, absolute=True) ->
# Float[Tensor, "batch features"]`: the gradient of each example's **target logit** (not its
# probability) w.r.t. its input, absolute if `absolute`. The check's models are float64: keep the
# inputs' dtype.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Sum the selected logits over the batch: each example's gradient only sees its own logit.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `x = inputs.detach().clone().requires_grad_(True)`; `model(x).gather(1, target[:, None]).sum()`;
# `torch.autograd.grad`.
# </details>

# %% role="solution" grade_id="impl_saliency"
def saliency(model: nn.Module, inputs: Float[Tensor, "batch features"], target: Int[Tensor, " batch"],
             absolute: bool = True) -> Float[Tensor, "batch features"]:
    """Gradient of the target logit w.r.t. the input (absolute value if ``absolute``)."""
    ### BEGIN SOLUTION
    x = inputs.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
    return grad.abs() if absolute else grad
    ### END SOLUTION


# %% role="test" grade_id="test_saliency" points=1
check("foundations.saliency", saliency)

# %% [markdown]
# **Integrated Gradients** averages the gradient along the straight path from a baseline $x'$ to $x$
# and multiplies by $x - x'$: $\mathrm{IG}_i = (x_i - x'_i) \int_0^1 \partial_i f_c(x' + \alpha(x -
# x'))\, d\alpha$, so that the attributions add up to $f_c(x) - f_c(x')$ (completeness).
#
# **Task** (difficulty 2/5, ~15 min): implement `integrated_gradients(model, inputs, target,
# baselines=None, n_steps=50)` with the **midpoint rule** ($\alpha_k = (k + \tfrac12)/n$, weights
# $1/n$: Captum's `method="riemann_middle"`). `baselines` is `None` (zeros), a number, or a tensor
# broadcastable to `inputs`. Use the target **logit**.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Evaluate the gradient at `n_steps` points on the path, average, and multiply by `inputs - baselines`.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# Stack the path points as `(n_steps * batch, features)`, with `target.repeat(n_steps)`: one backward
# pass; reshape the gradients to `(n_steps, batch, features)` and take the mean over the steps.
# </details>

# %% role="solution" grade_id="impl_integrated_gradients"
def integrated_gradients(model: nn.Module, inputs: Float[Tensor, "batch features"], target: Int[Tensor, " batch"],
                         baselines: float | Tensor | None = None, n_steps: int = 50) -> Float[Tensor, "batch features"]:
    """Integrated Gradients of the target logit, midpoint rule with ``n_steps`` points."""
    ### BEGIN SOLUTION
    base = torch.zeros_like(inputs) if baselines is None else torch.as_tensor(baselines, dtype=inputs.dtype).expand_as(inputs)
    alphas = (torch.arange(n_steps, dtype=inputs.dtype) + 0.5) / n_steps
    delta = inputs - base
    path = (base[None] + alphas[:, None, None] * delta[None]).reshape(-1, inputs.shape[1]).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(path).gather(1, target.repeat(n_steps)[:, None]).sum(), path)
    return delta * grad.reshape(n_steps, *inputs.shape).mean(0)
    ### END SOLUTION


# %% role="test" grade_id="test_integrated_gradients" points=1
check("foundations.integrated_gradients", integrated_gradients)

# %% [markdown]
# **SmoothGrad** (Smilkov et al.) averages the gradient over noisy copies of the input,
# $\frac1K \sum_k \nabla f_c(x + \sigma \epsilon_k)$, to remove the high-frequency noise of raw
# gradients.
#
# **Task** (difficulty 1/5, ~10 min): implement `smoothgrad(model, inputs, target, noise, sigma) ->
# Float[Tensor, "batch features"]`: the mean of the signed gradients of the target logit at
# `inputs + sigma * noise[k]` for every $k$; `noise` is standard normal, `"samples batch features"`.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# The gradient of the target logit at each noisy copy, averaged over the copies.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `noisy = (inputs[None] + sigma * noise).reshape(-1, features)` with `target.repeat(samples)`: one
# backward pass, then `.reshape(noise.shape).mean(0)`.
# </details>

# %% role="solution" grade_id="impl_smoothgrad"
def smoothgrad(model: nn.Module, inputs: Float[Tensor, "batch features"], target: Int[Tensor, " batch"],
               noise: Float[Tensor, "samples batch features"], sigma: float) -> Float[Tensor, "batch features"]:
    """The mean signed gradient of the target logit over inputs + sigma * noise."""
    ### BEGIN SOLUTION
    noisy = (inputs[None] + sigma * noise).reshape(-1, inputs.shape[1]).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(noisy).gather(1, target.repeat(len(noise))[:, None]).sum(), noisy)
    return grad.reshape(noise.shape).mean(0)
    ### END SOLUTION


# %% role="test" grade_id="test_smoothgrad" points=1
check("foundations.smoothgrad", smoothgrad)

# %% [markdown]
# Every method with the same call shape `method(model, inputs, target)`, so the next sections can
# swap them. The IG baseline is blank paper (-1 everywhere); SmoothGrad uses 32 copies with
# $\sigma$ = 0.3 (15% of the pixel range [-1, 1], in the range Smilkov et al. recommend).

# %%
BLANK = -1.0  # pixel value of blank paper


def smoothgrad_32(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    noise = torch.randn((32, *inputs.shape), generator=torch.Generator().manual_seed(0), dtype=inputs.dtype)
    return smoothgrad(model, inputs, target, noise, sigma=0.3)


methods: dict[str, Callable[[nn.Module, Tensor, Tensor], Tensor]] = {
    "saliency |grad|": saliency,
    "gradient x input": lambda m, x, t: saliency(m, x, t, absolute=False) * x,
    "integrated gradients": lambda m, x, t: integrated_gradients(m, x, t, baselines=BLANK, n_steps=32),
    "SmoothGrad": smoothgrad_32,
}
maps = {name: method(digits_model, x_explain, t_explain) for name, method in methods.items()}
plot_digit_maps(x_explain[:4], {name: m[:4] for name, m in maps.items()}, title="red: evidence for the predicted digit")
plt.show()
with torch.no_grad():
    change = digits_model(x_explain).gather(1, t_explain[:, None])[:, 0] - digits_model(torch.full_like(x_explain, BLANK)).gather(1, t_explain[:, None])[:, 0]
print("IG completeness gap (sum of IG - logit change), per image:",
      np.round((maps["integrated gradients"].sum(1) - change).tolist(), 3), "logits")

# %% [markdown]
# **Questions.** IG from blank paper is zero wherever a pixel is blank; gradient x input is zero
# wherever a pixel is 0, which here is mid-grey: what is gradient x input's implicit baseline, and
# when is it IG with one step? Which maps
# look like the digit itself, and is that evidence that they explain the *model*? Keep this question
# for the next section.

# %% [markdown]
# ## 7. Sanity checks (Adebayo et al. 2018)
#
# A map that looks like the digit may only be showing the input. Adebayo et al. ask: **does the map
# change when the model does?** Two tests:
#
# - **cascading model randomisation**: re-initialise the layers from the top down
#   (`cascading_randomisation(model, seed)` yields the stages `layers.2`, `layers.1`, `layers.0`,
#   each with that layer and every layer above re-initialised) and compare each map with the trained
#   model's map;
# - **data randomisation**: train the same architecture on *permuted labels* (it can only memorise)
#   and compare its maps with the trained model's.
#
# A method that explains the model must give different maps in both tests.
#
# **Task** (difficulty 2/5, ~20 min): implement `randomisation_similarity(method, model, others, inputs,
# target) -> Float[Tensor, "others batch"]`: for every model in the list `others`, the **Spearman
# rank correlation** between $|$`method(model, inputs, target)`$|$ and $|$`method(other, inputs,
# target)`$|$, per example. Conventions (Adebayo et al.'s): the **same target** for every model (the
# question is whether the explanation of one decision changes); absolute values; ties get the
# **average** of the ranks they span (as `scipy.stats.spearmanr`), and a constant map gives NaN.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Spearman's correlation is Pearson's correlation of the ranks: rank each example's `|map|`, centre
# the ranks and divide their dot product by the product of their norms.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# Average ranks of a `(batch, n)` tensor without sorting:
# `(v[:, None, :] < v[:, :, None]).sum(-1) + ((v[:, None, :] == v[:, :, None]).sum(-1) + 1) / 2`.
# </details>

# %% role="solution" grade_id="impl_randomisation_similarity"
def randomisation_similarity(method: Callable[[nn.Module, Tensor, Tensor], Tensor], model: nn.Module,
                             others: list[nn.Module], inputs: Float[Tensor, "batch features"],
                             target: Int[Tensor, " batch"]) -> Float[Tensor, "others batch"]:
    """Spearman correlation of |map| between ``model`` and each of ``others``, per example, same target."""
    ### BEGIN SOLUTION
    def average_ranks(values: Tensor) -> Tensor:
        below = (values[:, None, :] < values[:, :, None]).sum(-1)
        equal = (values[:, None, :] == values[:, :, None]).sum(-1)
        return (below + (equal + 1) / 2).double()

    def spearman(a: Tensor, b: Tensor) -> Tensor:
        ra, rb = average_ranks(a), average_ranks(b)
        ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
        return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))  # 0 / 0 = NaN for a constant map

    reference = method(model, inputs, target).detach().abs()
    return torch.stack([spearman(reference, method(other, inputs, target).detach().abs()) for other in others])
    ### END SOLUTION


# %% role="test" grade_id="test_randomisation_similarity" points=1
check("foundations.randomisation_similarity", randomisation_similarity)

# %% [markdown]
# The table: every method through the cascade and against the model trained on permuted labels,
# on 30 test digits (mean Spearman). The control is $|x|$ used as a "map": it ignores the model, so
# its similarity is 1 by construction; a method that behaves like it explains the input.

# %%
shuffled_labels = y_digits[torch.randperm(len(y_digits), generator=torch.Generator().manual_seed(0))]
random_label_model = train_classifier(X_digits, shuffled_labels, seed=0, steps=400)
print(f"model on permuted labels: train accuracy {accuracy(random_label_model, X_digits, shuffled_labels):.3f} "
      f"(memorised), test accuracy {accuracy(random_label_model, X_digits_test, y_digits_test):.3f}")
x_sanity = X_digits_test[:30]
with torch.no_grad():
    t_sanity = digits_model(x_sanity).argmax(-1)
cascade = list(cascading_randomisation(digits_model, seed=0))
sanity = {}
for name, method in {**methods, "|input| (ignores the model)": lambda m, x, t: x.abs()}.items():
    similarity = randomisation_similarity(method, digits_model, [m for _, m in cascade] + [random_label_model], x_sanity, t_sanity)
    sanity[name] = similarity.nanmean(1).tolist()
print(format_table(sanity, ["+" + stage for stage, _ in cascade] + ["labels"], width=11))

# %% [markdown]
# **Questions.** Which methods fall towards 0 as the layers are randomised, and which stay high?
# Integrated Gradients stays close to the $|x|$ control: its map is $(x - x') \odot$ (average
# gradient), and with the blank-paper baseline $x - x'$ is exactly 0 on every blank pixel, in every
# model, so those ties alone keep the rank correlation high. Gradient x input multiplies by $x$ too:
# how much of its similarity is the input's? What does the permuted-label column say about each
# method? How would you change the comparison (e.g. only over the pixels that are not blank) to
# separate "the map follows the input" from "the map follows the model"? Spearman of
# absolute values is one choice: Adebayo et al. also report SSIM and signed rank correlation; how
# could the choice change a verdict? Passing is necessary, not sufficient: a map can depend on the
# model and still be wrong about it.

# %% [markdown]
# ## 8. Remove and retrain (ROAR, Hooker et al. 2019)
#
# If a method finds the important pixels, removing them should hurt. But removing pixels and
# evaluating the *same* model measures the model on images unlike any it saw. ROAR removes the top
# $k$ pixels of every training and test image (by each method's map of the trained model), **retrains**
# a model on the degraded training set, and measures its test accuracy: a good method's removal
# hurts more than random removal.
#
# **Task** (difficulty 2/5, ~15 min): implement `remove_top_features(inputs, attributions, k, fill) ->
# Float[Tensor, "batch features"]`: each row of `inputs` with its `k` features of largest
# **absolute** attribution replaced by `fill` (a `"features"` tensor: the training mean of each pixel,
# as Hooker et al. use a per-channel mean). **Ties**: among equal $|a|$, the feature with the
# **lower index** is removed first (a stable sort in descending order); gradient x input has many
# exact zeros, so this matters.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Order each row's features by decreasing $|a|$, keeping equal values in index order; mark the first
# `k`; replace the marked features by `fill`.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `torch.argsort(attributions.abs(), dim=1, descending=True, stable=True)[:, :k]`; a boolean mask
# from `scatter`; `torch.where(mask, fill.expand_as(inputs), inputs)`.
# </details>

# %% role="solution" grade_id="impl_remove_top_features"
def remove_top_features(inputs: Float[Tensor, "batch features"], attributions: Float[Tensor, "batch features"], k: int,
                        fill: Float[Tensor, " features"]) -> Float[Tensor, "batch features"]:
    """Replace each row's k features of largest |attribution| (ties: lower index first) by ``fill``."""
    ### BEGIN SOLUTION
    order = torch.argsort(attributions.abs(), dim=1, descending=True, stable=True)[:, :k]
    mask = torch.zeros(inputs.shape, dtype=torch.bool).scatter(1, order, True)
    return torch.where(mask, fill.to(inputs.dtype).expand_as(inputs), inputs)
    ### END SOLUTION


# %% role="test" grade_id="test_remove_top_features" points=1
check("foundations.remove_top_features", remove_top_features)

# %%
pixel_mean = X_digits.mean(0)
roar_methods = {**methods, "random (seed 0)": lambda m, x, t: torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)}
roar_fractions = (0.25, 0.5, 0.75)
roar = {}
for name, method in roar_methods.items():
    train_maps = method(digits_model, X_digits, digits_model(X_digits).argmax(-1).detach()).detach()
    test_maps = method(digits_model, X_digits_test, digits_model(X_digits_test).argmax(-1).detach()).detach()
    roar[name] = []
    for fraction in roar_fractions:
        k = int(fraction * 64)
        retrained = train_classifier(remove_top_features(X_digits, train_maps, k, pixel_mean), y_digits, seed=0, steps=100)
        roar[name].append(accuracy(retrained, remove_top_features(X_digits_test, test_maps, k, pixel_mean), y_digits_test))
print(f"test accuracy without removal: {accuracy(train_classifier(X_digits, y_digits, seed=0, steps=100), X_digits_test, y_digits_test):.3f}"
      " (same recipe: 100 steps)")
print(format_table(roar, [f"{int(100 * f)}% gone" for f in roar_fractions], width=11))

# %% [markdown]
# **Questions.** Which methods degrade the retrained model more than random removal, and at which
# fraction? Hooker et al. found that plain gradients, IG and SmoothGrad were *no better than random*
# on ImageNet (random removal hurt more), while SmoothGrad-squared and VarGrad were better: compare
# with this table. Two things differ
# from the paper: we retrain once per cell with one seed (they average five), and our images have
# 64 pixels, many always blank (the random column removes those too). Why does ROAR retrain at all,
# and what does a method that "removes" only the always-blank pixels score?

# %% [markdown]
# ## 9. Faithfulness on the same instances, and what a ranking means
#
# ROAR asks about the *training data*; a local question is whether a map predicts what happens to
# *this* prediction when features are removed. **Faithfulness correlation** (Bhatt et al. 2020): for
# many random subsets $S$ of the features, compare the attribution mass of the subset,
# $\sum_{i \in S} a_i$, with the drop of the target logit when the subset is replaced by `fill`,
# $f_c(x) - f_c(x_{S \leftarrow \text{fill}})$; report their **Pearson** correlation per example.
#
# **Task** (difficulty 2/5, ~20 min): implement `faithfulness_correlation(model, inputs, target,
# attributions, subsets, fill) -> Float[Tensor, "batch"]`, with `subsets` a boolean
# `"subsets features"` tensor (the same subsets for every example), `fill` a `"features"` tensor, and
# the **signed** attributions and the **logit** (no softmax) of `target`.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# For every example and subset: one perturbed input and one sum of attributions. Then Pearson's
# correlation over the subsets, per example.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `torch.where(subsets[None], fill, inputs[:, None])` has shape `(batch, subsets, features)`; the sums
# are `attributions @ subsets.T`; centre both and divide the dot product by the product of norms.
# </details>

# %% role="solution" grade_id="impl_faithfulness_correlation"
def faithfulness_correlation(model: nn.Module, inputs: Float[Tensor, "batch features"], target: Int[Tensor, " batch"],
                             attributions: Float[Tensor, "batch features"], subsets: Bool[Tensor, "subsets features"],
                             fill: Float[Tensor, " features"]) -> Float[Tensor, " batch"]:
    """Pearson correlation, over subsets, of the attribution mass and the drop of the target logit."""
    ### BEGIN SOLUTION
    batch, n_subsets = inputs.shape[0], subsets.shape[0]
    with torch.no_grad():
        clean = model(inputs).gather(1, target[:, None])
        perturbed = torch.where(subsets[None], fill.to(inputs.dtype), inputs[:, None]).reshape(-1, inputs.shape[1])
        logits = model(perturbed).reshape(batch, n_subsets, -1)
        drop = clean - logits.gather(2, target[:, None, None].expand(batch, n_subsets, 1))[..., 0]
    mass = attributions.detach() @ subsets.to(attributions.dtype).T
    mass, drop = mass - mass.mean(1, keepdim=True), drop - drop.mean(1, keepdim=True)
    return (mass * drop).sum(1) / (mass.norm(dim=1) * drop.norm(dim=1))
    ### END SOLUTION


# %% role="test" grade_id="test_faithfulness_correlation" points=1
check("foundations.faithfulness_correlation", faithfulness_correlation)

# %% [markdown]
# The closing table ranks the methods three ways on the same 30 test digits and the same model:
# faithfulness correlation (subsets of 16 pixels, replaced by the pixel means), ROAR (accuracy at 50%
# removed: lower is better), and the sanity check (similarity after full randomisation: lower is
# better).

# %%
subsets = torch.rand((100, 64), generator=torch.Generator().manual_seed(1)).argsort(1) < 16  # 100 subsets of 16 pixels
faithfulness = {name: float(faithfulness_correlation(digits_model, x_sanity, t_sanity, method(digits_model, x_sanity, t_sanity),
                                                     subsets, pixel_mean).nanmean())
                for name, method in roar_methods.items()}
ig_mean_baseline = integrated_gradients(digits_model, x_sanity, t_sanity, baselines=pixel_mean, n_steps=32)
print(f"integrated gradients from the pixel-mean image (the metric's own fill): faithfulness "
      f"{float(faithfulness_correlation(digits_model, x_sanity, t_sanity, ig_mean_baseline, subsets, pixel_mean).nanmean()):.3f}")
rankings = {"faithfulness correlation (high first)": sorted(faithfulness, key=lambda n: -faithfulness[n]),
            "ROAR accuracy at 50% (low first)": sorted(roar, key=lambda n: roar[n][1]),
            "sanity: similarity after full randomisation (low first)": sorted(methods, key=lambda n: sanity[n][len(cascade) - 1])}
print(format_table({name: [faithfulness[name], roar[name][1], sanity[name][len(cascade) - 1] if name in sanity else math.nan]
                    for name in roar_methods}, ["faithful", "ROAR 50%", "sanity"], width=10))
for criterion, order in rankings.items():
    print(f"{criterion}: " + " > ".join(order))

# %% [markdown]
# **Questions.** Do the three rankings agree? Each answers a different question:
# faithfulness correlation, *does the map predict what removing features does to this prediction,
# for this model* (local; it rewards a map whose implicit removal matches the metric's: compare IG
# from blank paper with IG from the pixel-mean image, the metric's fill); ROAR, *does the map point at information the task needs* (global, about the data: a
# retrained model may use other pixels); the sanity check, *does the map depend on the model at all*
# (a filter, not a score). A method can pass one and fail another. Which would you require before
# showing a map to a doctor, and which before using it to debug a model? And is "random" in the
# faithfulness column where you expected?

# %% [markdown]
# ## Open questions
#
# - Permutation importance, partial dependence and interventional Shapley values all evaluate the
#   model off the data manifold when features are correlated. Design a conditional variant for the
#   `s1`/`s2` pair and measure how much the answers change.
# - KernelSHAP with paired sampling and size-stratified draws converges much faster: implement
#   paired sampling and measure the error at 100 coalitions.
# - ROAR retrains, so it measures the information left in the data, not what the original model used;
#   "remove and debias" (ROAD, Rong et al. 2022) and keep-and-retrain (KAR) are alternatives. What
#   would each change in the table of section 8?
#
# ## Further reading
#
# - Molnar et al. (2022), [General pitfalls of model-agnostic interpretation methods](https://arxiv.org/abs/2007.04131).
# - Sundararajan & Najmi (2020), [The many Shapley values for model explanation](https://arxiv.org/abs/1908.08474).
# - Covert & Lee (2021), [Improving KernelSHAP: practical Shapley value estimation via linear regression](https://arxiv.org/abs/2012.01536).
# - Kindermans et al. (2019), [The (un)reliability of saliency methods](https://arxiv.org/abs/1711.00867).
# - Bhatt, Weller & Moura (2020), [Evaluating and aggregating feature-based model explanations](https://arxiv.org/abs/2005.00631).
# - Hedström et al. (2023), [Quantus: an explainable AI toolkit](https://arxiv.org/abs/2202.06861).
