# %% [markdown]
# # Sparse autoencoders: superposition, dictionary learning, and features you can check
#
# A neural network represents more features than it has dimensions, by letting them share
# directions (**superposition**). A **sparse autoencoder** (SAE) tries to undo this: it rewrites an
# activation vector as a sparse combination of many learned directions, hoping that each direction
# is one interpretable feature. In this notebook you build the whole pipeline, from a toy model where
# superposition appears before your eyes, to an SAE on a language model whose true variables are
# known, so that you can *check* whether a feature means what you think.
#
# **After this notebook you will be able to**
#
# - train the toy models of Elhage et al. (2022) and explain when and why features go into
#   superposition (feature probability, importance, the geometry of the learned directions);
# - implement an SAE's forward pass and loss (ReLU with an L1 penalty weighted by decoder norms, and
#   TopK), train one, and resample dead features;
# - evaluate an SAE with explicitly defined metrics: L0, explained variance, fraction of the
#   cross-entropy loss recovered (splicing the SAE into the model with a hook), dead features;
# - measure whether an SAE recovers known ground-truth features (cosine similarity with Hungarian
#   matching), and find features of a language model that track ground-truth variables (persona,
#   difficulty, sentiment) scored by precision and recall.
#
# **Read first** (about two hours):
#
# 1. Elhage et al. (2022), [*Toy Models of Superposition*](https://transformer-circuits.pub/2022/toy_model/index.html):
#    sections "Demonstrating Superposition" and "The Geometry of Superposition" (feature dimensionality).
# 2. Bricken et al. (2023), [*Towards Monosemanticity*](https://transformer-circuits.pub/2023/monosemantic-features/index.html):
#    "Sparse Autoencoder Setup" and the appendix on resampling dead neurons.
# 3. Anthropic (2024), [*Circuits Updates, April 2024*](https://transformer-circuits.pub/2024/april-update/index.html):
#    the improved SAE training recipe (L1 weighted by decoder norms).
# 4. Gao et al. (2024), [*Scaling and evaluating sparse autoencoders*](https://arxiv.org/abs/2406.04093):
#    section 2 (TopK SAEs) and the evaluation metrics.
# 5. Anthropic (2025), [*Circuits Updates, August 2025*](https://transformer-circuits.pub/): the persona
#    vignette that the toy world below reproduces on a small scale.
#
# **The model.** `toyworld-lm` from the InterpLab zoo: a 2-layer transformer (TransformerLens
# `HookedTransformer`, LayerNorm, MLPs) trained on the *toy world* (`interplab.toyworld`), a small
# synthetic language with invented countries and capitals, people with professions and favourite
# colours, square roots (easy: `sqrt 25 is 5`; hard: `sqrt 27 is 3 root 3`), sentiment stories and
# repeated spans. Dialogues open with a persona: the **child** answers easy questions and says
# `i do not know` to hard ones, the **expert** answers both, the **assistant** hedges hard ones
# (`i think 3 root 3`). Every token comes with ground-truth labels, so a feature can be scored.
# `toyworld-sae` is a pretrained SAE on its residual stream in the middle of the second layer
# (`blocks.1.hook_resid_mid`: after layer 1's attention, before its MLP).
#
# **How the checks work.** Each exercise ends with `check("saes.<name>", your_function)`. It runs your
# function on freshly generated inputs and compares with the reference; for training exercises it
# checks *properties* of what you return (for instance, your SAE's explained variance on held-out
# activations), not exact numbers. When your answer matches a known mistake, the check names it.
#
# What counts as the same answer: a torch tensor or a numpy array; for a single number, a 0-d tensor,
# a NumPy scalar or a Python float; integers of any width; float64 where float32 is expected (held to
# the float32 tolerance). A less precise dtype (float16, bfloat16) fails with a message naming the
# dtype to return. Where a convention matters (an axis order, how ties are broken), the exercise
# text states it and a failure names it; a failure of dtype or shape alone says only that.

# %% role="locked" grade_id="setup"
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from interplab import check, zoo
from interplab.toyworld import PERSONAS, ToyWorld
from interplab.zoo.toyworld_sae import HOOK_NAME, label_scopes

torch.set_num_threads(1)  # small tensors: more threads only add overhead on a shared machine
world = ToyWorld()
lm = zoo.load("toyworld-lm")
zoo_sae = zoo.load("toyworld-sae")
print(f"toyworld-lm: {lm.cfg.n_layers} layers, d_model {lm.cfg.d_model}, vocabulary {lm.cfg.d_vocab}, "
      f"context {lm.cfg.n_ctx}; toyworld-sae: {zoo_sae.cfg.d_sae} features at {HOOK_NAME}")
print(world.sample(3, 0).texts)

# %% [markdown]
# ## Part 1. Toy models of superposition
#
# Elhage et al. study the smallest model that can show superposition: `n_features` inputs
# `x`, each zero with probability `1 - p` and uniform on `[0, 1]` otherwise, squeezed through
# `d_hidden < n_features` dimensions and read back out:
#
# $$h = W x, \qquad \hat x = \mathrm{ReLU}(W^\top h + b), \qquad W \in \mathbb{R}^{d_\text{hidden} \times n_\text{features}}.$$
#
# Feature `i` is represented by column `W[:, i]`. With dense features the model can afford only
# `d_hidden` of them (the most important ones); with sparse features it packs in more, accepting
# interference when two of them are active at once, which the ReLU and a negative bias mostly filter out.
#
# ### 1.1 Sparse feature batches
#
# *Difficulty 1/5, about 10 minutes.*
#
# ```python
# def sparse_features(batch: int, n_features: int, feature_probability: float,
#                     generator: torch.Generator) -> Float[Tensor, "batch n_features"]
# ```
#
# Each entry is independently non-zero with probability `feature_probability`, and then uniform on
# `[0, 1]`. Draw all randomness from `generator`. (Checked by its statistics, not exact values.)
#
# <details><summary>Hint 1: the idea</summary>
#
# Two independent random draws per entry: one decides *whether* the feature is on (with probability
# `feature_probability`), the other *how much* (uniform on [0, 1]). Multiply them.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `torch.rand(shape, generator=generator)` twice: once for the values, once to decide which entries
# are kept (`< feature_probability`).
# </details>

# %% role="solution" grade_id="impl_sparse_features"
def sparse_features(batch: int, n_features: int, feature_probability: float,
                    generator: torch.Generator) -> Float[Tensor, "batch n_features"]:
    ### BEGIN SOLUTION
    values = torch.rand(batch, n_features, generator=generator)
    keep = torch.rand(batch, n_features, generator=generator) < feature_probability
    return values * keep
    ### END SOLUTION


# %% role="test" grade_id="test_sparse_features" points=1
check("saes.sparse_features", sparse_features)

# %% [markdown]
# ### 1.2 The toy model's forward pass
#
# *Difficulty 1/5, about 5 minutes.*
#
# ```python
# def toy_forward(W: Float[Tensor, "d_hidden n_features"], b: Float[Tensor, "n_features"],
#                 x: Float[Tensor, "batch n_features"]) -> Float[Tensor, "batch n_features"]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# Rows of `x` are examples. Project each onto the hidden space with `W`, map back with `W`
# transposed, add the bias, then the ReLU.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# With a batch of row vectors, `h = x @ W.T` and `x_hat = relu(h @ W + b)`.
# </details>

# %% role="solution" grade_id="impl_toy_forward"
def toy_forward(W: Float[Tensor, "d_hidden n_features"], b: Float[Tensor, "n_features"],
                x: Float[Tensor, "batch n_features"]) -> Float[Tensor, "batch n_features"]:
    ### BEGIN SOLUTION
    return F.relu(x @ W.T @ W + b)
    ### END SOLUTION


# %% role="test" grade_id="test_toy_forward" points=1
check("saes.toy_forward", toy_forward)

# %% [markdown]
# ### 1.3 Importance-weighted loss
#
# *Difficulty 1/5, about 5 minutes.* Features differ in how much their reconstruction matters:
# feature `i` has importance `I_i`, and the loss is
# $L = \mathbb{E}_x \sum_i I_i (x_i - \hat x_i)^2$ (mean over the batch, **sum** over features).
#
# ```python
# def importance_loss(x: Float[Tensor, "batch n_features"], x_hat: Float[Tensor, "batch n_features"],
#                     importance: Float[Tensor, "n_features"]) -> Float[Tensor, ""]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# Weight each feature's squared error by its importance, add them up per example, then average over
# the batch.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# Broadcast `importance` over the batch axis, sum over the last axis, then average.
# </details>

# %% role="solution" grade_id="impl_importance_loss"
def importance_loss(x: Float[Tensor, "batch n_features"], x_hat: Float[Tensor, "batch n_features"],
                    importance: Float[Tensor, "n_features"]) -> Float[Tensor, ""]:
    ### BEGIN SOLUTION
    return (importance * (x - x_hat) ** 2).sum(-1).mean()
    ### END SOLUTION


# %% role="test" grade_id="test_importance_loss" points=1
check("saes.importance_loss", importance_loss)

# %% [markdown]
# ### 1.4 Training a toy model
#
# *Difficulty 2/5, about 20 minutes.*
#
# ```python
# def train_toy_model(n_features: int, d_hidden: int, feature_probability: float,
#                     importance: Float[Tensor, "n_features"], steps: int,
#                     generator: torch.Generator) -> tuple[Float[Tensor, "d_hidden n_features"], Float[Tensor, "n_features"]]
# ```
#
# Initialise `W` with Xavier-normal values (`torch.nn.init.xavier_normal_` accepts a `generator`)
# and `b` with zeros, then train both with Adam (learning rate `1e-2`, batch 1024, a fresh
# `sparse_features` batch per step) on `importance_loss`. Return `(W, b)` (detached).
#
# The check evaluates your `W, b` on its own batches and asks for a loss within 10% (plus a small
# margin) of the reference solution's.
#
# <details><summary>Hint 1: the idea</summary>
#
# A plain training loop: two trainable tensors, an Adam optimiser over both, and in each step a
# fresh batch, the loss, `backward`, `step`.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `W = torch.nn.Parameter(torch.empty(d_hidden, n_features))`, then `xavier_normal_(W, generator=generator)`.
# Inside `torch.enable_grad()` in case gradients were switched off elsewhere.
# </details>

# %% role="solution" grade_id="impl_train_toy_model"
def train_toy_model(n_features: int, d_hidden: int, feature_probability: float,
                    importance: Float[Tensor, "n_features"], steps: int,
                    generator: torch.Generator) -> tuple[Tensor, Tensor]:
    ### BEGIN SOLUTION
    W = torch.nn.Parameter(torch.empty(d_hidden, n_features))
    torch.nn.init.xavier_normal_(W, generator=generator)
    b = torch.nn.Parameter(torch.zeros(n_features))
    opt = torch.optim.Adam([W, b], lr=1e-2)
    with torch.enable_grad():
        for _ in range(steps):
            x = sparse_features(1024, n_features, feature_probability, generator)
            loss = importance_loss(x, toy_forward(W, b, x), importance)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return W.detach(), b.detach()
    ### END SOLUTION


# %% role="test" grade_id="test_train_toy_model" points=2
check("saes.train_toy_model", train_toy_model)

# %% [markdown]
# ### 1.5 The geometry of superposition
#
# *Difficulty 2/5, about 15 minutes.* Elhage et al. measure how much of a dimension feature `i` gets
# with its **dimensionality**
#
# $$D_i = \frac{\lVert W_i \rVert^2}{\sum_j (\hat W_i \cdot W_j)^2}, \qquad \hat W_i = W_i / \lVert W_i \rVert,$$
#
# where `W_i = W[:, i]` and `j` runs over all features, `i` included. A feature with a dimension to
# itself has `D_i = 1`; two features sharing a dimension antipodally have `1/2` each; a feature that
# is not represented has `D_i ≈ 0`.
#
# ```python
# def feature_dimensionality(W: Float[Tensor, "d_hidden n_features"]) -> Float[Tensor, "n_features"]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# The numerator is the feature's squared norm. The denominator asks how much of every feature
# (itself included) lies along feature `i`'s unit direction: project every column onto it, square
# and add.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `Wn = W / W.norm(dim=0)` (guard against zero columns with `clamp`); `(Wn.T @ W) ** 2` is the
# matrix of `(Ŵ_i · W_j)^2`, sum it over `j`.
# </details>

# %% role="solution" grade_id="impl_feature_dimensionality"
def feature_dimensionality(W: Float[Tensor, "d_hidden n_features"]) -> Float[Tensor, "n_features"]:
    ### BEGIN SOLUTION
    norms = W.norm(dim=0)
    W_hat = W / norms.clamp(min=1e-8)
    interference = ((W_hat.T @ W) ** 2).sum(dim=1)
    return norms**2 / interference.clamp(min=1e-8)
    ### END SOLUTION


# %% role="test" grade_id="test_feature_dimensionality" points=1
check("saes.feature_dimensionality", feature_dimensionality)

# %% [markdown]
# Now the picture from the paper: five features, two hidden dimensions, importance `0.9^i`, from
# dense to sparse. A toy model needs a few thousand steps to converge and some seeds get stuck, so we
# do what Elhage et al.'s notebook does: train many *instances* as one tensor (`W` gets a leading
# instance axis, the per-instance losses are summed, so they stay independent), 4 seeds for each of
# the three sparsities, 2000 Adam steps at learning rate `1e-2` decayed to zero, and show the instance
# with the lowest loss. (`interplab.superposition.train_toy_models` is the same model and loss as your
# exercises, batched.) Each arrow is a column of `W` (darker = more important).

# %%
from interplab.superposition import train_toy_models

importance = 0.9 ** torch.arange(5)
sparsities, seeds = (1.0, 0.3, 0.05), 4
W_all, b_all, loss_all = train_toy_models(torch.tensor(sparsities).repeat_interleave(seeds), importance, 2, 2000,
                                          torch.Generator().manual_seed(0), batch=256, lr=1e-2)
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
for j, (ax, p) in enumerate(zip(axes, sparsities)):
    best = j * seeds + int(loss_all[j * seeds:(j + 1) * seeds].argmin())
    W, b = W_all[best], b_all[best]
    print(f"p = {p}: losses of the {seeds} seeds {loss_all[j * seeds:(j + 1) * seeds].numpy().round(4)}; best: "
          f"|W_i| {W.norm(dim=0).numpy().round(2)}, D {feature_dimensionality(W).numpy().round(2)}, b {b.numpy().round(2)}")
    for i in range(5):
        ax.arrow(0, 0, float(W[0, i]), float(W[1, i]), color=plt.cm.viridis(i / 5), width=0.02, length_includes_head=True)
    ax.set_xlim(-1.5, 1.5); ax.set_ylim(-1.5, 1.5); ax.set_aspect("equal")
    ax.set_title(f"p = {p}: D = {[round(float(d), 2) for d in feature_dimensionality(W)]}", fontsize=8)
plt.show()

# %% [markdown]
# Converged, the dense model (`p = 1`) gives the two most important features a dimension each
# (norms 1.00, 1.00, `D = 1`) and drops the other three (norms below 0.1, `D = 0`), with the bias `b`
# near 0.5 for the dropped ones (the mean of a uniform [0, 1] feature: the best constant guess). At
# `p = 0.3` four features share the two dimensions as two antipodal pairs (`D = 0.5` each) and the
# least important one is dropped. At `p = 0.05` all five are represented at norm about 1.13, in a
# pentagon (`D = 0.4`), with a negative bias of about -0.24. (An earlier version
# of this figure trained one seed for 400 steps; its dense model had norms [0.97, 0.27, 0.63, 0.09,
# 0.05], not converged.)
#
# **Questions.** With dense features, which features get represented and why those? As features
# become sparser, how many are represented, and what shape do their directions form? What does the
# bias do for the sparse model (look at `b`)? Why does superposition need sparsity? Some seeds end
# with a higher loss than the best: what kind of solution did they get stuck in?
#
# ## Part 2. Sparse autoencoders
#
# An SAE with `d_sae` features reads an activation `x` (width `d_in`) as
#
# $$f = \mathrm{ReLU}\big((x - b_\text{dec}) W_\text{enc} + b_\text{enc}\big), \qquad \hat x = f\, W_\text{dec} + b_\text{dec},$$
#
# with `W_enc [d_in, d_sae]` and `W_dec [d_sae, d_in]` (SAELens's conventions: row `W_dec[i]` is
# feature `i`'s direction). Subtracting `b_dec` first centres the input.
#
# ### 2.1 Forward pass
#
# *Difficulty 1/5, about 5 minutes.*
#
# ```python
# def sae_forward(x: Float[Tensor, "batch d_in"], W_enc: Float[Tensor, "d_in d_sae"], b_enc: Float[Tensor, "d_sae"],
#                 W_dec: Float[Tensor, "d_sae d_in"], b_dec: Float[Tensor, "d_in"]
#                 ) -> tuple[Float[Tensor, "batch d_sae"], Float[Tensor, "batch d_in"]]
# ```
#
# returning `(f, x_hat)`.
#
# <details><summary>Hint 1: the idea</summary>
#
# Subtract the decoder bias, encode and apply the ReLU to get `f`; decode `f` and add the decoder
# bias back.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# Two lines, exactly as in the formula.
# </details>

# %% role="solution" grade_id="impl_sae_forward"
def sae_forward(x: Float[Tensor, "batch d_in"], W_enc: Float[Tensor, "d_in d_sae"], b_enc: Float[Tensor, "d_sae"],
                W_dec: Float[Tensor, "d_sae d_in"], b_dec: Float[Tensor, "d_in"]) -> tuple[Tensor, Tensor]:
    ### BEGIN SOLUTION
    f = F.relu((x - b_dec) @ W_enc + b_enc)
    return f, f @ W_dec + b_dec
    ### END SOLUTION


# %% role="test" grade_id="test_sae_forward" points=1
check("saes.sae_forward", sae_forward)

# %% [markdown]
# ### 2.2 The loss: reconstruction plus a decoder-weighted L1 penalty
#
# *Difficulty 2/5, about 10 minutes.*
#
# $$L = \mathbb{E}_x \Big[ \lVert x - \hat x \rVert^2 + \lambda \sum_i f_i \lVert W_\text{dec}[i] \rVert \Big]$$
#
# (squared error **summed** over dimensions, mean over the batch). Weighting each `f_i` by its
# decoder norm stops the SAE from cheating the penalty by shrinking `f` and growing `W_dec`.
#
# ```python
# def sae_loss(x: Float[Tensor, "batch d_in"], W_enc, b_enc, W_dec, b_dec, l1_coefficient: float) -> Float[Tensor, ""]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# Two terms, each averaged over the batch: the squared reconstruction error summed over dimensions,
# and each feature's activation times the norm of its decoder row, summed over features.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# Reuse `sae_forward`. `W_dec.norm(dim=-1)` has one norm per feature.
# </details>

# %% role="solution" grade_id="impl_sae_loss"
def sae_loss(x: Float[Tensor, "batch d_in"], W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor,
             l1_coefficient: float) -> Float[Tensor, ""]:
    ### BEGIN SOLUTION
    f, x_hat = sae_forward(x, W_enc, b_enc, W_dec, b_dec)
    reconstruction = ((x - x_hat) ** 2).sum(-1)
    sparsity = (f * W_dec.norm(dim=-1)).sum(-1)
    return (reconstruction + l1_coefficient * sparsity).mean()
    ### END SOLUTION


# %% role="test" grade_id="test_sae_loss" points=1
check("saes.sae_loss", sae_loss)

# %% [markdown]
# ### 2.3 TopK activation
#
# *Difficulty 1/5, about 10 minutes.* A TopK SAE (Gao et al. 2024) replaces the ReLU and the L1
# penalty by a hard budget: keep the `k` largest pre-activations of each row, apply ReLU to them,
# and set everything else to zero. L0 is then at most `k` by construction.
#
# ```python
# def topk_activation(pre: Float[Tensor, "batch d_sae"], k: int) -> Float[Tensor, "batch d_sae"]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# Find the `k` largest pre-activations of each row, keep them (after a ReLU) at their positions, and
# put zeros everywhere else.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `values, indices = pre.topk(k, dim=-1)`, then `torch.zeros_like(pre).scatter(-1, indices, values.relu())`.
# </details>

# %% role="solution" grade_id="impl_topk_activation"
def topk_activation(pre: Float[Tensor, "batch d_sae"], k: int) -> Float[Tensor, "batch d_sae"]:
    ### BEGIN SOLUTION
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values.relu())
    ### END SOLUTION


# %% role="test" grade_id="test_topk_activation" points=1
check("saes.topk_activation", topk_activation)

# %% [markdown]
# ### 2.4 Training an SAE on synthetic features
#
# *Difficulty 3/5, about 25 minutes.* Before trusting an SAE on a real model, train one where the
# answer is known: activations `x = c @ true_features`, where `true_features [n_true, d_in]` are
# random unit vectors (more of them than dimensions: superposition) and the coefficients `c` are
# sparse.
#
# ```python
# def train_sae(x: Float[Tensor, "n d_in"], d_sae: int, l1_coefficient: float, steps: int,
#               generator: torch.Generator) -> dict[str, Tensor]
# ```
#
# Return `{"W_enc", "b_enc", "W_dec", "b_dec"}` (detached). A recipe that works: `W_dec` rows random
# unit vectors, `W_enc = W_dec.T`, `b_enc = 0`, `b_dec =` the mean of `x`; Adam with learning rate
# `3e-3`, batches of 256 rows drawn with `generator`, your `sae_loss`.
#
# The check evaluates your SAE on **held-out** activations from the same distribution and asks for
# an explained variance (section 3) at most 0.05 below the reference's, an L0 at most 1.5 times the
# reference's plus one, and a Hungarian-matched cosine similarity with the true features (section 5)
# at most 0.1 below the reference's.
#
# <details><summary>Hint 1: the idea</summary>
#
# The same kind of loop as the toy model: four trainable tensors, Adam, and a random batch of rows
# of `x` each step, with the loss of 2.2 (or the TopK reconstruction loss).
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `idx = torch.randint(len(x), (256,), generator=generator)` picks a batch. Make the four tensors
# `torch.nn.Parameter`s and pass them to `torch.optim.Adam`. Train inside `torch.enable_grad()`.
# </details>

# %% role="solution" grade_id="impl_train_sae"
def train_sae(x: Float[Tensor, "n d_in"], d_sae: int, l1_coefficient: float, steps: int,
              generator: torch.Generator) -> dict[str, Tensor]:
    ### BEGIN SOLUTION
    d_in = x.shape[-1]
    w = torch.randn(d_sae, d_in, generator=generator)
    w = w / w.norm(dim=-1, keepdim=True)
    params = {"W_enc": torch.nn.Parameter(w.T.clone()), "b_enc": torch.nn.Parameter(torch.zeros(d_sae)),
              "W_dec": torch.nn.Parameter(w.clone()), "b_dec": torch.nn.Parameter(x.mean(0).clone())}
    opt = torch.optim.Adam(params.values(), lr=3e-3)
    with torch.enable_grad():
        for _ in range(steps):
            batch = x[torch.randint(len(x), (256,), generator=generator)]
            loss = sae_loss(batch, params["W_enc"], params["b_enc"], params["W_dec"], params["b_dec"], l1_coefficient)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {k: v.detach() for k, v in params.items()}
    ### END SOLUTION


# %% role="test" grade_id="test_train_sae" points=2
check("saes.train_sae", train_sae)

# %% [markdown]
# ## Part 3. Metrics, defined
#
# Every SAE paper reports the same handful of numbers, and small differences in their definitions
# make numbers incomparable. Here they are, precisely.
#
# ### 3.1 Explained variance
#
# *Difficulty 1/5, about 10 minutes.*
#
# $$\mathrm{EV} = 1 - \frac{\mathbb{E}\lVert x - \hat x\rVert^2}{\mathbb{E}\lVert x\rVert^2 - \lVert \mathbb{E} x\rVert^2}$$
#
# over all rows (tokens). The denominator is the total variance of `x` summed over dimensions, so a
# reconstruction that outputs the mean activation scores 0, a perfect one 1. (SAELens's
# `explained_variance` is this quantity.)
#
# ```python
# def explained_variance(x: Float[Tensor, "n d"], x_hat: Float[Tensor, "n d"]) -> Float[Tensor, ""]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# One minus a ratio: the mean squared reconstruction error over the mean squared distance of `x`
# from its own mean. Computing the denominator as a distance from the mean (not as `E|x|^2 -
# |Ex|^2`) avoids cancellation.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `x.mean(0)` is `E x`; sums of squares over the last axis, means over rows.
# </details>

# %% role="solution" grade_id="impl_explained_variance"
def explained_variance(x: Float[Tensor, "n d"], x_hat: Float[Tensor, "n d"]) -> Float[Tensor, ""]:
    ### BEGIN SOLUTION
    mse = ((x - x_hat) ** 2).sum(-1).mean()
    total_variance = (x**2).sum(-1).mean() - (x.mean(0) ** 2).sum()
    return 1 - mse / total_variance
    ### END SOLUTION


# %% role="test" grade_id="test_explained_variance" points=1
check("saes.explained_variance", explained_variance)

# %% [markdown]
# ### 3.2 L0 and dead features
#
# *Difficulty 1/5, about 5 minutes.* **L0** is the mean number of non-zero features per row. A
# feature is **dead** over a window of rows if it is zero on every one of them.
#
# ```python
# def sparsity_stats(f: Float[Tensor, "n d_sae"]) -> dict[str, Tensor]
# ```
#
# returning `{"l0": scalar float tensor, "dead": bool tensor [d_sae]}`.
#
# <details><summary>Hint 1: the idea</summary>
#
# A feature is active where its activation is non-zero. L0 counts active features per row (then
# averages); a dead feature is active in no row.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `(f != 0)` is your friend; count along the right axis for each.
# </details>

# %% role="solution" grade_id="impl_sparsity_stats"
def sparsity_stats(f: Float[Tensor, "n d_sae"]) -> dict[str, Tensor]:
    ### BEGIN SOLUTION
    active = f != 0
    return {"l0": active.sum(-1).float().mean(), "dead": ~active.any(0)}
    ### END SOLUTION


# %% role="test" grade_id="test_sparsity_stats" points=1
check("saes.sparsity_stats", sparsity_stats)

# %% [markdown]
# ### 3.3 Fraction of cross-entropy loss recovered
#
# *Difficulty 3/5, about 20 minutes.* Explained variance does not say whether the *model* still
# works when it reads the reconstruction instead of the real activation. Splice the SAE in at its
# hook and compare the model's next-token loss three ways:
#
# $$\text{recovered} = \frac{L_\text{zero} - L_\text{SAE}}{L_\text{zero} - L_\text{clean}},$$
#
# where `L_clean` is the loss of the unmodified model, `L_SAE` the loss with the hook's activation
# replaced by `sae(activation)` at every position, and `L_zero` the loss with the activation replaced
# by zeros (the baseline: what the model does with no information at that point). Losses are means
# of the per-token cross-entropy over the predictions selected by `loss_mask [batch, pos-1]`
# (`loss_mask[b, p]` selects the prediction of `tokens[b, p+1]`; padding is excluded this way).
#
# ```python
# def ce_loss_recovered(model: HookedTransformer, sae: torch.nn.Module, tokens: Int[Tensor, "batch pos"],
#                       loss_mask: Bool[Tensor, "batch pos-1"], hook_name: str) -> Float[Tensor, ""]
# ```
#
# `sae(x)` returns the reconstruction. Use `model.run_with_hooks(tokens, fwd_hooks=[(hook_name, fn)])`
# where `fn(activation, hook)` returns the replacement.
#
# <details><summary>Hint 1: the idea</summary>
#
# Three losses on the same tokens, counted only where the mask is true: the clean model, the model
# with the SAE's reconstruction spliced in at the hook, and the model with the hook's activation set
# to zero. Then the ratio of the formula.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# Write one helper `masked_loss(logits)`: `F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")`,
# then average over the mask. Run the model three times.
# </details>

# %% role="solution" grade_id="impl_ce_loss_recovered"
def ce_loss_recovered(model, sae: torch.nn.Module, tokens: Int[Tensor, "batch pos"],
                      loss_mask: Bool[Tensor, "batch pos-1"], hook_name: str) -> Float[Tensor, ""]:
    ### BEGIN SOLUTION
    def masked_loss(logits: Tensor) -> Tensor:
        per_token = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
        return per_token[loss_mask.flatten()].mean()

    with torch.no_grad():
        clean = masked_loss(model(tokens))
        spliced = masked_loss(model.run_with_hooks(tokens, fwd_hooks=[(hook_name, lambda act, hook: sae(act))]))
        zero = masked_loss(model.run_with_hooks(tokens, fwd_hooks=[(hook_name, lambda act, hook: torch.zeros_like(act))]))
    return (zero - spliced) / (zero - clean)
    ### END SOLUTION


# %% role="test" grade_id="test_ce_loss_recovered" points=1
check("saes.ce_loss_recovered", ce_loss_recovered)

# %% [markdown]
# The zoo SAE, measured with your functions on fresh toy-world documents:

# %%
eval_batch = world.sample(300, 1)
_, eval_cache = lm.run_with_cache(eval_batch.tokens, names_filter=[HOOK_NAME])
real_tokens = eval_batch.labels["loss_mask"].bool()
x_eval = eval_cache[HOOK_NAME][real_tokens]
with torch.no_grad():
    f_eval, x_hat_eval = sae_forward(x_eval, zoo_sae.W_enc, zoo_sae.b_enc, zoo_sae.W_dec, zoo_sae.b_dec)
stats = sparsity_stats(f_eval)
print(f"L0 {float(stats['l0']):.1f} of {zoo_sae.cfg.d_sae} features, dead {int(stats['dead'].sum())}, "
      f"explained variance {float(explained_variance(x_eval, x_hat_eval)):.3f}, "
      f"CE loss recovered {float(ce_loss_recovered(lm, zoo_sae, eval_batch.tokens, real_tokens[:, 1:], HOOK_NAME)):.3f}")

# %% [markdown] role="locked" grade_id="question_ev_vs_ce"
# **Questions.** Explained variance and CE loss recovered can disagree: construct (in words) an SAE
# with high explained variance that still hurts the model, and one with modest explained variance
# that barely hurts it. Why is zero-ablation a generous baseline in a residual stream, and what
# would mean-ablation change?
#
# *Answer in the cell below (graded by hand, 2 points).*
# ### BEGIN MARK SCHEME
# **Mark scheme (instructors only).**
# - 1 point: both constructions, tied to *which directions* the error is in (important vs ignored by downstream layers).
# - 1 point: zero-ablation is off-distribution and gives a very bad baseline, inflating CE recovered; mean-ablation would give a harder baseline and a lower score.
# ### END MARK SCHEME

# %% [markdown] role="answer" grade_id="answer_ev_vs_ce" points=2
# High explained variance but harmful: the SAE reconstructs the large, unimportant directions well and drops a small direction the model relies on (the residual error sits where the downstream layers are sensitive). Modest explained variance but harmless: the error lies in directions the model ignores. Zero-ablation replaces the residual by zero, which is far outside the distribution, so the baseline loss is very high and any reconstruction looks good; mean-ablation is a much closer baseline and lowers CE recovered.

# %% [markdown]
# ## Part 4. Resampling dead features
#
# *Difficulty 3/5, about 20 minutes.* Features that stop firing get no gradient and stay dead.
# Bricken et al. re-initialise them on inputs the SAE reconstructs badly. We use a deterministic
# version so that it can be checked exactly:
#
# 1. compute each row's squared reconstruction error `||x - x_hat||^2` (with the current weights);
# 2. take the rows in decreasing order of error, and give the `j`-th dead feature (in increasing
#    index order) the `j`-th worst row `x_j`;
# 3. set that feature's decoder row to the unit vector `d_j = (x_j - b_dec) / ||x_j - b_dec||`, its
#    encoder column `W_enc[:, i]` to `0.2 * m * d_j`, where `m` is the mean norm of the encoder
#    columns of the **live** features, and its `b_enc` to 0. Live features are left untouched.
#
# ```python
# def resample_dead(W_enc, b_enc, W_dec, b_dec, dead: Bool[Tensor, "d_sae"], x: Float[Tensor, "batch d_in"]
#                   ) -> dict[str, Tensor]
# ```
#
# returning new tensors `{"W_enc", "b_enc", "W_dec", "b_dec"}` (do not modify the inputs). There are
# never more dead features than rows.
#
# <details><summary>Hint 1: the idea</summary>
#
# Rank the rows by how badly the SAE reconstructs them, hand the worst rows to the dead features in
# order, and build each new decoder row and encoder column from that row's direction.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `dead.nonzero().flatten()` lists the dead features in increasing order; `error.argsort(descending=True)[:n_dead]`
# the worst rows. Clone the tensors before assigning into them.
# </details>

# %% role="solution" grade_id="impl_resample_dead"
def resample_dead(W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor, dead: Bool[Tensor, "d_sae"],
                  x: Float[Tensor, "batch d_in"]) -> dict[str, Tensor]:
    ### BEGIN SOLUTION
    _, x_hat = sae_forward(x, W_enc, b_enc, W_dec, b_dec)
    error = ((x - x_hat) ** 2).sum(-1)
    idx = dead.nonzero().flatten()
    worst = error.argsort(descending=True)[: len(idx)]
    directions = x[worst] - b_dec
    directions = directions / directions.norm(dim=-1, keepdim=True)
    live_norm = W_enc[:, ~dead].norm(dim=0).mean()
    W_enc, b_enc, W_dec = W_enc.clone(), b_enc.clone(), W_dec.clone()
    W_dec[idx] = directions
    W_enc[:, idx] = 0.2 * live_norm * directions.T
    b_enc[idx] = 0.0
    return {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec.clone()}
    ### END SOLUTION


# %% role="test" grade_id="test_resample_dead" points=1
check("saes.resample_dead", resample_dead)

# %% [markdown] role="locked" grade_id="question_resampling"
# **Questions.** Why pick inputs with *high* reconstruction error? Why start the new encoder
# column small (0.2 of a typical norm) instead of at full size? What would go wrong if you also
# kept Adam's moment estimates for the resampled entries?
#
# *Answer in the cell below (graded by hand, 2 points).*
# ### BEGIN MARK SCHEME
# **Mark scheme (instructors only).**
# - 1 point: high-error inputs point to directions no feature covers yet.
# - 1 point: either small initial column (gentle start, no disruption of other inputs) or the stale Adam moments (wrong step sizes), explained.
# ### END MARK SCHEME

# %% [markdown] role="answer" grade_id="answer_resampling" points=2
# Inputs the SAE reconstructs badly contain directions no live feature covers, so a feature started there has something useful to learn. A small encoder column keeps the new feature from firing strongly at once and disturbing the reconstruction of other inputs. Old Adam moments belong to the dead feature's history; keeping them would give the resampled weights stale, badly scaled updates (the second moment is tiny for a dead feature, so the first steps would be huge).

# %% [markdown]
# ### ReLU or TopK? The sparsity-fidelity frontier (an ungraded demo)
#
# One SAE is one point; the question "which architecture is better" is about the *frontier*: the best
# fidelity reachable at each L0. `python -m interplab.sae_frontier --card` trained six small SAEs on
# `toyworld-lm`'s activations at the zoo SAE's hook (256 features, 600 Adam steps of 256 rows, dead
# features resampled every 150 steps inside training, as in this Part but with the library's
# stochastic version): ReLU + L1 at three L1 coefficients, TopK at three `k` (no sparsity penalty:
# `k` sets L0). Each was then measured on 200 fresh documents with the metrics of Part 3. Training
# them takes minutes, so the notebook reads the card; the star is the zoo SAE (512 features, 3000
# steps of 1024 rows: a bigger budget, so not a point of the same frontier), from its zoo card (the
# same metrics on 1000 documents; your functions measured it above).

# %%
from interplab import sae_frontier

frontier = sae_frontier.load_card()
print(f"{'SAE':>16s} {'L0':>6s} {'expl. var.':>10s} {'CE recovered':>12s} {'dead':>6s} {'resampled':>9s}")
for point in frontier["points"]:
    name = f"ReLU, L1 {point['l1_coefficient']}" if point["kind"] == "relu" else f"TopK, k {point['k']}"
    print(f"{name:>16s} {point['l0']:6.1f} {point['explained_variance']:10.3f} {point['ce_loss_recovered']:12.3f} "
          f"{point['dead_fraction']:6.3f} {point['resampled']:9d}")
zoo_point = zoo.card("toyworld-sae")["metrics"]  # the zoo SAE on 1000 fresh documents (its card)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for ax, metric in zip(axes, ("explained_variance", "ce_loss_recovered")):
    for kind, marker in (("relu", "o-"), ("topk", "s-")):
        points = sorted((p for p in frontier["points"] if p["kind"] == kind), key=lambda p: p["l0"])
        ax.plot([p["l0"] for p in points], [p[metric] for p in points], marker, label=kind)
    ax.plot([zoo_point["l0"]], [zoo_point[metric]], "*", ms=12, c="k", label="toyworld-sae (zoo card)")
    ax.set_xscale("log")
    ax.set_xlabel("L0 (log scale)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **What the card shows.** At matched sparsity TopK is ahead on both axes: at L0 about 16-17, TopK
# (`k = 16`) explains 0.928 of the variance and recovers 0.997 of the CE loss, ReLU (L1 3) 0.886 and
# 0.974; at L0 about 7-8, TopK (`k = 8`) 0.906 and 0.986, ReLU (L1 10) 0.717 and 0.664. A known reason: the L1
# penalty also shrinks the activations it keeps, which costs fidelity that TopK does not pay. But
# TopK at `k = 4` ends with 10.5 % dead features although two were resampled during training: a fixed
# budget of `k` slots starves rare features, which is why Gao et al. add an auxiliary loss for dead
# latents. These are small SAEs with a short budget, so read the comparison, not the absolute values:
# the zoo SAE (ReLU, bigger budget) reaches 0.928 and 0.995 at L0 10.2.
#
# **Questions.** Explained variance and CE loss recovered order the ReLU SAEs the same way, but the gap
# between them differs a lot (0.72 vs 0.66 at L1 10, 0.95 vs 1.00 at L1 1): why does the CE loss
# forgive small reconstruction errors more than the variance does? Where on this plot would you
# pick an SAE for the circuit analysis of the attribution assignment, and why not simply the one with
# the highest fidelity?

# %% [markdown]
# ## Part 5. Did the SAE find the true features?
#
# *Difficulty 2/5, about 15 minutes.* With known `true_features [n_true, d]` and learned decoder
# rows `learned [d_sae, d]`, two scores on the cosine-similarity matrix:
#
# - **mean max cosine similarity** (MMCS): for each true feature, its best cosine with any learned
#   feature, averaged. Several true features may claim the same learned one.
# - **matched cosine**: the average cosine after a one-to-one matching of true to learned features that
#   maximises the total (the Hungarian algorithm: `scipy.optimize.linear_sum_assignment(sims, maximize=True)`),
#   divided by `n_true`. It cannot be fooled by one learned feature sitting between two true ones.
#
# ```python
# def feature_recovery(true_features: Float[Tensor, "n_true d"], learned: Float[Tensor, "d_sae d"]) -> dict[str, float]
# ```
#
# returning `{"mmcs": ..., "matched": ...}` as Python floats. Assume `d_sae >= n_true`.
#
# <details><summary>Hint 1: the idea</summary>
#
# Both scores start from the matrix of cosine similarities between true and learned features. MMCS
# takes each row's maximum; the matched score first finds the best one-to-one assignment.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# Normalise the rows of both, take the matrix product, and hand a numpy copy to `linear_sum_assignment`.
# </details>

# %% role="solution" grade_id="impl_feature_recovery"
def feature_recovery(true_features: Float[Tensor, "n_true d"], learned: Float[Tensor, "d_sae d"]) -> dict[str, float]:
    ### BEGIN SOLUTION
    sims = F.normalize(true_features, dim=-1) @ F.normalize(learned, dim=-1).T
    rows, cols = linear_sum_assignment(sims.double().numpy(), maximize=True)
    return {"mmcs": float(sims.max(-1).values.mean()), "matched": float(sims[rows, cols].sum() / len(true_features))}
    ### END SOLUTION


# %% role="test" grade_id="test_feature_recovery" points=1
check("saes.feature_recovery", feature_recovery)

# %% [markdown]
# ## Part 6. Features of `toyworld-lm`
#
# Now the zoo SAE on the language model. First the classic way to look at a feature: the contexts
# where it fires most.
#
# ### 6.1 Max-activating examples
#
# *Difficulty 1/5, about 10 minutes.*
#
# ```python
# def max_activating(acts: Float[Tensor, "docs pos"], k: int) -> tuple[Float[Tensor, "k"], Int[Tensor, "k"], Int[Tensor, "k"]]
# ```
#
# Given one feature's activation on every token of a batch, return the `k` largest values in
# decreasing order with their document and position indices.
#
# <details><summary>Hint 1: the idea</summary>
#
# Treat the whole `[docs, pos]` table as one long list, take its top `k`, and turn each flat index
# back into a (document, position) pair.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `acts.flatten().topk(k)`, then `divmod` the flat indices by the number of positions.
# </details>

# %% role="solution" grade_id="impl_max_activating"
def max_activating(acts: Float[Tensor, "docs pos"], k: int) -> tuple[Tensor, Tensor, Tensor]:
    ### BEGIN SOLUTION
    values, flat = acts.flatten().topk(k)
    return values, flat // acts.shape[1], flat % acts.shape[1]
    ### END SOLUTION


# %% role="test" grade_id="test_max_activating" points=1
check("saes.max_activating", max_activating)

# %% [markdown]
# Feature activations of the zoo SAE on a batch of documents (a locked cell, so later cells work even
# before you solve the exercises), and the top contexts of one feature. The token in `[brackets]`
# is where it fires.

# %% role="locked" grade_id="toyworld_features"
docs = world.sample(600, 2)
_, doc_cache = lm.run_with_cache(docs.tokens, names_filter=[HOOK_NAME])
with torch.no_grad():
    doc_features = zoo_sae.encode(doc_cache[HOOK_NAME]) * docs.labels["loss_mask"][..., None]  # [docs, pos, d_sae]


def show_context(doc: int, pos: int, width: int = 8) -> str:
    words = world.tokenizer.vocab
    ids = docs.tokens[doc].tolist()
    left = " ".join(words[t] for t in ids[max(0, pos - width): pos])
    return f"{left} [{words[ids[pos]]}]"


# %%
feature = int(doc_features.flatten(0, 1).gt(0).float().mean(0).argsort(descending=True)[40])
values, doc_idx, pos_idx = max_activating(doc_features[..., feature], 40)
shown = set()  # the toy language is small: identical contexts recur in different documents
for v, d, p in zip(values, doc_idx, pos_idx):
    context = show_context(int(d), int(p))
    if context not in shown and len(shown) < 8:
        shown.add(context)
        print(f"{float(v):6.2f}  {context}")

# %% [markdown]
# ### 6.2 Features that track ground-truth variables
#
# *Difficulty 2/5, about 15 minutes.* Max-activating examples show what a feature does at its
# strongest, not whether it tracks a variable reliably. With ground truth we can measure that. Treat
# "feature `i` fires" (`f_i > 0`) as a classifier of "the label has value `v`", over a set of tokens:
#
# - **precision** of feature `i`: of the tokens where it fires, the fraction with the value;
# - **recall**: of the tokens with the value, the fraction where it fires.
#
# ```python
# def precision_recall(fired: Bool[Tensor, "n d_sae"], truth: Bool[Tensor, "n"]) -> tuple[Float[Tensor, "d_sae"], Float[Tensor, "d_sae"]]
# ```
#
# A feature that never fires has precision 0; if no token has the value, recall is 0.
#
# <details><summary>Hint 1: the idea</summary>
#
# Count true positives per feature (fires and has the value). Precision divides by how often the
# feature fires, recall by how many tokens have the value.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# True positives per feature: `(fired & truth[:, None]).sum(0)`. Divide by counts clamped at 1.
# </details>

# %% role="solution" grade_id="impl_precision_recall"
def precision_recall(fired: Bool[Tensor, "n d_sae"], truth: Bool[Tensor, "n"]) -> tuple[Tensor, Tensor]:
    ### BEGIN SOLUTION
    true_positives = (fired & truth[:, None]).sum(0).float()
    precision = true_positives / fired.sum(0).clamp(min=1).float()
    recall = true_positives / truth.sum().clamp(min=1).float()
    return precision, recall
    ### END SOLUTION


# %% role="test" grade_id="test_precision_recall" points=1
check("saes.precision_recall", precision_recall)

# %% [markdown]
# Each variable is scored where the model needs it: persona and difficulty at the `?` that ends a
# dialogue question (where the model decides between an answer and `i do not know`), sentiment at
# the `felt` of a story, where it must predict `happy` or `sad` (`label_scopes` in
# `interplab.zoo.toyworld_sae`).
# For every value we report the feature with the best F1 and show its top contexts, next to the F1 of
# a feature that fires on *every* token of the scope: its recall is 1 and its precision is the
# fraction `p` of tokens with the value, so its F1 is `2p / (1 + p)`. A feature is only informative
# if it beats that baseline.

# %%
scopes = label_scopes(docs.tokens, docs.labels, world)
fired_all = doc_features > 0
for variable, value_names in (("persona", PERSONAS), ("difficulty", ("none", "easy", "hard")),
                              ("sentiment", ("none", "positive", "negative"))):
    scope = scopes[variable]
    for value, name in enumerate(value_names):
        if value == 0:
            continue
        truth = docs.labels[variable][scope] == value
        precision, recall = precision_recall(fired_all[scope], truth)
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-9)
        best = int(f1.argmax())
        base_rate = float(truth.float().mean())
        print(f"{variable}={name:9s} feature {best:4d}  precision {float(precision[best]):.2f}  "
              f"recall {float(recall[best]):.2f}  F1 {float(f1[best]):.2f}   "
              f"(always-on baseline: p {base_rate:.2f}, F1 {2 * base_rate / (1 + base_rate):.2f})")
        _, d_idx, p_idx = max_activating(doc_features[..., best] * scope, 2)
        for d, p in zip(d_idx, p_idx):
            print("      ", show_context(int(d), int(p)))

# %% [markdown]
# Against the baseline: the best `sentiment=positive` feature (354) is exactly as good as a feature
# that always fires (F1 0.68 and 0.68: it fires on every `felt`), and the best persona features beat
# the baseline by only 0.04-0.16 (child 0.60 vs 0.56) despite a precision near 1: their recall is
# about 0.45. `difficulty=hard` (0.81 vs 0.59) and `sentiment=negative` (0.77 vs 0.65) are the clear
# single-feature variables.
#
# **Questions.** Which variables does a single feature capture well, and which are spread over
# several features (low recall for each)? The child's "I do not know" needs *persona AND hard*: is
# there a feature for the conjunction, or only for each part? How would you test whether a feature
# is *used* by the model rather than merely correlated with a label (the steering and attribution
# assignments pick this up)?
#
# ## Optional: the same analysis on GPT-2 small (runs only if the weights are on this machine, never graded)
#
# If an instructor has put `gpt2-small` and the SAELens SAE `gpt2-small-res-jb` (layer 8) in the local
# Hugging Face cache, you can repeat Part 6 on a real model: on a GPU if there is one, otherwise on
# the CPU (gpt2-small runs fine there). Nothing is downloaded: without the weights the cell says what
# is missing and does nothing.

# %%
from interplab.pretrained import device, weights_available

if weights_available(["gpt2", "jbloom/GPT2-Small-SAEs-Reformatted"], "the GPT-2 small section"):
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

    gpt2 = HookedTransformer.from_pretrained("gpt2-small", device=device())
    gpt2_sae = SAE.from_pretrained("gpt2-small-res-jb", "blocks.8.hook_resid_pre", device=device())
    prompts = ["The child said she did not know the answer.", "The expert explained the proof in detail.",
               "What a wonderful film, I loved it!", "That was an awful, boring meal."]
    toks = gpt2.to_tokens(prompts)
    _, gpt2_cache = gpt2.run_with_cache(toks, names_filter=["blocks.8.hook_resid_pre"])
    gpt2_f = gpt2_sae.encode(gpt2_cache["blocks.8.hook_resid_pre"])
    print("L0 per prompt:", (gpt2_f > 0).sum(-1).float().mean(-1).tolist())
    sentiment_truth = torch.tensor([0, 0, 1, 1], device=device()).bool()
    fired = (gpt2_f[:, 1:] > 0).any(1)  # does the feature fire anywhere in the prompt
    precision, recall = precision_recall(fired, sentiment_truth)
    print("features firing only on the sentiment prompts:", ((precision == 1) & (recall == 1)).nonzero().flatten()[:10].tolist())

# %% [markdown]
# ## Open questions and further reading
#
# - The toy model's sparse features arranged themselves into a regular polygon. Elhage et al. find
#   whole families of such geometries (digons, triangles, tetrahedra, pentagons). What decides which
#   one appears, and do SAE features of real models show any of this structure?
# - Explained variance, L0 and CE loss recovered are proxies. Karvonen et al. (2025),
#   [*SAEBench*](https://arxiv.org/abs/2503.09532), measure SAEs by what they let you *do*
#   (probing, unlearning, spurious-correlation removal).
# - Feature splitting and absorption: Chanin et al. (2024), [*A is for Absorption*](https://arxiv.org/abs/2409.14507),
#   show a "starts with S" feature failing to fire on tokens that a more specific feature absorbed.
#   Can you find absorption in `toyworld-sae` (a persona feature that skips some tokens)?
# - Beyond SAEs on one layer: transcoders and crosscoders (Dunefsky et al. 2024; Lindsey et al. 2024),
#   and the attribution graphs built from them (Ameisen et al. 2025), which the attribution assignment uses.
