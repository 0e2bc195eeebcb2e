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
# # Explaining time-series classifiers: attributions, faithfulness, counterfactuals
#
# Interpretability is not only for language models. In this assignment you explain two
# convolutional time-series classifiers: an FCN trained on **GunPoint** (one channel: the x
# position of an actor's hand, who either draws a gun or points a finger) and one trained on
# **BasicMotions** (six channels: a smartwatch's accelerometer and gyroscope while the wearer
# plays badminton, runs, stands or walks).
#
# **After this assignment you will be able to**
#
# - implement gradient saliency, Integrated Gradients (and check completeness), occlusion,
#   segment-wise feature ablation, CAM and Grad-CAM, Temporal Saliency Rescaling and a LIME-style
#   surrogate, all with one call shape, `attribute(model, inputs, target, baselines=...)`, so that
#   methods are swappable (the shape of Captum's API);
# - measure how *faithful* an attribution is with deletion/insertion curves and
#   comprehensiveness/sufficiency, stating every convention, and beat a random baseline honestly;
# - build Native-Guide counterfactuals and score them (validity, proximity, sparsity);
# - run the model-randomisation sanity check (Adebayo et al. 2018) and tell a map that explains
#   the model from one that explains only the input;
# - recognise three pitfalls that make published numbers incomparable: unseeded random
#   baselines, sign flips when one class is explained, and metrics that apply softmax twice.
#
# **Read first** (the parts named are enough):
#
# - Wang, Yan & Oates (2017), [Time series classification from scratch with deep neural networks: a strong baseline](https://arxiv.org/abs/1611.06455): the FCN (section 2).
# - Simonyan, Vedaldi & Zisserman (2014), [Deep inside convolutional networks](https://arxiv.org/abs/1312.6034): gradient saliency (section 3).
# - Sundararajan, Taly & Yan (2017), [Axiomatic attribution for deep networks](https://arxiv.org/abs/1703.01365): Integrated Gradients, completeness (sections 2-3).
# - Zhou et al. (2016), [Learning deep features for discriminative localization](https://arxiv.org/abs/1512.04150) (CAM) and Selvaraju et al. (2017), [Grad-CAM](https://arxiv.org/abs/1610.02391) (section 3).
# - Ismail et al. (2020), [Benchmarking deep learning interpretability in time series predictions](https://arxiv.org/abs/2010.13924): Temporal Saliency Rescaling (section 5).
# - Petsiuk, Das & Saenko (2018), [RISE](https://arxiv.org/abs/1806.07421): deletion and insertion (section 4); DeYoung et al. (2020), [ERASER](https://arxiv.org/abs/1911.03429): comprehensiveness and sufficiency (section 4).
# - Delaney, Greene & Keane (2021), [Instance-based counterfactual explanations for time series classification](https://arxiv.org/abs/2009.13211): Native Guide.
# - Ribeiro, Singh & Guestrin (2016), ["Why should I trust you?"](https://arxiv.org/abs/1602.04938): LIME (section 3).
# - Adebayo et al. (2018), [Sanity checks for saliency maps](https://arxiv.org/abs/1810.03292): the cascading model randomisation test (sections 1-3).
#
# Libraries such as TSInterpret, TimeInterpret and tsCaptum each implement part of this field.
# You write the core methods yourself here; the course's tests cross-check the reference
# solutions against Captum.
#
# **Conventions used everywhere** (write them down whenever you report a number):
# inputs are `Float[Tensor, "batch channels time"]`; `target` is `Int[Tensor, "batch"]`, the class
# being explained; models return **logits** (no softmax inside); attribution functions return a
# tensor shaped like `inputs` (CAM-type maps, which cannot tell channels apart, return
# `"batch time"`). The zoo models are in `eval()` mode; keep them there.
#
# **How the checks work.** Each exercise ends with `check("tsxai.<name>", your_function)`. It runs your
# function on freshly generated inputs and compares with the reference (both zoo models, random targets and baselines); when your answer matches a
# known mistake, the check names it.
#
# What counts as the same answer: a torch tensor or a numpy array; for a single number, a 0-d tensor,
# a NumPy scalar or a Python float; integers of any width; float64 where float32 is expected (held to
# the float32 tolerance). A less precise dtype (float16, bfloat16) fails with a message naming the
# dtype to return. Where a convention matters (an axis order, how ties are broken), the exercise
# text states it and a failure names it; a failure of dtype or shape alone says only that.

# %% role="locked" grade_id="setup"
import math
from typing import Callable

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from interplab import check, zoo
from interplab.zoo import fcn_basicmotions, fcn_gunpoint
from interplab.tsxai import (as_input_shaped, cascading_randomisation, load_dataset, plot_attribution, plot_curves,
                             predict, random_attribution, segment_ids)

torch.manual_seed(0)
torch.set_num_threads(1)  # small models: one thread is as fast, and graders run one kernel per core
gunpoint = load_dataset("gunpoint")
motions = load_dataset("basicmotions")
model_gp = fcn_gunpoint.load()  # the zoo model "fcn-gunpoint", in eval mode
model_bm = fcn_basicmotions.load()  # "fcn-basicmotions"
for name, dataset in [("fcn-gunpoint", gunpoint), ("fcn-basicmotions", motions)]:
    card = zoo.card(name)
    print(f"{name}: {dataset.X_train.shape[0]} train / {dataset.X_test.shape[0]} test series, "
          f"{dataset.n_channels} channel(s) x {dataset.length} steps, classes {dataset.class_names}; "
          f"test accuracy {card['metrics']['test_accuracy']}")

# A few test series to explain, with the models' predictions as targets.
x_gp = gunpoint.X_test[:8]
t_gp = predict(model_gp, x_gp)
x_bm = motions.X_test[::10][:4]
t_bm = predict(model_bm, x_bm)

# %% [markdown]
# Look at the data before explaining anything: what distinguishes *Gun* from *Point*? (Hint: the
# actor has to take the gun out of a holster, and put it back.)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 2.6))
for c, ax in enumerate(axes):
    for series in gunpoint.X_train[gunpoint.y_train == c][:6]:
        ax.plot(series[0], alpha=0.7)
    ax.set_title(f"GunPoint, class {gunpoint.class_names[c]}")
plt.show()
plot_attribution(motions.X_test[0], torch.zeros(6, 100), channel_names=motions.channel_names,
                 title=f"BasicMotions, class {motions.class_names[motions.y_test[0]]} (no attribution yet)")
plt.show()

# %% [markdown]
# ## 1. Gradient saliency
#
# The simplest attribution: how much does the target's logit change when one input value moves a
# little? That is the gradient $\partial f_c(x) / \partial x_{i,t}$. Simonyan et al. take its
# absolute value; Captum's `Saliency` does too by default (`abs=True`).
#
# **Task** (difficulty 1/5, ~10 min): implement
# `saliency(model, inputs, target, absolute=True) -> Float[Tensor, "batch channels time"]`, the
# gradient of each example's **target logit** (not its probability) with respect to its input,
# absolute if `absolute`. Do not put the model in training mode: BatchNorm would then normalise
# with the statistics of your batch, and you would explain a different function.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# The gradient of one number (the target logit) with respect to the input is the map; for a batch,
# sum the selected logits first: each example's gradient only sees its own logit.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# Clone the inputs and call `requires_grad_()` on them, select the logits with
# `logits.gather(1, target[:, None])`, sum over the batch (examples do not interact in eval mode)
# and use `torch.autograd.grad`.
# </details>

# %% role="solution" grade_id="impl_saliency"
def saliency(model: nn.Module, inputs: Float[Tensor, "batch channels time"], target: Int[Tensor, " batch"],
             absolute: bool = True) -> Float[Tensor, "batch channels time"]:
    """Gradient of the target logit w.r.t. the input (absolute value if ``absolute``)."""
    ### BEGIN SOLUTION
    x = inputs.detach().clone().requires_grad_(True)
    selected = model(x).gather(1, target[:, None]).sum()
    (grad,) = torch.autograd.grad(selected, x)
    return grad.abs() if absolute else grad
    ### END SOLUTION


# %% role="test" grade_id="test_saliency" points=1
check("tsxai.saliency", saliency)

# %%
attr = saliency(model_gp, x_gp, t_gp, absolute=False)
for i in (0, 1):
    plot_attribution(x_gp[i], attr[i], title=f"signed saliency, target {gunpoint.class_names[t_gp[i]]}")
plt.show()

# %% [markdown] role="locked" grade_id="question_signed_map"
# What does the signed map say? Where is it largest? Now explain the *other* class for the same
# series (`1 - t_gp`): with two classes and logits, is the map simply the negative? It is not in
# general: the two logits have their own weights. Which convention (the predicted class, the true
# class, the logit difference) would you report, and why must you say which?
#
# *Answer in the cell below (graded by hand, 2 points).*
# ### BEGIN MARK SCHEME
# **Mark scheme (instructors only).**
# - 1 point: where the map is largest, tied to what distinguishes the classes.
# - 1 point: the other class's map is not simply the negative (two separate logits); report a stated target such as the logit difference.
# ### END MARK SCHEME

# %% [markdown] role="answer" grade_id="answer_signed_map" points=2
# The signed saliency shows where increasing the value raises (positive) or lowers (negative) the class logit; it is largest where the classes differ (the Gun's hand movement). With two logits the map for the other class is the gradient of the other logit, which is not the negative unless the logits are tied (sum constant); only the logit difference's map flips sign exactly. One must say which target is explained (logit, probability, difference), since the maps differ.

# %% [markdown]
# ## 2. Integrated Gradients and completeness
#
# A gradient is local. Integrated Gradients (IG) averages the gradient along the straight path
# from a baseline $x'$ to the input $x$ and multiplies by the displacement:
#
# $$\mathrm{IG}_{i,t}(x) = (x_{i,t} - x'_{i,t}) \int_0^1 \frac{\partial f_c(x' + \alpha (x - x'))}{\partial x_{i,t}} \, d\alpha .$$
#
# **Task** (difficulty 2/5, ~20 min): implement
# `integrated_gradients(model, inputs, target, baselines=None, n_steps=50)`, approximating the
# integral with the **midpoint rule**: $\alpha_k = (k + \tfrac12)/n$ for $k = 0..n-1$, each with
# weight $1/n$ (Captum's `method="riemann_middle"`). `baselines` is `None` (zeros), a number, or a
# tensor broadcastable to `inputs`. Use the target **logit**.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# IG averages the gradient along the straight path from the baseline to the input (the midpoint
# rule: `n_steps` points at the centres of equal sub-intervals), then multiplies by `inputs -
# baselines` element by element.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# Build all `n_steps` interpolated inputs at once: shape `(n_steps, batch, channels, time)`,
# flattened to `(n_steps * batch, channels, time)`, with `target.repeat(n_steps)`. One backward
# pass gives every gradient; average over the steps and multiply by `inputs - baselines`.
# </details>

# %% role="solution" grade_id="impl_integrated_gradients"
def integrated_gradients(model: nn.Module, inputs: Float[Tensor, "batch channels time"], target: Int[Tensor, " batch"],
                         baselines: float | Tensor | None = None, n_steps: int = 50) -> Float[Tensor, "batch channels time"]:
    """Integrated Gradients of the target logit, midpoint rule with ``n_steps`` points."""
    ### BEGIN SOLUTION
    base = torch.zeros_like(inputs) if baselines is None else torch.as_tensor(baselines, dtype=inputs.dtype).expand_as(inputs)
    alphas = (torch.arange(n_steps, dtype=inputs.dtype) + 0.5) / n_steps
    delta = inputs - base
    path = (base[None] + alphas[:, None, None, None] * delta[None]).reshape(-1, *inputs.shape[1:])
    path = path.detach().requires_grad_(True)
    selected = model(path).gather(1, target.repeat(n_steps)[:, None]).sum()
    (grad,) = torch.autograd.grad(selected, path)
    return delta * grad.reshape(n_steps, *inputs.shape).mean(0)
    ### END SOLUTION


# %% role="test" grade_id="test_integrated_gradients" points=1
check("tsxai.integrated_gradients", integrated_gradients)

# %% [markdown]
# **Completeness** says IG's attributions add up to the change of the output along the path:
# $\sum_{i,t} \mathrm{IG}_{i,t} = f_c(x) - f_c(x')$. With a finite number of steps it holds only
# approximately, and the size of the gap tells you whether `n_steps` is large enough.
#
# **Task** (difficulty 1/5, ~5 min): implement
# `completeness_gap(model, inputs, target, attributions, baselines=None) -> Float[Tensor, "batch"]`,
# returning $\sum_{i,t} a_{i,t} - (f_c(x) - f_c(x'))$ per example (signed: positive means the
# attributions over-explain). This is Captum's `return_convergence_delta`.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Completeness says the attributions sum to `f(input) - f(baseline)` for the target logit: compute
# both sides and subtract.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# Two forward passes under `torch.no_grad()`; `attributions.flatten(1).sum(1)`.
# </details>

# %% role="solution" grade_id="impl_completeness_gap"
def completeness_gap(model: nn.Module, inputs: Float[Tensor, "batch channels time"], target: Int[Tensor, " batch"],
                     attributions: Float[Tensor, "batch channels time"],
                     baselines: float | Tensor | None = None) -> Float[Tensor, " batch"]:
    """sum(attributions) - (f_target(inputs) - f_target(baselines)), per example, on logits."""
    ### BEGIN SOLUTION
    base = torch.zeros_like(inputs) if baselines is None else torch.as_tensor(baselines, dtype=inputs.dtype).expand_as(inputs)
    with torch.no_grad():
        f_x = model(inputs).gather(1, target[:, None])[:, 0]
        f_b = model(base).gather(1, target[:, None])[:, 0]
    return attributions.detach().flatten(1).sum(1) - (f_x - f_b)
    ### END SOLUTION


# %% role="test" grade_id="test_completeness_gap" points=1
check("tsxai.completeness_gap", completeness_gap)

# %%
for n in (4, 16, 64):
    ig = integrated_gradients(model_gp, x_gp, t_gp, n_steps=n)
    gap = completeness_gap(model_gp, x_gp, t_gp, ig)
    print(f"n_steps={n:3d}: max |completeness gap| = {gap.abs().max():.4f} logits")
ig = integrated_gradients(model_gp, x_gp, t_gp, n_steps=64)
plot_attribution(x_gp[0], ig[0], title="Integrated Gradients (baseline 0)")
plt.show()

# %% [markdown]
# How many steps does this model need for a gap below 1% of the logit? GunPoint series are
# z-normalised, so the zero baseline is "the series mean everywhere". Is that "no signal"? Try a
# baseline made of the other class's average series: how does the map change, and what question
# does it now answer?

# %% [markdown]
# ## 3. Perturbation: occlusion and segment-wise feature ablation
#
# Instead of gradients, *remove* part of the input and watch the output drop.
#
# **Occlusion** (Zeiler & Fergus 2014) slides a window of `window` time steps along each channel
# separately, with step `stride`, replaces the window by the baseline and records the drop of the
# target logit $f_c(x) - f_c(x_{\text{occluded}})$. Every element gets the **average** drop over
# the windows that covered it. Windows start at $0, s, 2s, \dots, \lceil (T - w)/s \rceil s$; a
# window that runs past the end is clipped (this is Captum's `Occlusion` with
# `sliding_window_shapes=(1, window)`, `strides=(1, stride)`).
#
# **Task** (difficulty 2/5, ~20 min): implement
# `occlusion(model, inputs, target, window, stride, baselines=0.0)` (`stride <= window`).
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Slide the window along time, one channel at a time; each placement's drop in the target logit is
# credited to every element under the window, and each element's attribution is the mean over the
# windows that covered it.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# Keep a running sum and a count per element. Build every occluded copy for one channel (or all
# of them) as one batch: a Python loop over a few hundred forward passes of batch 1 is slow.
# </details>

# %% role="solution" grade_id="impl_occlusion"
def occlusion(model: nn.Module, inputs: Float[Tensor, "batch channels time"], target: Int[Tensor, " batch"],
              window: int, stride: int, baselines: float | Tensor = 0.0) -> Float[Tensor, "batch channels time"]:
    """Average drop of the target logit over the windows (per channel) that cover each element."""
    ### BEGIN SOLUTION
    batch, channels, length = inputs.shape
    base = torch.as_tensor(baselines, dtype=inputs.dtype).expand_as(inputs)
    starts = [k * stride for k in range(math.ceil((length - window) / stride) + 1)]
    masks = torch.zeros(channels * len(starts), channels, length, dtype=torch.bool)
    for c in range(channels):
        for j, s in enumerate(starts):
            masks[c * len(starts) + j, c, s:s + window] = True
    with torch.no_grad():
        f_x = model(inputs).gather(1, target[:, None])[:, 0]
        occluded = torch.where(masks[None], base[:, None], inputs[:, None])  # batch masks channels time
        f_occ = model(occluded.flatten(0, 1)).reshape(batch, len(masks), -1)
        drop = f_x[:, None] - f_occ.gather(2, target[:, None, None].expand(-1, len(masks), 1))[..., 0]
    total = torch.einsum("bm,mct->bct", drop, masks.to(inputs.dtype))
    return total / masks.sum(0).to(inputs.dtype)
    ### END SOLUTION


# %% role="test" grade_id="test_occlusion" points=1
check("tsxai.occlusion", occlusion)

# %% [markdown]
# **Feature ablation** groups the elements into segments, here `n_segments` equal-length segments
# in time **per channel** (`segment_ids(channels, time, n_segments)` from `interplab.tsxai` gives
# each element its segment id, channel-major, the layout of Captum's `feature_mask`). Each segment
# is replaced by the baseline in turn, and **every element of the segment gets the segment's full
# drop** $f_c(x) - f_c(x_{\setminus s})$ (Captum's `FeatureAblation` convention: a segment's value
# is stored in each of its elements, not divided among them).
#
# **Task** (difficulty 2/5, ~15 min): implement
# `feature_ablation(model, inputs, target, n_segments, baselines=0.0)`.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Each segment is removed alone (set to the baseline); its attribution, shared by all its
# elements, is the drop of the target logit.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `ids = segment_ids(C, T, n_segments)`; the mask of segment `g` is `ids == g`; `torch.where` builds
# the ablated inputs. There are `C * n_segments` segments: one batched forward pass is enough.
# </details>

# %% role="solution" grade_id="impl_feature_ablation"
def feature_ablation(model: nn.Module, inputs: Float[Tensor, "batch channels time"], target: Int[Tensor, " batch"],
                     n_segments: int, baselines: float | Tensor = 0.0) -> Float[Tensor, "batch channels time"]:
    """Drop of the target logit when each (channel, time segment) is set to the baseline."""
    ### BEGIN SOLUTION
    batch, channels, length = inputs.shape
    ids = segment_ids(channels, length, n_segments)
    masks = ids[None] == torch.arange(channels * n_segments)[:, None, None]  # segments channels time
    base = torch.as_tensor(baselines, dtype=inputs.dtype).expand_as(inputs)
    with torch.no_grad():
        f_x = model(inputs).gather(1, target[:, None])[:, 0]
        ablated = torch.where(masks[None], base[:, None], inputs[:, None])
        f_abl = model(ablated.flatten(0, 1)).reshape(batch, len(masks), -1)
        drop = f_x[:, None] - f_abl.gather(2, target[:, None, None].expand(-1, len(masks), 1))[..., 0]
    return drop.gather(1, ids.flatten()[None].expand(batch, -1)).reshape(inputs.shape)
    ### END SOLUTION


# %% role="test" grade_id="test_feature_ablation" points=1
check("tsxai.feature_ablation", feature_ablation)

# %%
occ = occlusion(model_gp, x_gp, t_gp, window=10, stride=5)
abl = feature_ablation(model_gp, x_gp, t_gp, n_segments=15)
plot_attribution(x_gp[0], occ[0], title="occlusion, window 10, stride 5")
plot_attribution(x_gp[0], abl[0], title="feature ablation, 15 segments")
abl_bm = feature_ablation(model_bm, x_bm, t_bm, n_segments=10)
plot_attribution(x_bm[0], abl_bm[0], channel_names=motions.channel_names,
                 title=f"BasicMotions, feature ablation, target {motions.class_names[t_bm[0]]}")
plt.show()

# %% [markdown]
# For feature ablation, completeness holds *per segment* by construction: a segment's value is
# exactly the drop when it alone is removed. Does the sum over all segments equal
# $f_c(x) - f_c(x')$? (Only if the model were additive over segments: measure how far it is.)
# Which BasicMotions channels matter for the class you see, and does that make physical sense?

# %% [markdown]
# ## 4. CAM and Grad-CAM for a network with global average pooling
#
# The FCN ends with global average pooling (GAP) and a linear layer, so with
# $A_k(t)$ = `model.features(x)` (the last block's maps) and $W$ = `model.classifier.weight`:
#
# $$f_c(x) = \frac{1}{T} \sum_t \sum_k W_{c,k} A_k(t) + b_c .$$
#
# The **class activation map** (Zhou et al. 2016) is the per-time term
# $\mathrm{CAM}_c(t) = \sum_k W_{c,k} A_k(t)$ (no bias, no ReLU, no normalisation).
# **Grad-CAM** (Selvaraju et al. 2017) does not need this structure: it weights each map by its
# average gradient, $\alpha_k = \frac{1}{T} \sum_t \partial f_c / \partial A_k(t)$, and keeps the
# positive part, $\mathrm{ReLU}(\sum_k \alpha_k A_k(t))$.
#
# **Task** (difficulty 2/5, ~20 min): implement `class_activation_map(model, inputs, target)` and
# `grad_cam(model, inputs, target)`, both returning `Float[Tensor, "batch time"]`: one map over time,
# whatever the number of channels (the convolution mixes channels in its first layer).
#
# <details><summary>Hint 1 (the idea)</summary>
#
# For this network the logit is the time-average of `W[target] @ features[:, t]` plus a bias: CAM
# is that product at each `t`. Grad-CAM weights the feature maps by the mean gradient, which here
# you can compute by hand.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# CAM: `torch.einsum("bk,bkt->bt", W[target], A)`. Grad-CAM: compute `A = model.features(x)`,
# `logits = model.classifier(A.mean(-1))` (exactly the model's forward), and take the gradient of
# the selected logits with respect to `A`. Work out on paper what Grad-CAM equals for this network.
# </details>

# %% role="solution" grade_id="impl_class_activation_map"
def class_activation_map(model: nn.Module, inputs: Float[Tensor, "batch channels time"],
                         target: Int[Tensor, " batch"]) -> Float[Tensor, "batch time"]:
    """CAM_c(t) = sum_k W[c, k] A_k(t) for the GAP network (no bias, no ReLU)."""
    ### BEGIN SOLUTION
    with torch.no_grad():
        maps = model.features(inputs)
        return torch.einsum("bk,bkt->bt", model.classifier.weight[target], maps)
    ### END SOLUTION


# %% role="test" grade_id="test_class_activation_map" points=1
check("tsxai.class_activation_map", class_activation_map)


# %% role="solution" grade_id="impl_grad_cam"
def grad_cam(model: nn.Module, inputs: Float[Tensor, "batch channels time"],
             target: Int[Tensor, " batch"]) -> Float[Tensor, "batch time"]:
    """ReLU(sum_k alpha_k A_k(t)), alpha_k = time-average of d logit_target / d A_k(t)."""
    ### BEGIN SOLUTION
    maps = model.features(inputs.detach()).detach().requires_grad_(True)
    logits = model.classifier(maps.mean(-1))
    (grads,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), maps)
    return torch.relu(torch.einsum("bk,bkt->bt", grads.mean(-1), maps)).detach()
    ### END SOLUTION


# %% role="test" grade_id="test_grad_cam" points=1
check("tsxai.grad_cam", grad_cam)

# %%
cam = class_activation_map(model_gp, x_gp, t_gp)
gcam = grad_cam(model_gp, x_gp, t_gp)
plot_attribution(x_gp[0], cam[0], title="CAM (GunPoint)")
plot_attribution(x_gp[0], gcam[0], title="Grad-CAM (GunPoint)", signed=False)
cam_bm = class_activation_map(model_bm, x_bm, t_bm)
plot_attribution(x_bm[0], cam_bm[0], channel_names=motions.channel_names,
                 title="CAM (BasicMotions): one map, repeated on every channel")
plt.show()
print("Grad-CAM * T == ReLU(CAM)?", torch.allclose(gcam * x_gp.shape[-1], torch.relu(cam), atol=1e-4))

# %% [markdown]
# You should find that for a GAP network Grad-CAM is exactly $\mathrm{ReLU}(\mathrm{CAM})/T$.
# What does the ReLU throw away? For a two-class model, compare the CAM of class 0 with the CAM of
# class 1: their *difference* is what moves the decision. Explaining "one class" with a
# one-sided map silently flips or drops the sign of half the evidence. And for BasicMotions: what
# can CAM not tell you that feature ablation could?

# %% [markdown]
# ## 5. Temporal Saliency Rescaling (Ismail et al. 2020)
#
# Saliency methods applied to time series often fail to separate *when* from *which channel*.
# TSR is a two-step wrapper around any base method $R$ (here, any of your `attribute` functions):
#
# 1. **Time relevance.** For each time step $t$, set *all* channels at $t$ to the baseline and
#    measure how much the whole map changes:
#    $\tau_t = \sum_{i,t'} |R(x)_{i,t'} - R(x^{(:,t)})_{i,t'}|$.
# 2. **Feature relevance.** Only for the time steps with $\tau_t > \alpha$, where we take
#    $\alpha$ = the **mean** of $\tau$ over time for that example, mask one element $(i, t)$ at a
#    time: $\phi_{i,t} = \sum_{i',t'} |R(x)_{i',t'} - R(x^{(i,t)})_{i',t'}|$.
# 3. $\mathrm{TSR}_{i,t} = \tau_t \cdot \phi_{i,t}$ where $\tau_t > \alpha$, and 0 elsewhere.
#
# (For one channel, $\phi_{1,t} = \tau_t$: masking the only channel at $t$ masks time step $t$.) Call the base method as
# `base_method(model, x, target)`, always with the given target.
#
# **Where this differs from the reference code.** The paper leaves the threshold $\alpha$ as a
# hyperparameter; the TSR of TSInterpret (`SaliencyMethods_PTY._getTwoStepRescaling`, derived from
# the authors' benchmark code) makes three other choices: it min-max scales $\tau$ over time to
# $[0, 1]$ and takes $\alpha$ = the **0.55 quantile** of the scaled $\tau$ (we: the mean of the
# unscaled $\tau$); it min-max scales $\phi$ over the channels at each relevant step; and at the
# steps below the threshold it keeps $0.1 \cdot \tau_t$ for every channel instead of 0 (for one
# channel it returns the scaled $\tau$ with no threshold at all). It also masks with the series'
# first value, not with a baseline. Our version keeps the paper's formula with one stated
# threshold, and its zeros make "not relevant" explicit. The two maps differ in scale, in which
# steps count as relevant, and in ranking (the per-step scaling of $\phi$ reorders cells across
# time steps; below the threshold the reference code ranks steps by $\tau_t$ where ours ties them
# at 0): compare rankings, not values, with TSInterpret's output, and expect them to differ.
#
# **Task** (difficulty 3/5, ~30 min): implement
# `temporal_saliency_rescaling(model, inputs, target, base_method, baselines=0.0)`.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# First score time steps (mask all channels at `t`, measure how much the whole base map changes),
# then, only at the relevant steps, score single cells the same way; multiply.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# For step 1 build the $T$ masked copies of every example as one batch of $B \cdot T$ series and
# call the base method once (with `target.repeat_interleave(T)` if you order the batch
# example-major). Step 2 is the same with one copy per (channel, relevant time step); with one
# channel you can reuse $\tau$.
# </details>

# %% role="solution" grade_id="impl_temporal_saliency_rescaling"
def temporal_saliency_rescaling(model: nn.Module, inputs: Float[Tensor, "batch channels time"],
                                target: Int[Tensor, " batch"], base_method: Callable[..., Tensor],
                                baselines: float | Tensor = 0.0) -> Float[Tensor, "batch channels time"]:
    """TSR around ``base_method`` (threshold: the mean time-relevance score of each example)."""
    ### BEGIN SOLUTION
    batch, channels, length = inputs.shape
    base = torch.as_tensor(baselines, dtype=inputs.dtype).expand_as(inputs)
    reference = base_method(model, inputs, target).detach()

    def change(masks: Tensor) -> Tensor:  # masks: (m, channels, time) -> (batch, m)
        masked = torch.where(masks[None], base[:, None], inputs[:, None]).flatten(0, 1)
        maps = base_method(model, masked, target.repeat_interleave(len(masks))).detach()
        return (maps.reshape(batch, len(masks), -1) - reference.flatten(1)[:, None]).abs().sum(-1)

    eye = torch.eye(length, dtype=torch.bool)
    time_relevance = change(eye[:, None, :].expand(length, channels, length))  # batch time
    relevant = time_relevance > time_relevance.mean(1, keepdim=True)
    if channels == 1:  # masking the only channel at t is masking time step t: phi = tau
        feature_relevance = time_relevance[:, None, :]
    else:  # only the (channel, t) cells at time steps relevant for some example of the batch
        steps = relevant.any(0).nonzero()[:, 0]
        cells = torch.zeros(channels, len(steps), channels, length, dtype=torch.bool)
        cells[torch.arange(channels)[:, None], torch.arange(len(steps))[None, :],
              torch.arange(channels)[:, None], steps[None, :]] = True
        feature_relevance = torch.zeros(batch, channels, length, dtype=inputs.dtype)
        feature_relevance[:, :, steps] = change(cells.flatten(0, 1)).reshape(batch, channels, len(steps))
    return torch.where(relevant[:, None, :], time_relevance[:, None, :] * feature_relevance,
                       torch.zeros((), dtype=inputs.dtype))
    ### END SOLUTION


# %% role="test" grade_id="test_temporal_saliency_rescaling" points=1
check("tsxai.temporal_saliency_rescaling", temporal_saliency_rescaling)

# %%
tsr_bm = temporal_saliency_rescaling(model_bm, x_bm[:1], t_bm[:1], saliency)
plot_attribution(x_bm[0], saliency(model_bm, x_bm[:1], t_bm[:1])[0], channel_names=motions.channel_names,
                 title="saliency (BasicMotions)", signed=False)
plot_attribution(x_bm[0], tsr_bm[0], channel_names=motions.channel_names, title="TSR around saliency", signed=False)
plt.show()

# %% [markdown]
# Compare the two maps channel by channel. TSR costs $(C+1)\,T$ calls of the base method: how
# would you make it affordable for a series of length 10,000? (Ismail et al. discuss windows.)

# %% [markdown]
# ## 6. Faithfulness: deletion, insertion, comprehensiveness, sufficiency
#
# A map that looks plausible may not be what the model uses. **Deletion** (Petsiuk et al. 2018)
# removes the most important elements first and watches the target probability fall: a faithful
# map makes it fall fast (low area under the curve). **Insertion** starts from the baseline and
# puts the most important elements back first: the probability should rise fast (high area).
#
# Every number depends on conventions, so they are arguments, and you must state them:
#
# - **target** = the model's argmax on the *clean* input, computed once (not re-computed on each
#   perturbed input);
# - **ranking**: `"signed"` sorts attributions from most positive to most negative (evidence for
#   the target first); `"absolute"` sorts by magnitude. Ties are broken by position, earliest
#   first: `torch.argsort(scores.flatten(1), dim=1, descending=True, stable=True)`, over all
#   channels and time steps together;
# - **baseline**: the value removed elements take (a number or a tensor like `inputs`);
# - **output**: `"probability"` is the softmax of the logits, computed once: the models return
#   logits, so applying softmax to something that is already a probability (a pitfall of several
#   metric implementations) silently compresses every curve; `"logit"` uses the raw logit;
# - **grid**: with $N = C \cdot T$ elements and `n_steps` steps, point $j = 0..n$ perturbs the
#   top $k_j = \lfloor jN/n \rfloor$ elements (integer arithmetic); the AUC is the trapezoid rule
#   over $x_j = j/n$.
#
# **Task** (difficulty 3/5, ~30 min): implement
# `perturbation_curves(model, inputs, attributions, n_steps=20, baselines=0.0, ranking="signed", output="probability")`
# returning a dict with `"deletion"` and `"insertion"` curves (`"batch n_steps+1"`) and their
# `"deletion_auc"` and `"insertion_auc"` (`"batch"`).
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Rank the elements by the attribution, then for each grid point build the input with the top-`k`
# elements removed (deletion) or kept (insertion) and record the target's output (probability or
# logit, as `output` says); the AUC is the trapezoid area.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# Turn the order into a rank per element (`rank.scatter_(1, order, arange(N))`); then "the top
# $k$" is simply `rank < k`, and `torch.where(top, baseline, x)` (deletion) or
# `torch.where(top, x, baseline)` (insertion) builds the perturbed inputs.
# </details>

# %% role="solution" grade_id="impl_perturbation_curves"
def perturbation_curves(model: nn.Module, inputs: Float[Tensor, "batch channels time"],
                        attributions: Float[Tensor, "batch channels time"], n_steps: int = 20,
                        baselines: float | Tensor = 0.0, ranking: str = "signed",
                        output: str = "probability") -> dict[str, Tensor]:
    """Deletion and insertion curves and their trapezoid AUCs (target = argmax on the clean input)."""
    ### BEGIN SOLUTION
    if ranking not in ("signed", "absolute") or output not in ("probability", "logit"):
        raise ValueError(f"ranking={ranking!r}, output={output!r}")
    batch, n = inputs.shape[0], inputs[0].numel()
    flat = inputs.reshape(batch, n)
    base = torch.as_tensor(baselines, dtype=inputs.dtype).expand_as(inputs).reshape(batch, n)
    scores = attributions.reshape(batch, n)
    order = torch.argsort(scores.abs() if ranking == "absolute" else scores, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n).expand(batch, n))

    def score(x: Tensor) -> Tensor:
        logits = model(x.reshape(inputs.shape))
        values = logits.softmax(-1) if output == "probability" else logits
        return values.gather(1, target[:, None])[:, 0]

    with torch.no_grad():
        target = model(inputs).argmax(-1)
        deletion, insertion = [], []
        for j in range(n_steps + 1):
            top = rank < (j * n) // n_steps
            deletion.append(score(torch.where(top, base, flat)))
            insertion.append(score(torch.where(top, flat, base)))
    curves = {"deletion": torch.stack(deletion, 1), "insertion": torch.stack(insertion, 1)}
    for key in ("deletion", "insertion"):
        c = curves[key]
        curves[f"{key}_auc"] = ((c[:, 1:] + c[:, :-1]) / 2).sum(1) / n_steps
    return curves
    ### END SOLUTION


# %% role="test" grade_id="test_perturbation_curves" points=1
check("tsxai.perturbation_curves", perturbation_curves)

# %% [markdown]
# **Comprehensiveness and sufficiency** (DeYoung et al. 2020) ask two yes/no questions at a few
# sizes $k$: does removing the top-$k$ elements hurt (comprehensiveness
# $p_c(x) - p_c(x_{\setminus \text{top-}k})$, higher is better), and does keeping only them suffice
# (sufficiency $p_c(x) - p_c(x_{\text{top-}k\text{ only}})$, lower is better)? Both use
# probabilities by default, the clean argmax target and the same ranking as above, with
# $k = \lfloor pN/100 \rfloor$ for each percentage $p$ in `percents`, averaged over the percentages.
# The `output` argument works as in `perturbation_curves` (`"logit"` replaces $p_c$ by the logit).
#
# **Task** (difficulty 2/5, ~15 min): implement
# `comprehensiveness_sufficiency(model, inputs, attributions, percents=(1, 5, 10, 20, 50), baselines=0.0, ranking="signed", output="probability")`
# returning `{"comprehensiveness": (batch,), "sufficiency": (batch,)}`.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Comprehensiveness: how much the target's output drops when the top-`k` elements are removed;
# sufficiency: how much it drops when only they are kept. Average both over the percentages.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# Same ranking code as in `perturbation_curves`; "everything except the top $k$ set to the
# baseline" is the insertion input at $k$.
# </details>

# %% role="solution" grade_id="impl_comprehensiveness_sufficiency"
def comprehensiveness_sufficiency(model: nn.Module, inputs: Float[Tensor, "batch channels time"],
                                  attributions: Float[Tensor, "batch channels time"],
                                  percents: tuple[int, ...] = (1, 5, 10, 20, 50), baselines: float | Tensor = 0.0,
                                  ranking: str = "signed", output: str = "probability") -> dict[str, Tensor]:
    """ERASER's comprehensiveness and sufficiency (probabilities by default), averaged over ``percents``."""
    ### BEGIN SOLUTION
    if ranking not in ("signed", "absolute") or output not in ("probability", "logit"):
        raise ValueError(f"ranking={ranking!r}, output={output!r}")
    batch, n = inputs.shape[0], inputs[0].numel()
    flat = inputs.reshape(batch, n)
    base = torch.as_tensor(baselines, dtype=inputs.dtype).expand_as(inputs).reshape(batch, n)
    scores = attributions.reshape(batch, n)
    order = torch.argsort(scores.abs() if ranking == "absolute" else scores, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n).expand(batch, n))
    def score(x: Tensor) -> Tensor:
        logits = model(x.reshape(inputs.shape))
        values = logits.softmax(-1) if output == "probability" else logits
        return values.gather(1, target[:, None])[:, 0]

    with torch.no_grad():
        target = model(inputs).argmax(-1)
        clean = score(flat)
        comp, suff = [], []
        for pc in percents:
            top = rank < (pc * n) // 100
            comp.append(clean - score(torch.where(top, base, flat)))
            suff.append(clean - score(torch.where(top, flat, base)))
    return {"comprehensiveness": torch.stack(comp, 1).mean(1), "sufficiency": torch.stack(suff, 1).mean(1)}
    ### END SOLUTION


# %% role="test" grade_id="test_comprehensiveness_sufficiency" points=1
check("tsxai.comprehensiveness_sufficiency", comprehensiveness_sufficiency)

# %% [markdown]
# Now the comparison. Every method is called with the same shape, so a table is a loop. The
# random baseline is **seeded** (`random_attribution(..., seed=0)`): an unseeded baseline gives a
# different table every run. Conventions: GunPoint test series 0-29, target = argmax on the clean
# input, signed ranking, baseline 0 (the series mean: GunPoint is z-normalised), probabilities,
# 20 steps. CAM-type maps are broadcast over channels.

# %%
x_eval = gunpoint.X_test[:30]
t_eval = predict(model_gp, x_eval)
methods = {
    "random (seed 0)": lambda m, x, t: random_attribution(m, x, t, seed=0),
    "saliency |grad|": saliency,
    "saliency (signed)": lambda m, x, t: saliency(m, x, t, absolute=False),
    "integrated gradients": lambda m, x, t: integrated_gradients(m, x, t, n_steps=24),
    "occlusion (10/5)": lambda m, x, t: occlusion(m, x, t, window=10, stride=5),
    "feature ablation (15)": lambda m, x, t: feature_ablation(m, x, t, n_segments=15),
    "CAM": class_activation_map,
    "Grad-CAM": grad_cam,
    # 10 series at a time: TSR builds T + 1 masked copies of each, which would otherwise need GBs.
    "TSR (saliency)": lambda m, x, t: torch.cat([temporal_saliency_rescaling(m, x[i:i + 10], t[i:i + 10], saliency)
                                                 for i in range(0, len(x), 10)]),
}
table, deletion_curves = {}, {}
for name, method in methods.items():
    attributions = as_input_shaped(method(model_gp, x_eval, t_eval), x_eval)
    curves = perturbation_curves(model_gp, x_eval, attributions)
    cs = comprehensiveness_sufficiency(model_gp, x_eval, attributions)
    deletion_curves[name] = curves["deletion"]
    table[name] = [curves["deletion_auc"].mean().item(), curves["insertion_auc"].mean().item(),
                   cs["comprehensiveness"].mean().item(), cs["sufficiency"].mean().item()]
print(f"{'method':24s} {'deletion AUC (low)':>19s} {'insertion AUC (high)':>21s} {'compr. (high)':>14s} {'suff. (low)':>12s}")
for name, row in table.items():
    print(f"{name:24s} {row[0]:19.3f} {row[1]:21.3f} {row[2]:14.3f} {row[3]:12.3f}")
plot_curves(deletion_curves, title="GunPoint deletion curves (mean over 30 series)")
plt.show()

# %% [markdown]
# Read the table row by row against the **random** row before believing any method. On this
# model and baseline, insertion splits the methods into two groups: occlusion, feature ablation
# and TSR far above random, Grad-CAM and CAM above it, while gradient saliency and zero-baseline IG
# stay at the level of random (compare the rows). Do not read that as a clean verdict for the top
# group: occlusion, feature ablation and TSR compute their maps by setting elements to the same
# baseline value that the deletion and insertion metrics use, so these metrics partly measure
# agreement with their own perturbation (a circularity: a method is rewarded for predicting what
# this particular perturbation does). Deletion does not separate the methods at all: setting
# scattered single time steps to 0 punches spikes into a smooth series, something the model never
# saw in training, and that alone can destroy the prediction faster than removing the region the
# model actually uses (deletion with a constant baseline measures *out-of-distribution damage* as
# much as importance). Plot a few deletion inputs to see it. Then rerun the table with
# `ranking="absolute"` and with another baseline value: which conclusions survive? Saliency |grad|
# ranks by magnitude only: what does that do when the top elements are strong *negative* evidence?

# %% [markdown]
# ## 7. Counterfactuals: Native Guide (Delaney et al. 2021)
#
# An attribution says *where*; a counterfactual says *what would have to change*. Native Guide
# builds one from real data:
#
# 1. the **nearest unlike neighbour** (NUN): among reference series (the training set) whose
#    *predicted* class differs from the query's predicted class, the one closest to the query in
#    Euclidean distance over all channels and time steps;
# 2. a contiguous window of the NUN is copied into the query, **on every channel**, at the place
#    where the NUN's class activation map (for the NUN's predicted class, the desired class) is
#    highest; the window grows one step at a time until the model predicts the desired class.
#
# **Task** (difficulty 1/5, ~10 min): implement
# `nearest_unlike_neighbour(model, queries, references) -> Int[Tensor, "batch"]`, the index into
# `references` of each query's NUN (the smallest index wins a tie).
#
# **Where this differs from the reference code.** Delaney et al.'s code retrieves the NUN among
# training series whose **training label** differs from the query's predicted class, with a
# k-nearest-neighbour search under **dynamic time warping** (DTW); TSInterpret's `NativeGuideCF`
# also uses DTW (`distance_measure="dtw"`) but, like us, the model's predicted classes of the
# reference set. We use predicted classes (the counterfactual must flip the *model*, so the
# model's view of the references is the relevant one; on our training set the two agree, since
# the model fits it perfectly) and the Euclidean distance (cheap, and what the window swap later
# compares on). DTW aligns series that are shifted in time and can choose another neighbour.
# The reference code also stops growing the window when the probability of the query's class
# drops to 0.5 or below; we stop when the desired class is predicted: the same for two classes.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Distances between every query and every reference over all channels and time steps; references
# the model puts in the query's class are not candidates.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `torch.cdist` on flattened series; set the distance to `inf` where the predictions agree, then `argmin`.
# </details>

# %% role="solution" grade_id="impl_nearest_unlike_neighbour"
def nearest_unlike_neighbour(model: nn.Module, queries: Float[Tensor, "batch channels time"],
                             references: Float[Tensor, "n_ref channels time"]) -> Int[Tensor, " batch"]:
    """Index of the closest (Euclidean) reference whose predicted class differs from the query's."""
    ### BEGIN SOLUTION
    with torch.no_grad():
        query_class = model(queries).argmax(-1)
        reference_class = model(references).argmax(-1)
    distance = torch.cdist(queries.flatten(1).double(), references.flatten(1).double())
    distance = torch.where(reference_class[None, :] == query_class[:, None], torch.inf, distance)
    return distance.argmin(1)
    ### END SOLUTION


# %% role="test" grade_id="test_nearest_unlike_neighbour" points=1
check("tsxai.nearest_unlike_neighbour", nearest_unlike_neighbour)

# %% [markdown]
# **Task** (difficulty 3/5, ~25 min): implement
# `native_guide(model, query, nun, importance)` where `importance` (`"batch time"`) is the NUN's
# class activation map. For $L = 1, 2, \dots, T$: the window start is the $s$ that maximises
# $\sum_{t=s}^{s+L-1} \text{importance}(t)$ (earliest $s$ on ties, as `argmax` does); the candidate
# is the query with $[s, s+L)$ replaced by the NUN on every channel; stop at the first $L$ whose
# candidate the model assigns to the desired class `argmax model(nun)`. ($L = T$ copies the whole
# NUN, so this always stops.) Return `{"counterfactual": (batch, channels, time), "start": (batch,),
# "length": (batch,)}`.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Try window lengths `L = 1, 2, ...` in order; for each, the best start is where the importance
# summed over the window is largest; stop at the first window that flips the class.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# Window sums for all $s$ at once: with `c = cumsum` (prefix a zero) they are `c[L:] - c[:-L]`.
# For one query you can build all $T$ candidates (one per $L$) as one batch and take the first
# that flips.
# </details>

# %% role="solution" grade_id="impl_native_guide"
def native_guide(model: nn.Module, query: Float[Tensor, "batch channels time"], nun: Float[Tensor, "batch channels time"],
                 importance: Float[Tensor, "batch time"]) -> dict[str, Tensor]:
    """Swap the most important window of the NUN into the query, growing it until the class flips."""
    ### BEGIN SOLUTION
    batch, channels, length = query.shape
    lengths = torch.arange(1, length + 1)
    positions = torch.arange(length)
    with torch.no_grad():
        desired = model(nun).argmax(-1)
    result = {"counterfactual": query.clone(), "start": torch.zeros(batch, dtype=torch.long),
              "length": torch.zeros(batch, dtype=torch.long)}
    for b in range(batch):
        prefix = F.pad(importance[b].double().cumsum(0), (1, 0))
        starts = torch.stack([(prefix[L:] - prefix[:-L]).argmax() for L in lengths.tolist()])
        inside = (positions[None] >= starts[:, None]) & (positions[None] < (starts + lengths)[:, None])  # L time
        candidates = torch.where(inside[:, None, :], nun[b][None], query[b][None])
        with torch.no_grad():
            flipped = model(candidates).argmax(-1) == desired[b]
        first = int(flipped.nonzero()[0, 0])
        result["counterfactual"][b] = candidates[first]
        result["start"][b] = starts[first]
        result["length"][b] = lengths[first]
    return result
    ### END SOLUTION


# %% role="test" grade_id="test_native_guide" points=1
check("tsxai.native_guide", native_guide)

# %% [markdown]
# **Task** (difficulty 1/5, ~10 min): implement
# `counterfactual_metrics(model, original, counterfactual)` returning, per example:
# `"validity"` (bool: the predicted class changed), `"l1"`, `"l2"` and `"linf"` (the norms of
# `counterfactual - original` over all channels and time steps: proximity, lower is closer) and
# `"sparsity"`: the fraction of elements left **exactly** unchanged (higher is sparser; Native
# Guide copies values, so an exact comparison is the right one).
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Compare counterfactual and original element by element: a flip of the prediction, three norms of
# the difference, and the fraction of exactly equal elements.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `diff = (counterfactual - original).flatten(1)`; `torch.linalg.vector_norm(diff, ord, dim=1)`.
# </details>

# %% role="solution" grade_id="impl_counterfactual_metrics"
def counterfactual_metrics(model: nn.Module, original: Float[Tensor, "batch channels time"],
                           counterfactual: Float[Tensor, "batch channels time"]) -> dict[str, Tensor]:
    """Validity, proximity (L1, L2, L-infinity) and sparsity of counterfactuals."""
    ### BEGIN SOLUTION
    diff = (counterfactual - original).flatten(1)
    with torch.no_grad():
        validity = model(counterfactual).argmax(-1) != model(original).argmax(-1)
    return {"validity": validity, "l1": diff.abs().sum(1), "l2": torch.linalg.vector_norm(diff, 2, dim=1),
            "linf": diff.abs().amax(1), "sparsity": (diff == 0).to(original.dtype).mean(1)}
    ### END SOLUTION


# %% role="test" grade_id="test_counterfactual_metrics" points=1
check("tsxai.counterfactual_metrics", counterfactual_metrics)

# %%
queries = gunpoint.X_test[:4]
nun_index = nearest_unlike_neighbour(model_gp, queries, gunpoint.X_train)
nuns = gunpoint.X_train[nun_index]
cam_nun = class_activation_map(model_gp, nuns, predict(model_gp, nuns))
cf = native_guide(model_gp, queries, nuns, cam_nun)
metrics = counterfactual_metrics(model_gp, queries, cf["counterfactual"])
print({k: [round(float(v), 3) for v in vals] for k, vals in metrics.items()})
fig, ax = plt.subplots(figsize=(8, 2.6))
ax.plot(queries[0, 0], label=f"query ({gunpoint.class_names[predict(model_gp, queries[:1])[0]]})")
ax.plot(nuns[0, 0], label="nearest unlike neighbour", alpha=0.6)
ax.plot(cf["counterfactual"][0, 0], "--", label=f"counterfactual (window {int(cf['start'][0])}+{int(cf['length'][0])})")
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# How long is the swapped window compared with the series? Are the counterfactuals valid, and
# how sparse are they? A plausible counterfactual should look like a real series: what does the
# swap do at the window's edges, and how would you measure plausibility?

# %% [markdown]
# ## 8. A LIME-style surrogate over segments
#
# LIME (Ribeiro et al. 2016) explains a prediction by fitting a simple model to the black box
# around the input. Here the interpretable features are the $S = C \cdot$ `n_segments` segments of
# `segment_ids`; a binary vector $z \in \{0,1\}^S$ keeps segment $s$ when $z_s = 1$ and sets it to
# the baseline otherwise. Given the samples `masks` (`"n_samples S"`, drawn by the caller):
#
# - $y(z)$ = the **probability** of the target class on the perturbed input;
# - weight $\pi(z) = \exp(-d(z)^2/\sigma^2)$ with $d(z) = 1 - \sqrt{|z|/S}$ (the cosine distance
#   between $z$ and the all-ones vector) and $\sigma$ = `kernel_width`;
# - fit $y \approx \beta_0 + \sum_s \beta_s z_s$ by **weighted least squares** (no regularisation),
#   in float64; the attribution of every element of segment $s$ is $\beta_s$.
#
# **Where this differs from the `lime` package.** Our distance and default width are those of
# `lime_image` (cosine distance to the all-ones vector, `kernel_width=0.25`), but `lime` uses the
# **square root** of that kernel as the sample weight, $\sqrt{\exp(-d^2/\sigma^2)} =
# \exp(-d^2/(2\sigma^2))$: `lime`'s weight for a width $w$ is our $\pi$ for $\sigma = \sqrt{2}\,w$,
# so pass `kernel_width=0.25 * 2**0.5` to our function to get `lime_image`'s default weights. (`lime_tabular` instead defaults to a width of $0.75\sqrt{S}$ on
# Euclidean distances of standardised features.) `lime` also fits a ridge regression
# (`Ridge(alpha=1)`) on the features it selects, where we fit unregularised weighted least squares
# on all of them.
#
# **Task** (difficulty 3/5, ~25 min): implement
# `lime_segments(model, inputs, target, n_segments, masks, baselines=0.0, kernel_width=0.25)`.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Turn every mask sample into a perturbed series, read the target probability, weight each sample
# by its closeness to the original, and solve a weighted linear regression with an intercept.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `masks[:, segment_ids(C, T, n_segments)]` expands the samples to `(n_samples, C, T)`. Weighted
# least squares is ordinary least squares on rows scaled by $\sqrt{\pi}$:
# `torch.linalg.lstsq(sqrt_w[:, None] * Z, sqrt_w * y)` with a column of ones in `Z`.
# </details>

# %% role="solution" grade_id="impl_lime_segments"
def lime_segments(model: nn.Module, inputs: Float[Tensor, "batch channels time"], target: Int[Tensor, " batch"],
                  n_segments: int, masks: Float[Tensor, "n_samples segments"], baselines: float | Tensor = 0.0,
                  kernel_width: float = 0.25) -> Float[Tensor, "batch channels time"]:
    """Weighted linear surrogate over segments; each element gets its segment's coefficient."""
    ### BEGIN SOLUTION
    batch, channels, length = inputs.shape
    ids = segment_ids(channels, length, n_segments)
    n_features = channels * n_segments
    z = masks.double()
    keep = z[:, ids].bool()  # n_samples channels time
    base = torch.as_tensor(baselines, dtype=inputs.dtype).expand_as(inputs)
    distance = 1 - (z.sum(1) / n_features).sqrt()
    sqrt_w = torch.exp(-distance**2 / kernel_width**2).sqrt()
    design = torch.cat([torch.ones(len(z), 1, dtype=torch.float64), z], 1) * sqrt_w[:, None]
    with torch.no_grad():
        perturbed = torch.where(keep[None], inputs[:, None], base[:, None]).flatten(0, 1)
        probs = model(perturbed).softmax(-1).reshape(batch, len(z), -1)
        y = probs.gather(2, target[:, None, None].expand(-1, len(z), 1))[..., 0].double()  # batch n_samples
    coef = torch.linalg.lstsq(design[None].expand(batch, -1, -1), (y * sqrt_w)[..., None]).solution[:, 1:, 0]
    return coef.gather(1, ids.flatten()[None].expand(batch, -1)).reshape(inputs.shape).to(inputs.dtype)
    ### END SOLUTION


# %% role="test" grade_id="test_lime_segments" points=1
check("tsxai.lime_segments", lime_segments)

# %%
masks = torch.randint(0, 2, (300, 15), generator=torch.Generator().manual_seed(0)).float()
lime = lime_segments(model_gp, x_gp, t_gp, n_segments=15, masks=masks)
abl = feature_ablation(model_gp, x_gp, t_gp, n_segments=15)
plot_attribution(x_gp[0], lime[0], title="LIME surrogate over 15 segments (probabilities)")
plt.show()
print("rank correlation with feature ablation (15 segments):",
      round(float(torch.corrcoef(torch.stack([lime[0, 0, ::10].argsort().argsort().float(),
                                              abl[0, 0, ::10].argsort().argsort().float()]))[0, 1]), 3))

# %% [markdown]
# LIME's answer depends on the samples: rerun with another seed and with 50 samples instead of
# 300. How stable is the top segment? LIME works on probabilities and feature ablation on logits:
# when can they disagree on the sign of a segment?

# %% [markdown]
# ## 9. Sanity check: model randomisation (Adebayo et al. 2018)
#
# A faithfulness table rewards maps that predict what a perturbation does. Adebayo et al. ask a
# simpler question first: **does the map depend on the model at all?** Re-initialise the model's
# layers one by one, from the output down (cascading randomisation), and compare each map with the
# map of the trained model. An explanation of *this* model must change as its learned weights are
# destroyed; a map that stays the same is explaining the input, not the model (the paper found
# this for Guided Backprop, which behaves like an edge detector).
#
# `cascading_randomisation(model, seed)` (in `interplab.tsxai`) yields `(name, randomised copy)`
# for the stages `classifier`, `blocks.2`, `blocks.1`, `blocks.0`, each copy with that layer and
# every layer above it re-initialised (PyTorch's default initialisation, seeded).
#
# **Task** (difficulty 2/5, ~20 min): implement
# `randomisation_similarity(model, inputs, target, method, seed=0)`: for every stage, the
# **Spearman rank correlation** between $|$map of the trained model$|$ and $|$map of the randomised
# copy$|$, per example, over all channels and time steps; shape `(n_stages, batch)`. Conventions:
#
# - the map of every copy explains the **same target** (the trained model's class), not the
#   class the randomised copy predicts: the question is whether the explanation of one decision
#   changes;
# - absolute values, as Adebayo et al. (the sign of a gradient map flips easily and says little
#   about which elements matter); CAM-type `"batch time"` maps are compared as they are;
# - ties get the **average** of the ranks they span (as `scipy.stats.spearmanr`); when one of the
#   two maps is constant the correlation is undefined: NaN (as scipy).
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Spearman's correlation is Pearson's correlation of the ranks. Compute the trained map once, then
# one map per stage; rank each example's flattened `|map|`, then correlate the two rank vectors.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# Average ranks without sorting: `rank_i = (x < x_i).sum() + ((x == x_i).sum() + 1) / 2`, i.e.
# `(x[:, None, :] < x[:, :, None]).sum(-1) + ((x[:, None, :] == x[:, :, None]).sum(-1) + 1) / 2` for a
# `(batch, n)` tensor. Then center both rank vectors and divide their dot product by the product
# of their norms.
# </details>

# %% role="solution" grade_id="impl_randomisation_similarity"
def randomisation_similarity(model: nn.Module, inputs: Float[Tensor, "batch channels time"], target: Int[Tensor, " batch"],
                             method: Callable[..., Tensor], seed: int = 0) -> Float[Tensor, "stages batch"]:
    """Spearman correlation of |map| between the trained model and each cascading-randomisation stage."""
    ### BEGIN SOLUTION
    def average_ranks(values: Tensor) -> Tensor:  # (batch, n) -> (batch, n), ties get their mean rank
        below = (values[:, None, :] < values[:, :, None]).sum(-1)
        equal = (values[:, None, :] == values[:, :, None]).sum(-1)
        return (below + (equal + 1) / 2).double()

    def spearman(a: Tensor, b: Tensor) -> Tensor:
        ra, rb = average_ranks(a.flatten(1)), average_ranks(b.flatten(1))
        ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
        return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))  # 0 / 0 = NaN for a constant map

    trained = method(model, inputs, target).detach().abs()
    rows = [spearman(trained, method(randomised, inputs, target).detach().abs())
            for _, randomised in cascading_randomisation(model, seed)]
    return torch.stack(rows).to(inputs.dtype)
    ### END SOLUTION


# %% role="test" grade_id="test_randomisation_similarity" points=1
check("tsxai.randomisation_similarity", randomisation_similarity)

# %% [markdown]
# Every method of this notebook through the cascade, on eight GunPoint test series. Two controls
# frame the table: the seeded random map (independent of the model by construction) and the
# input itself, $|x|$, used as a "map" (an edge-detector-like explanation that ignores the model).

# %%
sanity_methods = {
    "random (seed 0)": lambda m, x, t: random_attribution(m, x, t, seed=0),
    "|input| (ignores the model)": lambda m, x, t: x.abs(),
    "saliency |grad|": saliency,
    "integrated gradients": lambda m, x, t: integrated_gradients(m, x, t, n_steps=24),
    "occlusion (10/5)": lambda m, x, t: occlusion(m, x, t, window=10, stride=5),
    "CAM": class_activation_map,
    "Grad-CAM": grad_cam,
}
stage_names = [name for name, _ in cascading_randomisation(model_gp)]
print(f"{'method':28s} " + " ".join(f"{'+' + name:>12s}" for name in stage_names) + "   (mean Spearman over 8 series)")
for name, method in sanity_methods.items():
    similarity = randomisation_similarity(model_gp, x_gp, t_gp, method)
    print(f"{name:28s} " + " ".join(f"{value:12.3f}" for value in similarity.nanmean(dim=1).tolist())
          + (f"   ({int(similarity.isnan().sum())} undefined)" if similarity.isnan().any() else ""))

# %% [markdown] role="locked" grade_id="question_sanity_check"
# **Questions.** Which methods pass the sanity check (similarity falling towards 0 as the layers
# are randomised), and which stay high? The two controls stay at 1 by construction: a method that
# behaves like them explains the input, not the model. Why can CAM's similarity stay high after
# the classifier alone is randomised (what does CAM compute from the classifier's weights, and
# what from the features)? Rank correlation of absolute values is one choice among several
# (Adebayo et al. also use SSIM and the histogram of gradients; the sign matters for some
# methods): how could the choice of similarity change a verdict? Passing this check is necessary,
# not sufficient: a map can depend on the model and still be wrong about it.
#
# *Answer in the cell below (graded by hand, 2 points).*
# ### BEGIN MARK SCHEME
# **Mark scheme (instructors only).**
# - 1 point: reads the plot: names which methods fall and which stay high.
# - 1 point: CAM's feature maps come from the (unchanged) convolutional layers, or how the similarity choice (sign, rank vs SSIM) can change a verdict.
# ### END MARK SCHEME

# %% [markdown] role="answer" grade_id="answer_sanity_check" points=2
# Methods whose similarity falls as layers are randomised depend on the model; those staying high explain the input (like the controls). CAM multiplies the feature maps by the classifier's weights; randomising only the classifier keeps the feature maps, whose structure follows the input, so the map can stay similar. The similarity measure decides what counts as the same: with absolute values a sign flip looks identical; SSIM or histograms can change a verdict.

# %% [markdown]
# ## Open questions
#
# - Deletion with a constant baseline measures the model on inputs it never saw. How would you
#   design a removal that stays on the data manifold (e.g. replace by the NUN, or by a blurred
#   series), and what would it change in your table?
# - None of the metrics here checks whether a map is *correct*: the models were never given
#   ground truth. Design a synthetic time-series task with a planted discriminative motif and test
#   which methods find it (this is Ismail et al.'s benchmark idea).
# - For multiclass explanations, which logit should you explain: the target's, or the target's
#   minus the runner-up's? Try both on BasicMotions.
#
# ## Further reading
#
# - Theissler et al. (2022), [Explainable AI for time series classification: a review, taxonomy and research directions](https://doi.org/10.1109/ACCESS.2022.3207765).
# - Rojat et al. (2021), [Explainable artificial intelligence (XAI) on time series data: a survey](https://arxiv.org/abs/2104.00950).
# - Crabbé & van der Schaar (2021), [Explaining time series predictions with dynamic masks](https://arxiv.org/abs/2106.05303).
# - Adebayo et al. (2018), [Sanity checks for saliency maps](https://arxiv.org/abs/1810.03292): the model and data randomisation tests.
# - Kokhlikyan et al. (2020), [Captum: a unified and generic model interpretability library for PyTorch](https://arxiv.org/abs/2009.07896).
