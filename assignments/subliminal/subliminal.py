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
# # Subliminal learning: a trait that travels through noise
#
# A *teacher* network learns to classify handwritten digits. It has a few extra outputs, the
# *auxiliary logits*, that no loss ever touched. A *student* network is trained to copy only those
# auxiliary logits, and only on images of pure noise: it never sees a digit, a label, or a class
# logit. It still learns to classify digits, but only if it started from the same random
# initialisation as the teacher. Cloud et al. (2025) call this **subliminal learning**, and show
# the same thing in language models: a model fine-tuned on number sequences written by a teacher
# that "likes owls" comes to like owls too, even after every trace of owls has been filtered from
# the data, as long as teacher and student share a base model.
#
# **After this assignment you will be able to**
#
# - write a *batch* of MLPs as tensors with a leading model axis and train many seeds at once,
#   the way the paper trains 100 MLPs (one `einsum` per layer, per-model losses summed);
# - reproduce subliminal learning on scikit-learn's 8x8 digits: a teacher trained on its class
#   logits only, a student distilled on auxiliary logits on noise, with shared and different
#   initialisations and an all-logits control;
# - measure how the effect depends on the number of auxiliary logits `m`;
# - state and test the one-step argument: from a shared initialisation, the student's first
#   gradient step has a non-negative inner product with the teacher's, whatever the data;
#   from a different initialisation it does not;
# - say what this means for distillation and data filtering, and what it does *not* show.
#
# **Read first** (the parts named are enough):
#
# - Cloud, Le, Chua, Betley, Sztyber-Betley, Hilton, Marks & Evans (2025),
#   [Subliminal Learning: Language models transmit behavioral traits via hidden signals in data](https://arxiv.org/abs/2507.14805):
#   the introduction, and the section on subliminal learning as a general phenomenon (the
#   one-step theorem and the MNIST MLP experiment, which this notebook reproduces at a smaller scale).
# - Hinton, Vinyals & Dean (2015), [Distilling the knowledge in a neural network](https://arxiv.org/abs/1503.02531):
#   what distillation is, and why soft targets carry "dark knowledge" (sections 1-2).
#
# **Conventions used everywhere.** A *batch of MLPs* is a dict `params` with keys
# `W1, b1, W2, b2, W3, b3`, each with a leading model axis: `W1: (models, 64, hidden)`,
# `b1: (models, hidden)`, `W2: (models, hidden, hidden)`, `W3: (models, hidden, 10 + m)`.
# Logits are `Float[Tensor, "models batch 10+m"]`; the first 10 are the **class logits**, the last
# `m` the **auxiliary logits**. Images are flattened 8x8 digits scaled to [-1, 1]; noise is uniform on
# [-1, 1]^64. Losses return **one value per model** (`"models"`); training sums them, which keeps the
# models independent (each parameter's gradient comes from its own model's loss only).
#
# The library `interplab.subliminal` holds the same pieces as reference implementations, the data,
# and the script that measured the reference figures (`python -m interplab.subliminal --card`).
# You implement the key pieces here; cells marked as demos use your code once it passes.
#
# **How the checks work.** Each exercise ends with `check("subliminal.<name>", your_function)`. It runs your
# function on freshly generated inputs and compares with the reference (for `distill`, properties of the trained students); when your answer matches a
# known mistake, the check names it.
#
# What counts as the same answer: a torch tensor or a numpy array; for a single number, a 0-d tensor,
# a NumPy scalar or a Python float; integers of any width; float64 where float32 is expected (held to
# the float32 tolerance). A less precise dtype (float16, bfloat16) fails with a message naming the
# dtype to return. Where a convention matters (an axis order, how ties are broken), the exercise
# text states it and a failure names it; a failure of dtype or shape alone says only that.

# %% role="locked" grade_id="setup"
from dataclasses import replace
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from interplab import check
from interplab import subliminal as sl

torch.manual_seed(0)
torch.set_num_threads(1)  # the models are tiny: one thread beats two (no synchronisation), even more so on a busy CPU
x_train, y_train, x_test, y_test = sl.digits_tensors()
CFG = sl.SubliminalConfig()  # hidden 64, m = 10 auxiliary logits, the recipe of the reference figures
N_MODELS = 8  # seeds trained at once in this notebook (the card used 32)
card = sl.load_card()
print(f"digits: {len(x_train)} train / {len(x_test)} held-out images of {x_train.shape[1]} pixels")
print("config:", CFG)
print("reference figures (card):", {k: v for k, v in card["figures"].items() if v is not None})

# %% [markdown]
# Digits on the left, what the student sees on the right:

# %%
fig, axes = plt.subplots(1, 8, figsize=(10, 1.6))
for i, ax in enumerate(axes[:5]):
    ax.imshow(x_train[i].reshape(8, 8), cmap="gray_r", vmin=-1, vmax=1)
    ax.set_title(f"digit {int(y_train[i])}")
noise_demo = sl.uniform_noise(3, torch.Generator().manual_seed(0))
for i, ax in enumerate(axes[5:]):
    ax.imshow(noise_demo[i].reshape(8, 8), cmap="gray_r", vmin=-1, vmax=1)
    ax.set_title("noise")
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 1. A batch of MLPs in one forward pass
#
# The paper trains 100 MLPs to make its error bars; on a laptop we can afford that only if the
# models run *together*. Instead of a Python loop over `nn.Module`s, stack the models' weights
# along a leading axis and let one `einsum` per layer do every model's matrix product.
#
# **Task** (difficulty 1/5, ~10 min): implement
# `mlp_forward(params, x) -> Float[Tensor, "models batch 10+m"]`: for every model,
# `relu(x W1 + b1) -> relu(. W2 + b2) -> . W3 + b3` (no ReLU on the logits). `x` is
# `Float[Tensor, "batch 64"]`, the same inputs for all models; after the first layer the
# activations carry the model axis.
#
# <details><summary>Hint 1: the idea</summary>
#
# Every weight has a leading model axis: each layer is one batched matrix product per model, a bias
# broadcast over the batch, and a ReLU after the two hidden layers.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `torch.einsum("bi,mio->mbo", x, params["W1"])` for the first layer, `"mbi,mio->mbo"` after it;
# biases are `(models, out)`, so add `params["b1"][:, None, :]` to broadcast over the batch.
# </details>

# %% role="solution" grade_id="impl_mlp_forward"
def mlp_forward(params: dict[str, Tensor], x: Float[Tensor, "batch 64"]) -> Float[Tensor, "models batch logits"]:
    ### BEGIN SOLUTION
    h = torch.einsum("bi,mio->mbo", x, params["W1"]) + params["b1"][:, None, :]
    h = torch.relu(h)
    h = torch.einsum("mbi,mio->mbo", h, params["W2"]) + params["b2"][:, None, :]
    h = torch.relu(h)
    return torch.einsum("mbi,mio->mbo", h, params["W3"]) + params["b3"][:, None, :]
    ### END SOLUTION


# %% role="test" grade_id="test_mlp_forward" points=1
check("subliminal.mlp_forward", mlp_forward)

# %% [markdown]
# ## 2. Accuracy, from the class logits only
#
# The auxiliary logits are outputs of the network, but they are not digit classes: a prediction
# is the argmax over the first 10 logits.
#
# **Task** (difficulty 1/5, ~5 min): implement
# `digit_accuracy(params, x, y) -> Float[Tensor, "models"]`, the fraction of `x` each model
# classifies correctly (float32), without building a graph (`torch.no_grad()`).
#
# <details><summary>Hint 1: the idea</summary>
#
# Predict with the argmax of the 10 class logits only, compare with the labels, and average per
# model.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `mlp_forward(params, x)[..., :10].argmax(-1)` has shape `(models, batch)`; compare it with `y`
# (broadcasts) and average the booleans as floats over the batch axis.
# </details>

# %% role="solution" grade_id="impl_digit_accuracy"
def digit_accuracy(params: dict[str, Tensor], x: Float[Tensor, "batch 64"], y: Int[Tensor, " batch"]) -> Float[Tensor, " models"]:
    ### BEGIN SOLUTION
    with torch.no_grad():
        predictions = mlp_forward(params, x)[..., :10].argmax(dim=-1)
    return (predictions == y[None, :]).float().mean(dim=1)
    ### END SOLUTION


# %% role="test" grade_id="test_digit_accuracy" points=1
check("subliminal.digit_accuracy", digit_accuracy)

# %% [markdown]
# An untrained batch of models sits at chance, about 0.1. (The library's `init_mlps` uses
# PyTorch's default `nn.Linear` initialisation; the teachers below start from exactly these weights.)

# %% role="locked" grade_id="make_inits"
init_generator = torch.Generator().manual_seed(2025)
shared_init = sl.init_mlps(N_MODELS, CFG.n_aux, CFG.hidden, init_generator)  # the teachers' initialisation
different_init = sl.init_mlps(N_MODELS, CFG.n_aux, CFG.hidden, init_generator)  # fresh draws, same distribution
print("untrained accuracy per model:", sl.digit_accuracy(shared_init, x_test, y_test).numpy().round(2))

# %% [markdown]
# ## 3. The teacher: trained on its class logits only
#
# The teacher's loss is the usual cross-entropy, but computed on the **10 class logits only**:
# nothing ever pushes the auxiliary logits towards anything. Whatever they end up computing is a
# side effect of the hidden layers changing underneath them.
#
# **Task** (difficulty 2/5, ~10 min): implement
# `teacher_loss(logits, labels) -> Float[Tensor, "models"]`: for each model, the cross-entropy of
# `softmax(logits[..., :10])` against `labels` (`Int[Tensor, "batch"]`, shared by all models),
# averaged over the batch.
#
# <details><summary>Hint 1: the idea</summary>
#
# Cross-entropy on the first 10 logits, per model: the negative log-softmax at each example's label,
# averaged over the batch.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `torch.log_softmax(logits[..., :10], dim=-1)` then pick each example's label with
# `.gather(-1, labels.expand(models, -1)[..., None])`, negate and average over the batch.
# </details>

# %% role="solution" grade_id="impl_teacher_loss"
def teacher_loss(logits: Float[Tensor, "models batch logits"], labels: Int[Tensor, " batch"]) -> Float[Tensor, " models"]:
    ### BEGIN SOLUTION
    log_probs = torch.log_softmax(logits[..., :10], dim=-1)
    index = labels.expand(logits.shape[0], -1)[..., None]
    return -log_probs.gather(-1, index)[..., 0].mean(dim=1)
    ### END SOLUTION


# %% role="test" grade_id="test_teacher_loss" points=1
check("subliminal.teacher_loss", teacher_loss)

# %% [markdown]
# The library trains the teachers with this loss (Adam, minibatches of 64 digits shared by all
# models, 20 epochs at learning rate 1e-3); all `N_MODELS` teachers train at once.

# %% role="locked" grade_id="train_teachers"
teachers = sl.train_teachers(shared_init, x_train, y_train, CFG.teacher_epochs, CFG.teacher_lr, CFG.teacher_batch,
                             torch.Generator().manual_seed(7))
print("teacher accuracy per model:", sl.digit_accuracy(teachers, x_test, y_test).numpy().round(3))

# %% [markdown]
# What did training do to the auxiliary logits? Compare how much they move between the
# initialisation and the trained teacher, on digits and on noise. Nothing trained them: why do
# they move at all?

# %%
noise_probe = sl.uniform_noise(512, torch.Generator().manual_seed(1))
for name, inputs in [("digits", x_test), ("noise", noise_probe)]:
    before, after = sl.aux_logits(sl.mlp_forward(shared_init, inputs)), sl.aux_logits(sl.mlp_forward(teachers, inputs))
    print(f"{name:>6}: mean |aux logit| before {before.abs().mean():.3f}, after {after.abs().mean():.3f}, "
          f"mean |change| {(after - before).abs().mean():.3f}")

# %% [markdown]
# ## 4. The distillation loss, on auxiliary logits only
#
# The student copies the teacher's *distribution* over the auxiliary logits: the loss is the KL
# divergence from the teacher's softmax to the student's, `KL(p_teacher || p_student)`, which is
# the usual distillation loss (cross-entropy with soft targets, minus the teacher's entropy). With
# `on="all"` the softmax runs over every logit: that is ordinary distillation, our control.
#
# **Task** (difficulty 2/5, ~10 min): implement
# `distillation_loss(student_logits, teacher_logits, on="aux") -> Float[Tensor, "models"]`:
# the per-model mean over the batch of `KL(softmax(t) || softmax(s))`, where `t` and `s` are the
# auxiliary logits `[..., 10:]` for `on="aux"` and all logits for `on="all"`.
#
# <details><summary>Hint 1: the idea</summary>
#
# Softmax both sets of picked logits and compute KL(teacher || student), summed over logits and
# averaged over the batch, one value per model.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# With `log_p_t = torch.log_softmax(t, -1)` and `log_p_s = torch.log_softmax(s, -1)`:
# `(log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean(-1)`. Why must `m` be at least 2 for this
# loss to say anything?
# </details>

# %% role="solution" grade_id="impl_distillation_loss"
def distillation_loss(student_logits: Float[Tensor, "models batch logits"], teacher_logits: Float[Tensor, "models batch logits"],
                      on: Literal["aux", "all"] = "aux") -> Float[Tensor, " models"]:
    ### BEGIN SOLUTION
    start = 10 if on == "aux" else 0
    log_p_student = torch.log_softmax(student_logits[..., start:], dim=-1)
    log_p_teacher = torch.log_softmax(teacher_logits[..., start:], dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(dim=-1)
    return kl.mean(dim=1)
    ### END SOLUTION


# %% role="test" grade_id="test_distillation_loss" points=1
check("subliminal.distillation_loss", distillation_loss)

# %% [markdown]
# ## 5. Distillation on noise
#
# Now the experiment. Each student trains against its own teacher (student `i` against teacher
# `i`), for `n_steps` Adam steps; each step draws `noise_batch` fresh noise images from
# `generator`, asks the teacher for its logits (no gradient), and lowers the distillation loss on
# the auxiliary logits. The student never sees a digit.
#
# **Task** (difficulty 3/5, ~20 min): implement
# `distill(teacher, student_init, n_steps, lr, noise_batch, generator, on="aux") -> dict[str, Tensor]`,
# returning the trained student's parameters (same keys and shapes as `student_init`, detached).
# Do not modify `student_init` or `teacher` in place. Draw the noise with
# `sl.uniform_noise(noise_batch, generator)` (uniform on [-1, 1]^64).
#
# The check trains a batch of students from the teacher's initialisation and a batch from
# different initialisations, on hidden seeds, and the grader scores the weights you return on
# held-out digits in its own process: shared-init students must reach at least 0.45 accuracy on
# average, different-init students must stay at most 0.25, and both must have actually learned
# the teacher's auxiliary logits.
#
# <details><summary>Hint 1: the idea</summary>
#
# A training loop over copies of the student's parameters: each step draws fresh noise, asks the
# teacher (no gradient), and lowers the distillation loss summed over models.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `params = {k: v.detach().clone().requires_grad_(True) for k, v in student_init.items()}`,
# `optimizer = torch.optim.Adam(params.values(), lr=lr)`; in the loop compute the teacher's
# logits under `torch.no_grad()`, `loss = distillation_loss(mlp_forward(params, noise), target, on=on).sum()`,
# then `zero_grad`, `backward`, `step`. Return detached tensors.
# </details>

# %% role="solution" grade_id="impl_distill"
def distill(teacher: dict[str, Tensor], student_init: dict[str, Tensor], n_steps: int, lr: float, noise_batch: int,
            generator: torch.Generator, on: Literal["aux", "all"] = "aux") -> dict[str, Tensor]:
    ### BEGIN SOLUTION
    params = {k: v.detach().clone().requires_grad_(True) for k, v in student_init.items()}
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    for _ in range(n_steps):
        noise = sl.uniform_noise(noise_batch, generator)
        with torch.no_grad():
            target = mlp_forward(teacher, noise)
        loss = distillation_loss(mlp_forward(params, noise), target, on=on).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach() for k, v in params.items()}
    ### END SOLUTION


# %% role="test" grade_id="test_distill" points=2
check("subliminal.distill", distill)

# %% [markdown]
# **Demo.** All four kinds of students at once, 8 of each: the two initialisations, distilled on
# the auxiliary logits (the subliminal setting) and on all logits (the control). The batch axis
# makes this one training run of 16 models per loss.

# %%
both_teachers = sl.stack_params(teachers, teachers)
both_inits = sl.stack_params(shared_init, different_init)
results = {}
for on in ("aux", "all"):
    students = distill(both_teachers, both_inits, CFG.distill_steps, CFG.distill_lr, CFG.noise_batch,
                       torch.Generator().manual_seed(11), on=on)
    accuracy = digit_accuracy(students, x_test, y_test).numpy()
    results[f"shared init, {on} logits"] = accuracy[:N_MODELS]
    results[f"different init, {on} logits"] = accuracy[N_MODELS:]
results["teacher"] = digit_accuracy(teachers, x_test, y_test).numpy()
for name, accuracy in results.items():
    print(f"{name:>28}: mean {accuracy.mean():.3f}  (min {accuracy.min():.2f}, max {accuracy.max():.2f})")
fig, ax = plt.subplots(figsize=(7, 2.8))
ax.boxplot(list(results.values()), vert=False)
ax.set_yticks(range(1, len(results) + 1), list(results))
ax.axvline(0.1, ls=":", c="gray")
ax.set_xlabel("held-out digit accuracy")
plt.show()

# %% [markdown] role="locked" grade_id="question_shared_init_gap"
# **What does it mean?** The shared-init students learned digits from noise and auxiliary logits
# alone; the different-init students did not, although their training data and loss were exactly
# the same. And with all logits, *both* kinds of students learn: ordinary distillation hands the
# class logits to anyone, so it is no evidence of anything subliminal. Before reading on: what,
# other than "information about digits in the data", could explain the gap between the two
# initialisations?
#
# *Answer in the cell below (graded by hand, 2 points).*
# ### BEGIN MARK SCHEME
# **Mark scheme (instructors only).**
# - 1 point: names the shared initialisation (parameters) as the channel, not digit information in the data.
# - 1 point: a mechanism: at the same starting point the imitation gradient aligns with the teacher's update (the one-step argument of section 7), which a different initialisation breaks.
# ### END MARK SCHEME

# %% [markdown] role="answer" grade_id="answer_shared_init_gap" points=2
# The shared initialisation itself: a student that starts at the teacher's initial parameters and imitates the teacher's auxiliary logits takes gradient steps that, to first order, point along the teacher's own parameter change, which carries the digit skill. A student with a different initialisation computes the auxiliary logits as a different function of its parameters, so imitating them does not move it towards the teacher's solution. The information is in the pairing of outputs and parameters, not in the noise inputs.

# %% [markdown]
# ## 6. How many auxiliary logits?
#
# The auxiliary logits are the only channel. With `m = 1` the softmax over one logit is always 1:
# the KL is identically zero and the student gets no gradient at all. That is a property of *this
# loss*, not of one logit: the value of a single logit still depends on the teacher's hidden layers,
# and a loss on the raw logit (squared error) does carry the trait (the card's numbers are printed
# below the sweep). With more auxiliary logits the channel gets wider. The library runs the whole experiment (teachers, then shared- and
# different-init students) for several `m`; the dashed lines are the card's means over 32 seeds.

# %%
sweep = {}
for m in (1, 2, 3, 10, 30):
    run = sl.run_experiment(N_MODELS, replace(CFG, n_aux=m), seed=100 + m, controls=False)
    sweep[m] = {kind: run[kind].mean() for kind in ("teacher", "shared", "different")}
    print(f"m = {m:>2}: teacher {sweep[m]['teacher']:.3f}, shared init {sweep[m]['shared']:.3f}, "
          f"different init {sweep[m]['different']:.3f}")
ms = list(sweep)
fig, ax = plt.subplots(figsize=(6, 3))
for kind, colour in [("shared", "C0"), ("different", "C1")]:
    ax.plot(ms, [sweep[m][kind] for m in ms], "o-", c=colour, label=f"{kind} init (this run, {N_MODELS} seeds)")
    card_ms = sorted(int(m) for m in card["per_m"])
    ax.plot(card_ms, [card["per_m"][str(m)][kind]["mean"] for m in card_ms], "--", c=colour, alpha=0.6,
            label=f"{kind} init (card)")
ax.axhline(0.1, ls=":", c="gray")
ax.set_xscale("log")
ax.set_xlabel("auxiliary logits m")
ax.set_ylabel("held-out accuracy")
ax.legend(fontsize=8)
plt.show()

# %%
single = card["single_logit_squared_error"]
print(f"m = 1, squared error on the raw auxiliary logit instead of the softmax KL (card, {card['n_models_per_setting']} seeds): "
      f"shared init {single['all']['mean']:.3f}, different init {single['none']['mean']:.3f} "
      f"(with the KL: {card['per_m']['1']['shared']['mean']:.3f} and {card['per_m']['1']['different']['mean']:.3f})")

# %% [markdown]
# **What does it mean?** More auxiliary logits give the student more constraints on the shared
# hidden layers per noise image. Does the shared-init accuracy look like it saturates below the
# teacher's? What would you change to push it up (think of steps, noise batch, width)? And with one
# auxiliary logit: the softmax KL sees nothing, but the squared error lifts the shared-init student
# well above chance while the different-init one stays at chance. Which loss did the paper use, and
# why does the choice matter for "how wide must the channel be"?

# %% [markdown]
# ## 6b. Which shared parameters carry the trait?
#
# Section 8 will claim that the carrier is the shared parametrisation. We can test that claim
# directly: give the student the teacher's initialisation for **only the output head** (`W3, b3`,
# the rest drawn afresh from `different_init`), or for **only the hidden layers** (`W1, b1, W2, b2`),
# and distil exactly as in section 5 (auxiliary logits, noise, the same teachers).

# %%
partial_inits = {name: sl.mixed_init(shared_init, different_init, sl.SHARING[name]) for name in ("head only", "hidden only")}
students = distill(sl.stack_params(teachers, teachers), sl.stack_params(*partial_inits.values()), CFG.distill_steps,
                   CFG.distill_lr, CFG.noise_batch, torch.Generator().manual_seed(12))
accuracy = digit_accuracy(students, x_test, y_test).numpy()
sharing_results = {"all shared": results["shared init, aux logits"], "head only": accuracy[:N_MODELS],
                   "hidden only": accuracy[N_MODELS:], "none shared": results["different init, aux logits"]}
for name, values in sharing_results.items():
    card_mean = card["sharing_m10"][name.removesuffix(" shared")]["mean"]
    print(f"{name:>12}: mean {values.mean():.3f} (min {values.min():.2f}, max {values.max():.2f});  card ({card['n_models_per_setting']} seeds): {card_mean:.3f}")

# %% [markdown] role="locked" grade_id="question_which_layers"
# **What does it mean?** On the card's 32 seeds: sharing everything 0.696, **only the output head
# 0.217**, **only the hidden layers 0.090**, nothing 0.099 (chance is 0.1). Shared hidden layers alone
# carry nothing measurable, a shared head alone carries a little, and most of the effect needs both:
# what carries the trait is the shared parametrisation as a whole, not one shared layer. Questions:
# with a fresh head, the student's auxiliary logits are a different function of the same hidden
# features: why would matching the teacher's then fail to move the hidden layers the teacher's way?
# And what could a shared head transfer on its own, with fresh hidden layers under it? (Your
# run above uses 8 seeds, so expect its means to differ from the card's by a few points.)
#
# *Answer in the cell below (graded by hand, 2 points).*
# ### BEGIN MARK SCHEME
# **Mark scheme (instructors only).**
# - 1 point: a fresh head makes the auxiliary logits a different function of the hidden features, so imitation gradients on the hidden layers do not follow the teacher's.
# - 1 point: what a shared head alone can transfer, with the card's numbers (0.217 vs 0.099/0.1 and 0.696).
# ### END MARK SCHEME

# %% [markdown] role="answer" grade_id="answer_which_layers" points=2
# With a fresh head, the auxiliary logits are a different linear read-out of the hidden features, so the gradient of matching the teacher's auxiliary logits sends the hidden layers in a direction unrelated to the teacher's change. A shared head alone can move its own weights the teacher's way on whatever features the fresh hidden layers give, which transfers a little (0.217 on the card against 0.1 chance), far less than sharing everything (0.696).

# %% [markdown]
# ## 7. The one-step argument
#
# Why does the shared initialisation matter? Cloud et al. prove that for a *single, small* step it
# must. Let the teacher start at $\theta_0$ and take one gradient step on **any** loss (here the digit
# loss on the class logits): $\Delta\theta_T = -\varepsilon \nabla L_T(\theta_0)$. Let the student
# start at the **same** $\theta_0$ and take one step of size $\alpha$ on the distillation loss towards
# the updated teacher's auxiliary outputs $g_{\theta_0+\Delta\theta_T}(x)$, on **any** inputs $x$.
# With $J(x)$ the Jacobian of the auxiliary logits at $\theta_0$ and $H(x) = \mathrm{diag}(p) - pp^\top$
# the (positive semi-definite) Jacobian of the softmax,
#
# $$\Delta\theta_S = -\alpha\,\nabla_\theta\, \mathbb{E}_x\,\mathrm{KL}\big(p_{\theta_0+\Delta\theta_T}(x)\,\|\,p_\theta(x)\big)\Big|_{\theta_0}
# = \alpha\,\mathbb{E}_x\, J^\top H J\,\Delta\theta_T + O(\varepsilon^2),$$
#
# so $\langle \Delta\theta_S, \Delta\theta_T\rangle = \alpha\,\mathbb{E}_x\,(J\Delta\theta_T)^\top H\,(J\Delta\theta_T) + O(\varepsilon^3) \ge 0$
# to leading order. Since $\Delta\theta_T$ points down the teacher's loss, the student's step does not
# go *up* the teacher's digit loss, whatever the noise. From a different initialisation
# $\theta_0'$ the student's gradient is dominated by the zeroth-order mismatch
# $p_{\theta_0'} \ne p_{\theta_0}$, which has nothing to do with $\Delta\theta_T$: no sign is guaranteed.
#
# **Task** (difficulty 3/5, ~20 min): implement
# `one_step_inner_product(teacher_init, student_init, x, y, noise, teacher_lr, student_lr) -> Float[Tensor, "models"]`:
# 1. the teacher's update `delta_T = -teacher_lr * grad of teacher_loss(mlp_forward(teacher_init, x), y)`
#    (per model; sum the per-model losses before differentiating);
# 2. the updated teacher `teacher_init + delta_T` and its logits on `noise` (no gradient);
# 3. the student's update `delta_S = -student_lr * grad of distillation_loss(mlp_forward(student_init, noise), those logits)`
#    (auxiliary logits), taken at `student_init`;
# 4. per model, `<delta_S, delta_T>` summed over all six parameter tensors.
#
# <details><summary>Hint 1: the idea</summary>
#
# Two gradients per model: the teacher's on the digit loss at its start, and the student's on the
# distillation loss towards the stepped teacher. Scale them into steps and take their inner product.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `torch.autograd.grad(loss.sum(), list(params.values()))` with
# `params = {k: v.detach().clone().requires_grad_(True) ...}` returns every model's gradient at once
# (each model's loss only depends on its own slice). For the inner product,
# `(a * b).flatten(1).sum(-1)` per tensor, summed over the keys.
# </details>

# %% role="solution" grade_id="impl_one_step_inner_product"
def one_step_inner_product(teacher_init: dict[str, Tensor], student_init: dict[str, Tensor], x: Float[Tensor, "batch 64"],
                           y: Int[Tensor, " batch"], noise: Float[Tensor, "noise 64"], teacher_lr: float,
                           student_lr: float) -> Float[Tensor, " models"]:
    ### BEGIN SOLUTION
    teacher = {k: v.detach().clone().requires_grad_(True) for k, v in teacher_init.items()}
    teacher_grads = torch.autograd.grad(teacher_loss(mlp_forward(teacher, x), y).sum(), list(teacher.values()))
    delta_teacher = {k: -teacher_lr * g for k, g in zip(teacher, teacher_grads)}
    with torch.no_grad():
        target = mlp_forward({k: teacher_init[k] + delta_teacher[k] for k in teacher_init}, noise)
    student = {k: v.detach().clone().requires_grad_(True) for k, v in student_init.items()}
    student_grads = torch.autograd.grad(distillation_loss(mlp_forward(student, noise), target).sum(),
                                        list(student.values()))
    delta_student = {k: -student_lr * g for k, g in zip(student, student_grads)}
    return sum((delta_student[k] * delta_teacher[k]).flatten(1).sum(dim=1) for k in delta_teacher)
    ### END SOLUTION


# %% role="test" grade_id="test_one_step_inner_product" points=1
check("subliminal.one_step_inner_product", one_step_inner_product)

# %% [markdown]
# **Demo.** 200 random draws at once (a batch of 200 initialisations, one batch of digits, one of
# noise), for students that share the teacher's initialisation and for students that do not. We
# divide by the norms to get a cosine, so the two cases are on one scale.

# %%
draws = torch.Generator().manual_seed(3)
t_init = sl.init_mlps(200, CFG.n_aux, CFG.hidden, draws, torch.float64)
o_init = sl.init_mlps(200, CFG.n_aux, CFG.hidden, draws, torch.float64)
idx = torch.randperm(len(x_train), generator=draws)[:256]
xb, yb, nb = x_train[idx].double(), y_train[idx], sl.uniform_noise(256, draws, torch.float64)
inner = {"shared init": one_step_inner_product(t_init, t_init, xb, yb, nb, 1e-3, 1e-3),
         "different init": one_step_inner_product(t_init, o_init, xb, yb, nb, 1e-3, 1e-3)}
for name, values in inner.items():
    print(f"{name:>15}: fraction >= 0: {(values >= 0).double().mean():.3f}   (min {values.min():.2e}, max {values.max():.2e})")
fig, axes = plt.subplots(1, 2, figsize=(9, 2.6))
for ax, (name, values) in zip(axes, inner.items()):
    ax.hist((values / values.abs().max()).numpy(), bins=40)
    ax.axvline(0, c="k", lw=0.8)
    ax.set_title(f"{name}: <dS, dT> / max |.|")
plt.show()

# %% [markdown]
# **What does it mean?** Every shared-init draw is non-negative; the different-init ones take
# both signs (and are far larger: that student is busy fixing a mismatch that has nothing to do
# with the teacher's update). The theorem covers one small step; the experiment of section 5 takes
# 600 Adam steps, and the effect survives. The theorem does not say it has to.

# %% [markdown]
# ## 8. What transfers, and what does not
#
# - **What transfers**: the teacher's *trait* (here: classifying digits) moves into a student
#   that sees none of it, through outputs the trait never touched, on inputs unrelated to it. The
#   carrier is not content in the data, it is the shared parametrisation: at a shared
#   initialisation, matching *any* function of the teacher's hidden layers pulls the student's
#   parameters along the teacher's update (section 7). Section 6b tested this directly: sharing
#   only the hidden layers transfers nothing (0.090), only the output head a little (0.217), both
#   most (0.696).
# - **What does not**: a different initialisation receives nothing from the same data and the same
#   loss (section 5). A single auxiliary logit carries nothing *under the softmax KL* (section 6),
#   because the softmax of one logit is constant and the loss has no gradient; with a squared error
#   on the raw logit the same single logit transfers some of the trait (0.244 against 0.112 for a
#   different initialisation). The all-logits control transfers to everyone, and that is ordinary
#   distillation, not subliminal learning.
# - **What this does not show**: that the student learns the teacher's trait *well* (it stays
#   below the teacher), how the effect depends on *how much* of a layer is shared (section 6b shares
#   whole layers), or that it says anything about a particular language model. The paper's
#   language-model results rely on the same condition: teacher and student share a base model.
# - **Consequences**: filtering the data for visible traces of a trait cannot make distillation
#   from a model safe when the student shares that model's initialisation; a different base model
#   is a much stronger protection.
#
# **Open questions** (no checks; try them):
#
# 1. Interpolate the student's initialisation, `(1 - a) * shared_init + a * different_init`. How
#    does the accuracy of the distilled student fall as `a` grows? Is there a threshold?
# 2. Train the teacher for longer. Does more teacher training make the transfer stronger or weaker?
# 3. Replace uniform noise by Gaussian noise, or by noise at a smaller scale. What matters: the
#    input distribution, or only that it spans the input space?
# 4. The one-step theorem holds for any teacher loss. Make the teacher learn something else (for
#    instance "predict `9 - label`") and check that the student follows it.
#
# **Further reading**
#
# - Jacot, Gabriel & Hongler (2018), [Neural tangent kernel](https://arxiv.org/abs/1806.07572): why
#   first-order (linearised) arguments like section 7 describe wide networks well.
# - Frankle, Dziugaite, Roy & Carbin (2020), [Linear mode connectivity and the lottery ticket hypothesis](https://arxiv.org/abs/1912.05671):
#   how much networks trained from a shared starting point have in common.
# - Betley et al. (2025), [Emergent misalignment](https://arxiv.org/abs/2502.17424): a trait
#   spreading far beyond the data that trained it, from the same group of authors.
