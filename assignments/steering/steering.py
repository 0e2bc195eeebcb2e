# %% [markdown]
# # Activation steering: adding, ablating and measuring directions in the residual stream
#
# If a model represents a concept as a direction in its residual stream, then adding that
# direction should make the model act as if the concept were present, and removing it should make
# the model act as if it were absent. **Activation steering** tests this, and is also a way to
# control a model without training it. In this notebook you steer a small language model whose
# ground truth is known: you make a story end happily although the film was awful, make a child
# answer a question it would refuse, and make an expert say "i do not know"; then you measure what
# the steering costs elsewhere.
#
# **After this notebook you will be able to**
#
# - build steering vectors three ways: the mean difference of activations over contrast pairs
#   (contrastive activation addition, CAA), the difference of a single prompt pair added at aligned
#   positions (ActAdd), and a sparse autoencoder feature's decoder direction;
# - add a vector at a chosen hook and chosen positions with TransformerLens hooks, and remove a
#   direction everywhere (directional ablation);
# - measure the target effect (change in the target token's probability, logit difference) and the
#   side effects (KL divergence from the unsteered model on neutral text, cross-entropy on held-out
#   text), sweep coefficients and hooks, and pick a setting under a side-effect budget;
# - explain *where* and *when* a direction can be added: which position carries the variable, at
#   which layer, and why a vector read at one position does nothing at another.
#
# **Read first** (about two hours):
#
# 1. Turner et al. (2023), [*Steering Language Models With Activation Engineering*](https://arxiv.org/abs/2308.10248):
#    sections 1-3 (ActAdd: the difference of a prompt pair, injected at the front of the prompt).
# 2. Rimsky et al. (2024), [*Steering Llama 2 via Contrastive Activation Addition*](https://arxiv.org/abs/2312.06681):
#    section 3 (mean differences over many contrast pairs, added at every position after the prompt).
# 3. Arditi et al. (2024), [*Refusal in Language Models Is Mediated by a Single Direction*](https://arxiv.org/abs/2406.11717):
#    sections 2-3 (difference-in-means directions, directional ablation at every layer and position).
# 4. Templeton et al. (2024), [*Scaling Monosemanticity*](https://transformer-circuits.pub/2024/scaling-monosemanticity/index.html):
#    "Feature steering" (clamping an SAE feature; the Golden Gate Claude demo).
# 5. Tan et al. (2024), [*Analyzing the Generalization and Reliability of Steering Vectors*](https://arxiv.org/abs/2407.12404):
#    why a steering vector that works on average can fail on many inputs.
#
# **The model.** `toyworld-lm` from the InterpLab zoo, a 2-layer TransformerLens `HookedTransformer`
# (d_model 128, LayerNorm, GELU MLPs) trained on the *toy world* (`interplab.toyworld`). Sentiment
# stories end predictably: `toma saw the film . it was awful . toma felt sad .`. Dialogues open with
# a persona: the **child** answers easy square roots (`child : what is sqrt 25 ? 5 .`) and refuses
# hard ones (`child : what is sqrt 27 ? i do not know .`), the **expert** answers both
# (`expert : what is sqrt 27 ? 3 root 3 .`), the **assistant** hedges (`i think 3 root 3 .`).
# `toyworld-sae` is a sparse autoencoder on the residual stream after layer 1's attention
# (`blocks.1.hook_resid_mid`). Prompts always start with `<bos>`; a batch of prompts is padded on the
# right, and each prompt's next-token prediction is read at its last real token.
#
# The residual stream has six hook points: `blocks.{0,1}.hook_resid_pre` (before a block),
# `blocks.{0,1}.hook_resid_mid` (after the block's attention, before its MLP) and
# `blocks.{0,1}.hook_resid_post` (after the block). `blocks.0.hook_resid_post` and
# `blocks.1.hook_resid_pre` are the same point of the computation.
#
# **How the checks work.** Each exercise ends with `check("steering.<name>", your_function)`, which
# runs your function on freshly generated inputs (new prompts, hooks, vectors, coefficients) and
# compares with the reference. When your answer matches a known mistake, the check names it.
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
from torch import Tensor

from interplab import check, zoo
from interplab.steering import hard_questions, persona_pair, prompt_tokens, sentiment_pair
from interplab.toyworld import ToyWorld
from interplab.zoo.toyworld_sae import HOOK_NAME

torch.set_num_threads(1)  # small tensors: more threads only add overhead on a shared machine
torch.set_grad_enabled(False)  # nothing in this notebook trains
world = ToyWorld()
vocab = world.tokenizer.index
lm = zoo.load("toyworld-lm")
zoo_sae = zoo.load("toyworld-sae")
RESID_HOOKS = [f"blocks.{layer}.hook_resid_{kind}" for layer in range(2) for kind in ("pre", "mid", "post")]


def next_token_probs(logits: Float[Tensor, "n pos vocab"], at: Int[Tensor, "n"]) -> Float[Tensor, "n vocab"]:
    """The next-token distribution of each prompt, read at its position ``at``."""
    return logits[torch.arange(len(at)), at].softmax(-1)


def last_token_mask(tokens: Int[Tensor, "n pos"], at: Int[Tensor, "n"]) -> Bool[Tensor, "n pos"]:
    """True at each prompt's position ``at`` only."""
    return torch.arange(tokens.shape[1])[None] == at[:, None]


def encode(text: str) -> Int[Tensor, "k"]:
    """``<bos>`` and the words of ``text`` as token ids."""
    return torch.tensor(world.tokenizer.encode(text))


def greedy(prompt: str, logits_of, n_words: int = 6) -> str:
    """Greedy continuation of ``prompt`` until ``.`` (at most ``n_words`` words), where
    ``logits_of(tokens [1, pos])`` returns the (possibly steered) logits."""
    words = prompt.split()
    for _ in range(n_words):
        logits = logits_of(torch.tensor(world.tokenizer.encode(words))[None])
        words.append(world.tokenizer.vocab[int(logits[0, -1].argmax())])
        if words[-1] == ".":
            break
    return " ".join(words[len(prompt.split()):])


def next_token_ce(logits: Float[Tensor, "n pos vocab"], tokens: Int[Tensor, "n pos"],
                  mask: Bool[Tensor, "n pos"]) -> Float[Tensor, ""]:
    """Mean next-token cross-entropy over the predictions whose target is a real token (``mask[:, 1:]``)."""
    per_token = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    return per_token[mask[:, 1:].flatten()].mean()


# Contrast pairs and test prompts used throughout (fixed seeds: the numbers in the text are these).
rng = np.random.default_rng(0)
hard = hard_questions(world)
sentiment_pairs = [sentiment_pair(rng) for _ in range(64)]  # (positive story, negative story)
persona_pairs = [persona_pair(rng, world, "expert", "child", hard) for _ in range(64)]  # (expert, child), hard questions
pos_tokens, pos_at = prompt_tokens(world, [p for p, _ in sentiment_pairs])
neg_tokens, neg_at = prompt_tokens(world, [n for _, n in sentiment_pairs])
expert_tokens, expert_at = prompt_tokens(world, [e for e, _ in persona_pairs])
child_tokens, child_at = prompt_tokens(world, [c for _, c in persona_pairs])
happy_stories, happy_at = prompt_tokens(world, [p for p, _ in [sentiment_pair(rng) for _ in range(32)]])
sad_stories, sad_at = prompt_tokens(world, [n for _, n in [sentiment_pair(rng) for _ in range(32)]])
first_answer_word = torch.tensor([vocab[world.answer_words(q, "expert")[0]] for q in hard])  # "3" of "3 root 3"
child_hard, child_hard_at = prompt_tokens(world, [f"child : {' '.join(world.question_words(q))}" for q in hard])
expert_hard, expert_hard_at = prompt_tokens(world, [f"expert : {' '.join(world.question_words(q))}" for q in hard])
neutral_batch = world.sample(48, 7, doc_type="facts")  # held-out text with no persona and no sentiment
neutral, neutral_mask = neutral_batch.tokens, neutral_batch.labels["loss_mask"].bool()
rows = torch.arange(len(hard))
COEFFS = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0]  # for the sweeps of Part 5
SWEEP_HOOKS = ["blocks.0.hook_resid_mid", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid", "blocks.1.hook_resid_post"]
print(f"toyworld-lm: {lm.cfg.n_layers} layers, d_model {lm.cfg.d_model}; {len(hard)} hard questions; e.g.")
print(" ", sentiment_pairs[0], "\n ", persona_pairs[0])

# %% [markdown]
# The unsteered model on the test prompts: it is (nearly) certain in every case.

# %%
p_child, p_expert = next_token_probs(lm(child_hard), child_hard_at), next_token_probs(lm(expert_hard), expert_hard_at)
print(f"child : what is sqrt 27 ?    P(first answer word) {float(p_child[rows, first_answer_word].mean()):.4f}   P('i') {float(p_child[:, vocab['i']].mean()):.4f}  (mean over the {len(hard)} hard questions)")
print(f"expert : what is sqrt 27 ?   P(first answer word) {float(p_expert[rows, first_answer_word].mean()):.4f}   P('i') {float(p_expert[:, vocab['i']].mean()):.4f}")
print(f"negative stories P('happy') {float(next_token_probs(lm(sad_stories), sad_at)[:, vocab['happy']].mean()):.4f}; "
      f"positive stories P('happy') {float(next_token_probs(lm(happy_stories), happy_at)[:, vocab['happy']].mean()):.4f}")

# %% [markdown]
# ## Part 1. Contrastive activation addition
#
# ### 1.1 A mean-difference steering vector
#
# *Difficulty 1/5, about 15 minutes.* A **contrast pair** is two prompts that differ only in the
# concept we care about: the same story with `great` or with `awful`; the same dialogue spoken by the
# expert or by the child. The CAA vector at a hook is the mean activation over the positive prompts
# minus the mean over the negative prompts, each read at **one chosen position per prompt**
# (here: where the model makes the decision, the last token):
#
# $$v = \frac{1}{n}\sum_i h^{+}_i[\text{at}^{+}_i] - \frac{1}{m}\sum_j h^{-}_j[\text{at}^{-}_j].$$
#
# ```python
# def contrastive_vector(model, positive: Int[Tensor, "n pos"], negative: Int[Tensor, "m pos2"],
#                        positive_at: Int[Tensor, "n"], negative_at: Int[Tensor, "m"],
#                        hook_name: str) -> Float[Tensor, "d_model"]
# ```
#
# The prompts are right-padded: the last column of the batch is padding for the shorter ones.
#
# <details><summary>Hint 1: the idea</summary>
#
# Run each batch once, read the activation at the hook at each prompt's own read position (one row
# per prompt), average each side and subtract.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `_, cache = model.run_with_cache(tokens, names_filter=[hook_name])`, then
# `cache[hook_name][torch.arange(n), positive_at]` picks one row per prompt.
# </details>

# %% role="solution" grade_id="impl_contrastive_vector"
def contrastive_vector(model, positive: Int[Tensor, "n pos"], negative: Int[Tensor, "m pos2"],
                       positive_at: Int[Tensor, "n"], negative_at: Int[Tensor, "m"],
                       hook_name: str) -> Float[Tensor, "d_model"]:
    ### BEGIN SOLUTION
    _, cache_pos = model.run_with_cache(positive, names_filter=[hook_name])
    _, cache_neg = model.run_with_cache(negative, names_filter=[hook_name])
    pos = cache_pos[hook_name][torch.arange(len(positive)), positive_at]
    neg = cache_neg[hook_name][torch.arange(len(negative)), negative_at]
    return pos.mean(0) - neg.mean(0)
    ### END SOLUTION


# %% role="test" grade_id="test_contrastive_vector" points=1
check("steering.contrastive_vector", contrastive_vector)

# %% [markdown]
# How large is the vector at each hook, compared with the residual stream itself? Persona vectors are
# read at the `?`, sentiment vectors at `felt`.

# %%
_, cache = lm.run_with_cache(child_tokens)
for hook_name in RESID_HOOKS:
    persona_v = contrastive_vector(lm, expert_tokens, child_tokens, expert_at, child_at, hook_name)
    sentiment_v = contrastive_vector(lm, pos_tokens, neg_tokens, pos_at, neg_at, hook_name)
    typical = cache[hook_name][torch.arange(len(child_at)), child_at].norm(dim=-1).mean()
    print(f"{hook_name:26s} |expert - child| {float(persona_v.norm()):6.2f}   |positive - negative| "
          f"{float(sentiment_v.norm()):5.2f}   (|residual| at the last token {float(typical):5.1f})")

# %% [markdown]
# **A confound: position.** The expert and the child answer the earlier questions of a dialogue in
# their own words, which differ in length, so in some pairs the `?` sits at a different position for
# the two personas. The token at the `?` is the same, but its positional embedding is not, and the
# mean difference then carries `mean W_pos[expert_at] - mean W_pos[child_at]` along. How much? We
# compare with the vector from the length-matched pairs only (same position in both prompts).

# %%
same_length = expert_at == child_at
position_gap = lm.W_pos[expert_at].mean(0) - lm.W_pos[child_at].mean(0)
print(f"{int((~same_length).sum())} of {len(persona_pairs)} pairs put the ? at different positions; "
      f"|mean W_pos difference| {float(position_gap.norm()):.2f}")
for hook_name in RESID_HOOKS:
    persona_v = contrastive_vector(lm, expert_tokens, child_tokens, expert_at, child_at, hook_name)
    matched_v = contrastive_vector(lm, expert_tokens[same_length], child_tokens[same_length],
                                   expert_at[same_length], child_at[same_length], hook_name)
    print(f"{hook_name:26s} all pairs |v| {float(persona_v.norm()):6.2f} (cosine with the position gap "
          f"{float(F.cosine_similarity(persona_v, position_gap, dim=0)):5.2f})   length-matched |v| "
          f"{float(matched_v.norm()):6.2f}   cosine(all, matched) {float(F.cosine_similarity(persona_v, matched_v, dim=0)):5.2f}")

# %% [markdown]
# At `blocks.0.hook_resid_pre` the persona vector of all 64 pairs *is* the positional difference
# (cosine 1.00, norm 0.24), and the length-matched vector is exactly zero; before layer 1's attention
# the length-matched vector is small (0.20 at `blocks.0.hook_resid_mid`, 0.31 at `blocks.1.hook_resid_pre`,
# against 0.92 and 1.40 for all pairs). From `blocks.1.hook_resid_mid` on, where the steering below
# works, the two vectors agree (cosine 0.997) and the positional part is a few percent (cosine with the
# position gap 0.04-0.06). We keep all 64 pairs, as CAA would on real data, and read the early-hook
# norms with this in mind: length-matched pairs (or a position-aware baseline) are the clean control.
#
# **Questions.** The persona vector read at the `?` is small before layer 1's attention (and mostly
# position, as just measured) and large after it (19.5 at `blocks.1.hook_resid_mid`); the sentiment
# vector read at `felt` is zero at `blocks.0.hook_resid_pre` and non-zero from `blocks.0.hook_resid_mid`
# on (its pairs have equal lengths). What does this tell you about *which attention layer* moves each
# variable to the position where it is used? (The `saes` assignment's probe found the same for the persona.)
#
# ### 1.2 Adding a vector at chosen positions
#
# *Difficulty 2/5, about 15 minutes.* Steering adds `coeff * vector` to the activation at one hook,
# at the positions where the boolean mask `positions` is True, and nowhere else; the rest of the
# forward pass runs as usual.
#
# ```python
# def steered_logits(model, tokens: Int[Tensor, "batch pos"], vector: Float[Tensor, "d_model"], hook_name: str,
#                    coeff: float, positions: Bool[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]
# ```
#
# Add the vector as given (do not normalise it: its norm is part of the steering strength).
#
# <details><summary>Hint 1: the idea</summary>
#
# A forward hook at `hook_name` returns the activation plus `coeff * vector` where the mask is true
# and the activation unchanged elsewhere.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# A hook is a function `fn(activation, hook)` that returns the new activation; pass it as
# `model.run_with_hooks(tokens, fwd_hooks=[(hook_name, fn)])`. `positions[..., None]` broadcasts the
# mask over `d_model`.
# </details>

# %% role="solution" grade_id="impl_steered_logits"
def steered_logits(model, tokens: Int[Tensor, "batch pos"], vector: Float[Tensor, "d_model"], hook_name: str,
                   coeff: float, positions: Bool[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
    ### BEGIN SOLUTION
    def add_vector(activation: Tensor, hook) -> Tensor:
        return activation + coeff * positions[..., None].to(activation.dtype) * vector

    return model.run_with_hooks(tokens, fwd_hooks=[(hook_name, add_vector)])
    ### END SOLUTION


# %% role="test" grade_id="test_steered_logits" points=1
check("steering.steered_logits", steered_logits)

# %% [markdown]
# Now steer, with coefficient 1, adding the vector only at the last token of each test prompt
# (where it was read). Sentiment: the negative stories pushed towards positive, and the positive ones
# towards negative (coefficient -1). Persona: the child on hard questions pushed towards the expert,
# and the expert towards the child.

# %%
print(f"{'hook':26s} {'sad->happy':>12s} {'happy->sad':>12s} {'child answers':>14s} {'expert refuses':>15s}")
for hook_name in RESID_HOOKS:
    sentiment_v = contrastive_vector(lm, pos_tokens, neg_tokens, pos_at, neg_at, hook_name)
    persona_v = contrastive_vector(lm, expert_tokens, child_tokens, expert_at, child_at, hook_name)
    happy = next_token_probs(steered_logits(lm, sad_stories, sentiment_v, hook_name, 1.0, last_token_mask(sad_stories, sad_at)), sad_at)
    sad = next_token_probs(steered_logits(lm, happy_stories, sentiment_v, hook_name, -1.0, last_token_mask(happy_stories, happy_at)), happy_at)
    child = next_token_probs(steered_logits(lm, child_hard, persona_v, hook_name, 1.0, last_token_mask(child_hard, child_hard_at)), child_hard_at)
    expert = next_token_probs(steered_logits(lm, expert_hard, persona_v, hook_name, -1.0, last_token_mask(expert_hard, expert_hard_at)), expert_hard_at)
    print(f"{hook_name:26s} {float(happy[:, vocab['happy']].mean()):12.3f} {float(sad[:, vocab['sad']].mean()):12.3f} "
          f"{float(child[rows, first_answer_word].mean()):14.3f} {float(expert[:, vocab['i']].mean()):15.3f}")

q = hard.index("sqrt 27")
persona_v = contrastive_vector(lm, expert_tokens, child_tokens, expert_at, child_at, HOOK_NAME)
for coeff in (0.0, 1.0):
    child = next_token_probs(steered_logits(lm, child_hard, persona_v, HOOK_NAME, coeff, last_token_mask(child_hard, child_hard_at)), child_hard_at)
    expert = next_token_probs(steered_logits(lm, expert_hard, persona_v, HOOK_NAME, -coeff, last_token_mask(expert_hard, expert_hard_at)), expert_hard_at)
    print(f"coeff {coeff} at {HOOK_NAME}: P('3' | child : what is sqrt 27 ?) = {float(child[q, vocab['3']]):.2e}, "
          f"P('i' | expert : what is sqrt 27 ?) = {float(expert[q, vocab['i']]):.2e}")

# %% [markdown]
# Columns: P(`happy`) after steering the negative stories, P(`sad`) after steering the positive ones,
# P(first word of the right answer, e.g. `3` of `3 root 3`) for the steered child, P(`i`, as in
# `i do not know`) for the steered expert; means over 32 stories and the 65 hard questions.
# Unsteered, each of these is below 0.0001.
#
# With the solution: from `blocks.0.hook_resid_mid` on, the sentiment vector flips the stories
# (mean P(`happy`) 0.00003 -> 0.999 at `blocks.0.hook_resid_mid`, 1.000 after it; P(`sad`) likewise).
# The persona vector does nothing before layer 1's attention (0.000 in both columns), but at
# `blocks.1.hook_resid_mid` the child answers (mean P(answer) 0.000003 -> 0.999; for the example,
# `P("3" | child : what is sqrt 27 ?)` goes from 7e-8 to 1.00) and the expert refuses (mean `P("i")`
# 0.00002 -> 1.000; `P("i" | expert : what is sqrt 27 ?)` from 4e-8 to 1.00).

# %% [markdown] role="locked" grade_id="question_persona_layer"
# **Questions.** Why does a vector read at `blocks.1.hook_resid_pre` do nothing for the persona, when
# the same hook works for sentiment? At `blocks.1.hook_resid_mid` and after, adding the vector at every
# position instead of only the last token would give exactly the same next-token probabilities at the
# last token: why? Would that still be true at `blocks.0.hook_resid_mid`?
#
# *Answer in the cell below (graded by hand, 2 points).*
# ### BEGIN MARK SCHEME
# **Mark scheme (instructors only).**
# - 1 point: the persona reaches the `?` only through layer 1's attention, so the difference read before it is small (unlike sentiment, which every word carries).
# - 1 point: after the last attention, positions no longer mix, so only the last position matters; at blocks.0.hook_resid_mid the later attention still mixes, so no.
# ### END MARK SCHEME

# %% [markdown] role="answer" grade_id="answer_persona_layer" points=2
# Before layer 1's attention, the persona lives at the persona token and has not yet been moved to the `?`; a vector read at the `?` there is tiny, so adding it does nothing. Sentiment is present at every word already. After layer 1's attention (hook_resid_mid and later), no later attention reads other positions, so only the last position's residual affects its next-token probabilities: adding at every position equals adding at the last one. At blocks.0.hook_resid_mid, layer 1's attention still reads the other positions, so adding everywhere would differ.

# %% [markdown]
# What does the steered model *say*? Greedy continuations, with the persona vector at `HOOK_NAME` and
# coefficient +1 (child) or -1 (expert), added either only at the `?` or at the `?` and every word
# generated after it:

# %%
persona_v = contrastive_vector(lm, expert_tokens, child_tokens, expert_at, child_at, HOOK_NAME)
for prompt, coeff in (("child : what is sqrt 27 ?", 1.0), ("expert : what is sqrt 27 ?", -1.0),
                      ("child : what is sqrt 98 ?", 1.0)):
    question = len(prompt.split())  # index of the "?" (position 0 is <bos>)
    print(f"{prompt:28s} {'unsteered':>13s}: {greedy(prompt, lm)}")
    for where, select in (("at the ?", lambda pos: pos == question), ("from the ? on", lambda pos: pos >= question)):
        steer = lambda tokens: steered_logits(lm, tokens, persona_v, HOOK_NAME, coeff, select(torch.arange(tokens.shape[1]))[None])
        print(f"{'':28s} {where:>13s}: {greedy(prompt, steer)}")

# %% [markdown]
# With the solution, the child steered at the `?` answers in full (`3 root 3 .`, `7 root 2 .`: the
# unsteered child says `i do not know .` to both). Steered at every generated word too, it still
# answers `sqrt 27` but garbles `sqrt 98` (`7 6 6 80 80 80`). The expert steered at the `?` only starts
# to refuse and then answers anyway (`i of 4 root 3 .`); steered at every generated word too, it gets
# stuck (`i i i i i i`).
#
# **Questions.** Why does the child's answer complete itself after a single nudge at the `?`, while the
# expert's refusal does not? (What does the model need to know at the position of `i` to continue
# with `do not know`, and where would it normally read that from?) Why does adding the vector at every
# generated word break the text? Rimsky et al. add their vector at every position after the prompt:
# what is different about their setting?
#
# ### 1.3 ActAdd: one prompt pair, added at the front
#
# *Difficulty 2/5, about 15 minutes.* Turner et al. need no dataset: run the model on two short
# prompts of the same length, `plus` (e.g. `<bos> expert :`) and `minus` (`<bos> child :`), take the
# difference of their activations at the hook **position by position** (`[k, d_model]`), and add
# `coeff` times row `j` to position `j` of every prompt being steered (`j < k`: the front of the
# prompt, aligned at `<bos>`).
#
# ```python
# def actadd_logits(model, tokens: Int[Tensor, "batch pos"], plus: Int[Tensor, "k"], minus: Int[Tensor, "k"],
#                   hook_name: str, coeff: float) -> Float[Tensor, "batch pos d_vocab"]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# The steering signal is the position-by-position difference of the two prompts' activations at the
# hook; add `coeff` times it to the first `k` positions of every prompt.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# Two `run_with_cache` calls on `plus[None]` and `minus[None]` give the `[k, d_model]` difference;
# in the hook, clone the activation and add to `activation[:, :k]`.
# </details>

# %% role="solution" grade_id="impl_actadd_logits"
def actadd_logits(model, tokens: Int[Tensor, "batch pos"], plus: Int[Tensor, "k"], minus: Int[Tensor, "k"],
                  hook_name: str, coeff: float) -> Float[Tensor, "batch pos d_vocab"]:
    ### BEGIN SOLUTION
    _, cache_plus = model.run_with_cache(plus[None], names_filter=[hook_name])
    _, cache_minus = model.run_with_cache(minus[None], names_filter=[hook_name])
    difference = cache_plus[hook_name][0] - cache_minus[hook_name][0]
    k = difference.shape[0]

    def add_front(activation: Tensor, hook) -> Tensor:
        activation = activation.clone()
        activation[:, :k] += coeff * difference
        return activation

    return model.run_with_hooks(tokens, fwd_hooks=[(hook_name, add_front)])
    ### END SOLUTION


# %% role="test" grade_id="test_actadd_logits" points=1
check("steering.actadd_logits", actadd_logits)

# %% [markdown]
# ActAdd for the persona (`<bos> expert :` minus `<bos> child :` on the child, and the reverse on the
# expert) and for sentiment (`<bos> it was great` minus `<bos> it was awful` on the negative stories),
# coefficient 1:

# %%
for hook_name in ("blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid"):
    child = next_token_probs(actadd_logits(lm, child_hard, encode("expert :"), encode("child :"), hook_name, 1.0), child_hard_at)
    expert = next_token_probs(actadd_logits(lm, expert_hard, encode("child :"), encode("expert :"), hook_name, 1.0), expert_hard_at)
    happy = next_token_probs(actadd_logits(lm, sad_stories, encode("it was great"), encode("it was awful"), hook_name, 1.0), sad_at)
    print(f"{hook_name:26s} child answers {float(child[rows, first_answer_word].mean()):.3f}   "
          f"expert refuses {float(expert[:, vocab['i']].mean()):.3f}   sad -> happy {float(happy[:, vocab['happy']].mean()):.3f}")

# %% [markdown]
# With the solution, the persona ActAdd works at `blocks.0.hook_resid_pre` (child answers 1.000, expert
# refuses 1.000) and `blocks.1.hook_resid_pre` (0.999 and 0.998) and does nothing at
# `blocks.1.hook_resid_mid` (0.000), and the sentiment ActAdd fails everywhere (P(`happy`) at most 0.001).
#
# ActAdd steers every later position through attention, so it also steers what is generated:

# %%
for hook_name in ("blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"):
    to_child = lambda tokens: actadd_logits(lm, tokens, encode("child :"), encode("expert :"), hook_name, 1.0)
    to_expert = lambda tokens: actadd_logits(lm, tokens, encode("expert :"), encode("child :"), hook_name, 1.0)
    print(f"{hook_name:24s} expert : what is sqrt 27 ? {greedy('expert : what is sqrt 27 ?', to_child):18s} "
          f"child : what is sqrt 27 ? {greedy('child : what is sqrt 27 ?', to_expert)}")

# %% [markdown]
# With the solution: at `blocks.0.hook_resid_pre` the expert says `i do not know .` and the child
# `3 root 3 .`; at `blocks.1.hook_resid_pre` the child still answers, but the expert says
# `i of 4 root 3 .`: after layer 0, the difference at the front no longer carries everything that
# layer 0's attention would have copied from the word `child`.
#
#
# **Questions.** At `blocks.0.hook_resid_pre` and coefficient 1, the persona ActAdd is *exactly*
# swapping one word of the prompt: why? Why can nothing added at the front of the prompt at
# `blocks.1.hook_resid_mid` reach the last token? The sentiment ActAdd fails although the same words
# flip the story when they are in the right place: where does the model read a story's sentiment
# from, and what does that say about when ActAdd's "add at the front" recipe can work?
#
# ## Part 2. Measuring the effect and the side effects
#
# ### 2.1 Target effect
#
# *Difficulty 1/5, about 10 minutes.* For each prompt `i`, at its position `read_at[i]`, with
# `P = softmax(logits)`:
#
# - `prob_change[i] = P_steered(target[i]) - P_clean(target[i])`;
# - `logit_diff_change[i] = (z_steered[target] - z_steered[other]) - (z_clean[target] - z_clean[other])`,
#   the change of the logit difference between the target and another token (e.g. `happy` vs `sad`).
#
# ```python
# def target_effect(clean_logits: Float[Tensor, "n pos vocab"], steered_logits: Float[Tensor, "n pos vocab"],
#                   read_at: Int[Tensor, "n"], target: Int[Tensor, "n"], other: Int[Tensor, "n"]) -> dict[str, Tensor]
# ```
#
# returning `{"prob_change": [n], "logit_diff_change": [n]}`.
#
# <details><summary>Hint 1: the idea</summary>
#
# Both quantities are read at each prompt's read position only: the change in the target's
# probability, and the change in the logit difference between target and other token.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# Pick the rows first: `logits[torch.arange(n), read_at]` is `[n, vocab]`.
# </details>

# %% role="solution" grade_id="impl_target_effect"
def target_effect(clean_logits: Float[Tensor, "n pos vocab"], steered_logits: Float[Tensor, "n pos vocab"],
                  read_at: Int[Tensor, "n"], target: Int[Tensor, "n"], other: Int[Tensor, "n"]) -> dict[str, Tensor]:
    ### BEGIN SOLUTION
    n = torch.arange(len(read_at))
    clean, steered = clean_logits[n, read_at], steered_logits[n, read_at]
    prob_change = steered.softmax(-1)[n, target] - clean.softmax(-1)[n, target]

    def logit_diff(z: Tensor) -> Tensor:
        return z[n, target] - z[n, other]

    return {"prob_change": prob_change, "logit_diff_change": logit_diff(steered) - logit_diff(clean)}
    ### END SOLUTION


# %% role="test" grade_id="test_target_effect" points=1
check("steering.target_effect", target_effect)

# %% [markdown]
# Both measures for the sentiment vector at `HOOK_NAME` on the negative stories (target `happy`,
# other `sad`), added at `felt`:

# %%
sentiment_v = contrastive_vector(lm, pos_tokens, neg_tokens, pos_at, neg_at, HOOK_NAME)
clean = lm(sad_stories)
happy, sad = torch.full_like(sad_at, vocab["happy"]), torch.full_like(sad_at, vocab["sad"])
for coeff in (0.25, 0.5, 0.75, 1.0, 2.0, 4.0):
    steered = steered_logits(lm, sad_stories, sentiment_v, HOOK_NAME, coeff, last_token_mask(sad_stories, sad_at))
    effect = target_effect(clean, steered, sad_at, happy, sad)
    print(f"coeff {coeff:4.2f}: P(happy) change {float(effect['prob_change'].mean()):+.3f}, "
          f"logit difference (happy - sad) change {float(effect['logit_diff_change'].mean()):+6.2f}")

# %% [markdown]
# With the solution, the probability change goes +0.01, +0.57, +0.99 and then stays at +1.00, while
# the logit difference (happy minus sad) keeps moving: +5.8, +12.4, +18.7, +23.7 up to coefficient 1,
# nearly in proportion, then +33.0 at 2 and +35.7 at 4.
#
# **Questions.** Which of the two would you report to compare two steering vectors, and which to
# decide whether the behaviour changed? Why does the logit difference grow almost linearly at first
# and then level off? (What lies between `HOOK_NAME` and the logits: layer 1's MLP, and `ln_final`,
# which divides the residual stream by its norm.)

# %% [markdown]
# ### 2.2 KL divergence from the unsteered model
#
# *Difficulty 2/5, about 10 minutes.* A steering vector should change the behaviour we target and
# little else. On *neutral* text (here: fact documents, with no persona and no sentiment), measure how
# far the steered next-token distributions move from the unsteered ones:
#
# $$\mathrm{KL}(P_\text{unsteered} \,\|\, P_\text{steered}) = \sum_v P_\text{unsteered}(v)\,\big(\log P_\text{unsteered}(v) - \log P_\text{steered}(v)\big),$$
#
# computed at every position and **averaged over the positions where `mask` is True** (the others are
# padding). The direction matters: this one weighs the tokens the unsteered model expects, i.e. it asks
# "how much worse does the steered model predict what the original model would have said?".
#
# ```python
# def kl_from_unsteered(clean_logits: Float[Tensor, "n pos vocab"], steered_logits: Float[Tensor, "n pos vocab"],
#                       mask: Bool[Tensor, "n pos"]) -> Float[Tensor, ""]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# Per position, compare the unsteered next-token distribution P with the steered one Q as KL(P ||
# Q); then average over the positions the mask allows.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# Work with `log_softmax` (stable), sum over the vocabulary, then `per_position[mask].mean()`.
# `torch.nn.functional.kl_div(input, target, log_target=True)` computes `KL(target || input)` from
# log-probabilities: note the order.
# </details>

# %% role="solution" grade_id="impl_kl_from_unsteered"
def kl_from_unsteered(clean_logits: Float[Tensor, "n pos vocab"], steered_logits: Float[Tensor, "n pos vocab"],
                      mask: Bool[Tensor, "n pos"]) -> Float[Tensor, ""]:
    ### BEGIN SOLUTION
    log_p = clean_logits.log_softmax(-1)
    log_q = steered_logits.log_softmax(-1)
    per_position = (log_p.exp() * (log_p - log_q)).sum(-1)
    return per_position[mask].mean()
    ### END SOLUTION


# %% role="test" grade_id="test_kl_from_unsteered" points=1
check("steering.kl_from_unsteered", kl_from_unsteered)

# %% [markdown]
# The price of the persona vector at `blocks.1.hook_resid_mid`, added at every position from 1 on of
# the neutral fact documents:

# %%
persona_v = contrastive_vector(lm, expert_tokens, child_tokens, expert_at, child_at, HOOK_NAME)
clean_neutral = lm(neutral)
after_bos = (torch.arange(neutral.shape[1]) >= 1)[None].expand(neutral.shape)
for coeff in (0.25, 0.5, 1.0, 2.0):
    steered = steered_logits(lm, neutral, persona_v, HOOK_NAME, coeff, after_bos)
    print(f"coeff {coeff:4.2f}: KL {float(kl_from_unsteered(clean_neutral, steered, neutral_mask)):.3f} nats, "
          f"CE {float(next_token_ce(clean_neutral, neutral, neutral_mask)):.3f} -> {float(next_token_ce(steered, neutral, neutral_mask)):.3f}")

# %% [markdown] role="locked" grade_id="question_kl_vs_ce"
# **Questions.** Why is KL on neutral text a better side-effect measure than the cross-entropy of
# the steered model on the same text? (Think of a vector that makes the model predict *other* correct
# continuations.) When would you prefer the reverse direction, `KL(P_steered || P_unsteered)`?
#
# *Answer in the cell below (graded by hand, 2 points).*
# ### BEGIN MARK SCHEME
# **Mark scheme (instructors only).**
# - 1 point: CE looks at one token (the reference continuation), KL at the whole distribution; the example of other correct continuations.
# - 1 point: when the reverse direction fits: it penalises probability mass the steered model puts where the original model puts little (new behaviour) more than lost mass.
# ### END MARK SCHEME

# %% [markdown] role="answer" grade_id="answer_kl_vs_ce" points=2
# CE of the steered model on the text only looks at the probability of the actual next token: a vector that shifts the model to *other* correct continuations changes behaviour without changing CE much, or CE can even fall. KL(P_unsteered || P_steered) compares whole next-token distributions, so any change counts. The reverse KL weighs tokens the steered model now favours: prefer it when new, unwanted outputs (what the steered model would say) matter more than lost ones.

# %% [markdown]
# ## Part 3. Directional ablation
#
# Adding a direction asks "is this enough to cause the behaviour?"; removing it asks "is it
# necessary?". Arditi et al. remove a direction `r` from the residual stream **everywhere**: at every
# layer and every position, `x <- x - (x . r_hat) r_hat` with `r_hat = r / |r|`, so that no component
# can read it and any component that writes it back is cancelled at the next hook.
#
# ### 3.1 Projecting a direction out
#
# *Difficulty 1/5, about 5 minutes.*
#
# ```python
# def project_out(x: Float[Tensor, "... d"], direction: Float[Tensor, "d"]) -> Float[Tensor, "... d"]
# ```
#
# The direction is not normalised.
#
# <details><summary>Hint 1: the idea</summary>
#
# Normalise the direction first; the component of `x` along it is the dot product times the unit
# vector. Subtract it.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `(x @ r_hat)[..., None] * r_hat` is the component along `r_hat`.
# </details>

# %% role="solution" grade_id="impl_project_out"
def project_out(x: Float[Tensor, "... d"], direction: Float[Tensor, "d"]) -> Float[Tensor, "... d"]:
    ### BEGIN SOLUTION
    r_hat = direction / direction.norm()
    return x - (x @ r_hat)[..., None] * r_hat
    ### END SOLUTION


# %% role="test" grade_id="test_project_out" points=1
check("steering.project_out", project_out)

# %% [markdown]
# ### 3.2 Ablating a direction from the whole residual stream
#
# *Difficulty 2/5, about 10 minutes.* Project the direction out at **every** residual hook of every
# layer (`blocks.{l}.hook_resid_pre`, `hook_resid_mid` and `hook_resid_post`, at every position) and
# return the logits. After `hook_resid_mid` and `hook_resid_post` the attention and MLP outputs have
# been added: projecting again removes what they wrote along the direction.
#
# ```python
# def ablated_logits(model, tokens: Int[Tensor, "batch pos"], direction: Float[Tensor, "d_model"]
#                    ) -> Float[Tensor, "batch pos d_vocab"]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# The same projection applied at every residual hook of every layer, at every position, in one
# forward pass.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# One hook function, `lambda activation, hook: project_out(activation, direction)`, registered at 3 x `n_layers` names.
# </details>

# %% role="solution" grade_id="impl_ablated_logits"
def ablated_logits(model, tokens: Int[Tensor, "batch pos"], direction: Float[Tensor, "d_model"]
                   ) -> Float[Tensor, "batch pos d_vocab"]:
    ### BEGIN SOLUTION
    names = [f"blocks.{layer}.hook_resid_{kind}" for layer in range(model.cfg.n_layers) for kind in ("pre", "mid", "post")]
    return model.run_with_hooks(tokens, fwd_hooks=[(name, lambda activation, hook: project_out(activation, direction))
                                                   for name in names])
    ### END SOLUTION


# %% role="test" grade_id="test_ablated_logits" points=1
check("steering.ablated_logits", ablated_logits)

# %% [markdown]
# Two directions, both read at the `?` at `blocks.1.hook_resid_mid`: the persona direction
# (expert minus child, as above) and a "refusal" direction in the style of Arditi et al., the child's
# mean activation on hard questions (it refuses) minus its mean on easy ones (it answers).

# %%
persona_v = contrastive_vector(lm, expert_tokens, child_tokens, expert_at, child_at, HOOK_NAME)
easy_child, easy_child_at = prompt_tokens(world, [f"child : what is sqrt {n} ?" for n in sorted(world.easy)])
refusal_v = contrastive_vector(lm, child_hard, easy_child, child_hard_at, easy_child_at, HOOK_NAME)
print(f"cosine(persona, refusal) = {float(F.cosine_similarity(persona_v, refusal_v, dim=0)):.2f}")
for name, direction in (("persona", persona_v), ("refusal", refusal_v)):
    child = next_token_probs(ablated_logits(lm, child_hard, direction), child_hard_at)
    expert = next_token_probs(ablated_logits(lm, expert_hard, direction), expert_hard_at)
    easy = next_token_probs(ablated_logits(lm, easy_child, direction), easy_child_at)
    print(f"{name} ablated: child on hard questions P(answer) {float(child[rows, first_answer_word].mean()):.3f}, "
          f"P('i') {float(child[:, vocab['i']].mean()):.3f};  expert P(answer) {float(expert[rows, first_answer_word].mean()):.3f};  "
          f"child on easy questions P('i') {float(easy[:, vocab['i']].mean()):.4f}")

# %% [markdown]
# With the solution, ablating the persona direction makes the child answer hard questions
# (P(answer) 0.000003 -> 0.999) and leaves the expert as it was (0.997 after, 0.9998 before); ablating
# the refusal direction makes the child answer too (0.899), and the child still answers easy
# questions (P(`i`) < 0.0001). The two directions have cosine -0.86: at the `?` of a hard question,
# "expert rather than child" and "will not refuse" are nearly the same direction (the persona pairs
# were built on hard questions).
#
# **Questions.** Ablation shows the direction is *necessary* for the refusal. Which experiment from
# Part 1 showed it is *sufficient*? Why do we ablate at every hook and not only at `HOOK_NAME`
# (try it)? The refusal direction was built from the child alone: why does it still separate the
# child from the expert?
#
# ## Part 4. Steering with an SAE feature
#
# An SAE feature gives a direction with a meaning attached: its decoder row. When feature `i` is
# active with value `a`, the SAE writes `a * W_dec[i]` into its reconstruction of the residual
# stream. A natural steering vector is therefore the decoder row times the feature's **typical
# activation**: the mean of its activation over the tokens where it fires (`> 0`). Coefficient 1 then
# means "as if the feature were on at its usual strength" (Templeton et al. clamp features to
# multiples of their maximum activation instead).
#
# ### 4.1 A feature's steering vector
#
# *Difficulty 1/5, about 10 minutes.*
#
# ```python
# def sae_feature_vector(W_dec: Float[Tensor, "d_sae d_model"], feature_acts: Float[Tensor, "n d_sae"],
#                        feature: int) -> Float[Tensor, "d_model"]
# ```
#
# Keep the decoder row as it is (rows do not have unit norm).
#
# <details><summary>Hint 1: the idea</summary>
#
# What the feature writes into the residual stream at a typical firing: its decoder row, times its
# mean activation over the rows where it fires.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `acts = feature_acts[:, feature]`, then `acts[acts > 0].mean() * W_dec[feature]`.
# </details>

# %% role="solution" grade_id="impl_sae_feature_vector"
def sae_feature_vector(W_dec: Float[Tensor, "d_sae d_model"], feature_acts: Float[Tensor, "n d_sae"],
                       feature: int) -> Float[Tensor, "d_model"]:
    ### BEGIN SOLUTION
    acts = feature_acts[:, feature]
    return acts[acts > 0].mean() * W_dec[feature]
    ### END SOLUTION


# %% role="test" grade_id="test_sae_feature_vector" points=1
check("steering.sae_feature_vector", sae_feature_vector)

# %% [markdown]
# Which features separate the expert from the child where it matters? The locked cell below ranks the
# zoo SAE's features by their mean activation at the `?` of the expert prompts minus the child prompts
# (the contrast pairs), and computes every feature's activations on fresh documents (for the typical
# activation). Compare with the best features by F1 on the zoo card (`zoo.card("toyworld-sae")`).

# %% role="locked" grade_id="sae_features"
_, expert_cache = lm.run_with_cache(expert_tokens, names_filter=[HOOK_NAME])
_, child_cache = lm.run_with_cache(child_tokens, names_filter=[HOOK_NAME])
expert_f = zoo_sae.encode(expert_cache[HOOK_NAME][torch.arange(len(expert_at)), expert_at])
child_f = zoo_sae.encode(child_cache[HOOK_NAME][torch.arange(len(child_at)), child_at])
feature_gap = expert_f.mean(0) - child_f.mean(0)
expert_features = feature_gap.topk(3).indices.tolist()
child_features = (-feature_gap).topk(3).indices.tolist()
docs = world.sample(400, 3)
_, docs_cache = lm.run_with_cache(docs.tokens, names_filter=[HOOK_NAME])
doc_feature_acts = zoo_sae.encode(docs_cache[HOOK_NAME][docs.labels["loss_mask"].bool()])  # [tokens, d_sae]
card_features = {k: v["feature"] for k, v in zoo.card("toyworld-sae")["ground_truth_features"].items()}
print("more active for the expert:", expert_features, " for the child:", child_features)
print("zoo card, best F1:", {k: v for k, v in card_features.items() if k.startswith(("persona", "difficulty"))})

# %% [markdown]
# Steer at `HOOK_NAME`, at the last token, with the top "child" feature on the expert and the top
# "expert" feature on the child:

# %%
child_feature, expert_feature = child_features[0], expert_features[0]
to_child = sae_feature_vector(zoo_sae.W_dec, doc_feature_acts, child_feature)
to_expert = sae_feature_vector(zoo_sae.W_dec, doc_feature_acts, expert_feature)
for coeff in (0.5, 1.0, 2.0, 4.0, 8.0):
    expert = next_token_probs(steered_logits(lm, expert_hard, to_child, HOOK_NAME, coeff, last_token_mask(expert_hard, expert_hard_at)), expert_hard_at)
    child = next_token_probs(steered_logits(lm, child_hard, to_expert, HOOK_NAME, coeff, last_token_mask(child_hard, child_hard_at)), child_hard_at)
    print(f"coeff {coeff:3.1f}: expert + feature {child_feature}: P('i') {float(expert[:, vocab['i']].mean()):.3f}   "
          f"child + feature {expert_feature}: P(answer) {float(child[rows, first_answer_word].mean()):.3f}")

# %% [markdown]
# With the solution, the top child-side feature is 322 (the card's best "difficulty=hard" feature,
# not its "persona=child" feature 81, which comes second): added at twice its typical activation it
# makes the expert refuse (P(`i`) 0.00002 -> 0.96; 0.36 at coefficient 1). The other way is much
# harder: the top expert-side feature, 317 (the card's "persona=expert"), needs eight times its
# typical activation to lift the child's P(answer) to 0.57 (0.13 at four times), where the CAA vector
# reached 0.999 at coefficient 1.
#
# **Questions.** Why might "difficulty=hard" be the feature that carries the child's refusal at the
# `?`? (Which tokens does it fire on for the expert?) The persona features have recall of only about
# 0.45 (the `saes` assignment): what does that suggest about why one feature is a weak lever compared
# with the mean-difference vector? How would you steer with *several* features at once?
#
# ## Part 5. The trade-off: target effect against side effects
#
# ### 5.1 A sweep over hooks and coefficients
#
# *Difficulty 3/5, about 25 minutes.* For each hook `hook_names[i]` (with its vector `vectors[i]`)
# and each coefficient `coeffs[j]`, steer by adding `coeff * vector` at **every position from 1 on**
# (never `<bos>`: position 0 is the same in every prompt and the model relies on it) of both the
# target prompts and the neutral text, and record:
#
# - `effect[i, j]`: the mean over prompts of `prob_change` of the target token at `read_at`;
# - `kl[i, j]`: `kl_from_unsteered` on the neutral text, averaged over `neutral_mask`;
# - `ce[i, j]`: the increase of `next_token_ce` (the setup cell's helper) on the neutral text:
#   steered minus unsteered.
#
# ```python
# def steering_sweep(model, vectors: Float[Tensor, "hooks d_model"], hook_names: list[str], coeffs: list[float],
#                    prompts: Int[Tensor, "n pos"], read_at: Int[Tensor, "n"], target: Int[Tensor, "n"],
#                    neutral: Int[Tensor, "m pos2"], neutral_mask: Bool[Tensor, "m pos2"]) -> dict[str, Tensor]
# ```
#
# returning `{"effect", "kl", "ce"}`, each `[len(hook_names), len(coeffs)]`.
#
# <details><summary>Hint 1: the idea</summary>
#
# Two loops (hooks, coefficients); for each setting, steer every position from 1 on and measure the
# effect on the test prompts, and the KL and CE change on the neutral text, against unsteered runs
# done once.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# Reuse `steered_logits`, `target_effect` and `kl_from_unsteered`; run the unsteered model once on
# each batch, outside the loops. A mask for "every position from 1 on" is
# `(torch.arange(pos) >= 1).expand(batch, pos)`.
# </details>

# %% role="solution" grade_id="impl_steering_sweep"
def steering_sweep(model, vectors: Float[Tensor, "hooks d_model"], hook_names: list[str], coeffs: list[float],
                   prompts: Int[Tensor, "n pos"], read_at: Int[Tensor, "n"], target: Int[Tensor, "n"],
                   neutral: Int[Tensor, "m pos2"], neutral_mask: Bool[Tensor, "m pos2"]) -> dict[str, Tensor]:
    ### BEGIN SOLUTION
    clean_prompts, clean_neutral = model(prompts), model(neutral)
    clean_ce = next_token_ce(clean_neutral, neutral, neutral_mask)
    prompt_positions = (torch.arange(prompts.shape[1]) >= 1).expand(prompts.shape)
    neutral_positions = (torch.arange(neutral.shape[1]) >= 1).expand(neutral.shape)
    out = {key: torch.zeros(len(hook_names), len(coeffs)) for key in ("effect", "kl", "ce")}
    for i, hook_name in enumerate(hook_names):
        for j, coeff in enumerate(coeffs):
            steered = steered_logits(model, prompts, vectors[i], hook_name, coeff, prompt_positions)
            out["effect"][i, j] = target_effect(clean_prompts, steered, read_at, target, target)["prob_change"].mean()
            steered_neutral = steered_logits(model, neutral, vectors[i], hook_name, coeff, neutral_positions)
            out["kl"][i, j] = kl_from_unsteered(clean_neutral, steered_neutral, neutral_mask)
            out["ce"][i, j] = next_token_ce(steered_neutral, neutral, neutral_mask) - clean_ce
    return out
    ### END SOLUTION


# %% role="test" grade_id="test_steering_sweep" points=2
check("steering.steering_sweep", steering_sweep)

# %% [markdown]
# The trade-off curves: for every hook, the target effect against the KL on neutral text as the
# coefficient grows. Left: sentiment (negative stories towards `happy`); right: persona (the expert
# towards the child, target `i`). Each vector is the CAA vector read at that hook.

# %%
sentiment_vectors = torch.stack([contrastive_vector(lm, pos_tokens, neg_tokens, pos_at, neg_at, h) for h in SWEEP_HOOKS])
refuse_vectors = torch.stack([contrastive_vector(lm, child_tokens, expert_tokens, child_at, expert_at, h) for h in SWEEP_HOOKS])
sweeps = {
    "sentiment: P(happy) on negative stories": steering_sweep(
        lm, sentiment_vectors, SWEEP_HOOKS, COEFFS, sad_stories, sad_at, torch.full_like(sad_at, vocab["happy"]),
        neutral, neutral_mask),
    "persona: P('i') for the expert": steering_sweep(
        lm, refuse_vectors, SWEEP_HOOKS, COEFFS, expert_hard, expert_hard_at, torch.full_like(expert_hard_at, vocab["i"]),
        neutral, neutral_mask),
}
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
for ax, (title, sweep) in zip(axes, sweeps.items()):
    for i, hook_name in enumerate(SWEEP_HOOKS):
        ax.plot(sweep["kl"][i], sweep["effect"][i], marker="o", label=hook_name)
    ax.set_xscale("symlog", linthresh=1e-5)  # KL spans 0 to 10 nats
    ax.set_xlabel("KL(unsteered || steered) on neutral text (nats)")
    ax.set_ylabel("change in target probability")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
for title, sweep in sweeps.items():
    print(title)
    for i, hook_name in enumerate(SWEEP_HOOKS):
        print(f"  {hook_name:26s} effect {[round(float(v), 3) for v in sweep['effect'][i]]}")
        print(f"  {'':26s} KL     {[round(float(v), 4) for v in sweep['kl'][i]]}")
        print(f"  {'':26s} dCE    {[round(float(v), 4) for v in sweep['ce'][i]]}")

# %% [markdown]
# What the solution measures (coefficients 0, 0.25, ..., 3; full tables printed above):
#
# - sentiment: every hook from `blocks.0.hook_resid_mid` on gets P(`happy`) from 0 to 0.94-1.00 by
#   coefficient 0.75 and to 1.00 by coefficient 1, for a KL on fact documents of 0.001-0.005 nats: the
#   sentiment direction is nearly unused outside stories. At coefficient 3 the KL is 0.04-0.10, except
#   at `blocks.1.hook_resid_post`, where the price grows fastest (0.035 at 1.5, 0.14 at 2, 0.64 at 3).
# - persona (making the expert refuse): nothing happens at `blocks.0.hook_resid_mid` or
#   `blocks.1.hook_resid_pre` (effect at most 0.09 at coefficient 3). At `blocks.1.hook_resid_mid`
#   the effect is 0.95 at coefficient 0.5 for a KL of 0.32 nats, and the KL keeps growing to 9.5 nats
#   at coefficient 3 (cross-entropy on the fact documents +9.6 nats: the text is destroyed) while the
#   effect is long saturated. `blocks.1.hook_resid_post` reaches 0.98 at coefficient 0.75 for a KL of
#   0.57.
#
# **Questions.** Why is the persona's curve at `blocks.1.hook_resid_pre` flat, although it is added at
# every position, including the persona token? Why does the KL keep
# growing after the effect has saturated, and why does the effect sometimes *fall* at large
# coefficients? Which hook would you ship, and how would you choose its coefficient?
#
# ### 5.2 The best setting under a side-effect budget
#
# *Difficulty 1/5, about 10 minutes.* Given tables `effect` and `side_effect` (`[hooks, coeffs]`) and
# a budget, return the `(hook index, coefficient index)` with the largest effect among the settings
# with `side_effect <= budget`, or `(-1, -1)` if none is within budget.
#
# ```python
# def best_under_budget(effect: Float[Tensor, "hooks coeffs"], side_effect: Float[Tensor, "hooks coeffs"],
#                       budget: float) -> tuple[int, int]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# Among the settings whose side effect is within the budget, take the one with the largest effect;
# if none is allowed, return `(-1, -1)`.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `effect.masked_fill(~allowed, -inf)`, then `argmax` of the flattened table and `divmod`.
# </details>

# %% role="solution" grade_id="impl_best_under_budget"
def best_under_budget(effect: Float[Tensor, "hooks coeffs"], side_effect: Float[Tensor, "hooks coeffs"],
                      budget: float) -> tuple[int, int]:
    ### BEGIN SOLUTION
    allowed = side_effect <= budget
    if not allowed.any():
        return -1, -1
    flat = int(effect.masked_fill(~allowed, float("-inf")).flatten().argmax())
    return flat // effect.shape[1], flat % effect.shape[1]
    ### END SOLUTION


# %% role="test" grade_id="test_best_under_budget" points=1
check("steering.best_under_budget", best_under_budget)

# %% [markdown]
# The best setting for making the expert refuse, under a few KL budgets (the sweep is recomputed here
# so that this cell stands on its own):

# %%
refuse_vectors = torch.stack([contrastive_vector(lm, child_tokens, expert_tokens, child_at, expert_at, h) for h in SWEEP_HOOKS])
sweep = steering_sweep(lm, refuse_vectors, SWEEP_HOOKS, COEFFS, expert_hard, expert_hard_at,
                       torch.full_like(expert_hard_at, vocab["i"]), neutral, neutral_mask)
for budget in (0.01, 0.05, 0.2, 1.0):
    i, j = best_under_budget(sweep["effect"], sweep["kl"], budget)
    if i < 0:
        print(f"KL budget {budget}: nothing fits")
    else:
        print(f"KL budget {budget:4}: {SWEEP_HOOKS[i]}, coeff {COEFFS[j]}: P('i') +{float(sweep['effect'][i, j]):.3f}, "
              f"KL {float(sweep['kl'][i, j]):.4f}, CE +{float(sweep['ce'][i, j]):.4f}")

# %% [markdown]
# With the solution: under a KL budget of 0.01 or 0.05 nats the best is `blocks.1.hook_resid_mid` at
# coefficient 0.25 (P(`i`) +0.235, KL 0.007); under 0.2, `blocks.1.hook_resid_post` at 0.5 (+0.645,
# KL 0.107); under 1.0, `blocks.1.hook_resid_post` at 0.75 (+0.981, KL 0.57). Making the expert refuse
# reliably costs about half a nat of KL on unrelated text, when added at every position.
#
# **Questions.** The budget is measured on fact documents. Would the same setting be safe on dialogues
# (which the sentiment vector should not touch either)? Adding only at the `?` instead of at every
# position would make the side effect on these documents nearly vanish: is that a fair comparison,
# and what would you measure instead? How would you build a neutral set for a real model, and how
# large must it be for the KL estimate to be trusted?
#
# ## Optional: SAE-feature steering on GPT-2 small (runs only if the weights are on this machine, never graded)
#
# If an instructor has put `gpt2-small` and the SAELens SAE `gpt2-small-res-jb` (layer 6) in the local
# Hugging Face cache, you can steer a real model with an SAE feature, exactly as in Part 4: on a GPU
# if there is one, otherwise on the CPU (gpt2-small runs fine there). Nothing is downloaded: without
# the weights the cell says what is missing and does nothing.

# %%
from interplab.pretrained import device, weights_available

if weights_available(["gpt2", "jbloom/GPT2-Small-SAEs-Reformatted"], "the GPT-2 small section"):
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

    gpt2 = HookedTransformer.from_pretrained("gpt2-small", device=device())
    gpt2_hook = "blocks.6.hook_resid_pre"
    gpt2_sae = SAE.from_pretrained("gpt2-small-res-jb", gpt2_hook, device=device())
    happy_toks, sad_toks = gpt2.to_tokens(["I am so happy and glad"]), gpt2.to_tokens(["I am so sad and gloomy"])
    _, happy_cache = gpt2.run_with_cache(happy_toks, names_filter=[gpt2_hook])
    _, sad_cache = gpt2.run_with_cache(sad_toks, names_filter=[gpt2_hook])
    gap = gpt2_sae.encode(happy_cache[gpt2_hook][0, -3:]).mean(0) - gpt2_sae.encode(sad_cache[gpt2_hook][0, -3:]).mean(0)
    feature = int(gap.argmax())
    prompt = gpt2.to_tokens(["The movie last night was"])
    vector = gpt2_sae.W_dec[feature] / gpt2_sae.W_dec[feature].norm()
    for coeff in (0.0, 20.0, 40.0):  # the residual stream's norm at layer 6 is several tens
        def add(activation, hook, coeff=coeff):
            activation[:, 1:] += coeff * vector  # every position but <bos>
            return activation

        with gpt2.hooks(fwd_hooks=[(gpt2_hook, add)]):  # no KV cache: every step sees the whole, steered, sequence
            text = gpt2.generate(prompt, max_new_tokens=20, do_sample=False, use_past_kv_cache=False, verbose=False)
        print(f"feature {feature}, coeff {coeff}: {gpt2.to_string(text[0])!r}")

# %% [markdown]
# ## Open questions and further reading
#
# - A single direction flipped every story and every refusal here, in a model whose variables were
#   built in. Tan et al. (2024) find that on real models steerability varies a lot between inputs and
#   some behaviours are not steerable at all. What property of a concept makes it linearly steerable?
# - CAA, ActAdd and SAE features gave different vectors for "expert vs child". Compare them (cosine
#   similarity at `HOOK_NAME`) and relate the differences to the trade-off curves.
# - Directional ablation as a weight edit: Arditi et al. fold the projection into the weights that
#   write to the residual stream (orthogonalisation). Write that edit for `toyworld-lm` and check that
#   it matches `ablated_logits`.
# - Beyond addition: Li et al. (2023), [*Inference-Time Intervention*](https://arxiv.org/abs/2306.03341)
#   (steering attention heads); Zou et al. (2023), [*Representation Engineering*](https://arxiv.org/abs/2310.01405);
#   Wu et al. (2025), [*AxBench*](https://arxiv.org/abs/2501.17148), which finds that prompting often
#   beats steering on real models: a reason to always measure the side effects.
