# %% [markdown]
# # Grokking: how a circuit forms during training, and the progress measures that predict it
#
# A small transformer trained on modular addition first memorises its training pairs (train loss
# falls, test loss *rises*), and only much later generalises: test loss falls suddenly, long after
# train loss reached zero. This is **grokking** (Power et al. 2022). Nanda et al. (2023) reverse
# engineered the network that groks: it embeds each input as waves of a few *key frequencies*,
# multiplies them with trigonometric identities in attention and the MLP, and reads out
# `cos(w (a + b - c))`, which peaks at the right answer `c = (a + b) mod p`. Knowing the circuit,
# they defined **progress measures** that change smoothly long before the test loss does. You
# rebuild their analysis on a model of our zoo, then locate the three phases of training on its
# checkpoints.
#
# **After this notebook you will be able to**
#
# - write the discrete Fourier basis over `0..p-1` and take 1D and 2D Fourier transforms of
#   weights and activations;
# - find the key frequencies of an embedding, and cluster MLP neurons by the frequency they use;
# - measure how much of an activation is a function of `a + b` (the trig identities at work);
# - compute the restricted and excluded losses, and use them with the weight norm to locate
#   memorisation, circuit formation and cleanup on training checkpoints.
#
# **Read first** (about two hours):
#
# 1. Nanda, Chan, Lieberum, Smith, Steinhardt (2023), [*Progress measures for grokking via mechanistic
#    interpretability*](https://arxiv.org/abs/2301.05217): sections 1-5 (the algorithm, the evidence,
#    the progress measures and the phases).
# 2. Power, Burda, Edwards, Babuschkin, Misra (2022), [*Grokking: Generalization Beyond Overfitting
#    on Small Algorithmic Datasets*](https://arxiv.org/abs/2201.02177): section 3 (the phenomenon).
# 3. Optional: Liu, Michaud, Tegmark (2023), [*Omnigrok*](https://arxiv.org/abs/2210.01117) (weight
#    norm and initialisation scale as the explanation of the delay).
#
# **The model.** `modadd-1l` from the InterpLab zoo: a one-layer transformer (4 heads, d_model 48,
# a ReLU MLP of 192 neurons, no LayerNorm) trained on `(a + b) mod p` with half of the `p * p` pairs,
# full-batch AdamW with weight decay. The input is `[a, b, =]` and the answer is read at `=`.
# Shipped with it: checkpoints along training and a card with the train and test loss curves.
#
# **Where our setup differs from the paper** (so that it trains in about a minute on one CPU core and
# every analysis here takes seconds):
#
# | | Nanda et al. | here |
# | --- | --- | --- |
# | modulus `p` | 113 | 31 |
# | width | d_model 128, 4 heads of 32, d_mlp 512 | d_model 48, 4 heads of 12, d_mlp 192 |
# | training data | 30 % of the pairs | 50 % of the pairs |
# | optimiser | AdamW, lr 1e-3, weight decay 1, 40k full-batch steps | AdamW, lr 3e-3, weight decay 3, 1500 full-batch steps |
# | progress measures | restricted loss from the MLP neurons' key-frequency parts, through `W_out` and `W_U` | the full logits projected on the key-frequency sum directions (below) |
#
# The model computes only the `=` position's residual stream (in a one-layer model the other
# positions never reach the answer). With a smaller `p` there are fewer frequencies (15 instead of
# 56), so a "handful of key frequencies" is a larger share of them; and the phases are shorter.
#
# **How the checks work.** Each exercise ends with `check("grokking.<name>", your_function)`, which
# runs your function on freshly generated inputs (other odd moduli, random embeddings, random
# functions on the grid of inputs, random logits and curves) and compares with the reference. When
# your answer matches a known mistake, the check names it.
#
# What counts as the same answer: a torch tensor or a numpy array; for a single number, a 0-d tensor,
# a NumPy scalar or a Python float; integers of any width; float64 where float32 is expected (held to
# the float32 tolerance). A less precise dtype (float16, bfloat16) fails with a message naming the
# dtype to return. Where a convention matters (the order of the basis rows, which pairs a loss is
# evaluated on), the exercise text states it and a failure names it; a failure of dtype or shape alone
# says only that.

# %% role="locked" grade_id="setup"
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interplab import check, zoo
from interplab.grokking import KEY_FREQUENCY_SHARE
from interplab.zoo.modadd_1l import all_pairs, labels, load_checkpoints, train_mask

torch.set_num_threads(1)  # small tensors: more threads only add overhead on a shared machine
torch.set_grad_enabled(False)  # nothing in this notebook trains
model = zoo.load("modadd-1l")
card = zoo.card("modadd-1l")
checkpoints = load_checkpoints()  # step -> model at that step
p = model.cfg.p
recipe = card["recipe"]["train_config"]
pairs = all_pairs(p)  # [a, b, =], row a * p + b
answers = labels(p).reshape(p, p)  # (a + b) mod p, indexed [a, b]
is_train = train_mask(p, recipe["train_fraction"], recipe["seed"]).reshape(p, p)


def grid_logits(m) -> Float[Tensor, "p p p"]:
    """The logits of model ``m`` on every pair, indexed [a, b, c]."""
    return m(pairs).reshape(p, p, p)


def cross_entropy(logits: Float[Tensor, "p p p"], mask: Bool[Tensor, "p p"]) -> float:
    """Mean cross-entropy over the pairs where ``mask`` is True (float64, as in training)."""
    return float(F.cross_entropy(logits[mask].double(), answers[mask]))


logits = grid_logits(model)
_, cache = model.run_with_cache(pairs)
key_freqs = card["key_frequencies"]  # logged by the training script; Part 3.1 finds them again
print(f"p = {p}: {int(is_train.sum())} training pairs, {int((~is_train).sum())} test pairs; "
      f"final train loss {cross_entropy(logits, is_train):.2e}, test loss {cross_entropy(logits, ~is_train):.2e}, "
      f"test accuracy {float((logits[~is_train].argmax(-1) == answers[~is_train]).double().mean()):.3f}")

# %% [markdown]
# ## Part 1. The grokking curves
#
# The card holds the train and test loss logged every few steps. Train loss falls within the first
# few hundred steps; test loss first *rises* (the model becomes confidently wrong on unseen pairs),
# and falls much later.

# %%
curve = card["curve"]
steps = np.array([e["step"] for e in curve])
fig, (ax_loss, ax_norm) = plt.subplots(1, 2, figsize=(11, 3.5))
ax_loss.semilogy(steps, [e["train_loss"] for e in curve], label="train")
ax_loss.semilogy(steps, [e["test_loss"] for e in curve], label="test")
ax_loss.axhline(math.log(p), color="grey", ls=":", label="uniform (ln p)")
for step in card["checkpoint_steps"]:
    ax_loss.axvline(step, color="k", alpha=0.15)
ax_loss.set(xlabel="step", ylabel="loss", title="modadd-1l (grey lines: shipped checkpoints)")
ax_loss.legend()
ax_norm.plot(steps, [e["weight_norm"] for e in curve])
ax_norm.set(xlabel="step", ylabel="L2 norm of all weights", title="weight norm")
plt.tight_layout()
plt.show()
for name in ("memorised", "test_loss_peak", "cleanup_start", "grokked"):
    print(f"{name:15s} step {card['phases'][name]}")

# %% [markdown]
# ## Part 2. The Fourier basis
#
# ### 2.1 The discrete Fourier basis over the inputs
#
# *Difficulty 1/5, about 10 minutes.* A function of one input `x = 0..p-1` (a column of the embedding,
# say) is a vector of length `p`. The Fourier basis expresses it as a sum of waves. For odd `p`
# its `p` rows are: the constant; then, for each frequency `k = 1..(p-1)/2`, the two rows
# `cos(2 pi k x / p)` and `sin(2 pi k x / p)`. Each row is scaled to unit norm, so the basis is
# orthonormal (`B @ B.T` is the identity). **Row order (a convention the checks use):** row 0 is the
# constant, row `2k-1` is `cos k`, row `2k` is `sin k`.
#
# ```python
# def fourier_basis(p: int) -> Float[Tensor, "p p"]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# Build the unnormalised rows from `x = torch.arange(p)`, stack them, and divide each row by its norm
# (the constant row's norm is `sqrt(p)`, a cos or sin row's is `sqrt(p / 2)`).
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `rows = [torch.ones(p)]`, then for `k in range(1, (p - 1) // 2 + 1)` append
# `torch.cos(2 * math.pi * k * x / p)` and `torch.sin(...)`; `B = torch.stack(rows)`;
# `B / B.norm(dim=1, keepdim=True)`. Return float32 (or float64).
# </details>

# %% role="solution" grade_id="impl_fourier_basis"
def fourier_basis(p: int) -> Float[Tensor, "p p"]:
    ### BEGIN SOLUTION
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    for k in range(1, (p - 1) // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
    basis = torch.stack(rows)
    return (basis / basis.norm(dim=1, keepdim=True)).float()
    ### END SOLUTION


# %% role="test" grade_id="test_fourier_basis" points=1
check("grokking.fourier_basis", fourier_basis)

# %% [markdown]
# The basis is orthonormal, and it is the real form of the discrete Fourier transform: the
# coefficients of a vector on `cos k` and `sin k` are `sqrt(2/p)` times the real part and minus the
# imaginary part of `numpy.fft.fft` at index `k`.

# %%
B = fourier_basis(p)
print(f"max |B @ B.T - I| = {float((B @ B.T - torch.eye(p, dtype=B.dtype)).abs().max()):.1e}")
v = np.random.default_rng(0).normal(size=p)
fft = np.fft.fft(v)
ours = (B.double() @ torch.from_numpy(v)).numpy()
print(f"max |ours - numpy.fft| over k = 1..{(p - 1) // 2}: cos {np.abs(ours[1::2] - np.sqrt(2 / p) * fft.real[1:(p + 1) // 2]).max():.1e}, "
      f"sin {np.abs(ours[2::2] + np.sqrt(2 / p) * fft.imag[1:(p + 1) // 2]).max():.1e}")

# %% [markdown]
# ### 2.2 A 2D Fourier transform over `(a, b)`
#
# *Difficulty 1/5, about 10 minutes.* An activation at the `=` position is a function of both inputs:
# a `p x p` table indexed `[a, b]`. Its 2D Fourier coefficients are `B @ values @ B.T`: entry `[i, j]`
# is the coefficient on (row `i` of the basis as a function of `a`) times (row `j` as a function of
# `b`). Transform a batch of such tables at once (the leading dimension is, say, neurons).
#
# ```python
# def fourier_2d(values: Float[Tensor, "n p p"], basis: Float[Tensor, "p p"]) -> Float[Tensor, "n p p"]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# Multiply by the basis on the `a` axis and by its transpose on the `b` axis; `@` broadcasts over
# the leading dimension.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `basis @ values @ basis.T`, or `torch.einsum("ia,nab,jb->nij", basis, values, basis)`.
# </details>

# %% role="solution" grade_id="impl_fourier_2d"
def fourier_2d(values: Float[Tensor, "n p p"], basis: Float[Tensor, "p p"]) -> Float[Tensor, "n p p"]:
    ### BEGIN SOLUTION
    return basis.to(values.dtype) @ values @ basis.T.to(values.dtype)
    ### END SOLUTION


# %% role="test" grade_id="test_fourier_2d" points=1
check("grokking.fourier_2d", fourier_2d)

# %% [markdown]
# ## Part 3. Key frequencies
#
# ### 3.1 The frequencies of the embedding
#
# *Difficulty 2/5, about 10 minutes.* Transform the token embeddings `W_E[:p]` (one row per input
# token) along the token axis, and measure how much of the embedding lives in each frequency: the
# **squared** norm of the frequency's two rows of coefficients (cos and sin) together, summed over
# `d_model`. Return one number per frequency `k = 1..(p-1)/2` (the constant is left out).
#
# ```python
# def frequency_norms(W_E: Float[Tensor, "p d_model"], basis: Float[Tensor, "p p"]) -> Float[Tensor, "n_freq"]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# `basis @ W_E` has one row of coefficients per basis row; square and sum each row, then add the
# cos and sin rows of each frequency.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `squared = (basis @ W_E.double()).pow(2).sum(1)`; `squared[1::2] + squared[2::2]`.
# </details>

# %% role="solution" grade_id="impl_frequency_norms"
def frequency_norms(W_E: Float[Tensor, "p d_model"], basis: Float[Tensor, "p p"]) -> Float[Tensor, "n_freq"]:
    ### BEGIN SOLUTION
    squared = (basis.double() @ W_E.double()).pow(2).sum(dim=1)
    return (squared[1::2] + squared[2::2]).to(W_E.dtype)
    ### END SOLUTION


# %% role="test" grade_id="test_frequency_norms" points=1
check("grokking.frequency_norms", frequency_norms)

# %% [markdown]
# The embedding of the trained model is sparse in the Fourier basis. We call **key frequencies** the
# frequencies holding at least 10 % of the embedding's non-constant squared norm (the rule the training
# script used to log them on the card); a random embedding would spread it evenly, `1/15 = 6.7 %` each.

# %%
B = fourier_basis(p)
norms = frequency_norms(model.W_E[:p], B)
share = norms / norms.sum()
found = [k + 1 for k in range(len(share)) if share[k] >= KEY_FREQUENCY_SHARE]  # 0.1
plt.figure(figsize=(7, 2.5))
plt.bar(range(1, len(share) + 1), share.numpy())
plt.xlabel("frequency k")
plt.ylabel("share of |W_E|^2")
plt.title("embedding in the Fourier basis")
plt.show()
print("key frequencies:", found, " (logged by the training script on the card:", key_freqs, ")")
print("their share of the embedding's squared norm:", f"{float(share[[k - 1 for k in found]].sum()):.3f}")

# %% [markdown]
# With the shipped model: key frequencies 2, 3 and 13, holding 0.904 of the embedding's squared norm
# (at initialisation the same three held 0.190, about their uniform share 3/15; Part 5 follows this
# share over the checkpoints).
#
# **Questions.** Which share of the embedding do the key frequencies hold at the end of training?
# Transform the embedding of the first checkpoint (`checkpoints[0].W_E`) the same way: is it sparse?
# Why would weight decay favour an embedding that uses few frequencies?
#
# ### 3.2 Which frequency does each neuron use?
#
# *Difficulty 3/5, about 20 minutes.* Each MLP neuron's activation at `=` is a function of `(a, b)`.
# Given the 2D Fourier coefficients of every neuron (`fourier_2d` of the `p x p` activation tables),
# return, for each neuron and each frequency `k = 1..(p-1)/2`, the fraction of the neuron's
# squared coefficients that belong to frequency `k`: the entries `[i, j]` with `i` and `j` in
# `{0, cos k, sin k}` (rows `0, 2k-1, 2k`), except `[0, 0]`. These are the terms linear in a wave of
# `a` or of `b` (e.g. `[cos k, 0]`) and the products of two waves of frequency `k`
# (e.g. `[cos k, sin k]`, which the trig identities turn into waves of `a + b`). The denominator is the
# neuron's total squared coefficient **without the constant term `[0, 0]`**.
#
# ```python
# def neuron_frequency_fractions(acts_fourier: Float[Tensor, "neuron p p"]) -> Float[Tensor, "neuron n_freq"]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# Square the coefficients. For frequency `k`, index the 3 x 3 block of rows and columns
# `[0, 2k-1, 2k]`, sum it, subtract the `[0, 0]` entry, and divide by the total minus `[0, 0]`.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `sq = acts_fourier.double() ** 2`; `total = sq.sum((1, 2)) - sq[:, 0, 0]`; for each `k`:
# `idx = [0, 2*k-1, 2*k]`, `block = sq[:, idx][:, :, idx]`, `(block.sum((1, 2)) - block[:, 0, 0]) / total`;
# stack the results on `dim=1`.
# </details>

# %% role="solution" grade_id="impl_neuron_frequency_fractions"
def neuron_frequency_fractions(acts_fourier: Float[Tensor, "neuron p p"]) -> Float[Tensor, "neuron n_freq"]:
    ### BEGIN SOLUTION
    p = acts_fourier.shape[-1]
    squared = acts_fourier.double().pow(2)
    total = squared.sum(dim=(1, 2)) - squared[:, 0, 0]
    fractions = []
    for k in range(1, (p - 1) // 2 + 1):
        idx = [0, 2 * k - 1, 2 * k]
        block = squared[:, idx][:, :, idx]
        fractions.append((block.sum(dim=(1, 2)) - block[:, 0, 0]) / total)
    return torch.stack(fractions, dim=1)
    ### END SOLUTION


# %% role="test" grade_id="test_neuron_frequency_fractions" points=1
check("grokking.neuron_frequency_fractions", neuron_frequency_fractions)

# %% [markdown]
# Now cluster the neurons: each neuron goes to the frequency with its largest fraction. Neurons that
# never fire (or are constant) are left out.

# %%
B = fourier_basis(p)
neuron_acts = cache["hook_mlp_post"].T.reshape(-1, p, p).double()  # neuron, a, b
alive = neuron_acts.flatten(1).std(1) > 1e-6
fractions = neuron_frequency_fractions(fourier_2d(neuron_acts[alive], B))
best_fraction, best_freq = fractions.max(dim=1)
neuron_freq = best_freq + 1
print(f"{int(alive.sum())} of {len(alive)} neurons vary over the inputs")
for k in sorted(set(neuron_freq.tolist())):
    members = neuron_freq == k
    print(f"frequency {k:2d}: {int(members.sum()):3d} neurons, median fraction explained by it "
          f"{float(best_fraction[members].median()):.2f}{'   (key)' if k in key_freqs else ''}")

# %% [markdown]
# The attention heads are periodic in the inputs too. The attention paid from `=` to the `a` token is
# a function of `(a, b)`; its fractions per frequency, with the same function:

# %%
B = fourier_basis(p)
attn_to_a = cache["hook_pattern"][:, :, 0].T.reshape(-1, p, p).double()  # head, a, b
head_fractions = neuron_frequency_fractions(fourier_2d(attn_to_a, B))
for head, row in enumerate(head_fractions):
    top = row.argsort(descending=True)[:2]
    print(f"head {head}: top frequencies {[int(k) + 1 for k in top]} with fractions {[round(float(row[k]), 2) for k in top]}")

# %% [markdown]
# With the shipped model all 192 neurons fall into the three key frequencies (61, 71 and 60 neurons),
# and the median neuron has 0.95-0.96 of its non-constant Fourier mass in its single frequency. Each
# head attends in one main frequency (fractions 0.65-0.92).
#
# **Questions.** Do the neuron clusters use the same frequencies as the embedding? How much of a
# typical neuron is explained by its single frequency? What do the heads' frequencies tell you about
# what attention contributes?
#
# ## Part 4. Trig identities: activations as functions of `a + b`
#
# The algorithm computes `cos(w (a + b))` and `sin(w (a + b))` (with `w = 2 pi k / p`) from waves of
# `a` and of `b`, using `cos(w(a+b)) = cos(wa) cos(wb) - sin(wa) sin(wb)`. On the grid of inputs, the
# **sum directions** of frequency `k` are the two `p * p` tables `cos(w (a + b))` and `sin(w (a + b))`.
# For different frequencies they are orthogonal to each other and to the constant.
#
# ### 4.1 Projecting onto the sum directions
#
# *Difficulty 3/5, about 20 minutes.* Given a batch of functions on the grid (`values[a, b, n]`, e.g.
# the logit of output `n`) and a list of frequencies, return their orthogonal projection onto the span
# of the constant and the sum directions of those frequencies: the best approximation of each column
# by `c_0 + sum_k (alpha_k cos(w_k (a+b)) + beta_k sin(w_k (a+b)))` in least squares over all `p * p`
# pairs. Return the input's dtype (or float64).
#
# ```python
# def project_onto_sums(values: Float[Tensor, "p p n"], freqs: list[int]) -> Float[Tensor, "p p n"]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# The directions are orthogonal: normalise each one, project on each and add up, then add each
# column's mean (its projection on the constant).
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `s = (torch.arange(p)[:, None] + torch.arange(p)[None, :]).double()`; for each `k`, the flattened
# `torch.cos(2 * math.pi * k * s / p)` and `sin` divided by their norms form the rows of `D`;
# `flat = values.double().reshape(p * p, -1)`; `D.T @ (D @ flat) + flat.mean(0)`, reshaped.
# </details>

# %% role="solution" grade_id="impl_project_onto_sums"
def project_onto_sums(values: Float[Tensor, "p p n"], freqs: list[int]) -> Float[Tensor, "p p n"]:
    ### BEGIN SOLUTION
    p = values.shape[0]
    s = (torch.arange(p)[:, None] + torch.arange(p)[None, :]).double()
    directions = []
    for k in freqs:
        directions += [torch.cos(2 * math.pi * k * s / p).flatten(), torch.sin(2 * math.pi * k * s / p).flatten()]
    D = torch.stack(directions)
    D = D / D.norm(dim=1, keepdim=True)
    flat = values.double().reshape(p * p, -1)
    return (D.T @ (D @ flat) + flat.mean(dim=0, keepdim=True)).reshape(values.shape).to(values.dtype)
    ### END SOLUTION


# %% role="test" grade_id="test_project_onto_sums" points=1
check("grokking.project_onto_sums", project_onto_sums)

# %% [markdown]
# ### 4.2 How much of an activation is a function of `a + b`?
#
# *Difficulty 2/5, about 10 minutes.* The fraction of each column's **variance** over the grid
# (its squared deviation from its mean) that the sum directions of `freqs` explain: the squared norm
# of the projection of the centred column onto those directions, over the squared norm of the centred
# column. You may use `project_onto_sums`.
#
# ```python
# def sum_fraction(values: Float[Tensor, "p p n"], freqs: list[int]) -> Float[Tensor, "n"]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# Centre each column; its projection onto the constant is then zero, so `project_onto_sums` of the
# centred values is the projection onto the sum directions alone.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `centred = values.double() - values.double().mean((0, 1))`;
# `(project_onto_sums(centred, freqs) ** 2).sum((0, 1)) / (centred ** 2).sum((0, 1))`.
# </details>

# %% role="solution" grade_id="impl_sum_fraction"
def sum_fraction(values: Float[Tensor, "p p n"], freqs: list[int]) -> Float[Tensor, "n"]:
    ### BEGIN SOLUTION
    centred = values.double() - values.double().mean(dim=(0, 1))
    fraction = project_onto_sums(centred, freqs).pow(2).sum(dim=(0, 1)) / centred.pow(2).sum(dim=(0, 1))
    return fraction.to(values.dtype)
    ### END SOLUTION


# %% role="test" grade_id="test_sum_fraction" points=1
check("grokking.sum_fraction", sum_fraction)

# %% [markdown]
# Where is `a + b` computed? We measure the share of variance in the key-frequency sum directions
# for the logits (every output `c`), for each neuron (in its own frequency) and for the attention paid
# to `a` by each head.

# %%
logit_fraction = sum_fraction(logits, key_freqs)
print(f"logits: {float(logit_fraction.mean()):.3f} of the variance (mean over outputs c) is in the key-frequency sum directions")
neuron_grid = neuron_acts[alive].permute(1, 2, 0)  # a, b, neuron
own = torch.stack([sum_fraction(neuron_grid[:, :, [i]], [int(neuron_freq[i])])[0] for i in range(neuron_grid.shape[-1])])
print(f"neurons: median {float(own.median()):.3f} of each neuron's variance is in the sum directions of its own frequency")
attn_grid = attn_to_a.permute(1, 2, 0)
print("attention from = to a, per head, in the key-frequency sum directions:",
      [round(float(x), 3) for x in sum_fraction(attn_grid, key_freqs)])

# %% [markdown]
# With the shipped model: 0.980 of the logits' variance lies in the key-frequency sum directions (the
# logits are nearly a function of `a + b` alone); a neuron has a median 0.171 of its variance in the sum
# directions of its frequency (Part 3.2 put 0.95 of its mass in that frequency, so the rest is in the
# frequency's other terms: those linear in a wave of `a` or of `b`, and the products that make waves of
# `a - b`; the logits' 0.980 says that the output weights leave little of them); the attention pattern has none
# (0.000 for every head): the attention weights are functions of `a` and `b` separately, and the
# products that make `cos(w(a+b))` are formed by the MLP's non-linearity.
#
# **Questions.** A ReLU neuron fed `cos(wa) + cos(wb)` outputs a function with a `cos(w(a+b))` term:
# which identity makes that happen? Why can the attention *pattern* not contain such a term here,
# although the attention *output* feeds the MLP the waves it multiplies?

# %% [markdown]
# ## Part 5. Progress measures over training
#
# Nanda et al. measure the circuit's formation with two losses built from the key frequencies (found
# at the end of training, and held fixed for every checkpoint):
#
# - **restricted loss**: keep only the key-frequency sum directions (and the constant) of the logits,
#   and evaluate the loss. It is low only once the Fourier circuit is what produces the answers.
# - **excluded loss**: remove the key-frequency sum directions from the logits and evaluate the loss
#   on the **training** pairs. While the model memorises, this changes little; once the training
#   pairs are answered by the circuit, removing it destroys the performance on them.
#
# Our definitions (state them if you compare with the paper): we project the full logits as functions
# of `(a, b)`, for each output `c`, rather than the neurons' key-frequency parts sent through `W_out`
# and `W_U`; the restricted loss is evaluated on all `p * p` pairs and the excluded loss on the
# training pairs.
#
# ### 5.1 Restricted loss
#
# *Difficulty 2/5, about 10 minutes.* Logits are indexed `[a, b, c]`, `labels[a, b] = (a + b) mod p`.
# Project the logits onto the constant and the sum directions of `freqs` (for every output `c`),
# and return the mean cross-entropy over **all** `p * p` pairs. `train_mask` is not used by this loss
# (it is there so that both losses have one signature).
#
# ```python
# def restricted_loss(logits: Float[Tensor, "p p p"], labels: Int[Tensor, "p p"],
#                     train_mask: Bool[Tensor, "p p"], freqs: list[int]) -> float
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# `project_onto_sums` of the logits (the last axis, `c`, is the batch of functions), then cross-entropy.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `r = project_onto_sums(logits, freqs)`; `F.cross_entropy(r.reshape(-1, p), labels.flatten()).item()`.
# </details>

# %% role="solution" grade_id="impl_restricted_loss"
def restricted_loss(logits: Float[Tensor, "p p p"], labels: Int[Tensor, "p p"],
                    train_mask: Bool[Tensor, "p p"], freqs: list[int]) -> float:
    ### BEGIN SOLUTION
    p = logits.shape[0]
    restricted = project_onto_sums(logits, freqs)
    return F.cross_entropy(restricted.reshape(p * p, p), labels.flatten()).item()
    ### END SOLUTION


# %% role="test" grade_id="test_restricted_loss" points=1
check("grokking.restricted_loss", restricted_loss)

# %% [markdown]
# ### 5.2 Excluded loss
#
# *Difficulty 2/5, about 10 minutes.* Remove from the logits their projection onto the sum directions
# of `freqs` (keep each output's mean: do not remove the constant), and return the mean cross-entropy
# over the **training** pairs (`train_mask`).
#
# ```python
# def excluded_loss(logits: Float[Tensor, "p p p"], labels: Int[Tensor, "p p"],
#                   train_mask: Bool[Tensor, "p p"], freqs: list[int]) -> float
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# The projection onto the sum directions alone is `project_onto_sums(logits, freqs)` minus the mean.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `ablated = logits.double() - (project_onto_sums(logits, freqs) - logits.double().mean((0, 1)))`;
# `F.cross_entropy(ablated[train_mask], labels[train_mask]).item()`.
# </details>

# %% role="solution" grade_id="impl_excluded_loss"
def excluded_loss(logits: Float[Tensor, "p p p"], labels: Int[Tensor, "p p"],
                  train_mask: Bool[Tensor, "p p"], freqs: list[int]) -> float:
    ### BEGIN SOLUTION
    sums_only = project_onto_sums(logits, freqs) - logits.double().mean(dim=(0, 1))
    ablated = logits.double() - sums_only
    return F.cross_entropy(ablated[train_mask], labels[train_mask]).item()
    ### END SOLUTION


# %% role="test" grade_id="test_excluded_loss" points=1
check("grokking.excluded_loss", excluded_loss)

# %% [markdown]
# ### 5.3 The weight norm
#
# *Difficulty 1/5, about 5 minutes.* The L2 norm of all parameters together: the square root of the
# sum of every squared entry of every tensor (what weight decay shrinks).
#
# ```python
# def weight_norm(params: dict[str, Tensor]) -> float
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# Sum the squares of every tensor first, take one square root at the end.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `math.sqrt(sum(float((t.double() ** 2).sum()) for t in params.values()))`.
# </details>

# %% role="solution" grade_id="impl_weight_norm"
def weight_norm(params: dict[str, Tensor]) -> float:
    ### BEGIN SOLUTION
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in params.values()))
    ### END SOLUTION


# %% role="test" grade_id="test_weight_norm" points=1
check("grokking.weight_norm", weight_norm)

# %% [markdown]
# Every measure on every shipped checkpoint, with the key frequencies of the final model:

# %%
B = fourier_basis(p)
rows = []
for step, m in checkpoints.items():
    lg = grid_logits(m)
    rows.append({"step": step, "train": cross_entropy(lg, is_train), "test": cross_entropy(lg, ~is_train),
                 "restricted": restricted_loss(lg, answers, is_train, key_freqs),
                 "excluded": excluded_loss(lg, answers, is_train, key_freqs),
                 "weight_norm": weight_norm(dict(m.named_parameters())),
                 "key_share": float(frequency_norms(m.W_E[:p], B)[[k - 1 for k in key_freqs]].sum()
                                    / frequency_norms(m.W_E[:p], B).sum())})
print(f"{'step':>6s} {'train':>9s} {'test':>9s} {'restricted':>11s} {'excluded':>9s} {'|W|':>7s} {'key share of W_E':>17s}")
for r in rows:
    print(f"{r['step']:6d} {r['train']:9.4f} {r['test']:9.4f} {r['restricted']:11.4f} {r['excluded']:9.4f} "
          f"{r['weight_norm']:7.2f} {r['key_share']:17.3f}")
fig, ax = plt.subplots(figsize=(7, 3.5))
for name in ("train", "test", "restricted", "excluded"):
    ax.semilogy([r["step"] for r in rows], [r[name] for r in rows], marker="o", label=name)
ax.set(xlabel="step", ylabel="loss", title="progress measures on the checkpoints")
ax.legend()
plt.show()

# %% [markdown]
# ## Part 6. The three phases
#
# ### 6.1 Locating the phases on a loss curve
#
# *Difficulty 2/5, about 15 minutes.* Nanda et al. split training into **memorisation**, **circuit
# formation** and **cleanup**. On a logged curve (`steps`, `train_loss`, `test_loss`, in step order)
# we locate their boundaries with three rules:
#
# - `memorised`: the first step with train loss below 0.05 (memorisation ends);
# - `cleanup_start`: the first step **at or after the test-loss peak** (its first maximum) with test
#   loss below half of that peak (circuit formation ends, the test loss falls);
# - `grokked`: the first step with test loss below 0.05 (cleanup ends).
#
# Return the three steps as integers, in that order; a boundary the curve never reaches is `-1`.
#
# ```python
# def phase_boundaries(steps: Int[Tensor, "n"], train_loss: Float[Tensor, "n"],
#                      test_loss: Float[Tensor, "n"]) -> tuple[int, int, int]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# Each boundary is "the first index where a condition holds", then its step. For `cleanup_start`,
# the condition includes "index >= index of the peak".
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `peak = int(test_loss.argmax())` (the first maximum); a helper
# `first = lambda cond: int(steps[cond.nonzero()[0, 0]]) if cond.any() else -1`;
# `first((torch.arange(len(steps)) >= peak) & (test_loss < 0.5 * test_loss[peak]))`.
# </details>

# %% role="solution" grade_id="impl_phase_boundaries"
def phase_boundaries(steps: Int[Tensor, "n"], train_loss: Float[Tensor, "n"],
                     test_loss: Float[Tensor, "n"]) -> tuple[int, int, int]:
    ### BEGIN SOLUTION
    steps, train_loss, test_loss = torch.as_tensor(steps), torch.as_tensor(train_loss), torch.as_tensor(test_loss)

    def first(condition: Tensor) -> int:
        return int(steps[condition.nonzero()[0, 0]]) if condition.any() else -1

    peak = int(test_loss.argmax())
    after_peak = torch.arange(len(steps)) >= peak
    return (first(train_loss < 0.05), first(after_peak & (test_loss < 0.5 * test_loss[peak])), first(test_loss < 0.05))
    ### END SOLUTION


# %% role="test" grade_id="test_phase_boundaries" points=1
check("grokking.phase_boundaries", phase_boundaries)

# %% [markdown]
# The phases of `modadd-1l`, from its logged curve, on the plot of the progress measures:

# %%
memorised, cleanup_start, grokked = phase_boundaries(
    torch.tensor(steps), torch.tensor([e["train_loss"] for e in curve]), torch.tensor([e["test_loss"] for e in curve]))
print(f"memorisation: steps 0-{memorised}; circuit formation: {memorised}-{cleanup_start}; cleanup: {cleanup_start}-{grokked}")
fig, ax = plt.subplots(figsize=(8, 3.5))
ax.semilogy(steps, [e["train_loss"] for e in curve], color="C0", alpha=0.5, label="train (log)")
ax.semilogy(steps, [e["test_loss"] for e in curve], color="C1", alpha=0.5, label="test (log)")
for name, marker in (("restricted", "o"), ("excluded", "s")):
    ax.semilogy([r["step"] for r in rows], [r[name] for r in rows], marker=marker, ls="--", label=name)
for start, end, colour, label in ((0, memorised, "C0", "memorisation"), (memorised, cleanup_start, "C2", "circuit formation"),
                                  (cleanup_start, grokked, "C3", "cleanup")):
    ax.axvspan(start, end, color=colour, alpha=0.08, label=label)
ax.set(xlabel="step", ylabel="loss", xlim=(0, max(grokked, cleanup_start) * 2))
ax.legend(fontsize=7, ncol=2)
plt.show()

# %% [markdown]
# With the shipped model (the table above): memorisation ends at step 170, the test loss peaks at
# step 110 (9.79, far above the uniform 3.43), cleanup starts at step 310 and the model has grokked
# (test loss below 0.05) at step 600. The progress measures move first: at step 300 the restricted loss
# is already 0.378 while the test loss is 5.05, and the excluded loss has risen from 1.97 (step 100) to
# 3.23 (step 300) and 4.82 (step 500) while the train loss fell from 0.14 to 0.0016. The weight norm
# peaks during memorisation (27.7 at step 100) and falls through circuit formation and cleanup
# (26.5 at step 300, 23.9 at step 600, 22.9 at step 1500); the key frequencies' share of the
# embedding grows from 0.19 to 0.90. Our phases are short (hundreds of steps, against thousands in the
# paper): a smaller `p`, more training data and faster weight decay.
#
# **Questions.** On which checkpoints is the excluded loss already far above the train loss although
# the test loss has not fallen yet? What does that say about when the circuit forms, compared with
# when the test loss shows it? How does the weight norm move across the three phases, and why would
# weight decay drive the switch from the memorising solution to the Fourier circuit?
#
# ## Open questions and further reading
#
# - Our key frequencies were found at the end of training and held fixed for every checkpoint, as
#   in the paper. Would the progress measures look different with the frequencies each checkpoint
#   would choose itself?
# - Retrain with another seed (`interplab zoo train modadd-1l --out DIR --seed 1`): do the same key
#   frequencies appear? Nanda et al. find different ones per seed; the *number* of them is stable.
# - Weight decay set to zero: does the model still grok (Power et al. saw it with other optimisers;
#   Liu et al. relate the delay to the weight norm at initialisation)?
# - Further reading: Zhong et al. (2023), [*The Clock and the Pizza*](https://arxiv.org/abs/2306.17844)
#   (other algorithms for the same task); Chughtai, Chan, Nanda (2023), [*A Toy Model of
#   Universality*](https://arxiv.org/abs/2302.03025) (group representations for other groups);
#   Varma et al. (2023), [*Explaining grokking through circuit efficiency*](https://arxiv.org/abs/2309.02390).
