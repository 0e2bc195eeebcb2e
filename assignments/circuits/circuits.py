# %% [markdown]
# # Circuits: finding the induction circuit in a two-layer attention-only transformer
#
# A transformer that has seen `A B ... A` predicts `B`. The mechanism behind this, the
# **induction circuit**, is the best-understood circuit in language models and the engine of
# in-context learning. In this notebook you take it apart in a model small enough to understand
# completely: two layers, four heads per layer, attention only, no LayerNorm.
#
# **After this notebook you will be able to**
#
# - measure a model's per-token loss and see *where* in a sequence it has learned something;
# - classify attention heads (previous-token, current-token, first-token, induction) from their
#   attention patterns with one parametrised score, and design a detector of your own that finds
#   planted heads in models you have never seen;
# - find out which heads matter with **ablations** (zero and mean) and **activation patching**
#   (per head, then per head and position), using a logit-difference metric normalised between a
#   clean and a corrupted run, and split the logit difference exactly into **direct logit
#   attributions**;
# - read a head's job off its weights: **QK and OV circuits** with TransformerLens's
#   `FactoredMatrix`, and **composition scores** that show one head feeding another, and say
#   where they mislead.
#
# **Read first** (an hour well spent):
#
# 1. Elhage et al. (2021), [*A Mathematical Framework for Transformer Circuits*](https://transformer-circuits.pub/2021/framework/index.html):
#    sections "Transformer Overview", "Zero-Layer", "One-Layer" (QK and OV circuits) and
#    "Two-Layer Attention-Only Transformers" (composition, induction heads).
# 2. Olsson et al. (2022), [*In-context Learning and Induction Heads*](https://transformer-circuits.pub/2022/in-context-learning-and-induction-heads/index.html):
#    the introduction and the section "Induction Heads" (what they are and how to detect them).
#
# **The model.** `attn-only-2l` from the InterpLab zoo (`interplab zoo list` shows its card):
# token 0 is a beginning-of-sequence token `BOS`, tokens 1..63 are "random" tokens. It was trained
# (in about a minute on one CPU thread) on sequences `[BOS] + r + r`: `seq_len` distinct random
# tokens, then the same tokens again. The first half is unpredictable; the second half is
# predictable only by looking back. There is no LayerNorm, so every circuit you compute from the
# weights is exactly what the model computes.
#
# **How the checks work.** Each exercise ends with a test cell `check("circuits.<name>", your_function)`.
# It runs your function on freshly generated inputs (random patterns, random tokens, randomly
# initialised models) and compares with the reference; when your answer matches a known mistake,
# it says which. Conventions used throughout: attention patterns have shape
# `[batch, head, query_pos, key_pos]`; positions count from 0, where `BOS` sits.
#
# What counts as the same answer: a torch tensor or a numpy array; for a single number, a 0-d tensor,
# a NumPy scalar or a Python float; integers of any width; float64 where float32 is expected (held to
# the float32 tolerance). A less precise dtype (float16, bfloat16) fails with a message naming the
# dtype to return. Where a convention matters (an axis order, how ties are broken), the exercise
# text states it and a failure names it; a failure of dtype or shape alone says only that.

# %% role="locked" grade_id="setup"
import matplotlib.pyplot as plt
import torch
from einops import einsum
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import FactoredMatrix, HookedTransformer
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities import get_act_name

from interplab import check
from interplab.plots import head_labels, heatmap, line
from interplab.zoo.attn_only_2l import BOS, induction_prompts, load, plant_head, random_model, repeated_tokens

torch.set_grad_enabled(False)  # we read and edit activations; nothing here needs gradients
torch.set_num_threads(1)  # a model this small runs fastest on one thread (and leaves the other cores free)
model: HookedTransformer = load()
print(model.cfg.n_layers, "layers,", model.cfg.n_heads, "heads of size", model.cfg.d_head,
      "| d_model", model.cfg.d_model, "| vocabulary", model.cfg.d_vocab, "| context", model.cfg.n_ctx)

# %% [markdown]
# A batch of repeated sequences and a cache of every activation on it. `repeated_tokens(batch,
# seq_len, generator)` is the data the model was trained on; the same generator seed always gives
# the same batch.

# %% role="locked" grade_id="data"
SEQ_LEN = 20
rep_tokens = repeated_tokens(batch=16, seq_len=SEQ_LEN, generator=torch.Generator().manual_seed(0))
rep_logits, rep_cache = model.run_with_cache(rep_tokens)
print("tokens", tuple(rep_tokens.shape), "first row:", rep_tokens[0].tolist())
print("cached:", [name for name in rep_cache.keys() if name.startswith("blocks.0")])

# %% [markdown]
# ## 1. Per-token loss
#
# *Difficulty 1/5, about 10 minutes.*
#
# The mean loss hides the story. Per position, the loss tells you *where* the model can predict:
# on `[BOS] + r + r` it should be near chance (ln 63 = 4.14) on the first half and near zero on
# the repeated half. The one thing to get right is the shift: the logits at position `p` are the
# model's prediction of the token at position `p + 1`.
#
# **Task.** Implement
#
# ```python
# def per_token_loss(logits: Float[Tensor, "batch pos d_vocab"],
#                    tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos-1"]
# ```
#
# returning the cross-entropy loss (negative log-probability of the true next token) at every
# position that has a next token.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Drop the last position of the logits (it predicts a token that is not there) and the first
# token (nothing predicts it); then the loss is minus the log-probability of the true token.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `logits[:, :-1]` predicts `tokens[:, 1:]`. Take `log_softmax` over the vocabulary (last) axis,
# then pick the true token's entry with `gather(-1, index)` (the index needs a trailing axis of size 1).
# </details>

# %% role="solution" grade_id="impl_per_token_loss"
def per_token_loss(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos-1"]:
    ### BEGIN SOLUTION
    log_probs = logits[:, :-1].log_softmax(dim=-1)
    return -log_probs.gather(dim=-1, index=tokens[:, 1:, None])[..., 0]
    ### END SOLUTION


# %% role="test" grade_id="test_per_token_loss" points=1
check("circuits.per_token_loss", per_token_loss)

# %% [markdown]
# Now look at the loss along the sequence. The dashed line marks where the repeat starts.

# %%
loss_by_position = per_token_loss(rep_logits, rep_tokens).mean(dim=0)
line({"loss": loss_by_position}, vlines=[SEQ_LEN], xlabel="position p (predicting the token at p + 1)",
     ylabel="cross-entropy", title="Per-token loss on [BOS] + r + r")
plt.show()
print(f"first half: {loss_by_position[:SEQ_LEN].mean():.3f}   repeated half: {loss_by_position[SEQ_LEN + 1:].mean():.3f}"
      f"   chance: {torch.log(torch.tensor(63.0)):.3f}")

# %% [markdown] role="locked" grade_id="question_first_repeat_loss"
# **Questions.** Why is the loss at position `SEQ_LEN` (predicting the *first* token of the
# repeat) still high? It is nevertheless below the first-half loss: form a hypothesis about what
# the model guesses there, and come back to test it with the tools of this notebook. In the first
# half, the tokens are distinct: could a model do better than chance there, and what would it need
# to attend to?
#
# *Answer in the cell below (graded by hand, 2 points).*
# ### BEGIN MARK SCHEME
# **Mark scheme (instructors only).**
# - 1 point: at `SEQ_LEN` there is no earlier occurrence of the current token followed by the answer, so induction has nothing to copy.
# - 1 point: a testable hypothesis for the below-chance loss (e.g. the model predicts the token after BOS, or spreads probability over tokens seen) *or* the first-half argument (excluding seen tokens, by attending to all previous ones).
# ### END MARK SCHEME

# %% [markdown] role="answer" grade_id="answer_first_repeat_loss" points=2
# The first token of the repeat has not been seen after the previous token yet: nothing in the context says which token follows, so induction cannot predict it. The model can only guess, e.g. that a repeat starts (copying the first token after BOS), which is why the loss is somewhat below chance. In the first half the tokens are distinct, so a model could do better than chance only by excluding tokens already seen, which needs attention to all earlier tokens.

# %% [markdown]
# ## 2. Reading attention patterns: head detectors
#
# Each head's attention pattern is in the cache as `rep_cache["pattern", layer]`, shape
# `[batch, head, query_pos, key_pos]`; row `q` says how query position `q` spreads its attention over
# the key positions `k <= q`. Look before you measure:

# %%
fig, axes = plt.subplots(2, 4, figsize=(16, 7))
for layer in range(2):
    for head in range(4):
        heatmap(rep_cache["pattern", layer][0, head], ax=axes[layer, head], annotate=False,
                title=f"L{layer}H{head}", xlabel="key position", ylabel="query position")
plt.show()

# %% [markdown]
# You should see stripes: a diagonal (attend to yourself), a sub-diagonal (attend to the previous
# token), a first column (attend to `BOS`, a "resting position" for a head with nothing to do),
# and in layer 1 a diagonal offset by `SEQ_LEN - 1` in the second half. We turn each stripe into a
# number between 0 and 1: the average attention on it.
#
# ### 2a. One detector for every stripe
#
# *Difficulty 1/5, about 15 minutes.*
#
# Each stripe is a set of (query, key) cells: the diagonal `k = q`, the sub-diagonal `k = q - 1`,
# the column `k = 0`. Write the set down as a boolean **detection mask** `target[q, k]` and one
# function scores every head against any mask (TransformerLens's `detect_head` works the same way).
#
# **Convention.** For each query `q`, the head's score there is the attention it puts on the
# target keys of row `q` (a sum: a row may hold several target keys). Average that over the batch
# and over the query positions that **have** a target key (rows of `target` with at least one
# `True`), **leaving out query 0**: it can only attend to itself (its attention is 1 on key 0
# whatever the head does), so it says nothing about the head. Return one score per head.
#
# ```python
# def attention_score(pattern: Float[Tensor, "batch head q_pos k_pos"],
#                     target: Bool[Tensor, "q_pos k_pos"]) -> Float[Tensor, "head"]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Multiply the pattern by the mask and sum over keys: that is the attention on the target, per
# query. Then average over the batch and over the queries you keep: which ones, by the convention?
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `on_target = (pattern * target).sum(-1)` is `[batch, head, q_pos]`; `rows = target.any(-1)` with
# `rows[0] = False` selects the queries: `on_target[..., rows].mean(dim=(0, -1))`.
# </details>

# %% role="solution" grade_id="impl_attention_score"
def attention_score(pattern: Float[Tensor, "batch head q_pos k_pos"], target: Bool[Tensor, "q_pos k_pos"]) -> Float[Tensor, "head"]:
    ### BEGIN SOLUTION
    rows = target.any(dim=-1)
    rows[0] = False  # query 0 attends to itself whatever the head does
    on_target = (pattern * target).sum(dim=-1)
    return on_target[..., rows].mean(dim=(0, -1))
    ### END SOLUTION


# %% role="test" grade_id="test_attention_score" points=1
check("circuits.attention_score", attention_score)

# %% [markdown]
# The three stripes as masks, for sequences of `pos` tokens:

# %%
def current_token_mask(pos: int) -> Bool[Tensor, "pos pos"]:
    return torch.eye(pos, dtype=torch.bool)


def previous_token_mask(pos: int) -> Bool[Tensor, "pos pos"]:
    return torch.diag(torch.ones(pos - 1), -1).bool()


def first_token_mask(pos: int) -> Bool[Tensor, "pos pos"]:
    mask = torch.zeros(pos, pos, dtype=torch.bool)
    mask[:, 0] = True
    return mask


print(previous_token_mask(5).int())

# %% [markdown]
# ### 2b. Induction score
#
# *Difficulty 2/5, about 15 minutes.*
#
# On `[BOS] + r_1..r_n + r_1..r_n` (length `2n + 1`), token `r_j` sits at positions `j` and
# `n + j`. An induction head at query position `n + j` (the second `r_j`) attends to the token
# *after* the first `r_j`, at position `j + 1`, and copies it: that is the prediction of the next
# token. Measure the mean attention on these keys, over the queries of the repeated half
# (`q = n+1 .. 2n`). Derive `n` from the pattern's shape.
#
# ```python
# def induction_score(pattern: Float[Tensor, "batch head 1+2*seq_len 1+2*seq_len"]) -> Float[Tensor, "head"]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Query `q = n + j` attends to key `j + 1 = q - (n - 1)`: a diagonal of the pattern, offset by
# `n - 1` below the main one. Only its entries with a query in the repeated half count.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `pattern.diagonal(offset=-(n - 1), dim1=-2, dim2=-1)` has entries for `q = n - 1 .. 2n`; keep the
# last `n` and average over the batch and that axis. (Or build the mask and call your `attention_score`.)
# </details>

# %% role="solution" grade_id="impl_induction_score"
def induction_score(pattern: Float[Tensor, "batch head 1+2*seq_len 1+2*seq_len"]) -> Float[Tensor, "head"]:
    ### BEGIN SOLUTION
    seq_len = (pattern.shape[-1] - 1) // 2
    return pattern.diagonal(offset=-(seq_len - 1), dim1=-2, dim2=-1)[..., -seq_len:].mean(dim=(0, -1))
    ### END SOLUTION


# %% role="test" grade_id="test_induction_score" points=1
check("circuits.induction_score", induction_score)

# %% [markdown]
# All four scores for every head of the model:

# %%
POS = rep_tokens.shape[1]
detectors = {"current": lambda p: attention_score(p, current_token_mask(POS)),
             "previous": lambda p: attention_score(p, previous_token_mask(POS)),
             "first (BOS)": lambda p: attention_score(p, first_token_mask(POS)),
             "induction": induction_score}
# torch.as_tensor(...).float(): your scores may be numpy arrays or float64, which the checks accept too
scores = torch.stack([torch.cat([torch.as_tensor(fn(rep_cache["pattern", layer])).float() for layer in range(2)])
                      for fn in detectors.values()])
heatmap(scores, xticklabels=head_labels(2, 4), yticklabels=list(detectors), figsize=(9, 3),
        title="Head detector scores on repeated tokens")
plt.show()

# %% [markdown]
# **Questions.** Which layer-0 head is the previous-token head? How many induction heads does
# layer 1 have? The induction heads also have a high first-token score: on which query positions
# do they attend to `BOS`, and why is that a sensible thing to do there? Look again at the
# previous-token head's pattern: beyond some position it stops attending to the previous token.
# Why can the model afford that? (At which key positions does an induction head need to know the
# previous token?) A score only says what a head attends to; what would you need to check to say
# what it *does*?
#
# ### 2c. Design a detector (open)
#
# *Difficulty 3/5, about 30 minutes.*
#
# So far the stripe was given. Now you design the detector: the inputs, the queries that count,
# the threshold. Some heads attend to the token a fixed number `k` of positions back, from every
# query that has one (`k = 1` is a previous-token head). Find them, and their `k`, in a model you
# have never seen.
#
# **Task.** Return every head that attends `k` positions back, for `k` in `1..4`, as a list of
# `(layer, head, k)` (any order):
#
# ```python
# def find_offset_heads(model: HookedTransformer) -> list[tuple[int, int, int]]
# ```
#
# **How it is graded.** On hidden models: randomly initialised models of this architecture
# (`random_model`) in which one to three heads were made to attend `k` back with
# `plant_head(model, layer, head, k, strength)` (`strength` between 3.5 and 6, added to the
# attention scores), one other head was made to attend to `BOS` and one to the current token
# (`k = 0`): these are not offset heads and must not be reported. The remaining heads are
# random. The answer must be exactly the planted offset heads with their `k`. `plant_head` edits
# the attention scores through a hook, not the weights: detect from behaviour (attention patterns
# on inputs of your choice), not from `W_Q`, `W_K`. Build test models with `plant_head` yourself.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Score every head against the mask "`k` back" for each `k` with your `attention_score`, on random
# tokens (any tokens work: the planted heads ignore content). A random head spreads its attention
# over about `q` keys, so its score is small; compare with what a planted head gets. A head that
# attends to `BOS` also hits "`k` back" at query `q = k`: which queries should count?
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `tokens = torch.randint(1, model.cfg.d_vocab, (16, model.cfg.n_ctx), generator=...)`, then
# `model.run_with_cache(tokens)`; the mask "`k` back" is `torch.diag(torch.ones(pos - k), -k).bool()`.
# Report `(layer, head, k)` when the best `k`'s score is above a threshold such as 0.3.
# </details>

# %% role="solution" grade_id="impl_find_offset_heads"
def find_offset_heads(model: HookedTransformer) -> list[tuple[int, int, int]]:
    ### BEGIN SOLUTION
    pos = model.cfg.n_ctx
    tokens = torch.randint(1, model.cfg.d_vocab, (16, pos), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    found = []
    for layer in range(model.cfg.n_layers):
        by_offset = torch.stack([attention_score(cache["pattern", layer], torch.diag(torch.ones(pos - k), -k).bool())
                                 for k in range(1, 5)])  # [k, head]
        best, k_index = by_offset.max(dim=0)
        found += [(layer, head, int(k_index[head]) + 1) for head in range(model.cfg.n_heads) if best[head] > 0.3]
    return found
    ### END SOLUTION


# %% role="test" grade_id="test_find_offset_heads" points=2
check("circuits.find_offset_heads", find_offset_heads)

# %% [markdown]
# Your detector on the shipped model, and on a model you plant yourself:

# %%
print("shipped model:", find_offset_heads(model))
demo = plant_head(plant_head(random_model(torch.Generator().manual_seed(5)), 0, 2, 3, 4.0), 1, 1, "bos", 5.0)
print("random model with L0H2 planted 3 back and L1H1 planted on BOS:", find_offset_heads(demo))

# %% [markdown]
# **Questions.** Which threshold did you pick, and what is the smallest `strength` your detector
# still finds (try it)? The shipped model's previous-token head: does your detector report it,
# and if not, which part of your design excludes it (look back at its pattern beyond the middle of
# the sequence)? A detector that reads patterns on random tokens cannot see heads whose behaviour
# depends on content (induction, duplicate-token heads): what inputs would you need for those?
#
# ## 3. Which heads matter? Ablation
#
# A pattern is a correlation. To see what a head *does*, remove it and measure the damage. Ablate
# a head by overwriting its output `z` (the hook `blocks.{layer}.attn.hook_z`, shape
# `[batch, pos, head, d_head]`: the attention-weighted values, before `W_O`) with
#
# - zeros (**zero ablation**), or
# - its average over the batch at each position (**mean ablation**): this keeps the part of the
#   head's output that is the same on every input, and removes only what depends on the input.
#   Zero is not a neutral value for a head, so mean ablation is the gentler intervention.
#
# Edit activations with TransformerLens hooks: `model.run_with_hooks(tokens,
# fwd_hooks=[(get_act_name("z", layer), hook_fn)])`, where `hook_fn(z, hook)` returns the edited
# `z`. Never patch the model's `forward`.
#
# *Difficulty 2/5, about 20 minutes.*
#
# **Task.** For every head `(layer, head)`, the increase in the mean next-token loss (averaged
# over batch and positions) when that one head is ablated. TransformerLens computes that loss for
# you: `model(tokens, return_type="loss")` is the mean of your `per_token_loss`, and
# `run_with_hooks` takes the same `return_type`.
#
# ```python
# def ablation_loss_increase(model: HookedTransformer, tokens: Int[Tensor, "batch pos"],
#                            ablation: str) -> Float[Tensor, "n_layers n_heads"]   # ablation: "zero" or "mean"
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# One clean run, then one run per head with a hook that overwrites that head's slice of `z` (with
# zeros, or with its batch mean position by position); the answer is the loss difference.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# Loop over layers and heads; the hook edits `z[:, :, head]` in place and returns `z`. Bind the
# loop variable into the hook with a default argument (`lambda z, hook, head=head: ...`) or
# `functools.partial`, or every hook sees the last head. For the mean, `z[:, :, head].mean(dim=0,
# keepdim=True)` broadcasts back over the batch.
# </details>

# %% role="solution" grade_id="impl_ablation_loss_increase"
def ablation_loss_increase(model: HookedTransformer, tokens: Int[Tensor, "batch pos"], ablation: str) -> Float[Tensor, "n_layers n_heads"]:
    ### BEGIN SOLUTION
    def ablate(z: Float[Tensor, "batch pos head d_head"], hook: HookPoint, head: int) -> Float[Tensor, "batch pos head d_head"]:
        if ablation == "zero":
            z[:, :, head] = 0.0
        else:  # the head's average output at each position, over the batch
            z[:, :, head] = z[:, :, head].mean(dim=0, keepdim=True)
        return z

    clean_loss = model(tokens, return_type="loss")
    increase = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            hook = (get_act_name("z", layer), lambda z, hook, head=head: ablate(z, hook, head))
            increase[layer, head] = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[hook]) - clean_loss
    return increase
    ### END SOLUTION


# %% role="test" grade_id="test_ablation_loss_increase" points=2
check("circuits.ablation_loss_increase", ablation_loss_increase)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for ax, kind in zip(axes, ("zero", "mean")):
    heatmap(ablation_loss_increase(model, rep_tokens, kind), ax=ax, title=f"{kind} ablation: loss increase",
            xlabel="head", ylabel="layer")
plt.show()

# %% [markdown] role="locked" grade_id="question_ablation_redundancy"
# **Questions.** Ablating the previous-token head is a disaster; ablating any one induction head
# costs little. Why? (Look back at the induction scores: how many heads could take over?) Design
# an ablation that would reveal the induction heads' importance, and predict its loss increase.
#
# *Answer in the cell below (graded by hand, 2 points).*
# ### BEGIN MARK SCHEME
# **Mark scheme (instructors only).**
# - 1 point: redundancy: several induction heads (see their induction scores) can each do the copying, so one ablated head is covered by the others.
# - 1 point: a workable design with a prediction: ablate *all* induction heads together (or all but one), predicting a loss close to the first-half (chance-like) loss on the repeat; or the previous-token head is a single point of failure because every induction head reads it.
# ### END MARK SCHEME

# %% [markdown] role="answer" grade_id="answer_ablation_redundancy" points=2
# Several induction heads do the same job, so ablating one leaves the others to copy the token (redundancy / backup); the previous-token head is the only one feeding every induction head's keys (K-composition), so removing it breaks all of them at once.

# %% [markdown]
# ## 4. Activation patching with a logit difference
#
# Ablation asks "what breaks without this head?". **Activation patching** asks "which head
# carries the information that makes the difference between two inputs?". We build pairs of
# prompts with `induction_prompts(batch, seq_len, generator)`:
#
# - `clean = [BOS] + r_1..r_n + r_1..r_m`: at the last position, induction predicts
#   `correct = r_{m+1}`;
# - `corrupted`: the same, except that the earlier `r_{m+1}` is replaced by a fresh token `wrong`,
#   so induction now predicts `wrong`.
#
# The two prompts differ in one position. Run the corrupted prompt, but overwrite one head's
# `hook_z` with its value from the clean run; if the prediction swings back to `correct`, that
# head carries the information.
#
# ### 4a. The metric: logit difference
#
# *Difficulty 1/5, about 5 minutes.* The difference between the logit of `correct` and the logit
# of `wrong` at the **last** position, one number per prompt. (Why logits and not probabilities?
# The difference of two logits is linear in the residual stream and equals the log-odds of the
# two tokens; probabilities saturate.)
#
# ```python
# def logit_diff(logits: Float[Tensor, "batch pos d_vocab"], correct: Int[Tensor, "batch"],
#                wrong: Int[Tensor, "batch"]) -> Float[Tensor, "batch"]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Only the last position matters; from each prompt's row of logits pick two entries, one per token.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `logits[:, -1]` is `[batch, d_vocab]`; `gather(-1, correct[:, None])[:, 0]` picks one entry per row.
# </details>

# %% role="solution" grade_id="impl_logit_diff"
def logit_diff(logits: Float[Tensor, "batch pos d_vocab"], correct: Int[Tensor, "batch"], wrong: Int[Tensor, "batch"]) -> Float[Tensor, "batch"]:
    ### BEGIN SOLUTION
    final = logits[:, -1]
    return final.gather(-1, correct[:, None])[:, 0] - final.gather(-1, wrong[:, None])[:, 0]
    ### END SOLUTION


# %% role="test" grade_id="test_logit_diff" points=1
check("circuits.logit_diff", logit_diff)

# %% [markdown]
# ### 4b. Patching each head's output
#
# *Difficulty 3/5, about 25 minutes.*
#
# For every head, patch its `hook_z` **at every position** from the clean run into the corrupted
# run, and report the normalised effect on the mean (over the batch) logit difference:
#
# $$\text{effect} = \frac{LD_\text{patched} - LD_\text{corrupted}}{LD_\text{clean} - LD_\text{corrupted}}$$
#
# 0 means the patch changed nothing, 1 means it restored the clean behaviour completely.
#
# ```python
# def head_patching_effect(model: HookedTransformer, clean: Int[Tensor, "batch pos"],
#                          corrupted: Int[Tensor, "batch pos"], correct: Int[Tensor, "batch"],
#                          wrong: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers n_heads"]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Three kinds of runs: clean and corrupted once each (the two ends of the scale), then the
# corrupted prompt once per head with that head's `z` taken from the clean run.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `_, clean_cache = model.run_with_cache(clean)` gives every clean activation;
# `clean_cache[hook.name]` inside a hook is the clean value of the activation being hooked. Patch
# `z[:, :, head]` only, and use your `logit_diff(...).mean()` for the three runs.
# </details>

# %% role="solution" grade_id="impl_head_patching_effect"
def head_patching_effect(model: HookedTransformer, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
                         correct: Int[Tensor, "batch"], wrong: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers n_heads"]:
    ### BEGIN SOLUTION
    clean_logits, clean_cache = model.run_with_cache(clean, names_filter=lambda name: name.endswith("hook_z"))
    clean_ld = logit_diff(clean_logits, correct, wrong).mean()
    corrupted_ld = logit_diff(model(corrupted), correct, wrong).mean()

    def patch(z: Float[Tensor, "batch pos head d_head"], hook: HookPoint, head: int) -> Float[Tensor, "batch pos head d_head"]:
        z[:, :, head] = clean_cache[hook.name][:, :, head]
        return z

    effect = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            hook = (get_act_name("z", layer), lambda z, hook, head=head: patch(z, hook, head))
            patched_ld = logit_diff(model.run_with_hooks(corrupted, fwd_hooks=[hook]), correct, wrong).mean()
            effect[layer, head] = (patched_ld - corrupted_ld) / (clean_ld - corrupted_ld)
    return effect
    ### END SOLUTION


# %% role="test" grade_id="test_head_patching_effect" points=2
check("circuits.head_patching_effect", head_patching_effect)

# %%
prompts = induction_prompts(batch=16, seq_len=15, generator=torch.Generator().manual_seed(1))
print("clean LD", logit_diff(model(prompts["clean"]), prompts["correct"], prompts["wrong"]).mean().item(),
      "| corrupted LD", logit_diff(model(prompts["corrupted"]), prompts["correct"], prompts["wrong"]).mean().item())
heatmap(head_patching_effect(model, **prompts), title="Patching hook_z: normalised effect",
        xlabel="head", ylabel="layer", figsize=(6, 2.8))
plt.show()

# %% [markdown]
# **Questions.** The previous-token head was the most important head under ablation, yet patching
# it barely moves the logit difference. Why? Its output *does* depend on the corruption: the
# prompts differ at position `m + 1` (the earlier `r_{m+1}`, replaced by `wrong`), so at position
# `m + 2` the previous-token head now reads `wrong` instead of `r_{m+1}` (the cell below measures
# how much its `hook_z` changes, position by position). At which key does an induction head look
# from the last position (which holds `r_m`), and does the previous-token head's output change
# *there*? Which layer-0 head does light up, and which path through the induction head could
# explain that (Q-, K- or V-composition)? Do the effects of the induction heads add up to about 1?

# %%
_, clean_cache = model.run_with_cache(prompts["clean"], names_filter=lambda name: name.endswith("hook_z"))
_, corrupted_cache = model.run_with_cache(prompts["corrupted"], names_filter=lambda name: name.endswith("hook_z"))
changed_at = int((prompts["clean"] != prompts["corrupted"]).any(dim=0).nonzero())
z_change = (clean_cache["z", 0] - corrupted_cache["z", 0]).norm(dim=-1).mean(dim=0)  # [pos, head]
print(f"the prompts differ at position {changed_at}; mean |z_clean - z_corrupted| of each layer-0 head:")
for pos in range(changed_at - 1, changed_at + 3):
    print(f"  position {pos:2d}: " + "  ".join(f"L0H{h} {z_change[pos, h]:.2f}" for h in range(4)))

# %% [markdown]
# ### 4c. Patching one position at a time
#
# *Difficulty 3/5, about 20 minutes.*
#
# Patching a head at every position at once lumps together what it does everywhere. Patch one
# (head, position) at a time instead: the clean `hook_z` of that head at that position only, into
# the corrupted run, with the same normalised effect as in 4b.
#
# ```python
# def head_position_patching_effect(model: HookedTransformer, clean: Int[Tensor, "batch pos"],
#                                   corrupted: Int[Tensor, "batch pos"], correct: Int[Tensor, "batch"],
#                                   wrong: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers n_heads pos"]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# The same three runs as in 4b (clean, corrupted, and one patched run per cell of the result),
# with one more loop, over positions; the patch overwrites a single `[batch, d_head]` slice of `z`.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# In the hook: `z[:, pos, head] = clean_cache[hook.name][:, pos, head]`; bind both `pos` and `head`
# as default arguments of the lambda. (TransformerLens's `patching.get_act_patch_attn_head_out_by_pos`
# computes the same, with the axes in the order `[layer, pos, head]`.)
# </details>

# %% role="solution" grade_id="impl_head_position_patching_effect"
def head_position_patching_effect(model: HookedTransformer, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
                                  correct: Int[Tensor, "batch"], wrong: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers n_heads pos"]:
    ### BEGIN SOLUTION
    clean_logits, clean_cache = model.run_with_cache(clean, names_filter=lambda name: name.endswith("hook_z"))
    clean_ld = logit_diff(clean_logits, correct, wrong).mean()
    corrupted_ld = logit_diff(model(corrupted), correct, wrong).mean()

    def patch(z: Float[Tensor, "batch pos head d_head"], hook: HookPoint, head: int, pos: int) -> Float[Tensor, "batch pos head d_head"]:
        z[:, pos, head] = clean_cache[hook.name][:, pos, head]
        return z

    effect = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, clean.shape[1])
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            for pos in range(clean.shape[1]):
                hook = (get_act_name("z", layer), lambda z, hook, head=head, pos=pos: patch(z, hook, head, pos))
                patched_ld = logit_diff(model.run_with_hooks(corrupted, fwd_hooks=[hook]), correct, wrong).mean()
                effect[layer, head, pos] = (patched_ld - corrupted_ld) / (clean_ld - corrupted_ld)
    return effect
    ### END SOLUTION


# %% role="test" grade_id="test_head_position_patching_effect" points=2
check("circuits.head_position_patching_effect", head_position_patching_effect)

# %%
small = {name: value[:8] for name, value in prompts.items()}  # 8 prompts: 8 heads x 26 positions = 208 runs
by_position = head_position_patching_effect(model, **small)
heatmap(by_position.flatten(0, 1), yticklabels=head_labels(2, 4), annotate=False, figsize=(12, 3.2),
        title=f"Patching hook_z at one position (the prompts differ at position {changed_at})",
        xlabel="position", ylabel="head")
plt.show()
for layer, head, pos in (by_position.abs() > 0.05).nonzero().tolist():
    print(f"L{layer}H{head} at position {pos}: {by_position[layer, head, pos]:+.2f}")
print("sum over positions vs patching every position at once (4b):")
print(by_position.sum(dim=-1).round(decimals=2), head_patching_effect(model, **small).round(decimals=2), sep="\n")

# %% [markdown]
# **Questions.** At which positions does each head matter? Does the per-position picture match
# the circuit: the induction heads at the last position, a layer-0 head at the corrupted position
# (which one, and is it the previous-token head)? Why can the per-position effects of one head add
# up to more or less than its effect when all its positions are patched at once?
#
# ### 4d. Direct logit attribution
#
# *Difficulty 2/5, about 15 minutes.*
#
# Without LayerNorm, the final residual stream is a plain sum: the token and position embeddings,
# every head's output `z @ W_O[layer, head]`, and the output biases `b_O` of each layer. The
# logits are that sum times `W_U`, plus `b_U`. So the logit difference at the last position splits
# **exactly** into one term per component: a head's **direct logit attribution** is its output at
# the last position dotted with `W_U[:, correct] - W_U[:, wrong]`. (In a model with LayerNorm this
# is only an approximation: the final LayerNorm's scale depends on all components together.)
#
# **Task.** Each head's direct contribution to `logit[correct] - logit[wrong]` at the last
# position, averaged over the batch. The biases `b_O` and `b_U` belong to no head: leave them out.
#
# ```python
# def head_logit_attribution(model: HookedTransformer, tokens: Int[Tensor, "batch pos"], correct: Int[Tensor, "batch"],
#                            wrong: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers n_heads"]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Cache `hook_z` of each layer, take the last position, map each head's `z` into the residual
# stream with its own `W_O`, and project onto the direction that separates the two tokens in the
# unembedding (one direction per prompt).
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `out = einsum(cache["z", layer][:, -1], model.W_O[layer], "b h d, h d m -> b h m")` is
# `[batch, head, d_model]`; `direction = (model.W_U[:, correct] - model.W_U[:, wrong]).T` is
# `[batch, d_model]`; `(out * direction[:, None]).sum(-1).mean(0)`.
# </details>

# %% role="solution" grade_id="impl_head_logit_attribution"
def head_logit_attribution(model: HookedTransformer, tokens: Int[Tensor, "batch pos"], correct: Int[Tensor, "batch"],
                           wrong: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers n_heads"]:
    ### BEGIN SOLUTION
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_z"))
    direction = (model.W_U[:, correct] - model.W_U[:, wrong]).T  # [batch, d_model]
    rows = []
    for layer in range(model.cfg.n_layers):
        out = einsum(cache["z", layer][:, -1], model.W_O[layer], "batch head d_head, head d_head d_model -> batch head d_model")
        rows.append((out * direction[:, None]).sum(dim=-1).mean(dim=0))
    return torch.stack(rows)
    ### END SOLUTION


# %% role="test" grade_id="test_head_logit_attribution" points=2
check("circuits.head_logit_attribution", head_logit_attribution)

# %% [markdown]
# The decomposition is exact: the head terms plus the embeddings and biases give back the logit
# difference the model computes.

# %%
clean_logits, clean_cache = model.run_with_cache(prompts["clean"])
direction = (model.W_U[:, prompts["correct"]] - model.W_U[:, prompts["wrong"]]).T
dla = head_logit_attribution(model, prompts["clean"], prompts["correct"], prompts["wrong"])
rest = {"embeddings": ((clean_cache["embed"][:, -1] + clean_cache["pos_embed"][:, -1]) * direction).sum(-1).mean(),
        "b_O": sum((model.b_O[layer] * direction).sum(-1).mean() for layer in range(2)),
        "b_U": (model.b_U[prompts["correct"]] - model.b_U[prompts["wrong"]]).mean()}
for layer in range(2):
    print(f"layer {layer}: " + "  ".join(f"H{h} {dla[layer, h]:+.3f}" for h in range(4)))
print("other terms:", {name: round(value.item(), 3) for name, value in rest.items()})
print(f"sum of all terms {dla.sum() + sum(rest.values()):.4f}   logit difference "
      f"{logit_diff(clean_logits, prompts['correct'], prompts['wrong']).mean():.4f}")

# %% [markdown]
# **Questions.** Which heads write the answer directly? The layer-0 heads have a direct
# attribution near zero: does that mean they do not matter (compare with ablation and patching)?
# Direct logit attribution on the *clean* prompt and patching *into the corrupted* prompt answer
# different questions: state each in one sentence.
#
# ## 5. Reading circuits off the weights
#
# Without LayerNorm or MLPs, the logits are a sum of paths through the weights, and each head
# factors into two low-rank bilinear maps (Elhage et al., "One-Layer Attention-Only Transformers"):
#
# - the **QK circuit** `W_Q W_K^T` (`d_model x d_model`) decides where the head attends;
# - the **OV circuit** `W_V W_O` (`d_model x d_model`) decides what it writes when it attends.
#
# TransformerLens uses row vectors (`x @ W`): `model.W_Q[layer, head]` is `[d_model, d_head]`,
# `model.W_O[layer, head]` is `[d_head, d_model]`, `model.W_E` is `[d_vocab, d_model]`,
# `model.W_U` is `[d_model, d_vocab]`, `model.W_pos` is `[n_ctx, d_model]`. A product like
# `W_E W_V W_O W_U` is `64 x 64` but has rank at most `d_head = 16`; `FactoredMatrix(A, B)` keeps it
# as the two factors `A @ B` and still offers `.AB` (the full matrix), `.T`, `@`, `.norm()`
# (Frobenius, from the singular values) and `.svd()`. `model.OV[layer, head]` and
# `model.QK[layer, head]` are those FactoredMatrix objects for each head.
#
# ### 5a. The full OV circuit
#
# *Difficulty 2/5, about 10 minutes.* What does a head write into the logits when it attends to
# token `s`? Row `s` of `W_E W_V W_O W_U` (`[d_vocab, d_vocab]`: source token -> output logits).
# A copying head has a large diagonal.
#
# ```python
# def full_ov_circuit(model: HookedTransformer, layer: int, head: int) -> FactoredMatrix   # [d_vocab, d_vocab]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Follow a token through the head in the row-vector convention: embed it, take the value, write
# with `W_O`, read out with the unembedding. Keep the product factored: its rank is `d_head`.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `FactoredMatrix(model.W_E @ model.W_V[layer, head], model.W_O[layer, head] @ model.W_U)`, or
# `model.W_E @ model.OV[layer, head] @ model.W_U`. Rows index the source token.
# </details>

# %% role="solution" grade_id="impl_full_ov_circuit"
def full_ov_circuit(model: HookedTransformer, layer: int, head: int) -> FactoredMatrix:
    ### BEGIN SOLUTION
    return FactoredMatrix(model.W_E @ model.W_V[layer, head], model.W_O[layer, head] @ model.W_U)
    ### END SOLUTION


# %% role="test" grade_id="test_full_ov_circuit" points=1
check("circuits.full_ov_circuit", full_ov_circuit)

# %%
fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
for head in range(4):
    ov = full_ov_circuit(model, 1, head)
    ov = getattr(ov, "AB", ov)[1:, 1:]  # a FactoredMatrix or the dense matrix; drop BOS: it is never copied
    copying = (ov.argmax(dim=-1) == torch.arange(ov.shape[0])).float().mean().item()
    heatmap(ov, ax=axes[head], annotate=False, title=f"L1H{head} OV: top-1 copy {copying:.0%}",
            xlabel="output token", ylabel="attended token")
plt.show()

# %% [markdown]
# **Question.** "Top-1 copy" is the fraction of source tokens whose own logit is the largest in
# their row. Which heads copy? Is the fraction a good measure of copying, or would you rather look
# at the eigenvalues of the OV circuit (Elhage et al., "Detecting Copying Behavior")?
#
# ### 5b. The positional QK circuit
#
# *Difficulty 2/5, about 10 minutes.* Where does a head attend *by position*? The bilinear form
# `W_pos W_Q W_K^T W_pos^T` (`[n_ctx, n_ctx]`: query position x key position) is the positional
# part of the attention scores (the raw scores, before the `1/sqrt(d_head)` scale, the causal mask
# and the softmax; the token embeddings add further terms).
#
# ```python
# def pos_qk_circuit(model: HookedTransformer, layer: int, head: int) -> FactoredMatrix   # [n_ctx, n_ctx]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# The query side is the positional embedding times `W_Q`, the key side the positional embedding
# times `W_K`; the score is their product with the key side transposed.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `FactoredMatrix(W_pos @ W_Q, (W_pos @ W_K).T)`: rows are queries, columns keys.
# </details>

# %% role="solution" grade_id="impl_pos_qk_circuit"
def pos_qk_circuit(model: HookedTransformer, layer: int, head: int) -> FactoredMatrix:
    ### BEGIN SOLUTION
    return FactoredMatrix(model.W_pos @ model.W_Q[layer, head], (model.W_pos @ model.W_K[layer, head]).T)
    ### END SOLUTION


# %% role="test" grade_id="test_pos_qk_circuit" points=1
check("circuits.pos_qk_circuit", pos_qk_circuit)

# %%
prev_head = int(torch.as_tensor(attention_score(rep_cache["pattern", 0], previous_token_mask(POS))).argmax())
scores = pos_qk_circuit(model, 0, prev_head)
scores = getattr(scores, "AB", scores)[:32, :32] / model.cfg.d_head ** 0.5  # factored or dense
causal = torch.ones_like(scores, dtype=torch.bool).tril()
heatmap(scores.masked_fill(~causal, float("-inf")).softmax(dim=-1), annotate=False, signed=False,
        title=f"L0H{prev_head}: softmax of the positional QK circuit", xlabel="key position", ylabel="query position")
plt.show()

# %% [markdown]
# **Question.** The previous-token head's rule "attend to `q - 1`" is written in the positional
# embeddings alone. What does the picture look like for the induction heads, and why should it
# not show a clear rule?
#
# ### 5c. Composition scores
#
# *Difficulty 2/5, about 10 minutes.*
#
# A layer-1 head can read what a layer-0 head wrote in three places: its queries (Q-composition),
# its keys (K-composition) or its values (V-composition). Elhage et al. measure how much of one
# matrix flows through another with the **composition score**
#
# $$\frac{\lVert W_A W_B \rVert_F}{\lVert W_A \rVert_F \, \lVert W_B \rVert_F},$$
#
# where `W_A` is the earlier head's OV circuit (what it writes) and `W_B` is the matrix of the later
# head that reads it. In TransformerLens's row-vector convention the earlier matrix comes first.
#
# ```python
# def composition_score(W_A: FactoredMatrix, W_B: FactoredMatrix) -> Float[Tensor, ""]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Three Frobenius norms: of the product, and of each factor. `FactoredMatrix` computes them from
# singular values, without building any `d_model x d_model` matrix.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `(W_A @ W_B).norm() / (W_A.norm() * W_B.norm())`.
# </details>

# %% role="solution" grade_id="impl_composition_score"
def composition_score(W_A: FactoredMatrix, W_B: FactoredMatrix) -> Float[Tensor, ""]:
    ### BEGIN SOLUTION
    return (W_A @ W_B).norm() / (W_A.norm() * W_B.norm())
    ### END SOLUTION


# %% role="test" grade_id="test_composition_score" points=1
check("circuits.composition_score", composition_score)

# %% [markdown]
# ### 5d. Q-, K- and V-composition between the two layers
#
# *Difficulty 3/5, about 15 minutes.*
#
# With `W_A = model.OV[0, h0]` (the layer-0 head's OV circuit, row-vector convention: the head
# writes `x @ W_OV`), the reading matrix `W_B` of layer-1 head `h1` is
#
# - Q-composition: `model.QK[1, h1]` (the written vector enters as the query: `(x W_OV) W_QK k^T`);
# - K-composition: `model.QK[1, h1].T` (it enters as the key: `q W_QK (x W_OV)^T`, whose norm is that of `W_OV W_QK^T`);
# - V-composition: `model.OV[1, h1]`.
#
# **Task.** Return the `[n_heads, n_heads]` matrix of composition scores, rows = layer-0 head,
# columns = layer-1 head, for `kind` in `"Q"`, `"K"`, `"V"`.
#
# ```python
# def composition_scores(model: HookedTransformer, kind: str) -> Float[Tensor, "head0 head1"]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# The writer is always the layer-0 head's OV circuit; only the reader changes with `kind`. Score
# every (layer-0 head, layer-1 head) pair with your `composition_score`.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# Two loops over heads; pick `W_B` by `kind` from `model.QK[1]`, `model.QK[1].T`, `model.OV[1]`.
# `FactoredMatrix` supports `.T` and indexing by head.
# </details>

# %% role="solution" grade_id="impl_composition_scores"
def composition_scores(model: HookedTransformer, kind: str) -> Float[Tensor, "head0 head1"]:
    ### BEGIN SOLUTION
    readers = {"Q": model.QK[1], "K": model.QK[1].T, "V": model.OV[1]}[kind]
    writers = model.OV[0]
    scores = torch.zeros(model.cfg.n_heads, model.cfg.n_heads)
    for h0 in range(model.cfg.n_heads):
        for h1 in range(model.cfg.n_heads):
            scores[h0, h1] = composition_score(writers[h0], readers[h1])
    return scores
    ### END SOLUTION


# %% role="test" grade_id="test_composition_scores" points=2
check("circuits.composition_scores", composition_scores)

# %% [markdown]
# Compare with a baseline: the same scores for ten models of the same shape with random weights
# (random matrices compose a little by chance). A score means something only where it stands
# out of that range.

# %%
random_scores = {kind: torch.stack([composition_scores(random_model(torch.Generator().manual_seed(seed)), kind)
                                    for seed in range(10)]) for kind in "QKV"}
baseline = {kind: (s.mean().item(), s.quantile(0.95).item()) for kind, s in random_scores.items()}
fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
for ax, kind in zip(axes, "QKV"):
    mean, q95 = baseline[kind]
    heatmap(composition_scores(model, kind), ax=ax, title=f"{kind}-composition (random: {mean:.2f}, 95%: {q95:.2f})",
            xlabel="layer-1 head", ylabel="layer-0 head")
plt.show()
v_head = int(z_change[changed_at].argmax())  # the layer-0 head whose output the corruption changes most (4c's result)
print(f"L0H{v_head}: |z_clean - z_corrupted| at the corrupted position {changed_at}: {z_change[changed_at, v_head]:.2f}")
v_scores = "  ".join(f"L1H{h} {x:.3f}" for h, x in enumerate(composition_scores(model, "V")[v_head]))
print(f"L0H{v_head} V-composition: {v_scores}   random models: mean {baseline['V'][0]:.3f}, "
      f"95th percentile {baseline['V'][1]:.3f}")

# %% [markdown]
# **Questions.** Which layer-0 head has the largest K-composition with the induction heads, and
# is it the previous-token head you found in section 2? Together with the patching and ablation
# results, write down the induction circuit in one sentence per head: who attends where, reading
# what from whom, and writing what.
#
# **The limits of composition scores.** Per-position patching found a layer-0 head whose output at
# the corrupted position moves the answer, a path through the induction heads' values
# (V-composition). Yet its V-composition scores with the two induction heads that carry most of
# that effect (the largest per-position effects at the last position) are at or below the level of
# random weights (compare the numbers printed above); only one pair stands out. How can a head feed another head's values
# causally while the composition score sees nothing? Think about what the Frobenius norm averages
# over (every direction of the residual stream, weighted equally, whether or not the model ever
# writes there), about the direct path that carries the same token (the embedding reaches the
# values without any layer-0 head), and about the size of the effect (compare the layer-0 head's
# patching effect printed above with the induction heads'). Conversely, name a way a score far above baseline could come with
# no causal effect on this task. What would you measure instead (hint: restrict the product to the
# subspace the layer-0 head actually writes on real inputs, or patch along the path)?
#
# ## Open questions
#
# - Every induction head here is redundant with the others. Does the model *need* three? Retrain it
#   with another seed (`interplab zoo train attn-only-2l --seed 1 --out /tmp/zoo`): how many form, and
#   when in training? The card (`/tmp/zoo/attn-only-2l.json`) logs the loss every 10 steps: find the
#   phase change Olsson et al. describe, a sudden drop after a plateau.
# - Your detectors average attention over positions. How would you detect an induction head on
#   natural text, where repeats are rare and inexact (see TransformerLens's `detect_head`, which
#   builds the detection pattern from the token sequence itself)?
# - Path patching (Wang et al.) patches only the path from one head into another's keys, queries or
#   values. Which path would settle the question above about the V-composition head?
#
# ## Further reading
#
# - Nanda, [*A Comprehensive Mechanistic Interpretability Explainer & Glossary*](https://www.neelnanda.io/mechanistic-interpretability/glossary): short definitions of every term used here.
# - Wang et al. (2022), [*Interpretability in the Wild: a Circuit for Indirect Object Identification in GPT-2 small*](https://arxiv.org/abs/2211.00593): patching and logit differences at the scale of a real model.
# - Heimersheim & Nanda (2024), [*How to use and interpret activation patching*](https://arxiv.org/abs/2404.15255): noising vs denoising, metrics and pitfalls.
# - Conmy et al. (2023), [*Towards Automated Circuit Discovery for Mechanistic Interpretability*](https://arxiv.org/abs/2304.14997): finding circuits like this one automatically.
# - Zhang & Nanda (2024), [*Towards Best Practices of Activation Patching in Language Models: Metrics and Methods*](https://arxiv.org/abs/2309.16042): why logit difference, and what goes wrong with probabilities.
