# %% [markdown]
# # Probes, lenses and causal abstraction: decodable is not used
#
# The `saes` assignment found features, `steering` added directions, `attribution` traced graphs.
# One question ties them together: **when a linear read-out (a probe) can decode a variable from a
# model's activations, does the model actually use that information?** In this notebook you train
# probes with proper controls, read every layer with the logit lens and a tuned lens, erase a
# concept and measure what the model loses, and finally *intervene*: swap a variable's value between
# two runs (interchange interventions) and learn the one direction that carries it (distributed
# alignment search). You end with a case where a probe is perfect and the model ignores what it reads.
#
# **After this notebook you will be able to**
#
# - build probing data sets that do not leak (train and test on disjoint prompts), train a linear
#   probe, and report its accuracy against a control task (selectivity);
# - decode every layer with the logit lens and with a tuned lens (an affine translator per layer),
#   and measure how far each is from the model's final distribution (KL, top-1 agreement);
# - erase a linearly decodable concept in closed form (LEACE) and measure what the model's behaviour
#   loses (amnesic probing);
# - run interchange interventions, compute their interchange-intervention accuracy (IIA), and train
#   a one-dimensional distributed alignment search (DAS) subspace; compare it with the probe and the
#   mean-difference (CAA) directions;
# - explain, with numbers, why "a probe decodes it" is not evidence that "the model uses it".
#
# **Read first** (about two and a half hours):
#
# 1. Belinkov (2022), [*Probing Classifiers: Promises, Shortcomings, and Advances*](https://arxiv.org/abs/2102.12452):
#    sections 1-4 (what a probe can and cannot tell you).
# 2. Hewitt & Liang (2019), [*Designing and Interpreting Probes with Control Tasks*](https://arxiv.org/abs/1909.03368):
#    sections 1-3 (control tasks, selectivity).
# 3. nostalgebraist (2020), [*interpreting GPT: the logit lens*](https://www.lesswrong.com/posts/AcKRB8wDpdaN6v6ru/interpreting-gpt-the-logit-lens),
#    and Belrose et al. (2023), [*Eliciting Latent Predictions from Transformers with the Tuned Lens*](https://arxiv.org/abs/2303.08112):
#    sections 1-3.
# 4. Elazar et al. (2021), [*Amnesic Probing*](https://arxiv.org/abs/2006.00995): section 3; and
#    Belrose et al. (2023), [*LEACE: Perfect linear concept erasure in closed form*](https://arxiv.org/abs/2306.03819):
#    sections 1-4 (the theorem and its formula).
# 5. Geiger et al. (2021), [*Causal Abstractions of Neural Networks*](https://arxiv.org/abs/2106.02997)
#    (interchange interventions), and Geiger et al. (2023), [*Finding Alignments Between Interpretable
#    Causal Variables and Distributed Neural Representations*](https://arxiv.org/abs/2303.02536) (DAS):
#    sections 1-3.
# 6. Makelov et al. (2023), [*Is This the Subspace You Are Looking for?*](https://arxiv.org/abs/2311.17030):
#    why a subspace intervention can "work" through a pathway the model does not use.
#
# **The model.** `toyworld-lm` from the InterpLab zoo, a 2-layer TransformerLens `HookedTransformer`
# (d_model 128, LayerNorm, GELU MLPs), trained on the *toy world* (`interplab.toyworld`), whose every
# token carries ground-truth labels: the persona of a dialogue (`child`, `expert`, `assistant`), the
# difficulty of a square-root question (`easy`, `hard`), the sentiment of a story, the document type.
# The child refuses hard questions (`child : what is sqrt 27 ? i do not know .`), the expert answers
# them (`expert : what is sqrt 27 ? 3 root 3 .`). The residual stream has five distinct points,
# `interplab.probing.RESID_POINTS`: the embedding (`blocks.0.hook_resid_pre`), after layer 0's
# attention (`blocks.0.hook_resid_mid`), after layer 0 (`blocks.0.hook_resid_post`, the same point as
# `blocks.1.hook_resid_pre`), after layer 1's attention (`blocks.1.hook_resid_mid`) and after layer 1
# (`blocks.1.hook_resid_post`, which `ln_final` and the unembedding turn into logits).
#
# *Which model where.* Parts 1, 3 and 4 (probes, erasure, interventions) use the 2-layer
# `toyworld-lm`: the persona moves to the `?` in one attention step between two of its points (so IIA
# jumps from 0 to 1 and erasing there changes behaviour), and it is the model of the steering
# assignment, whose CAA vector Part 4 compares with. Part 2 (the lenses) uses **`toyworld-lm-4l`**,
# the same tokenizer, corpus, width and recipe with four layers (trained for half the steps), so a lens
# has eight intermediate points to read instead of four and you can watch a prediction form over
# depth rather than in two jumps.
#
# **How the checks work.** Each exercise ends with `check("probing.<name>", your_function)`, which
# runs your function on freshly generated inputs and compares with the reference. Training exercises
# (the probe, the tuned lens, DAS) are judged by what your result achieves on data it never saw.

# %% role="locked" grade_id="setup"
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interplab import check, zoo
from interplab.plots import heatmap
from interplab.probing import (CLASSES, LENS_MODEL, LENS_POINTS, RESID_POINTS, class_labels, dialogue_question_marks,
                               persona_swap_pairs)
from interplab.steering import hard_questions, persona_pair, prompt_tokens
from interplab.toyworld import ToyWorld

torch.set_num_threads(1)  # small tensors: more threads only add overhead on a shared machine
torch.set_grad_enabled(False)  # the training exercises turn gradients on where they need them
world = ToyWorld()
vocab = world.tokenizer.index
lm = zoo.load("toyworld-lm")
lens_lm = zoo.load(LENS_MODEL)  # the 4-layer model, for the lenses of Part 2
for parameter in [*lm.parameters(), *lens_lm.parameters()]:
    parameter.requires_grad_(False)  # we train probes, lenses and directions, never the models
LABELS = ("persona", "difficulty", "sentiment", "doc_type")
L2 = 1e-3  # the probes' L2 penalty (the same for every probe, so that capacities are comparable)

# Documents for probing and lenses; a third of the documents are the test set (fixed seeds: the
# numbers in the text are these).
docs = world.sample(240, 11)
is_test_doc = torch.rand(len(docs), generator=torch.Generator().manual_seed(0)) < 1 / 3
doc_logits, doc_cache = lm.run_with_cache(docs.tokens, names_filter=list(RESID_POINTS))
doc_mask = docs.labels["loss_mask"].bool()
doc_classes = {label: class_labels(docs, label) for label in LABELS}
print(f"{len(docs)} documents ({int(is_test_doc.sum())} for testing), {int(doc_mask.sum())} tokens;",
      {label: int((c >= 0).sum()) for label, c in doc_classes.items()}, "labelled tokens per variable")


def last_logits(logits: Float[Tensor, "n pos vocab"], at: Int[Tensor, "n"]) -> Float[Tensor, "n vocab"]:
    """Each prompt's logits at its position ``at``."""
    return logits[torch.arange(len(at)), at]


# %% [markdown]
# ## Part 1. Linear probes, done right
#
# ### 1.1 A probing data set that does not leak
#
# *Difficulty 1/5, about 10 minutes.* A probe is trained on activations of some prompts and must be
# tested on activations of **other prompts**: two tokens of the same dialogue share its persona and
# most of its context, so a probe tested on tokens of its training documents measures memory, not
# generalisation. Given activations `acts[doc, pos]`, a class per token (`-1` where the variable does
# not apply, on padding and at `<bos>`) and which documents are for testing, return the rows of the
# tokens that have a class, split by document, **in row-major order** (document by document, position
# by position: what boolean-mask indexing gives).
#
# ```python
# def probe_dataset(acts: Float[Tensor, "doc pos d"], classes: Int[Tensor, "doc pos"],
#                   is_test_doc: Bool[Tensor, "doc"]) -> tuple[Tensor, Tensor, Tensor, Tensor]
# ```
#
# returning `(X_train [n, d], y_train [n], X_test [m, d], y_test [m])`.
#
# <details><summary>Hint 1 (the idea)</summary>A token is a training row when it has a class and its
# document is not a test document; broadcast the per-document flag over positions.</details>
#
# <details><summary>Hint 2 (the code)</summary>
#
# `train = (classes >= 0) & ~is_test_doc[:, None]`, then `acts[train]` and `classes[train]`.
# </details>

# %% role="solution" grade_id="impl_probe_dataset"
def probe_dataset(acts: Float[Tensor, "doc pos d"], classes: Int[Tensor, "doc pos"],
                  is_test_doc: Bool[Tensor, "doc"]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    ### BEGIN SOLUTION
    has_class = classes >= 0
    train = has_class & ~is_test_doc[:, None]
    test = has_class & is_test_doc[:, None]
    return acts[train], classes[train], acts[test], classes[test]
    ### END SOLUTION


# %% role="test" grade_id="test_probe_dataset" points=1
check("probing.probe_dataset", probe_dataset)

# %% [markdown]
# ### 1.2 A multinomial logistic-regression probe
#
# *Difficulty 2/5, about 20 minutes.* Fit `W [C, d]`, `b [C]` minimising the **mean** cross-entropy
# of `softmax(X @ W.T + b)` plus `l2 / 2 * (W ** 2).sum()` (the bias is not penalised). The objective
# is convex, so every correct optimiser reaches the same minimum: the check judges your `W, b` by the
# objective they reach on the training data (within 0.1 % of the reference's minimum), not by the
# weights. Do not standardise the features inside (the probe is a read-out of these activations).
#
# ```python
# def fit_probe(X: Float[Tensor, "n d"], y: Int[Tensor, "n"], n_classes: int, l2: float) -> tuple[Tensor, Tensor]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>Full-batch second-order optimisation converges in a
# few dozen steps on a problem this small; float64 avoids stalling on rounding.</details>
#
# <details><summary>Hint 2 (the code)</summary>
#
# ```python
# W = torch.zeros(n_classes, d, dtype=torch.float64, requires_grad=True)  # and b
# opt = torch.optim.LBFGS([W, b], max_iter=100, line_search_fn="strong_wolfe")
# def closure():
#     opt.zero_grad(); loss = F.cross_entropy(X64 @ W.T + b, y) + l2 / 2 * (W ** 2).sum(); loss.backward(); return loss
# with torch.enable_grad(): opt.step(closure)
# ```
# </details>

# %% role="solution" grade_id="impl_fit_probe"
def fit_probe(X: Float[Tensor, "n d"], y: Int[Tensor, "n"], n_classes: int, l2: float) -> tuple[Tensor, Tensor]:
    ### BEGIN SOLUTION
    X64 = X.double()
    W = torch.zeros(n_classes, X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    # 100 iterations reach the minimum to ~1e-4 relative here; more cost seconds per probe for nothing
    opt = torch.optim.LBFGS([W, b], max_iter=100, tolerance_grad=1e-7, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(X64 @ W.T + b, y) + l2 / 2 * (W ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return W.detach().float(), b.detach().float()
    ### END SOLUTION


# %% role="test" grade_id="test_fit_probe" points=2
check("probing.fit_probe", fit_probe)

# %% [markdown]
# ### 1.3 Control tasks
#
# *Difficulty 2/5, about 15 minutes.* A probe with enough capacity can learn *any* labelling of the
# tokens it sees, so high accuracy alone says little. Hewitt & Liang's **control task** assigns each
# **word type** (token id) one random class, drawn independently from the empirical class
# distribution of the real labels (the fraction of the given tokens in each class); every occurrence
# of that type gets that class. The control task has the real task's output space and class balance,
# but its labels can only be predicted by memorising word identity.
#
# ```python
# def control_labels(tokens: Int[Tensor, "n"], labels: Int[Tensor, "n"], n_classes: int,
#                    generator: torch.Generator) -> Int[Tensor, "n"]
# ```
#
# Use `generator` for every random draw (the check calls you with two generators and expects two
# different labellings). It judges: one class per type, classes in range, and the share of *types* in
# each class close to the real labels' class distribution.
#
# <details><summary>Hint 1 (the idea)</summary>Count the real classes, draw one class per distinct
# token id from those frequencies, then look the draw up for every token.</details>
#
# <details><summary>Hint 2 (the code)</summary>
#
# `types, inverse = tokens.unique(return_inverse=True)`;
# `torch.multinomial(freq, len(types), replacement=True, generator=generator)[inverse]`.
# </details>

# %% role="solution" grade_id="impl_control_labels"
def control_labels(tokens: Int[Tensor, "n"], labels: Int[Tensor, "n"], n_classes: int,
                   generator: torch.Generator) -> Int[Tensor, "n"]:
    ### BEGIN SOLUTION
    types, inverse = tokens.unique(return_inverse=True)
    freq = torch.bincount(labels, minlength=n_classes).double()
    per_type = torch.multinomial(freq / freq.sum(), len(types), replacement=True, generator=generator)
    return per_type[inverse]
    ### END SOLUTION


# %% role="test" grade_id="test_control_labels" points=1
check("probing.control_labels", control_labels)

# %% [markdown]
# ### 1.4 Accuracy and selectivity
#
# *Difficulty 1/5, about 10 minutes.* Given a probe for the real task and one for the control task,
# both already trained, return their accuracies on the **test** rows and the **selectivity**, the real
# accuracy minus the control accuracy (Hewitt & Liang): a good probe is accurate on the real task and
# bad at memorising.
#
# ```python
# def probe_scores(W: Float[Tensor, "C d"], b: Float[Tensor, "C"], W_control: Float[Tensor, "C d"],
#                  b_control: Float[Tensor, "C"], X: Float[Tensor, "m d"], y: Int[Tensor, "m"],
#                  y_control: Int[Tensor, "m"]) -> dict[str, float]
# ```
#
# returning `{"accuracy", "control_accuracy", "selectivity"}` as Python floats.
#
# <details><summary>Hint 1 (the idea)</summary>The predicted class is the arg-max of the logits.</details>
#
# <details><summary>Hint 2 (the code)</summary>`float(((X @ W.T + b).argmax(-1) == y).float().mean())`</details>

# %% role="solution" grade_id="impl_probe_scores"
def probe_scores(W: Float[Tensor, "C d"], b: Float[Tensor, "C"], W_control: Float[Tensor, "C d"],
                 b_control: Float[Tensor, "C"], X: Float[Tensor, "m d"], y: Int[Tensor, "m"],
                 y_control: Int[Tensor, "m"]) -> dict[str, float]:
    ### BEGIN SOLUTION
    accuracy = float(((X @ W.T + b).argmax(-1) == y).float().mean())
    control = float(((X @ W_control.T + b_control).argmax(-1) == y_control).float().mean())
    return {"accuracy": accuracy, "control_accuracy": control, "selectivity": accuracy - control}
    ### END SOLUTION


# %% role="test" grade_id="test_probe_scores" points=1
check("probing.probe_scores", probe_scores)

# %% [markdown]
# Now every variable at every point of the residual stream: a probe for the real labels, a probe for
# a control task (one per variable, the same for every point), accuracy and selectivity on the test
# documents. The last column is a baseline that is easy to forget: the most frequent class.

# %%
probe_results = {}
for label in LABELS:
    n_classes = len(CLASSES[label])
    # the token id of every row, through the same split (a trailing axis of size 1 for "d")
    tokens_train, y_train, tokens_test, y_test = probe_dataset(docs.tokens[..., None], doc_classes[label], is_test_doc)
    all_tokens = torch.cat([tokens_train[:, 0], tokens_test[:, 0]])
    control = control_labels(all_tokens, torch.cat([y_train, y_test]), n_classes, torch.Generator().manual_seed(1))
    c_train, c_test = control[:len(y_train)], control[len(y_train):]
    majority = float((y_test == torch.bincount(y_train).argmax()).float().mean())
    for hook in RESID_POINTS:
        X_train, y_train, X_test, y_test = probe_dataset(doc_cache[hook], doc_classes[label], is_test_doc)
        W, b = fit_probe(X_train, y_train, n_classes, L2)
        W_c, b_c = fit_probe(X_train, c_train, n_classes, L2)
        probe_results[label, hook] = probe_scores(W, b, W_c, b_c, X_test, y_test, c_test)
        probe_results[label, hook]["train_accuracy"] = float(((X_train @ W.T + b).argmax(-1) == y_train).float().mean())
    print(f"{label} ({len(y_train)} train / {len(y_test)} test tokens, majority class {majority:.3f})")
    for hook in RESID_POINTS:
        r = probe_results[label, hook]
        print(f"  {hook:26s} test accuracy {r['accuracy']:.3f} (train {r['train_accuracy']:.3f})   "
              f"control {r['control_accuracy']:.3f}   selectivity {r['selectivity']:+.3f}")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for ax, key in zip(axes, ("accuracy", "selectivity")):
    for label in LABELS:
        ax.plot(range(len(RESID_POINTS)), [probe_results[label, h][key] for h in RESID_POINTS], marker="o", label=label)
    ax.set_xticks(range(len(RESID_POINTS)), [h.replace("blocks.", "").replace("hook_resid_", "") for h in RESID_POINTS])
    ax.set_title(f"probe test {key}")
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# **What the solution measures** (test documents; full table printed above):
#
# - **persona** (majority class 0.463): 0.467 at the embedding, 0.78 after layer 0, **0.988** after
#   layer 1's attention (0.958 after layer 1). Selectivity is negative up to layer 0 (-0.46 at the
#   embedding: the control probe memorises word identity, 0.924) and positive only from layer 1's
#   attention on (+0.13).
# - **document type** (majority 0.436): 0.632 at the embedding, 0.96 after layer 0's attention, 0.990
#   after layer 1's; selectivity +0.16 to +0.24 from layer 0's attention on.
# - **difficulty** (majority 0.700) stays at 0.75-0.82 and **sentiment** (majority 0.333) at 0.63-0.80
#   at every point, with negative selectivity everywhere (-0.11 to -0.36). The toy world labels every
#   token of a question with its difficulty, including `what is sqrt`, *before* the number that
#   decides it: no causal model can know it there. Sentiment is labelled from the adjective on.
# - Train accuracy is higher than test accuracy everywhere, by up to 0.20 (sentiment after layer 1,
#   0.901 vs 0.700): scoring on the training documents would have overstated every number.

# %% [markdown] role="locked" grade_id="question_control_embedding"
# **Questions.** Why is the control accuracy so high at the embedding (`0.hook_resid_pre`), and
# what does it mean for the selectivity there? The persona is a property of the whole dialogue, but
# the embedding of most of its tokens (`what`, `is`, `?`) says nothing about it: which tokens does the
# probe get right at the embedding, and which layer brings the persona to the others? Why would
# a probe tested on its own training documents (compare the train accuracies) overstate what is
# decodable, and by how much here?
#
# *Answer in the cell below (graded by hand, 2 points).*
# ### BEGIN MARK SCHEME
# **Mark scheme (instructors only).**
# - 1 point: control labels are a function of the token, which the embedding encodes: high control accuracy, low selectivity.
# - 1 point: which tokens are right at the embedding and which layer moves the persona, or the train/test gap with its number.
# ### END MARK SCHEME

# %% [markdown] role="answer" grade_id="answer_control_embedding" points=2
# A control task assigns labels by token type, and the embedding identifies the token, so a probe memorises the control labels perfectly: selectivity at the embedding is low. The probe is right at the embedding only on the persona tokens themselves; the persona reaches the other positions through attention (layer 1 here). Tested on its own training documents a probe can memorise token-label pairs, so train accuracy overstates what is decodable, by the train-test gap shown.

# %% [markdown]
# **Leaking through position.** A variable can be decodable from something that is not the variable.
# The document types have different lengths and layouts (a repeat document has `|` near its middle, a
# dialogue has `:` at position 2), and position is in the residual stream (the positional embedding).
# A probe that sees *only* the position of each token (one-hot):

# %%
X_pos_train, y_pos_train, X_pos_test, y_pos_test = probe_dataset(
    F.one_hot(torch.arange(docs.tokens.shape[1]), docs.tokens.shape[1]).float().expand(len(docs), -1, -1),
    doc_classes["doc_type"], is_test_doc)
W_pos, b_pos = fit_probe(X_pos_train, y_pos_train, len(CLASSES["doc_type"]), L2)
position_only = float(((X_pos_test @ W_pos.T + b_pos).argmax(-1) == y_pos_test).float().mean())
print(f"document type from the position alone: test accuracy {position_only:.3f} "
      f"(majority class {float((y_pos_test == torch.bincount(y_pos_train).argmax()).float().mean()):.3f})")

# %% [markdown]
# With the solution: 0.435, the majority class (0.436). Here position alone does not predict the
# document type better than always guessing the most frequent type, so the residual stream's 0.96 is
# not a position artefact. With type-specific layouts at fixed positions it would be, and a probe
# "for the document type" would get that part for free: always run this baseline.
# Control for it: compare with the position-only probe, or balance the positions of each class.
#
# ## Part 2. Reading every layer: the logit lens and the tuned lens
#
# This part reads the 4-layer `lens_lm` (`toyworld-lm-4l`, loaded in the setup cell), whose residual
# stream has nine distinct points, `LENS_POINTS`: eight intermediate ones and the last.
#
# ### 2.1 The logit lens
#
# *Difficulty 1/5, about 10 minutes.* The logit lens decodes an intermediate residual stream as if it
# were the last one: apply the model's final LayerNorm (`model.ln_final`) and unembedding
# (`model.unembed`). Apply them **once**, to the residual stream itself (not to something already
# normalised).
#
# ```python
# def logit_lens(model, resid: Float[Tensor, "n pos d_model"]) -> Float[Tensor, "n pos d_vocab"]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>The model's own last two steps, nothing else.</details>
#
# <details><summary>Hint 2 (the code)</summary>`model.unembed(model.ln_final(resid))`</details>

# %% role="solution" grade_id="impl_logit_lens"
def logit_lens(model, resid: Float[Tensor, "n pos d_model"]) -> Float[Tensor, "n pos d_vocab"]:
    ### BEGIN SOLUTION
    return model.unembed(model.ln_final(resid))
    ### END SOLUTION


# %% role="test" grade_id="test_logit_lens" points=1
check("probing.logit_lens", logit_lens)

# %% [markdown]
# ### 2.2 How far is a lens from the model?
#
# *Difficulty 2/5, about 15 minutes.* Compare a lens's distribution with the model's final one at
# every real token: the KL divergence **from the final distribution to the lens**,
# `KL(P_final || P_lens)` (natural log, nats; the tuned-lens paper's direction: how surprised the
# lens would be by what the model predicts), and the top-1 agreement (the lens's arg-max equals the
# model's). Average each over the positions where `mask` is True only.
#
# ```python
# def lens_metrics(lens_logits: Float[Tensor, "n pos vocab"], final_logits: Float[Tensor, "n pos vocab"],
#                  mask: Bool[Tensor, "n pos"]) -> dict[str, float]
# ```
#
# returning `{"kl": ..., "top1": ...}` as Python floats.
#
# <details><summary>Hint 1 (the idea)</summary>Work with log-probabilities (`log_softmax`) for a stable
# KL; select the masked positions before averaging.</details>
#
# <details><summary>Hint 2 (the code)</summary>
#
# `kl = (p_final * (logp_final - logp_lens)).sum(-1)[mask].mean()`
# </details>

# %% role="solution" grade_id="impl_lens_metrics"
def lens_metrics(lens_logits: Float[Tensor, "n pos vocab"], final_logits: Float[Tensor, "n pos vocab"],
                 mask: Bool[Tensor, "n pos"]) -> dict[str, float]:
    ### BEGIN SOLUTION
    logp_final, logp_lens = final_logits.log_softmax(-1), lens_logits.log_softmax(-1)
    kl = (logp_final.exp() * (logp_final - logp_lens)).sum(-1)
    agree = (lens_logits.argmax(-1) == final_logits.argmax(-1)).float()
    return {"kl": float(kl[mask].mean()), "top1": float(agree[mask].mean())}
    ### END SOLUTION


# %% role="test" grade_id="test_lens_metrics" points=1
check("probing.lens_metrics", lens_metrics)

# %% [markdown]
# The logit lens at every point of the 4-layer `toyworld-lm-4l` (`LENS_POINTS`: the embedding, then
# after each layer's attention and after each layer), on the same test documents:

# %%
test_mask = doc_mask & is_test_doc[:, None]
lens_logits, lens_cache = lens_lm.run_with_cache(docs.tokens, names_filter=list(LENS_POINTS))
logit_lens_metrics = {hook: lens_metrics(logit_lens(lens_lm, lens_cache[hook]), lens_logits, test_mask)
                      for hook in LENS_POINTS}
for hook, m in logit_lens_metrics.items():
    print(f"{hook:26s} logit lens: KL {m['kl']:.3f} nats   top-1 agreement {m['top1']:.3f}")

# %% [markdown]
# ### 2.3 A tuned lens
#
# *Difficulty 3/5, about 25 minutes.* The logit lens assumes that an intermediate residual stream
# speaks the last layer's "language". The **tuned lens** (Belrose et al. 2023) learns, for each point,
# an affine translator `h -> h @ A.T + b` applied *before* the logit lens, trained to minimise
# `KL(P_final || P_lens)` averaged over tokens. Train one translator from residual vectors `resid`
# (one row per token) and the model's final logits at those tokens, for `steps` steps with learning
# rate `lr`, starting from the identity (`A = I`, `b = 0`: the logit lens) as in the paper. Any
# optimiser is fine (the reference uses Adam); the check judges your translator **on held-out
# documents it never saw**: its KL must beat the logit lens's and come close to the reference's.
#
# ```python
# def train_tuned_lens(model, resid: Float[Tensor, "n d_model"], final_logits: Float[Tensor, "n vocab"],
#                      steps: int, lr: float) -> tuple[Tensor, Tensor]
# ```
#
# returning `(A [d_model, d_model], b [d_model])`. (The paper parametrises the translator as
# `h + (h @ A'.T + b)` with `A'` starting at zero: the same family of maps.) Unlike the paper, we
# train on one point's tokens at a time with full batches, and without its learning-rate schedule.
#
# <details><summary>Hint 1 (the idea)</summary>The model's weights stay frozen; only `A` and `b` are
# leaves with `requires_grad`. Reuse `logit_lens` on `resid[:, None]` (a `pos` axis of length 1).</details>
#
# <details><summary>Hint 2 (the code)</summary>
#
# ```python
# with torch.enable_grad():
#     for _ in range(steps):
#         logp_lens = logit_lens(model, (resid @ A.T + b)[:, None])[:, 0].log_softmax(-1)
#         loss = (p_final * (logp_final - logp_lens)).sum(-1).mean()
#         opt.zero_grad(); loss.backward(); opt.step()
# ```
# </details>

# %% role="solution" grade_id="impl_train_tuned_lens"
def train_tuned_lens(model, resid: Float[Tensor, "n d_model"], final_logits: Float[Tensor, "n vocab"],
                     steps: int, lr: float) -> tuple[Tensor, Tensor]:
    ### BEGIN SOLUTION
    d = resid.shape[-1]
    A = torch.eye(d, requires_grad=True)
    b = torch.zeros(d, requires_grad=True)
    logp_final = final_logits.log_softmax(-1)
    p_final = logp_final.exp()
    opt = torch.optim.Adam([A, b], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            logp_lens = logit_lens(model, (resid @ A.T + b)[:, None])[:, 0].log_softmax(-1)
            loss = (p_final * (logp_final - logp_lens)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return A.detach(), b.detach()
    ### END SOLUTION


# %% role="test" grade_id="test_train_tuned_lens" points=2
check("probing.train_tuned_lens", train_tuned_lens)

# %% [markdown]
# One translator per point (the last point is the model's own output: nothing to translate), trained
# on the training documents' tokens and judged on the test documents':

# %%
train_mask = doc_mask & ~is_test_doc[:, None]
tuned_lens_metrics = {}
for hook in LENS_POINTS[:-1]:
    # every fourth training token (about 1300) is enough for 128 x 128 + 128 parameters, and 4x faster
    A, b = train_tuned_lens(lens_lm, lens_cache[hook][train_mask][::4], lens_logits[train_mask][::4], steps=150, lr=3e-3)
    tuned_lens_metrics[hook] = lens_metrics(logit_lens(lens_lm, lens_cache[hook] @ A.T + b), lens_logits, test_mask)
print(f"{'point':26s} {'logit lens KL':>14s} {'tuned lens KL':>14s} {'logit top-1':>12s} {'tuned top-1':>12s}")
for hook in LENS_POINTS[:-1]:
    lo, tu = logit_lens_metrics[hook], tuned_lens_metrics[hook]
    print(f"{hook:26s} {lo['kl']:14.3f} {tu['kl']:14.3f} {lo['top1']:12.3f} {tu['top1']:12.3f}")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
short = [h.replace("blocks.", "").replace("hook_resid_", "") for h in LENS_POINTS[:-1]]
for ax, key, title in zip(axes, ("kl", "top1"), ("KL(P_final || P_lens), nats", "top-1 agreement")):
    for name, results in (("logit lens", logit_lens_metrics), ("tuned lens", tuned_lens_metrics)):
        ax.plot(range(len(short)), [results[h][key] for h in LENS_POINTS[:-1]], marker="o", label=name)
    ax.set_xticks(range(len(short)), short)
    ax.set_title(title)
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# With the solution (test documents): the logit lens's KL falls from 5.265 nats at the embedding to
# 4.304, 2.848, 2.473, 0.789, 0.614, 0.070, 0.068 at the seven later intermediate points (top-1
# agreement 0.030, 0.057, 0.263, 0.372, 0.731, 0.767, 0.850, 0.856); its largest step is 1.68 nats,
# from `1.mid` to `1.post`. The tuned lens reaches 1.858, 0.761, 0.650, 0.152, 0.062, 0.034, 0.007,
# 0.004 (top-1 0.508, 0.705, 0.740, 0.841, 0.876, 0.897, 0.943, 0.959), better than the logit lens at
# every point, by a factor of 2.8 to 18.1 in KL.
# The MLP sublayers (`mid` -> `post`) account for most of the logit lens's fall, 3.75 of the 5.27
# nats (1.456 + 1.684 + 0.544 + 0.068), the attention sublayers for 1.51; layer 3 changes it little.
#
# **Questions.** The logit lens at the embedding is the model's "bigram guess" read through the final
# LayerNorm and unembedding: why can a translator improve it so much without any attention? Where
# does the tuned lens's gain shrink, and why must it be zero at the last point? The tuned lens can
# only *translate* what is there: which of the model's predictions (dialogue answers, induction
# copies) can no lens read at layer 0, and why?
#
# ## Part 3. Erasing a concept: amnesic probing with LEACE
#
# ### 3.1 The LEACE eraser
#
# *Difficulty 4/5, about 30 minutes.* If the model *uses* a linearly encoded variable, removing it
# should change the model's behaviour (Elazar et al. 2021). LEACE (Belrose et al. 2023) removes it in
# closed form: after the edit no linear classifier does better than a constant, and the edit is the
# smallest possible (in the whitened norm). With the class indicators `Z = one_hot(y)`, the
# covariance `S_xx` of `X` and the cross-covariance `S_xz` of `X` and `Z`:
#
# - `W = S_xx^{-1/2}` (symmetric inverse square root; its pseudo-inverse is `S_xx^{1/2}`),
# - `P` = the orthogonal projection onto the column space of `W @ S_xz`,
# - the eraser is `r(x) = x - (x - mean) @ M.T` with **`M = W⁺ @ P @ W`** and `mean` the mean of `X`.
#
# Return `(M, mean)` as float32. Rank conventions (these matter): treat eigenvalues of `S_xx` and
# singular values of `W @ S_xz` below `1e-6` times the largest as zero. `S_xz` has rank at most
# `C - 1` (the indicator columns sum to one), so a plain QR of it would add a spurious direction. The
# normalisation of the covariances (`n` or `n - 1`) does not change `M`.
#
# ```python
# def leace_eraser(X: Float[Tensor, "n d"], y: Int[Tensor, "n"], n_classes: int) -> tuple[Tensor, Tensor]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>Whiten, project out the whitened directions that
# covary with the classes, un-whiten. Compute in float64.</details>
#
# <details><summary>Hint 2 (the code)</summary>
#
# `evals, evecs = torch.linalg.eigh(S_xx)`; keep `evals > 1e-6 * evals.max()`;
# `W = evecs_k @ diag(evals_k ** -0.5) @ evecs_k.T`, `W_pinv` with `** 0.5`;
# `U, s, _ = torch.linalg.svd(W @ S_xz, full_matrices=False)`; `U_k = U[:, s > 1e-6 * s.max()]`;
# `P = U_k @ U_k.T`.
# </details>

# %% role="solution" grade_id="impl_leace_eraser"
def leace_eraser(X: Float[Tensor, "n d"], y: Int[Tensor, "n"], n_classes: int) -> tuple[Tensor, Tensor]:
    ### BEGIN SOLUTION
    X64 = X.double()
    mean = X64.mean(0)
    Xc = X64 - mean
    Z = F.one_hot(y, n_classes).double()
    S_xx = Xc.T @ Xc / len(X)
    S_xz = Xc.T @ (Z - Z.mean(0)) / len(X)
    evals, evecs = torch.linalg.eigh(S_xx)
    keep = evals > 1e-6 * evals.max()
    V, lam = evecs[:, keep], evals[keep]
    W = V @ torch.diag(lam ** -0.5) @ V.T
    W_pinv = V @ torch.diag(lam ** 0.5) @ V.T
    U, s, _ = torch.linalg.svd(W @ S_xz, full_matrices=False)
    U = U[:, s > 1e-6 * s.max()]
    M = W_pinv @ (U @ U.T) @ W
    return M.float(), mean.float()
    ### END SOLUTION


# %% role="test" grade_id="test_leace_eraser" points=2
check("probing.leace_eraser", leace_eraser)

# %% [markdown]
# ### 3.2 Running the model without the concept
#
# *Difficulty 2/5, about 15 minutes.* Apply an eraser `r(x) = x - (x - mean) @ M.T` to the activation
# at one hook, at the positions where `positions` is True only, and return the model's logits.
#
# ```python
# def erased_logits(model, tokens: Int[Tensor, "n pos"], hook_name: str, M: Float[Tensor, "d d"],
#                   mean: Float[Tensor, "d"], positions: Bool[Tensor, "n pos"]) -> Float[Tensor, "n pos vocab"]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>A forward hook that returns the edited activation,
# `torch.where` on the mask.</details>
#
# <details><summary>Hint 2 (the code)</summary>
#
# `model.run_with_hooks(tokens, fwd_hooks=[(hook_name, fn)])` with
# `fn = lambda act, hook: torch.where(positions[..., None], act - (act - mean) @ M.T, act)`.
# </details>

# %% role="solution" grade_id="impl_erased_logits"
def erased_logits(model, tokens: Int[Tensor, "n pos"], hook_name: str, M: Float[Tensor, "d d"],
                  mean: Float[Tensor, "d"], positions: Bool[Tensor, "n pos"]) -> Float[Tensor, "n pos vocab"]:
    ### BEGIN SOLUTION
    def erase(activation: Tensor, hook) -> Tensor:
        return torch.where(positions[..., None], activation - (activation - mean) @ M.T, activation)

    return model.run_with_hooks(tokens, fwd_hooks=[(hook_name, erase)])
    ### END SOLUTION


# %% role="test" grade_id="test_erased_logits" points=1
check("probing.erased_logits", erased_logits)

# %% [markdown]
# Erase the persona (child, expert, assistant) at the `?` that ends a dialogue question, with an
# eraser fitted on 300 dialogues, and look at 64 dialogues ending in a hard question (half spoken by
# the child, half by the expert): does the child still refuse, does the expert still answer? Two controls: an eraser
# fitted on *random* labels (same rank, nothing to do with the persona), and the same erasure at a
# point where the persona has not reached the `?` yet.

# %%
fit_tokens, fit_at, fit_persona = dialogue_question_marks(world, 300, rng=5)
pairs = persona_swap_pairs(world, 64, rng=6)  # base: child or expert on a hard question, ending at "?"
at_question = torch.arange(pairs.base.shape[1])[None] == pairs.base_at[:, None]
is_child = torch.tensor([p == "child" for p in pairs.base_persona])
random_persona = fit_persona[torch.randperm(len(fit_persona), generator=torch.Generator().manual_seed(2))]
amnesic = {}
for hook in ("blocks.0.hook_resid_post", "blocks.1.hook_resid_mid"):
    _, fit_cache = lm.run_with_cache(fit_tokens, names_filter=[hook])
    X_fit = last_logits(fit_cache[hook], fit_at)
    for name, target in (("persona", fit_persona), ("random labels", random_persona)):
        M, mean = leace_eraser(X_fit, target, 3)
        erased_X = X_fit - (X_fit - mean) @ M.T
        W, b = fit_probe(erased_X, fit_persona, 3, L2)  # can a fresh probe still find the persona?
        probs = last_logits(erased_logits(lm, pairs.base, hook, M, mean, at_question), pairs.base_at).softmax(-1)
        p_base = probs[torch.arange(len(pairs)), pairs.base_token]
        amnesic[hook, name] = {
            "probe_after": float(((erased_X @ W.T + b).argmax(-1) == fit_persona).float().mean()),
            "child_refuses": float(p_base[is_child].mean()), "expert_answers": float(p_base[~is_child].mean())}
clean_probs = last_logits(lm(pairs.base), pairs.base_at).softmax(-1)[torch.arange(len(pairs)), pairs.base_token]
print(f"clean model: P(child says 'i') {float(clean_probs[is_child].mean()):.3f}, "
      f"P(expert says the answer) {float(clean_probs[~is_child].mean()):.3f}")
for (hook, name), r in amnesic.items():
    print(f"{hook:26s} erase {name:14s}: persona probe after erasure {r['probe_after']:.3f} (chance 0.333); "
          f"P(child 'i') {r['child_refuses']:.3f}; P(expert answer) {r['expert_answers']:.3f}")

# %% [markdown]
# With the solution: after erasure at either point a fresh probe finds nothing (0.333, chance), while
# the random-label eraser leaves the persona readable (0.907 and 1.000). Erasing at
# `blocks.0.hook_resid_post` changes no behaviour (P(child says `i`) 1.000, P(expert answers) 1.000):
# layer 1's attention fetches the persona from earlier positions, not from the `?` itself. Erasing
# after layer 1's attention (`blocks.1.hook_resid_mid`) halves the expert's answer (P 0.548) while
# the child still refuses (1.000). Erasure is not a neutral "unknown persona": it moves every
# activation to the classes' mean along the erased directions, and what the model does there is itself
# a result (here: refuse, or hesitate). The random-label eraser of the same rank changes nothing (0.999).

# %% [markdown] role="locked" grade_id="question_erasure_fair"
# **Questions.** The probe accuracy after erasure is measured on the data the eraser was fitted on:
# why is that a fair test *of the eraser* but not of what a nonlinear reader could still find? Why
# does erasing at `blocks.0.hook_resid_post` at the `?` change nothing, although a probe may decode
# something there? Elazar et al. compare with removing the same number of random directions: what
# does the random-label control add?
#
# *Answer in the cell below (graded by hand, 2 points).*
# ### BEGIN MARK SCHEME
# **Mark scheme (instructors only).**
# - 1 point: linear guarantee on the fitted data; nonlinear information can remain.
# - 1 point: why erasing at layer 0 at `?` has no effect, or what the random-directions control rules out.
# ### END MARK SCHEME

# %% [markdown] role="answer" grade_id="answer_erasure_fair" points=2
# LEACE guarantees that no *linear* classifier does better than constant on the data it was fitted on, so a linear probe there tests the eraser's promise; a nonlinear reader can still find the concept. At blocks.0.hook_resid_post at the `?`, the persona has not been moved to the `?` yet, so the model's later computation does not read it there: erasing changes nothing downstream even if a probe decodes something weak. Removing the same number of random directions controls for damage from removing any directions at all.

# %% [markdown]
# ## Part 4. Interchange interventions
#
# ### 4.1 Swapping an activation between two runs
#
# *Difficulty 2/5, about 20 minutes.* An **interchange intervention** runs the model on a *base*
# input while setting one activation to the value it takes on a *source* input. Here: at `hook_name`,
# the base run's activation at position `base_at[i]` is replaced by the source run's activation at
# `source_at[i]` (pair `i`), and the base run continues. With `basis` (`k` orthonormal rows) only the
# component in that subspace is swapped:
# `h_base + (h_source - h_base) @ basis.T @ basis`; without it (`None`) the whole vector is swapped.
# Return the **base** run's logits.
#
# ```python
# def interchange_logits(model, base: Int[Tensor, "n pos"], source: Int[Tensor, "n pos2"],
#                        base_at: Int[Tensor, "n"], source_at: Int[Tensor, "n"], hook_name: str,
#                        basis: Float[Tensor, "k d_model"] | None = None) -> Float[Tensor, "n pos vocab"]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>Two passes: cache the source, then run the base with a
# hook that edits one row per prompt.</details>
#
# <details><summary>Hint 2 (the code)</summary>
#
# ```python
# _, cache = model.run_with_cache(source, names_filter=[hook_name])
# src = cache[hook_name][torch.arange(n), source_at]
# def patch(act, hook):
#     act = act.clone(); old = act[torch.arange(n), base_at]
#     act[torch.arange(n), base_at] = src if basis is None else old + (src - old) @ basis.T @ basis
#     return act
# ```
# </details>

# %% role="solution" grade_id="impl_interchange_logits"
def interchange_logits(model, base: Int[Tensor, "n pos"], source: Int[Tensor, "n pos2"],
                       base_at: Int[Tensor, "n"], source_at: Int[Tensor, "n"], hook_name: str,
                       basis: Float[Tensor, "k d_model"] | None = None) -> Float[Tensor, "n pos vocab"]:
    ### BEGIN SOLUTION
    rows = torch.arange(len(base))
    _, cache = model.run_with_cache(source, names_filter=[hook_name])
    source_act = cache[hook_name][rows, source_at]

    def patch(activation: Tensor, hook) -> Tensor:
        activation = activation.clone()
        old = activation[rows, base_at]
        new = source_act if basis is None else old + (source_act - old) @ basis.T @ basis
        activation[rows, base_at] = new
        return activation

    return model.run_with_hooks(base, fwd_hooks=[(hook_name, patch)])
    ### END SOLUTION


# %% role="test" grade_id="test_interchange_logits" points=1
check("probing.interchange_logits", interchange_logits)

# %% [markdown]
# ### 4.2 Interchange-intervention accuracy
#
# *Difficulty 1/5, about 10 minutes.* The causal model says: "the persona decides refusal". If a
# location holds the persona, swapping it in from the source makes the base behave as the source's
# persona would on the **base's** question: the `counterfactual` token (the child's `i`, or the first
# word of the expert's answer to the base question). IIA is the fraction of pairs whose intervened
# arg-max prediction at `base_at` is the counterfactual token.
#
# ```python
# def interchange_accuracy(model, base: Int[Tensor, "n pos"], source: Int[Tensor, "n pos2"],
#                          base_at: Int[Tensor, "n"], source_at: Int[Tensor, "n"], hook_name: str,
#                          counterfactual: Int[Tensor, "n"], basis: Float[Tensor, "k d_model"] | None = None) -> float
# ```
#
# <details><summary>Hint 1 (the idea)</summary>Read the prediction where the base prompt ends, not in
# its padding.</details>
#
# <details><summary>Hint 2 (the code)</summary>`float((last_logits(logits, base_at).argmax(-1) == counterfactual).float().mean())`</details>

# %% role="solution" grade_id="impl_interchange_accuracy"
def interchange_accuracy(model, base: Int[Tensor, "n pos"], source: Int[Tensor, "n pos2"],
                         base_at: Int[Tensor, "n"], source_at: Int[Tensor, "n"], hook_name: str,
                         counterfactual: Int[Tensor, "n"], basis: Float[Tensor, "k d_model"] | None = None) -> float:
    ### BEGIN SOLUTION
    logits = interchange_logits(model, base, source, base_at, source_at, hook_name, basis)
    return float((last_logits(logits, base_at).argmax(-1) == counterfactual).float().mean())
    ### END SOLUTION


# %% role="test" grade_id="test_interchange_accuracy" points=1
check("probing.interchange_accuracy", interchange_accuracy)

# %% [markdown]
# IIA of the persona at every point, swapping the whole residual vector, at two positions: the `?`
# where the answer is decided, and the persona token itself (position 1). Source and base ask the
# **same** question here (a whole vector carries the question too), each after its own context.

# %%
same_q = persona_swap_pairs(world, 64, rng=7, same_question=True)
persona_position = torch.ones(len(same_q), dtype=torch.long)
iia_full = {}
for hook in RESID_POINTS:
    iia_full[hook, "?"] = interchange_accuracy(lm, same_q.base, same_q.source, same_q.base_at, same_q.source_at,
                                               hook, same_q.counterfactual)
    # swapped at the persona token, read (as always) at the base's "?"
    swapped = interchange_logits(lm, same_q.base, same_q.source, persona_position, persona_position, hook)
    iia_full[hook, "persona token"] = float((last_logits(swapped, same_q.base_at).argmax(-1) == same_q.counterfactual).float().mean())
    print(f"{hook:26s} IIA at '?' {iia_full[hook, '?']:.3f}   at the persona token {iia_full[hook, 'persona token']:.3f}")

# %% [markdown]
# With the solution: at the `?`, IIA is 0.016, 0.000 and 0.000 at layer 0's three points and 1.000
# from `blocks.1.hook_resid_mid` on: layer 1's attention brings the persona to the `?`. At the persona
# token, IIA is 1.000 at the embedding, only 0.188 after layer 0's attention and after layer 0, and
# 0.000 at layer 1's points.
#
# ### Decodable is not used
#
# Now the planted case. At `blocks.1.hook_resid_post`, the persona token's own residual vector
# (position 1) holds the persona perfectly: a probe reads it without error. Does the model use it?

# %%
planted_hook = "blocks.1.hook_resid_post"
_, planted_cache = lm.run_with_cache(fit_tokens, names_filter=[planted_hook])
X_planted = planted_cache[planted_hook][:, 1]
train_rows = torch.arange(len(X_planted)) < 200
W_pl, b_pl = fit_probe(X_planted[train_rows], fit_persona[train_rows], 3, L2)
planted_probe = float(((X_planted[~train_rows] @ W_pl.T + b_pl).argmax(-1) == fit_persona[~train_rows]).float().mean())
print(f"probe for the persona at position 1, {planted_hook}: test accuracy {planted_probe:.3f}")
print(f"IIA of the persona swapped there: {iia_full[planted_hook, 'persona token']:.3f}; "
      f"at the '?' of the same point: {iia_full[planted_hook, '?']:.3f}")

# %% [markdown]
# With the solution: the probe reads the persona at position 1 of `blocks.1.hook_resid_post` with
# test accuracy **1.000**, and swapping that vector between child and expert dialogues gives IIA
# **0.000**: the model's answer never changes. Nothing after the last attention layer can move
# information between positions, so what sits at position 1 there is decodable and causally inert for
# the prediction at the `?`. The same point at the `?` gives IIA 1.000. Decodability is a property of
# the activation; use is a property of the computation that reads it.
#
# **Questions.** Why can nothing written at position 1 after the last attention layer reach the `?`?
# Which points and positions have high probe accuracy *and* high IIA, and which only one of the two?
# The persona token's embedding gives IIA 1 when swapped, but after layer 0 the same swap at that
# position fails: where else is the persona by then (hint: which token follows the persona, and what
# does layer 0's attention do)?
#
# ## Part 5. Distributed alignment search
#
# ### 5.1 Learning the persona's direction
#
# *Difficulty 4/5, about 35 minutes.* A whole residual vector carries every variable at once, so a
# full swap between dialogues with different questions would move the question too. DAS (Geiger et
# al. 2023) looks for a **subspace** whose interchange implements the variable: here one direction
# `v` (`basis = v[None] / |v|`), trained so that the interchanged base predicts the counterfactual
# token, minimising the cross-entropy of `counterfactual` at `base_at` under the 1-D interchange. The
# model is frozen; only `v` is trained. Start from a random vector drawn with
# `torch.Generator().manual_seed(seed)`, use `steps` steps of Adam (or anything else) with learning
# rate `lr`, and return the **unit** direction. The check measures the IIA of your direction on
# held-out pairs (other questions, other contexts) and compares it with the reference's.
#
# ```python
# def train_das(model, base: Int[Tensor, "n pos"], source: Int[Tensor, "n pos2"], base_at: Int[Tensor, "n"],
#               source_at: Int[Tensor, "n"], hook_name: str, counterfactual: Int[Tensor, "n"],
#               steps: int, lr: float, seed: int) -> Float[Tensor, "d_model"]
# ```
#
# The paper learns an orthogonal rotation and keeps its first rows; for one dimension this is a unit
# vector, which we parametrise directly.
#
# <details><summary>Hint 1 (the idea)</summary>The source activations do not depend on `v`: cache them
# once. Each step runs the base with a hook that swaps the component along `v / |v|`.</details>
#
# <details><summary>Hint 2 (the code)</summary>
#
# ```python
# v = torch.randn(d, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)
# with torch.enable_grad():
#     for _ in range(steps):
#         u = v / v.norm()
#         def patch(act, hook):
#             act = act.clone(); old = act[rows, base_at]
#             act[rows, base_at] = old + ((src - old) @ u)[:, None] * u
#             return act
#         logits = model.run_with_hooks(base, fwd_hooks=[(hook_name, patch)])[rows, base_at]
#         loss = F.cross_entropy(logits, counterfactual); opt.zero_grad(); loss.backward(); opt.step()
# ```
# </details>

# %% role="solution" grade_id="impl_train_das"
def train_das(model, base: Int[Tensor, "n pos"], source: Int[Tensor, "n pos2"], base_at: Int[Tensor, "n"],
              source_at: Int[Tensor, "n"], hook_name: str, counterfactual: Int[Tensor, "n"],
              steps: int, lr: float, seed: int) -> Float[Tensor, "d_model"]:
    ### BEGIN SOLUTION
    rows = torch.arange(len(base))
    _, cache = model.run_with_cache(source, names_filter=[hook_name])
    source_act = cache[hook_name][rows, source_at]
    v = torch.randn(source_act.shape[-1], generator=torch.Generator().manual_seed(seed)).requires_grad_(True)
    opt = torch.optim.Adam([v], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            u = v / v.norm()

            def patch(activation: Tensor, hook) -> Tensor:
                activation = activation.clone()
                old = activation[rows, base_at]
                activation[rows, base_at] = old + ((source_act - old) @ u)[:, None] * u
                return activation

            logits = model.run_with_hooks(base, fwd_hooks=[(hook_name, patch)])[rows, base_at]
            loss = F.cross_entropy(logits, counterfactual)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (v / v.norm()).detach()
    ### END SOLUTION


# %% role="test" grade_id="test_train_das" points=2
check("probing.train_das", train_das)

# %% [markdown]
# DAS at the `?` after layer 1's attention, trained on 64 pairs with *different* questions, and
# tested on 64 fresh pairs. Three other one-dimensional subspaces are tried with the same
# interchange: the probe's direction (a child-vs-expert probe at that point, its weight difference),
# the CAA vector of the steering assignment (mean expert activation minus mean child activation over
# contrast pairs), and a random direction.

# %%
das_hook = "blocks.1.hook_resid_mid"
das_train, das_test = persona_swap_pairs(world, 64, rng=8), persona_swap_pairs(world, 64, rng=9)
das_direction = train_das(lm, das_train.base, das_train.source, das_train.base_at, das_train.source_at, das_hook,
                          das_train.counterfactual, steps=40, lr=0.05, seed=0)

rng = np.random.default_rng(0)
caa_pairs = [persona_pair(rng, world, "expert", "child", hard_questions(world)) for _ in range(64)]
expert_tokens, expert_at = prompt_tokens(world, [e for e, _ in caa_pairs])
child_tokens, child_at = prompt_tokens(world, [c for _, c in caa_pairs])
_, expert_cache = lm.run_with_cache(expert_tokens, names_filter=[das_hook])
_, child_cache = lm.run_with_cache(child_tokens, names_filter=[das_hook])
expert_acts, child_acts = last_logits(expert_cache[das_hook], expert_at), last_logits(child_cache[das_hook], child_at)
caa_direction = expert_acts.mean(0) - child_acts.mean(0)
W_pe, _ = fit_probe(torch.cat([child_acts, expert_acts]), torch.tensor([0] * 64 + [1] * 64), 2, L2)
probe_direction = W_pe[1] - W_pe[0]
random_direction = torch.randn(lm.cfg.d_model, generator=torch.Generator().manual_seed(3))
directions = {"DAS": das_direction, "probe": probe_direction, "CAA": caa_direction, "random": random_direction}
units = {name: v / v.norm() for name, v in directions.items()}
for name, u in units.items():
    iia = interchange_accuracy(lm, das_test.base, das_test.source, das_test.base_at, das_test.source_at, das_hook,
                               das_test.counterfactual, basis=u[None])
    print(f"{name:7s} direction: IIA on held-out pairs {iia:.3f}")
print(f"full vector (moves the question too): IIA {interchange_accuracy(lm, das_test.base, das_test.source, das_test.base_at, das_test.source_at, das_hook, das_test.counterfactual):.3f}")
names = list(units)
cosines = torch.stack([units[a] for a in names]) @ torch.stack([units[a] for a in names]).T
heatmap(cosines.abs(), title="|cosine| between the directions", xticklabels=names, yticklabels=names)
plt.show()
for i, a in enumerate(names):
    print(f"|cosine| {a:7s}", "  ".join(f"{b}: {float(cosines[i, j].abs()):.3f}" for j, b in enumerate(names) if j > i))

# Steering along each direction (as in the steering assignment, at the `?` of the hard-question
# dialogues only): see the text below.
child_base = ~torch.tensor([p == "expert" for p in das_test.base_persona])
child_prompts, child_prompt_at = das_test.base[child_base], das_test.base_at[child_base]
answer_token = das_test.counterfactual[child_base]
child_positions = torch.arange(child_prompts.shape[1])[None] == child_prompt_at[:, None]
for name, u in units.items():
    u = u * torch.sign((expert_acts.mean(0) - child_acts.mean(0)) @ u)
    gap = float((expert_acts.mean(0) - child_acts.mean(0)) @ u)
    steered = lm.run_with_hooks(child_prompts, fwd_hooks=[(das_hook, lambda act, hook, u=u, gap=gap:
                                                            act + gap * child_positions[..., None] * u)])
    p_answer = last_logits(steered, child_prompt_at).softmax(-1)[torch.arange(len(answer_token)), answer_token]
    print(f"steer along {name:7s} (gap {gap:6.2f}): P(child answers) {float(p_answer.mean()):.3f}")

# %% [markdown]
# The second part of the cell steers the child along each direction (as in the steering assignment,
# at the `?` of the hard-question dialogues only): the child gets `s * u` added, where `u` is the unit
# direction (signed so that it points from child to expert) and `s` is the gap between the mean expert
# and mean child activations along `u`, so each direction moves the child as far as the expert is
# *along that direction*.
#
# With the solution, on 64 held-out pairs with different questions: IIA **1.000** for the DAS
# direction (trained on 64 other pairs), 0.953 for the probe's direction, 1.000 for CAA's, 0.000 for
# a random direction, and 0.594 for the whole vector (which moves the source's question along with
# its persona). |cosine|: DAS-probe 0.726, DAS-CAA 0.756, probe-CAA 0.945 (random-anything below
# 0.05). Steering the child along each direction by the expert-child gap gives P(answer) 0.994
# (DAS, gap 15.1), 0.935 (probe, 18.9), 1.000 (CAA, 20.0) and 0.000 (random, 0.4). The DAS direction
# is about 40 degrees from both the probe and CAA directions (which are 19 degrees apart), yet all
# three swap the persona almost perfectly: an IIA of 1 does not single out one direction here.
#
# **Questions.** DAS, the probe and CAA answer three different questions: which direction *carries*
# the variable causally, which *separates* the classes best (for a regularised linear classifier),
# which is the *mean difference*. Why can the probe direction separate perfectly yet swap badly?
# Makelov et al. (2023) show that a 1-D subspace can reach high IIA through a direction the model does
# not otherwise use (an "interpretability illusion"): what would you check to rule that out here
# (hint: the component of the DAS direction in the null space of what the next layer reads)?
#
# ## Open questions and further reading
#
# - Even `toyworld-lm-4l` makes every step of the lens a whole sublayer; a real model has dozens of
#   layers, and Belrose et al. use the trajectory of tuned-lens predictions to detect prompt
#   injection. At which of the eight points does the child's `i` (refusing a hard question) become
#   the lens's top-1 prediction at the `?`, and is it the same point for the expert's answer?
# - Probes with more capacity (an MLP) decode more and select less. Pimentel et al. (2020),
#   [*Information-Theoretic Probing for Linguistic Structure*](https://arxiv.org/abs/2004.03061),
#   argue for the opposite reading of selectivity: discuss.
# - LEACE erases linear information only. Ravfogel et al. (2020), [*Null It Out*](https://arxiv.org/abs/2004.07667)
#   (iterative nullspace projection) and Ravfogel et al. (2022), [*Linear Adversarial Concept Erasure*](https://arxiv.org/abs/2201.12091)
#   are alternatives; how would you test for nonlinear residue?
# - Causal abstraction beyond one variable: Geiger et al. (2024), [*Causal Abstraction: A Theoretical
#   Foundation for Mechanistic Interpretability*](https://arxiv.org/abs/2301.04709); boundless DAS
#   (Wu et al. 2023, [*Interpretability at Scale*](https://arxiv.org/abs/2305.08809)) learns the subspace
#   size as well. Which variables of the toy world (difficulty, the answer itself) could you align,
#   and where?
# - Do the same analysis on a real model: `pyvene` (Wu et al. 2024) implements interchange
#   interventions and DAS for Hugging Face models; the `tuned-lens` package ships trained lenses.
