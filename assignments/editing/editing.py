# %% [markdown]
# # Where facts live, and how to edit one: causal tracing and ROME
#
# A language model that completes `the capital of zorbia is` with `velmar` has stored that fact
# somewhere in its weights. **Causal tracing** finds *where the fact is read out*: corrupt the
# subject so the model no longer knows which country is meant, then restore one hidden state at a
# time from the clean run and see which restorations bring the answer back. **ROME** (rank-one model
# editing) then changes the fact with the smallest possible edit: one rank-one update of one MLP's
# output weights, which maps the country's *key* to a new *value*. In this notebook you do both on a
# small model of the toy world, and measure what the edit does beyond the one sentence it was made
# for: other phrasings of the same question, and the facts of other countries.
#
# **After this notebook you will be able to**
#
# - run causal tracing: add noise to the subject's embedding, restore the residual stream, the MLP
#   output or the attention output at one layer and position, and map the indirect effect of every
#   state;
# - read a trace: which layer and position carry the fact, and how that differs from the picture
#   in the ROME paper;
# - write ROME's rank-one update from its defining equation: the key's second moment estimated on a
#   corpus, the key of the fact, a value found by optimisation, and the closed-form update;
# - evaluate an edit the way the paper does (efficacy, generalisation to paraphrases, specificity
#   on neighbouring facts) and compare it with fine-tuning the same weights, with and without a
#   norm constraint.
#
# **Read first** (about two hours):
#
# 1. Meng, Bau, Andonian and Belinkov (2022), [*Locating and Editing Factual Associations in GPT*](https://arxiv.org/abs/2202.05262):
#    sections 2 (causal tracing) and 3 (ROME), and appendix B (the covariance and the value's optimisation).
# 2. Geva, Schuster, Berant and Levy (2021), [*Transformer Feed-Forward Layers Are Key-Value Memories*](https://arxiv.org/abs/2012.14913):
#    the view of an MLP that ROME edits.
# 3. Hase, Bansal, Kim and Ghandeharioun (2023), [*Does Localization Inform Editing?*](https://arxiv.org/abs/2301.04213):
#    why the layer a trace points to is not always the best layer to edit.
# 4. Zhang and Nanda (2024), [*Towards Best Practices of Activation Patching*](https://arxiv.org/abs/2309.16042):
#    Gaussian noise against other corruptions, and which metric to patch.
#
# **The model.** `toyworld-lm` from the InterpLab zoo, a 2-layer TransformerLens `HookedTransformer`
# (d_model 128, d_mlp 512, LayerNorm, GELU MLPs) trained on the *toy world* (`interplab.toyworld`).
# The world has 20 invented countries with invented capitals, stated in narrative text
# (`the capital of zorbia is velmar .`) and asked in dialogues (`expert : what is the capital of zorbia ? velmar .`).
# The model recalls all 20 in both forms. Every prompt here starts with `<bos>`; the prompts of one
# batch have the same length (no padding), so each answer is read at the **last position**.
#
# **Where our method differs from the paper** (each point is taken up where it matters):
# the model has 2 layers, not 48, so the trace is over 2 layers and we restore single states, not
# windows of 10 layers; the noise is 3 standard deviations of the token embeddings (the paper uses
# 3 standard deviations of the subject embeddings over a corpus); the key covariance is estimated on
# toy-world documents (the paper uses 100 000 Wikipedia samples); the value is found by minimising
# the new answer's loss alone, stopping as soon as a target probability is reached (the paper adds
# a KL term on "is a" prompts and clamps the change's norm); and, most important, the trace of this
# model points at the **last** token, not the subject's last token, so that is where we read the key.
#
# **How the checks work.** Each exercise ends with `check("editing.<name>", your_function)`, which
# runs your function on freshly generated inputs (other countries, contexts, noise, layers) and
# compares with the reference. When your answer matches a known mistake, the check names it.
# What counts as the same answer: a torch tensor or a numpy array; for a single number, a 0-d
# tensor, a NumPy scalar or a Python float; float64 where float32 is expected (held to the float32
# tolerance). A less precise dtype fails with a message naming the dtype to return. Two exercises
# that optimise are judged by what their result does (stated in the exercise), not by closeness.

# %% role="locked" grade_id="setup"
import matplotlib.pyplot as plt
import numpy as np
import torch
from jaxtyping import Float, Int, Bool
from torch import Tensor

from interplab import check, zoo
from interplab.editing import CONTEXTS, capital_ids, counterfactual, fact_batch, fact_prompt, paraphrases, with_mlp_out
from interplab.toyworld import COUNTRIES, ToyWorld

torch.set_num_threads(1)  # small tensors: more threads only add overhead on a shared machine
torch.set_grad_enabled(False)  # the two exercises that optimise switch gradients on inside themselves
world = ToyWorld()
vocab = world.tokenizer.index
lm = zoo.load("toyworld-lm")
N_LAYERS = lm.cfg.n_layers
NOISE_STD = 3 * float(lm.W_E.detach().std())  # ROME's noise level: 3 standard deviations of the embeddings
KINDS = ("resid_post", "mlp_out", "attn_out")  # blocks.{layer}.hook_{kind}: the states we restore
EDIT_LAYER = 0  # the MLP that ROME edits in Part 2: the largest MLP effect of the trace (checked in 1.3)


def answer_probs(logits: Float[Tensor, "n pos vocab"], answer: Int[Tensor, "n"]) -> Float[Tensor, "n"]:
    """P(answer) at the last position of each prompt."""
    return logits[:, -1].softmax(-1)[torch.arange(len(answer)), answer]


def draw_noise(n_samples: int, tokens: Int[Tensor, "n pos"], seed: int) -> Float[Tensor, "samples n pos d_model"]:
    """Gaussian noise of ROME's scale for every sample, prompt and position (seeded)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_samples, *tokens.shape, lm.cfg.d_model, generator=g) * NOISE_STD


def batch_of(prompts: list[str]) -> Int[Tensor, "n pos"]:
    """Tokens of prompts of one length."""
    return fact_batch(world, prompts)[0]


fact_tokens, subject_mask = fact_batch(world, [fact_prompt(c) for c in COUNTRIES])
true_capital = capital_ids(world, COUNTRIES)
noise = draw_noise(5, fact_tokens, seed=0)
clean_p = answer_probs(lm(fact_tokens), true_capital)
print(f"toyworld-lm: {N_LAYERS} layers, d_mlp {lm.cfg.d_mlp}; noise std {NOISE_STD:.3f}")
print(f"'{fact_prompt(COUNTRIES[0])}' -> {world.tokenizer.vocab[int(lm(fact_tokens[:1])[0, -1].argmax())]}; "
      f"mean P(true capital) over the 20 countries {float(clean_p.mean()):.4f}")

# %% [markdown]
# ## Part 1. Causal tracing
#
# ### 1.1 The corrupted run
#
# *Difficulty 2/5, about 15 minutes.* Causal tracing starts from a run where the model no longer
# knows the subject: add Gaussian noise to the **token embedding** (`hook_embed`, before the
# positional embedding is added) at the subject's positions (`subject_mask`), and nowhere else.
# Each of the `samples` noise draws gives one corrupted run of the whole batch; return
# P(answer) at the last position, **averaged over the samples**, for each prompt.
#
# ```python
# def corrupted_probs(model, tokens: Int[Tensor, "n pos"], subject_mask: Bool[Tensor, "n pos"],
#                     noise: Float[Tensor, "samples n pos d_model"], answer: Int[Tensor, "n"],
#                     extra_hooks: list = ()) -> Float[Tensor, "n"]
# ```
#
# `extra_hooks` are further `(hook_name, function)` pairs to run in the corrupted runs, on top of
# the corruption (empty here; in 1.2 you pass the restoring hook). Run all the samples in one
# batch, sample by sample: row `s * n + i` of the batch is prompt `i` under noise sample `s`.
#
# <details><summary>Hint 1: the idea</summary>
#
# Repeat the tokens `samples` times along the batch, flatten the noise the same way, zero it where
# the mask is False, and add it in a hook on `hook_embed`.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `tokens.repeat(samples, 1)`; `(noise * subject_mask[None, ..., None]).flatten(0, 1)`;
# `model.run_with_hooks(repeated, fwd_hooks=[("hook_embed", lambda x, hook: x + added), *extra_hooks])`;
# then `answer_probs(logits, answer.repeat(samples)).view(samples, n).mean(0)`.
# </details>

# %% role="solution" grade_id="impl_corrupted_probs"
def corrupted_probs(model, tokens: Int[Tensor, "n pos"], subject_mask: Bool[Tensor, "n pos"],
                    noise: Float[Tensor, "samples n pos d_model"], answer: Int[Tensor, "n"],
                    extra_hooks: list = ()) -> Float[Tensor, "n"]:
    ### BEGIN SOLUTION
    samples, n = noise.shape[0], len(tokens)
    added = (noise * subject_mask[None, ..., None]).flatten(0, 1)
    logits = model.run_with_hooks(tokens.repeat(samples, 1),
                                  fwd_hooks=[("hook_embed", lambda x, hook: x + added), *extra_hooks])
    return answer_probs(logits, answer.repeat(samples)).view(samples, n).mean(0)
    ### END SOLUTION


# %% role="test" grade_id="test_corrupted_probs" points=1
check("editing.corrupted_probs", corrupted_probs)

# %%
corrupt_p = corrupted_probs(lm, fact_tokens, subject_mask, noise, true_capital)
print(f"mean P(true capital): clean {float(clean_p.mean()):.4f}, subject corrupted {float(corrupt_p.mean()):.4f} "
      f"(chance among the 20 capitals 0.05)")

# %% [markdown]
# With the country's embedding drowned in noise, the probability of the right capital falls from
# nearly 1 to about 0.15 (still above chance: the noise does not erase every trace of the country). The gap between the two numbers is the **total effect** of the subject; causal tracing
# asks which single hidden state, put back to its clean value, recovers that gap.
#
# ### 1.2 Restoring one state
#
# *Difficulty 2/5, about 15 minutes.* Run the model cleanly and record the activation at
# `hook_name`; then run the corrupted runs of 1.1 with that activation **restored to its clean value
# at position `position` only** (every prompt, every noise sample). Return P(answer) averaged over the
# samples, for each prompt.
#
# ```python
# def restored_probs(model, tokens: Int[Tensor, "n pos"], subject_mask: Bool[Tensor, "n pos"],
#                    noise: Float[Tensor, "samples n pos d_model"], answer: Int[Tensor, "n"],
#                    hook_name: str, position: int) -> Float[Tensor, "n"]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# One clean run with a cache; a hook that overwrites column `position` of the activation with the
# clean one (repeated for the samples), passed to your `corrupted_probs` as an extra hook.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `_, cache = model.run_with_cache(tokens, names_filter=[hook_name])`;
# `clean = cache[hook_name][:, position].repeat(samples, 1)`; in the hook, `x = x.clone()`,
# `x[:, position] = clean`, return `x`.
# </details>

# %% role="solution" grade_id="impl_restored_probs"
def restored_probs(model, tokens: Int[Tensor, "n pos"], subject_mask: Bool[Tensor, "n pos"],
                   noise: Float[Tensor, "samples n pos d_model"], answer: Int[Tensor, "n"],
                   hook_name: str, position: int) -> Float[Tensor, "n"]:
    ### BEGIN SOLUTION
    _, cache = model.run_with_cache(tokens, names_filter=[hook_name])
    clean = cache[hook_name][:, position].repeat(noise.shape[0], 1)

    def restore(x, hook):
        x = x.clone()
        x[:, position] = clean
        return x

    return corrupted_probs(model, tokens, subject_mask, noise, answer, extra_hooks=[(hook_name, restore)])
    ### END SOLUTION


# %% role="test" grade_id="test_restored_probs" points=1
check("editing.restored_probs", restored_probs)

# %% [markdown]
# ### 1.3 The trace
#
# *Difficulty 1/5, about 10 minutes.* The **indirect effect** of a state is
# P(answer | corrupted, that state restored) − P(answer | corrupted). For one kind of state
# (`kind` in `KINDS`: the hook `blocks.{layer}.hook_{kind}`), return the indirect effect of every
# layer and position, **averaged over the prompts**.
#
# ```python
# def causal_trace(model, tokens: Int[Tensor, "n pos"], subject_mask: Bool[Tensor, "n pos"],
#                  noise: Float[Tensor, "samples n pos d_model"], answer: Int[Tensor, "n"],
#                  kind: str) -> Float[Tensor, "layer pos"]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# One corrupted baseline, then one restored run per (layer, position).
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `base = corrupted_probs(...)`; for each layer and position,
# `(restored_probs(..., f"blocks.{layer}.hook_{kind}", pos) - base).mean()`.
# </details>

# %% role="solution" grade_id="impl_causal_trace"
def causal_trace(model, tokens: Int[Tensor, "n pos"], subject_mask: Bool[Tensor, "n pos"],
                 noise: Float[Tensor, "samples n pos d_model"], answer: Int[Tensor, "n"],
                 kind: str) -> Float[Tensor, "layer pos"]:
    ### BEGIN SOLUTION
    base = corrupted_probs(model, tokens, subject_mask, noise, answer)
    effect = torch.zeros(model.cfg.n_layers, tokens.shape[1])
    for layer in range(model.cfg.n_layers):
        for pos in range(tokens.shape[1]):
            restored = restored_probs(model, tokens, subject_mask, noise, answer, f"blocks.{layer}.hook_{kind}", pos)
            effect[layer, pos] = (restored - base).mean()
    return effect
    ### END SOLUTION


# %% role="test" grade_id="test_causal_trace" points=1
check("editing.causal_trace", causal_trace)

# %% [markdown]
# The trace of all 20 countries, 5 noise samples each, for the three kinds of state:

# %%
traces = {kind: causal_trace(lm, fact_tokens, subject_mask, noise, true_capital, kind) for kind in KINDS}
words = ["<bos>", *fact_prompt("zorbia").replace("zorbia", "(country)").split()]
fig, axes = plt.subplots(1, 3, figsize=(13, 2.4))
for ax, kind in zip(axes, KINDS):
    im = ax.imshow(traces[kind].numpy(), cmap="Purples", vmin=0, vmax=float(clean_p.mean() - corrupt_p.mean()))
    ax.set_xticks(range(len(words)), words, rotation=30)
    ax.set_yticks(range(N_LAYERS))
    ax.set_ylabel("layer")
    ax.set_title(f"restoring hook_{kind}")
fig.colorbar(im, ax=axes, label="indirect effect")
plt.show()
total = float(clean_p.mean() - corrupt_p.mean())
for kind in KINDS:
    t = traces[kind]
    layer, pos = divmod(int(t.argmax()), t.shape[1])
    at_subject = float(t[:, 4].max())
    print(f"hook_{kind:10s} peak: layer {layer}, position {pos} ('{words[pos]}'), indirect effect {float(t.max()):.3f} "
          f"({float(t.max()) / total:.0%} of the total effect {total:.3f}); best at the subject position {at_subject:.3f}")
print("MLP output at the last position, per layer:", [round(float(v), 3) for v in traces["mlp_out"][:, -1]])
assert EDIT_LAYER == int(traces["mlp_out"][:, -1].argmax()), "the MLP with the largest effect is not EDIT_LAYER's"

# %% [markdown]
# **What the trace says.** Restoring the residual stream at the **last position** (`is`) recovers
# almost the whole effect at either layer; at the subject's own position it recovers almost
# nothing, at any layer. Attention output matters at layer 0 and the last position only: layer 0's
# attention is what carries the country from its token to `is`. Each MLP's output at the last
# position alone recovers most of the effect too, at both layers, nearly equally.
#
# This is **not** the picture of the ROME paper, where GPT-2 XL's early-site MLPs at the *subject's
# last token* stand out and the last token matters only late. Here the subject's last token is
# right before `is`, the model is two layers deep, and the copy of the country into the last
# position happens in the very first attention layer; from then on the fact is looked up where it
# is needed. (We measured this before building the exercises; a deeper model might separate the
# two sites, see the open questions.) So we will edit an MLP **at the last position**: the key of
# the fact is what that MLP reads at `is`, right after the country has been moved there.
#
# **Questions.** (1) Why can restoring `hook_resid_post` at the last position of the *last* layer
# never be less than the full effect? (2) Why can the two MLPs' effects add up to more than the
# total effect? (3) What would the trace look like if the country were corrupted at `is` too?
#
# ## Part 2. ROME: a rank-one edit of one MLP
#
# An MLP layer computes `out = k @ W_out + b_out`, where `k = GELU(x @ W_in + b_in)` is its
# hidden activation (`blocks.{layer}.mlp.hook_post`, d_mlp = 512 values): a **key**. ROME treats
# `W_out` as a linear associative memory and asks for the change `Λ` of smallest size, in the norm
# that the keys themselves define, such that the fact's key `k*` maps to a new value `v*`:
#
# $$\min_{\Delta} \operatorname{tr}(\Delta^\top C \Delta) \quad\text{s.t.}\quad k_*^\top (W_{out} + \Delta) + b_{out} = v_*,
# \qquad C = \mathbb{E}[k k^\top].$$
#
# The solution is rank one: `Δ = (C⁻¹k*) rᵀ / (k*ᵀC⁻¹k*)` with `r = v* − (k*ᵀW_out + b_out)`.
#
# ### 2.1 The key's second moment
#
# *Difficulty 2/5, about 10 minutes.* `C` is the **uncentred** second moment of the keys of layer
# `layer` over a corpus: the mean of `k kᵀ` over every position where `mask` is True (padding is
# False). Compute it in **float64** (the update solves a linear system with it).
#
# ```python
# def key_second_moment(model, tokens: Int[Tensor, "n pos"], mask: Bool[Tensor, "n pos"],
#                       layer: int) -> Float[Tensor, "d_mlp d_mlp"]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# Cache `blocks.{layer}.mlp.hook_post`, keep the rows where the mask is True, `K.T @ K / len(K)`.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `keys = cache[f"blocks.{layer}.mlp.hook_post"][mask].double()`; `keys.T @ keys / len(keys)`.
# </details>

# %% role="solution" grade_id="impl_key_second_moment"
def key_second_moment(model, tokens: Int[Tensor, "n pos"], mask: Bool[Tensor, "n pos"],
                      layer: int) -> Float[Tensor, "d_mlp d_mlp"]:
    ### BEGIN SOLUTION
    hook_name = f"blocks.{layer}.mlp.hook_post"
    _, cache = model.run_with_cache(tokens, names_filter=[hook_name])
    keys = cache[hook_name][mask].double()
    return keys.T @ keys / len(keys)
    ### END SOLUTION


# %% role="test" grade_id="test_key_second_moment" points=1
check("editing.key_second_moment", key_second_moment)

# %% [markdown]
# The edit layer, `EDIT_LAYER` = 0, is the layer whose MLP output has the largest indirect effect at
# the last position (1.3; layer 1's is nearly as large, see the open questions). Its key second
# moment on 400 toy-world documents (all four kinds of text, padding excluded):

# %%
corpus = world.sample(400, 2024)
C = key_second_moment(lm, corpus.tokens, corpus.labels["loss_mask"].bool(), EDIT_LAYER)
eigenvalues = torch.linalg.eigvalsh(C)
print(f"edit layer {EDIT_LAYER}; C from {int(corpus.labels['loss_mask'].sum())} keys; eigenvalues "
      f"{float(eigenvalues.min()):.2e} .. {float(eigenvalues.max()):.2e} (condition number {float(eigenvalues.max() / eigenvalues.min()):.1e})")

# %% [markdown]
# Every eigenvalue is positive: `C` is invertible without a ridge term, although the smallest
# directions are barely used by the corpus (an update along them is cheap in `C`'s norm).
#
# ### 2.2 The fact's key
#
# *Difficulty 1/5, about 5 minutes.* ROME reads the key of a fact from several prompts that state
# it after different contexts and averages them, so the key is not tied to one sentence. Return the
# key of layer `layer` (`blocks.{layer}.mlp.hook_post`) at the **last position**, averaged over
# the prompts.
#
# ```python
# def fact_key(model, tokens: Int[Tensor, "n pos"], layer: int) -> Float[Tensor, "d_mlp"]
# ```

# %% role="solution" grade_id="impl_fact_key"
def fact_key(model, tokens: Int[Tensor, "n pos"], layer: int) -> Float[Tensor, "d_mlp"]:
    ### BEGIN SOLUTION
    hook_name = f"blocks.{layer}.mlp.hook_post"
    _, cache = model.run_with_cache(tokens, names_filter=[hook_name])
    return cache[hook_name][:, -1].mean(0)
    ### END SOLUTION


# %% role="test" grade_id="test_fact_key" points=1
check("editing.fact_key", fact_key)

# %% [markdown]
# ### 2.3 The new value
#
# *Difficulty 3/5, about 25 minutes.* The value `v*` is an MLP output that makes the model say the
# new capital. Start from the MLP's output at the last position (`blocks.{layer}.hook_mlp_out`),
# averaged over the prompts, and find **one** change `δ` (d_model values) that, added to the MLP
# output at the last position of **every** prompt, makes the mean P(`new_token`) at least
# `target_prob`. Optimise `δ` from zero with `torch.optim.Adam(lr=lr)` on the mean over the prompts
# of −log P(new_token), and **stop as soon as** the mean probability reaches `target_prob` (check before
# each step; at most `max_steps` steps). Return `v* = mean MLP output + δ`.
#
# ```python
# def target_value(model, tokens: Int[Tensor, "n pos"], layer: int, new_token: int, target_prob: float,
#                  lr: float = 0.1, max_steps: int = 200) -> Float[Tensor, "d_model"]
# ```
#
# The check judges what your value does, not its digits: adding `v* − mean MLP output` at the last
# position of each prompt must give mean P(new_token) ≥ `target_prob` − 0.01, with a change no more
# than twice as large as the reference's (a value that overshoots is a bigger, less specific edit).
# The paper adds a KL term that keeps the subject's other predictions and clamps the norm of `δ`;
# stopping early is our simpler way to keep `δ` small.
#
# <details><summary>Hint 1: the idea</summary>
#
# A hook on `blocks.{layer}.hook_mlp_out` that adds `δ` at the last position; gradients are off in
# this notebook, so wrap the loop in `with torch.enable_grad():`.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `delta = torch.zeros(d_model, requires_grad=True)`; in the hook
# `torch.cat([x[:, :-1], (x[:, -1] + delta)[:, None]], dim=1)`; `p = answer_probs(logits, new)`;
# `if p.mean() >= target_prob: break`; `loss = -p.log().mean()`.
# </details>

# %% role="solution" grade_id="impl_target_value"
def target_value(model, tokens: Int[Tensor, "n pos"], layer: int, new_token: int, target_prob: float,
                 lr: float = 0.1, max_steps: int = 200) -> Float[Tensor, "d_model"]:
    ### BEGIN SOLUTION
    hook_name = f"blocks.{layer}.hook_mlp_out"
    _, cache = model.run_with_cache(tokens, names_filter=[hook_name])
    delta = torch.zeros(model.cfg.d_model, requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=lr)
    new = torch.full((len(tokens),), new_token)

    def add_delta(x, hook):
        return torch.cat([x[:, :-1], (x[:, -1] + delta)[:, None]], dim=1)

    with torch.enable_grad():
        for _ in range(max_steps):
            p = answer_probs(model.run_with_hooks(tokens, fwd_hooks=[(hook_name, add_delta)]), new)
            if p.mean() >= target_prob:
                break
            optimiser.zero_grad()
            (-p.log().mean()).backward()
            optimiser.step()
    return cache[hook_name][:, -1].mean(0) + delta.detach()
    ### END SOLUTION


# %% role="test" grade_id="test_target_value" points=1
check("editing.target_value", target_value)

# %% [markdown]
# ### 2.4 The rank-one update
#
# *Difficulty 2/5, about 15 minutes.* Return the update `Δ` (shape of `W_out`, d_mlp × d_model) of
# the formula above, in **float64**: `Δ = u rᵀ / (uᵀk*)` with `u = C⁻¹ k*` and
# `r = v* − (k* @ W_out + b_out)`. Do not invert `C`: solve `C u = k*`.
#
# ```python
# def rank_one_update(W_out: Float[Tensor, "d_mlp d_model"], b_out: Float[Tensor, "d_model"],
#                     C: Float[Tensor, "d_mlp d_mlp"], key: Float[Tensor, "d_mlp"],
#                     value: Float[Tensor, "d_model"]) -> Float[Tensor, "d_mlp d_model"]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# The residual `r` is what the layer must add to its current output at the key; `u` says which
# direction of key space to write it along, scaled so the key itself gets exactly `r`.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `u = torch.linalg.solve(C, key.double())`; `r = value.double() - (key.double() @ W_out.double() + b_out.double())`;
# `torch.outer(u, r) / (u @ key.double())`.
# </details>

# %% role="solution" grade_id="impl_rank_one_update"
def rank_one_update(W_out: Float[Tensor, "d_mlp d_model"], b_out: Float[Tensor, "d_model"],
                    C: Float[Tensor, "d_mlp d_mlp"], key: Float[Tensor, "d_mlp"],
                    value: Float[Tensor, "d_model"]) -> Float[Tensor, "d_mlp d_model"]:
    ### BEGIN SOLUTION
    key = key.double()
    u = torch.linalg.solve(C.double(), key)
    r = value.double() - (key @ W_out.double() + b_out.double())
    return torch.outer(u, r) / (u @ key)
    ### END SOLUTION


# %% role="test" grade_id="test_rank_one_update" points=1
check("editing.rank_one_update", rank_one_update)

# %% [markdown]
# ### 2.5 Scoring an edit
#
# *Difficulty 1/5, about 5 minutes.* The paper scores an edit by comparisons, not by probabilities:
# the fraction of prompts where the model gives the `preferred` token a **strictly higher** logit
# than the `other` token (both read from `logits`, one row per prompt, at the read position).
# *Efficacy* prefers the new capital over the true one on the edited prompts, *paraphrase* does the
# same on other phrasings, *specificity* prefers each neighbouring country's true capital over the
# new one.
#
# ```python
# def success_rate(logits: Float[Tensor, "n vocab"], preferred: Int[Tensor, "n"],
#                  other: Int[Tensor, "n"]) -> float
# ```

# %% role="solution" grade_id="impl_success_rate"
def success_rate(logits: Float[Tensor, "n vocab"], preferred: Int[Tensor, "n"], other: Int[Tensor, "n"]) -> float:
    ### BEGIN SOLUTION
    rows = torch.arange(len(logits))
    return float((logits[rows, preferred] > logits[rows, other]).float().mean())
    ### END SOLUTION


# %% role="test" grade_id="test_success_rate" points=1
check("editing.success_rate", success_rate)

# %% [markdown]
# ### Editing one fact
#
# We move zorbia's capital to another country's capital, read the key from the fact prompt after
# each of the five contexts of `interplab.editing.CONTEXTS` (`sqrt 25 is 5 . the capital of zorbia is`),
# find the value on the same five prompts, and measure: **efficacy** on those five prompts;
# **paraphrase** on the bare prompt `the capital of zorbia is` and the three dialogue questions
# (`child|expert|assistant : what is the capital of zorbia ?`); **specificity** on the other
# countries in both forms (the bare prompt and the expert's question), leaving out the country whose
# capital is the new one (for it, new and true are the same word).

# %%
def rome_edit(model, country: str, new_capital: str, target_prob: float, layer: int = EDIT_LAYER):
    """The edited model and the update (ROME with the exercises' functions)."""
    tokens = batch_of([fact_prompt(country, context) for context in CONTEXTS])
    key = fact_key(model, tokens, layer)
    value = target_value(model, tokens, layer, vocab[new_capital], target_prob)
    mlp = model.blocks[layer].mlp
    delta = rank_one_update(mlp.W_out, mlp.b_out, C, key, value)
    return with_mlp_out(model, layer, mlp.W_out.double() + delta), delta, key, value


def last_logits(model, prompts: list[str]) -> Float[Tensor, "n vocab"]:
    """Logits at the last position; prompts are grouped by length (no padding)."""
    out = torch.zeros(len(prompts), lm.cfg.d_vocab)
    for length in {len(p.split()) for p in prompts}:
        rows = [i for i, p in enumerate(prompts) if len(p.split()) == length]
        out[rows] = model(batch_of([prompts[i] for i in rows]))[:, -1]
    return out


def edit_scores(edited, country: str, new_capital: str) -> dict[str, float]:
    """Efficacy, paraphrase and specificity of an edit, and P(new capital) on the bare prompt."""
    new, true = vocab[new_capital], vocab[world.capital_of[country]]
    own = [fact_prompt(country, context) for context in CONTEXTS]
    para = [fact_prompt(country), *paraphrases(country)]
    neighbours = [c for c in COUNTRIES if c != country and world.capital_of[c] != new_capital]
    neighbour_prompts = [fact_prompt(c) for c in neighbours] + [q for c in neighbours for q in paraphrases(c)[1:2]]
    neighbour_true = torch.tensor([vocab[world.capital_of[c]] for c in neighbours] * 2)

    def rate(prompts, preferred, other):
        n = len(prompts)
        return success_rate(last_logits(edited, prompts), torch.as_tensor(preferred).expand(n), torch.as_tensor(other).expand(n))

    return {"efficacy": rate(own, new, true), "paraphrase": rate(para, new, true),
            "specificity": rate(neighbour_prompts, neighbour_true, new),
            "p_new_bare": float(answer_probs(edited(batch_of(para[:1])), torch.tensor([new]))[0])}


mlp = lm.blocks[EDIT_LAYER].mlp
edited, delta, key, value = rome_edit(lm, "zorbia", "ostra", target_prob=0.9)
print(f"zorbia -> ostra at layer {EDIT_LAYER}: |k* W' + b - v*| = "
      f"{float((key.double() @ (mlp.W_out.double() + delta) + mlp.b_out.double() - value.double()).abs().max()):.1e}, "
      f"rank {int(torch.linalg.matrix_rank(delta))}, |Δ|/|W_out| = {float(delta.norm() / mlp.W_out.norm()):.4f}")
print({k: round(v, 3) for k, v in edit_scores(edited, "zorbia", "ostra").items()})
print("greedy answers after the edit:")
for prompt in [fact_prompt("zorbia"), *paraphrases("zorbia"), fact_prompt("quelland"), fact_prompt("marovia")]:
    print(f"  {prompt:45s} -> {world.tokenizer.vocab[int(last_logits(edited, [prompt])[0].argmax())]}")

# %% [markdown]
# The defining equation holds to rounding, and the update has rank one. Now the edit over several
# facts and two strengths of the value: 6 countries, each moved to a counterfactual capital drawn
# from the other countries' (seeded), for `target_prob` 0.9 and 0.999.

# %%
rng = np.random.default_rng(0)
edits = [(c, counterfactual(world, c, rng)) for c in COUNTRIES[::7] + COUNTRIES[3::7]]
rome_table = {}
for target_prob in (0.9, 0.999):
    scores = [edit_scores(rome_edit(lm, c, new, target_prob)[0], c, new) for c, new in edits]
    rome_table[f"ROME p*={target_prob}"] = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
for name, row in rome_table.items():
    print(f"{name:22s} " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()))

# %% [markdown]
# Read the two rows against each other. Every edit works on the five prompts it was made from
# (efficacy 1.0) and leaves every other country's capital alone (specificity 1.0), but with
# `target_prob` 0.9 it does not reach a single paraphrase: the bare prompt and the dialogue
# questions still give the old capital. Asking for 0.999 on the edited prompts makes `r` larger,
# and the edit then reaches most paraphrases (0.79), still without touching another country. The
# key read at `is` after a context, at `is` without one and at `?` in a dialogue are different
# vectors; the update reaches each in proportion to `uᵀk / uᵀk*` (measured below), so a
# paraphrase flips only when `r` is large enough to overcome what that share leaves out. One knob
# trades generalisation for the size of the edit here; ROME's KL term and norm clamp are the paper's
# answer to the same trade-off.
#
# ### 2.6 The fine-tuning baselines
#
# *Difficulty 3/5, about 20 minutes.* The paper compares ROME with fine-tuning the same weights.
# Fine-tune `W_out` of layer `layer` alone (every other weight frozen) with
# `torch.optim.Adam(lr=lr)` for exactly `steps` steps on the mean over the prompts of
# −log P(new_token) at the last position. With `linf` not None, the **constrained** baseline: after
# every step clamp each weight to within `linf` of its original value (the paper's FT+L uses an
# L∞ bound). Return the fine-tuned `W_out` and leave `model` unchanged.
#
# ```python
# def finetune_mlp_out(model, tokens: Int[Tensor, "n pos"], layer: int, new_token: int, steps: int,
#                      lr: float, linf: float | None) -> Float[Tensor, "d_mlp d_model"]
# ```
#
# The check judges what your weights do: every weight within `linf` of the original (when given),
# and mean P(new_token) on the prompts at least 80 % of the reference's (or at least 0.5).
#
# <details><summary>Hint 1: the idea</summary>
#
# A copy of `W_out` as the parameter; run the model with it in place (a copy of the model, or
# `with_mlp_out`), never change the original.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `tuned = with_mlp_out(model, layer, original)`; `W = tuned.blocks[layer].mlp.W_out`, the only
# parameter in the optimiser; after `optimiser.step()`, under `torch.no_grad()`,
# `W.copy_(torch.clamp(W, original - linf, original + linf))`.
# </details>

# %% role="solution" grade_id="impl_finetune_mlp_out"
def finetune_mlp_out(model, tokens: Int[Tensor, "n pos"], layer: int, new_token: int, steps: int,
                     lr: float, linf: float | None) -> Float[Tensor, "d_mlp d_model"]:
    ### BEGIN SOLUTION
    original = model.blocks[layer].mlp.W_out.detach().clone()
    tuned = with_mlp_out(model, layer, original)
    W = tuned.blocks[layer].mlp.W_out
    optimiser = torch.optim.Adam([W], lr=lr)
    new = torch.full((len(tokens),), new_token)
    with torch.enable_grad():
        for _ in range(steps):
            loss = -answer_probs(tuned(tokens), new).log().mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if linf is not None:
                with torch.no_grad():
                    W.copy_(torch.clamp(W, original - linf, original + linf))
    return W.detach().clone()
    ### END SOLUTION


# %% role="test" grade_id="test_finetune_mlp_out" points=1
check("editing.finetune_mlp_out", finetune_mlp_out)

# %% [markdown]
# The same 6 edits by fine-tuning, 20 steps at learning rate 0.01, unconstrained and with
# `linf = 0.005` (about a twelfth of the typical weight's size, printed below), next to ROME:

# %%
print(f"typical |W_out| entry {float(mlp.W_out.abs().mean()):.4f}")
ft_table = {}
for name, linf in (("FT (unconstrained)", None), ("FT+L (linf 0.005)", 0.005)):
    scores = []
    for c, new in edits:
        tokens = batch_of([fact_prompt(c, context) for context in CONTEXTS])
        tuned_W = finetune_mlp_out(lm, tokens, EDIT_LAYER, vocab[new], steps=20, lr=0.01, linf=linf)
        scores.append(edit_scores(with_mlp_out(lm, EDIT_LAYER, tuned_W), c, new))
    ft_table[name] = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
for name, row in {**rome_table, **ft_table}.items():
    print(f"{name:22s} " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()))

# %% [markdown]
# **Questions.** Unconstrained fine-tuning of the same matrix, on the same five prompts, moves
# *every* country's capital to the new one (specificity 0.0): why does a change of all of `W_out`
# act on keys that a rank-one change leaves alone? The constrained baseline (each weight within
# 0.005, about a twelfth of a typical weight) generalises to the paraphrases better than ROME here
# and keeps most neighbours. Is that a property of editing methods, or of a model whose keys for
# one question in two phrasings are far apart? What would you change to make the comparison fair
# (the prompts each method sees, the size of each change)?
#
# ### What the edit does to other countries
#
# For the zorbia edit at p* = 0.999, the share of the update each key receives, `uᵀk / uᵀk*` (the
# fraction of `r` the edited layer adds to that prompt's output), for zorbia's own paraphrases and
# for the other countries' bare prompts, with each country's P(true capital) after the ROME edit and
# after unconstrained fine-tuning.

# %%
edited, delta, key, value = rome_edit(lm, "zorbia", "ostra", target_prob=0.999)
u = torch.linalg.solve(C, key.double())
KEY_HOOK = f"blocks.{EDIT_LAYER}.mlp.hook_post"


def reach(prompts: list[str]) -> Float[Tensor, "n"]:
    """uᵀk / uᵀk* for the key at the last position of each prompt."""
    _, cache = lm.run_with_cache(batch_of(prompts), names_filter=[KEY_HOOK])
    return cache[KEY_HOOK][:, -1].double() @ u / (u @ key.double())


for prompt in [fact_prompt("zorbia", CONTEXTS[0]), fact_prompt("zorbia"), *paraphrases("zorbia")]:
    p_new = float(answer_probs(edited(batch_of([prompt])), torch.tensor([vocab["ostra"]]))[0])
    print(f"  {prompt:50s} reach {float(reach([prompt])[0]):5.2f}   P(ostra) after the edit {p_new:.3f}")
others = [c for c in COUNTRIES if c not in ("zorbia", "quelland")]  # quelland's capital is ostra
other_tokens = batch_of([fact_prompt(c) for c in others])
other_reach = reach([fact_prompt(c) for c in others])
tuned = with_mlp_out(lm, EDIT_LAYER, finetune_mlp_out(lm, batch_of([fact_prompt("zorbia", c) for c in CONTEXTS]),
                                                      EDIT_LAYER, vocab["ostra"], steps=20, lr=0.01, linf=None))
after_rome = answer_probs(edited(other_tokens), capital_ids(world, others))
after_ft = answer_probs(tuned(other_tokens), capital_ids(world, others))
top = other_reach.argsort(descending=True)[:3]
print(f"other countries: reach {float(other_reach.min()):.2f} .. {float(other_reach.max()):.2f} "
      f"(largest: {', '.join(f'{others[i]} {float(other_reach[i]):.2f}' for i in top)})")
print(f"  mean P(true capital) after ROME {float(after_rome.mean()):.4f} (lowest {float(after_rome.min()):.4f}); "
      f"after unconstrained FT {float(after_ft.mean()):.4f}")

# %% [markdown]
# The keys of other countries receive at most about an eighth of `r`, too little to move a fact
# the model holds at P ≈ 1: the rank-one edit is specific because `C⁻¹k*` is nearly orthogonal to
# the other countries' keys. Zorbia's own paraphrases receive less than the edited prompts: the
# dialogue questions about 0.6, enough to flip them, and the bare prompt, without a context
# sentence, only about a third, not enough: the key of `is` depends on what came before the fact,
# which is why ROME averages the key over contexts (and why one more kind of context would help
# here). Unconstrained fine-tuning has no such protection: it moves the output for every key that
# shares the template's direction, and every other country's capital falls to P ≈ 0.
#
# ## Open questions and further reading
#
# - **A deeper model.** Train a 4-layer toy-world model (the zoo's training script with
#   `n_layers=4`) and trace it. Does an early site at the subject token appear once the model has
#   layers to spare, as in GPT-2 XL? Does editing there generalise to the dialogue paraphrases better
#   than editing at `is`?
# - **Localisation and editing.** Hase et al. (2023) find that the traced layer does not predict
#   where editing works best. Edit layer 0 and layer 1 here and compare the three scores.
# - **The value's regulariser.** Add the paper's KL term (keep the subject's distribution on
#   `<country> is a` prompts) or its norm clamp to `target_value`: which of the three scores moves?
# - **Many edits at once.** MEMIT (Meng et al. 2023, [*Mass-Editing Memory in a Transformer*](https://arxiv.org/abs/2210.07229))
#   solves for many keys together and spreads the update over several layers: implement the
#   one-layer version for the 20 countries and measure how the scores fall with the number of edits.
# - **Evaluation pitfalls.** Zhong et al. (2023), [*MQuAKE*](https://arxiv.org/abs/2305.14795), and
#   Cohen et al. (2024), [*Evaluating the Ripple Effects of Knowledge Editing*](https://arxiv.org/abs/2307.12976):
#   an edited fact should change the facts that follow from it.
