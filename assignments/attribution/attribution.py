# %% [markdown]
# # Attribution graphs: tracing a model's computation through transcoder features
#
# An SAE tells you *which* features are active; it does not tell you how they cause the output.
# **Attribution graphs** (Ameisen et al. 2025) do: replace each MLP by a sparse, interpretable
# **transcoder**, freeze everything else that is non-linear on one prompt, and the model becomes
# *linear* in its features. Every feature's effect on every later feature and on the logits is then
# a number you can compute exactly with backward passes, and the graph of the strongest effects is a
# hypothesis about the model's mechanism that you can test by intervening on the features.
#
# **After this notebook you will be able to**
#
# - implement a transcoder and measure its fidelity (normalised MSE, explained variance, L0, and the
#   loss when it replaces the MLP);
# - build the *local replacement model* of a prompt: transcoders plus error nodes, attention patterns
#   and LayerNorm scales frozen, and show that it reproduces the model's logits exactly;
# - compute the direct-effect adjacency between token embeddings, features, error nodes and logits
#   with backward passes, normalise it, compute influence, prune the graph at the paper's thresholds
#   and compute its replacement and completeness scores;
# - read a graph to form a hypothesis (which features make a "child" persona refuse a hard question),
#   and test it by intervening on those features in the model.
#
# **Read first** (about two hours):
#
# 1. Ameisen et al. (2025), [*Circuit Tracing: Revealing Computational Graphs in Language Models*](https://transformer-circuits.pub/2025/attribution-graphs/methods.html):
#    sections "Building an Interpretable Replacement Model", "Attribution Graphs" (the local
#    replacement model, error nodes, the direct-effect adjacency), "Graph Pruning" and the appendix
#    on graph evaluation (replacement and completeness scores).
# 2. Dunefsky, Chlenski and Nanda (2024), [*Transcoders Find Interpretable LLM Feature Circuits*](https://arxiv.org/abs/2406.11944):
#    sections 1-3 (why an MLP's input-to-output map is easier to trace than an SAE on the residual stream).
# 3. Lindsey et al. (2025), [*On the Biology of a Large Language Model*](https://transformer-circuits.pub/2025/attribution-graphs/biology.html):
#    the introduction and one case study (e.g. "Entity Recognition and Hallucinations", where a
#    "can't answer" default is inhibited by "known answer" features).
# 4. The open-source [`circuit-tracer`](https://github.com/safety-research/circuit-tracer) library
#    (its `graph.py`): our node order and pruning follow it.
#
# **The model.** `toyworld-lm` from the InterpLab zoo (2 layers, LayerNorm, GELU MLPs, d_model 128,
# d_mlp 512, 4 heads), trained on the *toy world* language (`interplab.toyworld`). Its dialogues
# look like `child : what is sqrt 27 ? i do not know .`: the **child** refuses hard square roots
# and answers easy ones (`child : what is sqrt 25 ? 5 .`), the **expert** answers both
# (`expert : what is sqrt 27 ? 3 root 3 .`). `toyworld-transcoders` are per-layer ReLU transcoders
# for its two MLPs, trained by `interplab zoo train toyworld-transcoders`. Whether the model says
# `i` (the start of `i do not know`) after `?` depends on two variables that the toy world labels
# for every token: the **persona** and the **difficulty** of the question. Part 5 finds the
# features that carry them and intervenes on them.
#
# **How the checks work.** Each exercise ends with `check("attribution.<name>", your_function)`. It
# runs your function on freshly generated inputs (random small models, random graphs, toy-world
# prompts) and compares with the reference; when your answer matches a known mistake, the check names it.
#
# What counts as the same answer: a torch tensor or a numpy array; for a single number, a 0-d tensor,
# a NumPy scalar or a Python float; integers of any width; float64 where float32 is expected (held to
# the float32 tolerance). A less precise dtype (float16, bfloat16) fails with a message naming the
# dtype to return. Where a convention matters (an axis order, how ties are broken), the exercise
# text states it and a failure names it; a failure of dtype or shape alone says only that.

# %% role="locked" grade_id="setup"
import torch
import torch.nn.functional as F
from IPython.display import SVG, display
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interplab import attribution as attr
from interplab import check, zoo
from interplab.toyworld import ToyWorld
from interplab.zoo.toyworld_transcoders import question_marks

torch.set_num_threads(1)  # small tensors: more threads only add overhead on a shared machine
world = ToyWorld()
vocab = world.tokenizer.vocab
lm = zoo.load("toyworld-lm")
transcoders = zoo.load("toyworld-transcoders")
print(f"toyworld-lm: {lm.cfg.n_layers} layers, d_model {lm.cfg.d_model}, d_mlp {lm.cfg.d_mlp}; "
      f"toyworld-transcoders: {transcoders.d_tc} features per layer")

# %% [markdown]
# ## Part 1. Transcoders
#
# A transcoder for layer `l` imitates that layer's MLP with a wide, sparse layer of features:
#
# $$f = \mathrm{ReLU}(x W_\text{enc} + b_\text{enc}), \qquad \hat y = f W_\text{dec} + b_\text{dec},$$
#
# where `x` is what the MLP reads (`ln2(resid_mid)`, *after* the LayerNorm's weight and bias) and
# `ŷ` approximates what it writes (`hook_mlp_out`). Shapes: `W_enc [d_model, d_tc]`,
# `W_dec [d_tc, d_model]`. Unlike an SAE, input and output are different vectors, so there is no
# `b_dec` to subtract from the input. We use a plain ReLU (the paper uses JumpReLU; a ReLU keeps
# the notebook simple, and the zoo card reports its sparsity).
#
# ### 1.1 Forward pass
#
# *Difficulty 1/5, about 5 minutes.*
#
# ```python
# def transcoder_forward(x: Float[Tensor, "batch d_model"], W_enc: Float[Tensor, "d_model d_tc"], b_enc: Float[Tensor, "d_tc"],
#                        W_dec: Float[Tensor, "d_tc d_model"], b_dec: Float[Tensor, "d_model"]
#                        ) -> tuple[Float[Tensor, "batch d_tc"], Float[Tensor, "batch d_model"]]
# ```
#
# returning `(f, y_hat)`.
#
# <details><summary>Hint 1: the idea</summary>
#
# Encode with the ReLU to get the features `f`, decode `f` to get `y_hat`; no bias is subtracted
# from the input.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# Two lines, exactly as in the formula.
# </details>

# %% role="solution" grade_id="impl_transcoder_forward"
def transcoder_forward(x: Float[Tensor, "batch d_model"], W_enc: Float[Tensor, "d_model d_tc"], b_enc: Float[Tensor, "d_tc"],
                       W_dec: Float[Tensor, "d_tc d_model"], b_dec: Float[Tensor, "d_model"]) -> tuple[Tensor, Tensor]:
    ### BEGIN SOLUTION
    f = F.relu(x @ W_enc + b_enc)
    return f, f @ W_dec + b_dec
    ### END SOLUTION


# %% role="test" grade_id="test_transcoder_forward" points=1
check("attribution.transcoder_forward", transcoder_forward)

# %% [markdown]
# ### 1.2 Fidelity
#
# *Difficulty 1/5, about 10 minutes.* Three numbers describe how well a transcoder imitates its MLP
# on a set of tokens (MLP outputs `y`, transcoder outputs `ŷ`, feature activations `f`):
#
# - **normalised MSE** $\;\mathrm{nmse} = \dfrac{\mathbb{E}\lVert y - \hat y\rVert^2}{\mathbb{E}\lVert y - \mathbb{E}y\rVert^2}$
#   (squared errors summed over dimensions, averaged over tokens; the denominator is the total
#   variance of `y`);
# - **explained variance** `1 - nmse`;
# - **L0**: the mean number of active (`> 0`) features per token.
#
# ```python
# def transcoder_fidelity(y: Float[Tensor, "n d_model"], y_hat: Float[Tensor, "n d_model"],
#                         f: Float[Tensor, "n d_tc"]) -> dict[str, float]
# ```
#
# returning `{"nmse": ..., "explained_variance": ..., "l0": ...}`.
#
# <details><summary>Hint 1: the idea</summary>
#
# The normalised MSE compares the mean squared error with the mean squared distance of `y` from its
# own mean; explained variance is one minus it; L0 counts active features per token.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `y.mean(0)` is the mean output vector; sum over the last axis, then average.
# </details>

# %% role="solution" grade_id="impl_transcoder_fidelity"
def transcoder_fidelity(y: Float[Tensor, "n d_model"], y_hat: Float[Tensor, "n d_model"],
                        f: Float[Tensor, "n d_tc"]) -> dict[str, float]:
    ### BEGIN SOLUTION
    mse = ((y - y_hat) ** 2).sum(-1).mean()
    variance = ((y - y.mean(0)) ** 2).sum(-1).mean()
    nmse = float(mse / variance)
    return {"nmse": nmse, "explained_variance": 1 - nmse, "l0": float((f > 0).float().sum(-1).mean())}
    ### END SOLUTION


# %% role="test" grade_id="test_transcoder_fidelity" points=1
check("attribution.transcoder_fidelity", transcoder_fidelity)

# %% [markdown]
# The zoo transcoders on 200 fresh documents (`attr.mlp_io` collects every MLP's input and output),
# and the model's loss with both MLPs replaced by their transcoders (no error terms):

# %%
eval_batch = world.sample(200, 7)
real = eval_batch.labels["loss_mask"].bool()
mlp_in, mlp_out = attr.mlp_io(lm, eval_batch.tokens)
for layer in range(lm.cfg.n_layers):
    tc = transcoders[layer]
    with torch.no_grad():
        f_eval, y_hat_eval = transcoder_forward(mlp_in[layer][real], tc.W_enc, tc.b_enc, tc.W_dec, tc.b_dec)
    print(f"layer {layer}:", {k: round(v, 3) for k, v in transcoder_fidelity(mlp_out[layer][real], y_hat_eval, f_eval).items()})
print({k: round(v, 3) for k, v in attr.ce_losses(lm, transcoders, eval_batch.tokens, eval_batch.labels["loss_mask"]).items()})

# %% [markdown]
# **Where the transcoders were trained.** The zoo transcoders were trained with every `?` that ends a
# dialogue question repeated **100 times** in the training data (`question_oversample` in
# `interplab.zoo.toyworld_transcoders`): Part 5 is decided at `?`, and while the recipe was being
# chosen, layer 1's transcoder trained on plain text explained almost none of the variance there
# (-0.09; 0.07 with 10x, 0.38 with 30x, 0.65 with 100x, at 1500 steps). The same fidelity as above,
# split by where the token is:

# %%
at_question = question_marks(eval_batch.tokens, eval_batch.labels, world)
for layer in range(lm.cfg.n_layers):
    tc = transcoders[layer]
    for where, mask in (("at ?", real & at_question), ("elsewhere", real & ~at_question)):
        with torch.no_grad():
            f_where, y_hat_where = transcoder_forward(mlp_in[layer][mask], tc.W_enc, tc.b_enc, tc.W_dec, tc.b_dec)
        fidelity = transcoder_fidelity(mlp_out[layer][mask], y_hat_where, f_where)
        print(f"layer {layer}, {where:9s} ({int(mask.sum()):5d} tokens): "
              f"explained variance {fidelity['explained_variance']:.3f}, L0 {fidelity['l0']:.1f}")

# %% [markdown]
# Even with the oversampling, `?` is the hardest token for layer 1 (explained variance 0.81 there,
# 0.99 elsewhere; layer 0: 0.97 and 0.96), while `?` makes up about 5 % of the tokens. The overall
# figures above mostly describe the other 95 %. Part 4 shows what this means for the graphs' scores.
#
# **Questions.** Both transcoders explain most of the variance, yet replacing both MLPs costs a
# noticeable amount of loss: why can a small error in layer 0 grow by the end of the model? What would
# you expect from a *cross-layer* transcoder (one encoder, decoders into every later layer), which
# the paper uses? A transcoder with a higher L0 fits better: why do we still prefer a sparse one for
# attribution?
#
# ## Part 2. The local replacement model
#
# Fix one prompt. The **local replacement model** is the model where, on *this* prompt,
#
# 1. each MLP is replaced by its transcoder plus an **error node**
#    `error[l, p] = mlp_out[l, p] - transcoder_l(mlp_in[l, p])`, computed once in the real model and
#    then held constant: it is what the transcoder misses, so nothing is lost;
# 2. the **attention patterns** are frozen at their values on the prompt (attention then just moves
#    linear combinations of value vectors);
# 3. every **LayerNorm's scale** (the division by the standard deviation) is frozen; the centring
#    (subtracting the mean) is linear and stays.
#
# Then each feature's pre-activation and each logit is an *affine* function of the **node outputs**:
# token embeddings (token + positional embedding at each position), feature activations, and
# errors. On the prompt itself it reproduces the model exactly.
#
# ### 2.1 Error nodes
#
# *Difficulty 2/5, about 15 minutes.*
#
# ```python
# def error_nodes(model, transcoders, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "n_layers batch pos d_model"]
# ```
#
# `transcoders[l]` has `W_enc, b_enc, W_dec, b_dec` (and `encode`, `decode`, and calling it returns
# `ŷ`). Run the model once with `run_with_cache`.
#
# <details><summary>Hint 1: the idea</summary>
#
# The error is what the real MLP writes minus what the transcoder writes, given the MLP's own input
# (after the LayerNorm's scale and bias).
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# The MLP reads `model.blocks[l].ln2(resid_mid)`. The cache has `blocks.{l}.ln2.hook_normalized`
# (before the LayerNorm's weight `ln2.w` and bias `ln2.b`) and `blocks.{l}.hook_mlp_out`.
# </details>

# %% role="solution" grade_id="impl_error_nodes"
def error_nodes(model, transcoders, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "n_layers batch pos d_model"]:
    ### BEGIN SOLUTION
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        errors = []
        for layer in range(model.cfg.n_layers):
            ln2 = model.blocks[layer].ln2
            x = cache[f"blocks.{layer}.ln2.hook_normalized"] * ln2.w + ln2.b
            errors.append(cache[f"blocks.{layer}.hook_mlp_out"] - transcoders[layer](x))
    return torch.stack(errors)
    ### END SOLUTION


# %% role="test" grade_id="test_error_nodes" points=1
check("attribution.error_nodes", error_nodes)

# %% [markdown]
# ### 2.2 The replacement model's forward pass
#
# *Difficulty 3/5, about 40 minutes.* Write the local replacement model as a function of the node
# outputs. Everything the model would recompute non-linearly comes from `frozen`
# (an `attr.Frozen`: `patterns [n_layers, head, q, k]`, LayerNorm scales `ln1, ln2 [n_layers, pos, 1]`
# and `ln_final [pos, 1]`). Work in float64 (cast weights with `.double()`):
#
# ```
# resid = embeddings
# for each layer l:
#     x    = (resid - mean(resid)) / ln1[l] * ln1.w + ln1.b
#     v    = x W_V + b_V                                    # per head
#     resid += (patterns[l] @ v) W_O + b_O                 # summed over heads
#     x2   = (resid - mean(resid)) / ln2[l] * ln2.w + ln2.b
#     pre[l] = x2 W_enc + b_enc                            # the features' pre-activations
#     resid += feature_acts[l] W_dec + b_dec + errors[l]   # activations are given, not recomputed
# logits = ((resid - mean(resid)) / ln_final * ln_final.w + ln_final.b) W_U + b_U
# ```
#
# ```python
# def replacement_forward(model, transcoders, frozen: attr.Frozen, embeddings: Float[Tensor, "pos d_model"],
#                         feature_acts: Float[Tensor, "n_layers pos d_tc"], errors: Float[Tensor, "n_layers pos d_model"]
#                         ) -> tuple[Float[Tensor, "n_layers pos d_tc"], Float[Tensor, "pos d_vocab"]]
# ```
#
# TransformerLens shapes: `attn.W_V [head, d_model, d_head]`, `attn.b_V [head, d_head]`,
# `attn.W_O [head, d_head, d_model]`, `model.W_U [d_model, d_vocab]`. The check feeds node values
# *different* from the prompt's own, so anything recomputed instead of frozen shows.
#
# <details><summary>Hint 1: the idea</summary>
#
# Replay the model layer by layer with the attention patterns and LayerNorm scales frozen: attention
# becomes a fixed mixing of positions, and each MLP becomes transcoder output plus the error node.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `torch.einsum("kd,hde->khe", x, W_V)` gives values `[pos, head, d_head]`;
# `torch.einsum("hqk,khe->qhe", pattern, v)` mixes them; `torch.einsum("qhe,hed->qd", z, W_O)` writes back.
# </details>

# %% role="solution" grade_id="impl_replacement_forward"
def replacement_forward(model, transcoders, frozen, embeddings: Float[Tensor, "pos d_model"],
                        feature_acts: Float[Tensor, "n_layers pos d_tc"], errors: Float[Tensor, "n_layers pos d_model"]
                        ) -> tuple[Tensor, Tensor]:
    ### BEGIN SOLUTION
    def norm(x: Tensor, scale: Tensor, ln) -> Tensor:
        return (x - x.mean(-1, keepdim=True)) / scale * ln.w.double() + ln.b.double()

    resid = embeddings
    pres = []
    for layer in range(model.cfg.n_layers):
        block, tc = model.blocks[layer], transcoders[layer]
        x = norm(resid, frozen.ln1[layer], block.ln1)
        v = torch.einsum("kd,hde->khe", x, block.attn.W_V.double()) + block.attn.b_V.double()
        z = torch.einsum("hqk,khe->qhe", frozen.patterns[layer], v)
        resid = resid + torch.einsum("qhe,hed->qd", z, block.attn.W_O.double()) + block.attn.b_O.double()
        x2 = norm(resid, frozen.ln2[layer], block.ln2)
        pres.append(x2 @ tc.W_enc.double() + tc.b_enc.double())
        resid = resid + feature_acts[layer] @ tc.W_dec.double() + tc.b_dec.double() + errors[layer]
    final = norm(resid, frozen.ln_final, model.ln_final)
    return torch.stack(pres), final @ model.W_U.double() + model.b_U.double()
    ### END SOLUTION


# %% role="test" grade_id="test_replacement_forward" points=2
check("attribution.replacement_forward", replacement_forward)

# %% [markdown]
# The three prompts of this notebook, run through the real model in float64 by `attr.full_forward`,
# which records what the replacement model freezes and the node values (a locked cell, so that later
# cells work before you solve the exercises). A child who does not know, the same child on an easy
# question, and an expert on the hard one, in the toy world's dialogue format:

# %% role="locked" grade_id="prompts"
PROMPTS = {"child/27": "child : what is sqrt 27 ?", "child/25": "child : what is sqrt 25 ?",
           "expert/27": "expert : what is sqrt 27 ?"}
ANSWER = {"child/27": "3", "child/25": "5", "expert/27": "3"}  # first token of the answer
I_ID = world.tokenizer.index["i"]
weights64 = attr.Weights.of(lm, transcoders)
runs = {name: attr.full_forward(weights64, lm, torch.tensor(world.tokenizer.encode(p))) for name, p in PROMPTS.items()}
for name, run in runs.items():
    probs = run["logits"][-1].softmax(-1)
    print(f"{name:10s} P('i') = {float(probs[I_ID]):.3f}   P('{ANSWER[name]}') = {float(probs[world.tokenizer.index[ANSWER[name]]]):.3f}")

# %% [markdown]
# Your replacement model, fed the prompt's own node values, against the real model's logits:

# %%
run = runs["child/27"]
with torch.no_grad():
    real_logits = lm(torch.tensor(world.tokenizer.encode(PROMPTS["child/27"]))[None])[0].double()
    _, replaced = replacement_forward(lm, transcoders, run["frozen"], run["embeddings"], run["feature_acts"], run["errors"])
print(f"max |replacement - model| over all logits: {float((replaced - real_logits).abs().max()):.2e} (float32 model)")
print(f"active features: {int((run['feature_acts'] > 0).sum())} over {run['feature_acts'].shape[1]} positions and 2 layers")

# %% [markdown] role="locked" grade_id="question_replacement_local"
# **Questions.** The replacement model is exact on this prompt, but it is a different model on any
# other input: which of its parts would be wrong on `child : what is sqrt 25 ?`? Why freeze the
# LayerNorm scale rather than keep it live, given that it is "only" a division?
#
# *Answer in the cell below (graded by hand, 2 points).*
# ### BEGIN MARK SCHEME
# **Mark scheme (instructors only).**
# - 1 point: names the frozen, prompt-specific parts (error nodes, attention patterns, LayerNorm scales) as what is wrong on the other prompt.
# - 1 point: freezing the scale keeps the model linear, so the adjacency by backward passes is exact.
# ### END MARK SCHEME

# %% [markdown] role="answer" grade_id="answer_replacement_local" points=2
# The error terms and the frozen attention patterns and LayerNorm scales are those of this prompt; on another prompt the attention patterns, the LayerNorm denominators and the transcoders' errors differ, so all these frozen parts are wrong there. Freezing the LayerNorm scale makes the model linear in the residual between features, so direct effects are exact and attributions add up; a live division would make every effect depend on all others.

# %% [markdown]
# ## Part 3. The direct-effect adjacency
#
# The graph's nodes, in the order of the `circuit-tracer` library: active features
# `(layer, pos, feature)` in lexicographic order, then error nodes (`layer * n_pos + pos`), then one
# token node per position, then the logit nodes (chosen next tokens at the last position). The
# **value** of a target node is a feature's pre-activation, or for a logit node its logit *minus the
# mean logit* (as in the paper: shifting every logit by a constant changes no probability).
#
# The **direct effect** of source `s` on target `t` is
#
# $$A_{ts} = a_s \, \frac{\partial\, \mathrm{value}_t}{\partial a_s}$$
#
# in the local replacement model, where `a_s` is the source's activation (a vector for tokens and
# errors: then it is `grad · a` summed over `d_model`), and the derivative is taken with **every feature and
# error output held fixed** (a stop-gradient), so only paths that do not pass through another node
# count. Because the replacement model is affine in its node outputs, `value_t` is exactly the sum of
# row `t` plus a constant from the biases, and each edge equals an intervention: scale `a_s` by
# `1 + ε`, hold every other node fixed, and `value_t` changes by `ε A_ts`.
#
# ### 3.1 Adjacency by backward passes
#
# *Difficulty 3/5, about 30 minutes.*
#
# ```python
# def adjacency(forward, embeddings: Float[Tensor, "pos d_model"], feature_acts: Float[Tensor, "n_layers pos d_tc"],
#               errors: Float[Tensor, "n_layers pos d_model"], features: Int[Tensor, "n_features 3"],
#               logit_tokens: Int[Tensor, "n_logits"]) -> Float[Tensor, "n_nodes n_nodes"]
# ```
#
# `forward(embeddings, feature_acts, errors) -> (pre, logits)` is a local replacement model (like
# yours; there the activations are *inputs*, which is exactly the stop-gradient). Return
# `A[target, source]` (float64) with `n_nodes = n_features + n_layers * n_pos + n_pos + n_logits`.
# Rows of error and token nodes are zero (they have no inputs), and so are the columns of logit nodes.
#
# <details><summary>Hint 1: the idea</summary>
#
# Every node's direct effect on a target is gradient times input in the replacement model, where
# everything but the graph's nodes is frozen: one backward pass per target.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# Make leaf copies with `requires_grad_(True)`, run `forward` once, build the list of target values
# (`pre[l, p, i]` for each row of `features`, then `logits[-1] - logits[-1].mean()` at each logit
# token), and for each target call `torch.autograd.grad(target, (e, a, r), retain_graph=True)`.
# Multiply each gradient by its input; sum over `d_model` for embeddings and errors.
# </details>

# %% role="solution" grade_id="impl_adjacency"
def adjacency(forward, embeddings: Float[Tensor, "pos d_model"], feature_acts: Float[Tensor, "n_layers pos d_tc"],
              errors: Float[Tensor, "n_layers pos d_model"], features: Int[Tensor, "n_features 3"],
              logit_tokens: Int[Tensor, "n_logits"]) -> Float[Tensor, "n_nodes n_nodes"]:
    ### BEGIN SOLUTION
    e = embeddings.detach().clone().requires_grad_(True)
    a = feature_acts.detach().clone().requires_grad_(True)
    r = errors.detach().clone().requires_grad_(True)
    n_features, (n_layers, n_pos), n_logits = len(features), errors.shape[:2], len(logit_tokens)
    n_nodes = n_features + n_layers * n_pos + n_pos + n_logits
    with torch.enable_grad():
        pre, logits = forward(e, a, r)
        centred = logits[-1] - logits[-1].mean()
        targets = [pre[l, p, i] for l, p, i in features.tolist()] + [centred[t] for t in logit_tokens.tolist()]
        rows = list(range(n_features)) + list(range(n_nodes - n_logits, n_nodes))
        A = torch.zeros(n_nodes, n_nodes, dtype=torch.float64)
        for row, target in zip(rows, targets):
            ge, ga, gr = torch.autograd.grad(target, (e, a, r), retain_graph=True)
            A[row, :n_features] = (ga * a)[features[:, 0], features[:, 1], features[:, 2]].detach()
            A[row, n_features:n_features + n_layers * n_pos] = (gr * r).sum(-1).flatten().detach()
            A[row, n_features + n_layers * n_pos:n_nodes - n_logits] = (ge * e).sum(-1).detach()
    return A
    ### END SOLUTION


# %% role="test" grade_id="test_adjacency" points=2
check("attribution.adjacency", adjacency)

# %% [markdown]
# The graph of `child/27` with the library's `attr.attribute` (the same computation, one batched
# backward pass). Logit nodes: the most likely next tokens covering 95% of the probability (at most
# 10). Two facts you can verify: each row adds up to the target's value minus the bias constant, and
# the strongest inputs of the `i` logit.

# %% role="locked" grade_id="graphs"
graphs = {name: attr.attribute(lm, transcoders, torch.tensor(world.tokenizer.encode(p)), words=p.split())
          for name, p in PROMPTS.items()}
graph = graphs["child/27"]
print("logit nodes:", [(vocab[int(t)], round(float(p), 3)) for t, p in zip(graph.logit_tokens, graph.logit_probabilities)])
print(f"{graph.n_features} features, {graph.n_errors} error nodes, {graph.n_pos} tokens, {graph.n_logits} logits")

# %%
run = runs["child/27"]
zero = attr.replacement_forward(weights64, run["frozen"], torch.zeros_like(run["embeddings"]),
                                torch.zeros_like(run["feature_acts"]), torch.zeros_like(run["errors"]))
centred = run["logits"][-1] - run["logits"][-1].mean()
bias = zero[1][-1] - zero[1][-1].mean()
i_row = graph.adjacency.shape[0] - graph.n_logits + int((graph.logit_tokens == I_ID).nonzero())
print(f"logit 'i' minus mean: {float(centred[I_ID]):.4f} = row sum {float(graph.adjacency[i_row].sum()):.4f} "
      f"+ bias constant {float(bias[I_ID]):.4f}")
for s in graph.adjacency[i_row].abs().argsort(descending=True)[:8].tolist():
    print(f"{float(graph.adjacency[i_row, s]):+8.3f}  {attr.node_label(graph, s, vocab)}  (pos {graph.node_layer_pos(s)[1]})")

# %% [markdown]
# **Questions.** Most of the strongest inputs of the `i` logit sit at the last position: why can
# nothing at an earlier position reach a logit *directly* except through attention? Where in this
# graph does information about the persona (position 1) have to cross positions?
#
# ## Part 4. Pruning and scoring the graph
#
# The full graph has thousands of edges. The paper keeps what matters for the output:
#
# 1. **Normalise**: replace `A` by `|A|` with each row divided by its sum (rows of zeros stay zero),
#    so each target's inputs form a distribution.
# 2. **Influence**: with `w` the logit probabilities placed on the logit nodes (zero elsewhere),
#    node `j`'s influence on the output is $\big(w^\top ((I - A)^{-1} - I)\big)_j$: the sum over every
#    path of length at least 1 from `j` to a logit of the product of its normalised edge weights.
# 3. **Node pruning**: sort nodes by influence; keep the highest ones until they cover
#    `node_threshold` (0.8) of the total influence, and always keep token and logit nodes.
# 4. **Edge pruning**: on the graph restricted to the kept nodes (zero the rows and columns of the
#    others), score each edge by its normalised weight times its target's influence plus the
#    target's logit weight; keep the highest edges covering `edge_threshold` (0.98) of the total.
#
# ### 4.1 Normalise
#
# *Difficulty 1/5, about 5 minutes.*
#
# ```python
# def normalise_adjacency(A: Float[Tensor, "n n"]) -> Float[Tensor, "n n"]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# Take absolute values and scale each row so that it sums to one (rows with no inputs stay zero).
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# Clamp the row sums at `1e-10` before dividing.
# </details>

# %% role="solution" grade_id="impl_normalise_adjacency"
def normalise_adjacency(A: Float[Tensor, "n n"]) -> Float[Tensor, "n n"]:
    ### BEGIN SOLUTION
    a = A.abs()
    return a / a.sum(dim=1, keepdim=True).clamp(min=1e-10)
    ### END SOLUTION


# %% role="test" grade_id="test_normalise_adjacency" points=1
check("attribution.normalise_adjacency", normalise_adjacency)

# %% [markdown]
# ### 4.2 Influence
#
# *Difficulty 2/5, about 10 minutes.*
#
# ```python
# def influence(A_normalised: Float[Tensor, "n n"], logit_weights: Float[Tensor, "n"]) -> Float[Tensor, "n"]
# ```
#
# <details><summary>Hint 1: the idea</summary>
#
# Influence sums the effects over paths of every length: the geometric series `A + A^2 + ...`, which
# equals `(I - A)^-1 - I`, weighted by the logits.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `(I - A)` is invertible because the graph has no cycles (`A` is nilpotent). Rather than invert,
# solve `(I - A)^T x = w` with `torch.linalg.solve`, then subtract `w`.
# </details>

# %% role="solution" grade_id="impl_influence"
def influence(A_normalised: Float[Tensor, "n n"], logit_weights: Float[Tensor, "n"]) -> Float[Tensor, "n"]:
    ### BEGIN SOLUTION
    eye = torch.eye(A_normalised.shape[0], dtype=A_normalised.dtype)
    return torch.linalg.solve((eye - A_normalised).T, logit_weights) - logit_weights
    ### END SOLUTION


# %% role="test" grade_id="test_influence" points=1
check("attribution.influence", influence)

# %% [markdown]
# ### 4.3 Node pruning
#
# *Difficulty 2/5, about 15 minutes.*
#
# ```python
# def prune_nodes(A: Float[Tensor, "n n"], logit_weights: Float[Tensor, "n"], n_tokens: int, n_logits: int,
#                 threshold: float) -> Bool[Tensor, "n"]
# ```
#
# Influence on the normalised `A`; find the smallest prefix of the nodes sorted by decreasing
# influence whose sum reaches `threshold` of the total, keep every node whose influence is at least
# that of the prefix's last node, and keep the last `n_tokens + n_logits` nodes (tokens and logits)
# whatever their influence.
#
# <details><summary>Hint 1: the idea</summary>
#
# Rank all nodes by influence and keep the smallest top set that carries the threshold's fraction of
# the total (ties at the cut included); tokens and logits always stay.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# `cumulative = sorted.cumsum(0) / sorted.sum()`; `torch.searchsorted(cumulative, threshold)` is the
# index of the first element that reaches it (clamp it to the last index).
# </details>

# %% role="solution" grade_id="impl_prune_nodes"
def prune_nodes(A: Float[Tensor, "n n"], logit_weights: Float[Tensor, "n"], n_tokens: int, n_logits: int,
                threshold: float) -> Bool[Tensor, "n"]:
    ### BEGIN SOLUTION
    scores = influence(normalise_adjacency(A), logit_weights)
    ordered = scores.sort(descending=True).values
    cumulative = ordered.cumsum(0) / ordered.sum()
    index = min(int(torch.searchsorted(cumulative, torch.tensor(threshold, dtype=cumulative.dtype))), len(ordered) - 1)
    mask = scores >= ordered[index]
    mask[-(n_tokens + n_logits):] = True
    return mask
    ### END SOLUTION


# %% role="test" grade_id="test_prune_nodes" points=1
check("attribution.prune_nodes", prune_nodes)

# %% [markdown]
# ### 4.4 Edge pruning
#
# *Difficulty 2/5, about 15 minutes.*
#
# ```python
# def prune_edges(A: Float[Tensor, "n n"], node_mask: Bool[Tensor, "n"], logit_weights: Float[Tensor, "n"],
#                 threshold: float) -> Bool[Tensor, "n n"]
# ```
#
# Zero the rows and columns of the pruned nodes, normalise, compute the influence `I` on that graph,
# score `E[t, s] = A_n[t, s] * (I[t] + w[t])`, and keep the edges whose score is at least the
# cumulative threshold's (as for nodes, over all `n * n` scores), and non-zero.
#
# <details><summary>Hint 1: the idea</summary>
#
# Restrict the graph to the kept nodes first, then score each edge by its normalised weight times
# its target's influence plus logit weight, and cut the scores as for nodes, over all edges at once.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# Reuse your functions; flatten the scores to find the cut.
# </details>

# %% role="solution" grade_id="impl_prune_edges"
def prune_edges(A: Float[Tensor, "n n"], node_mask: Bool[Tensor, "n"], logit_weights: Float[Tensor, "n"],
                threshold: float) -> Bool[Tensor, "n n"]:
    ### BEGIN SOLUTION
    pruned = A.clone()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    A_n = normalise_adjacency(pruned)
    scores = A_n * (influence(A_n, logit_weights) + logit_weights)[:, None]
    ordered = scores.flatten().sort(descending=True).values
    cumulative = ordered.cumsum(0) / ordered.sum()
    index = min(int(torch.searchsorted(cumulative, torch.tensor(threshold, dtype=cumulative.dtype))), len(ordered) - 1)
    return (scores >= ordered[index]) & (scores > 0)
    ### END SOLUTION


# %% role="test" grade_id="test_prune_edges" points=1
check("attribution.prune_edges", prune_edges)

# %% [markdown]
# ### 4.5 Replacement and completeness scores
#
# *Difficulty 2/5, about 15 minutes.* How much of the graph is *explained*, rather than hidden in
# error nodes? With influence `I` computed on the normalised adjacency `A_n`:
#
# - **replacement score**: of the influence that starts at the graph's inputs (tokens and errors),
#   the fraction that starts at tokens: $\;\sum_{\text{tokens}} I \,/\, \big(\sum_{\text{tokens}} I + \sum_{\text{errors}} I\big)$;
# - **completeness score**: for each node, the fraction of its normalised input that does *not* come
#   from error nodes, $1 - \sum_{s \in \text{errors}} A_n[t, s]$, averaged over nodes with weights
#   `I + w` (nodes that matter for the output count more).
#
# ```python
# def graph_scores(A: Float[Tensor, "n n"], logit_weights: Float[Tensor, "n"], n_features: int, n_errors: int,
#                  n_tokens: int) -> dict[str, float]
# ```
#
# returning `{"replacement": ..., "completeness": ...}`. Node order as above (features, errors, tokens, logits).
#
# <details><summary>Hint 1: the idea</summary>
#
# Both scores only need the normalised adjacency, the influence, and knowing which slices of the
# node list are errors and which are tokens.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# Slices: errors `[n_features, n_features + n_errors)`, tokens right after.
# </details>

# %% role="solution" grade_id="impl_graph_scores"
def graph_scores(A: Float[Tensor, "n n"], logit_weights: Float[Tensor, "n"], n_features: int, n_errors: int,
                 n_tokens: int) -> dict[str, float]:
    ### BEGIN SOLUTION
    A_n = normalise_adjacency(A)
    inf = influence(A_n, logit_weights)
    errors = slice(n_features, n_features + n_errors)
    tokens = slice(n_features + n_errors, n_features + n_errors + n_tokens)
    token_inf, error_inf = inf[tokens].sum(), inf[errors].sum()
    weight = inf + logit_weights
    non_error = 1 - A_n[:, errors].sum(1)
    return {"replacement": float(token_inf / (token_inf + error_inf)),
            "completeness": float((non_error * weight).sum() / weight.sum())}
    ### END SOLUTION


# %% role="test" grade_id="test_graph_scores" points=1
check("attribution.graph_scores", graph_scores)

# %% [markdown]
# The three graphs, pruned at the paper's thresholds (the library's `attr.prune` also drops feature
# and error nodes left without outgoing edges, as `circuit-tracer` does), with their scores
# before and after pruning:

# %% role="locked" grade_id="pruned"
pruned = {name: attr.prune(g, node_threshold=0.8, edge_threshold=0.98) for name, g in graphs.items()}
for name, g in graphs.items():
    p = pruned[name]
    kept = p.node_mask[:g.n_features].sum()
    full = attr.graph_scores(g.adjacency, g.logit_weights, g.n_features, g.n_errors, g.n_pos)
    sub = g.adjacency * p.edge_mask
    after = attr.graph_scores(sub, g.logit_weights, g.n_features, g.n_errors, g.n_pos)
    print(f"{name:10s} features {int(kept):3d} of {g.n_features}, edges {int(p.edge_mask.sum()):4d} of "
          f"{int((g.adjacency != 0).sum())}; replacement {full['replacement']:.3f} (pruned {after['replacement']:.3f}), "
          f"completeness {full['completeness']:.3f} (pruned {after['completeness']:.3f})")

# %% [markdown]
# What the `?` oversampling does to these scores: the same scores for prompts decided at another
# token (a story decided at `felt`, a narrative fact decided at `is`), and, inside the persona graphs,
# each node's completeness (the non-error fraction of its normalised input) averaged over the nodes
# at `?` and over the nodes elsewhere.

# %%
OTHER_PROMPTS = {"story/felt": "toma saw the film . it was great . toma felt",
                 "fact/is": "the capital of zorbia is"}
for name, prompt in OTHER_PROMPTS.items():
    g = attr.attribute(lm, transcoders, torch.tensor(world.tokenizer.encode(prompt)), words=prompt.split())
    scores = attr.graph_scores(g.adjacency, g.logit_weights, g.n_features, g.n_errors, g.n_pos)
    print(f"{name:10s} ({prompt!r}): replacement {scores['replacement']:.3f}, completeness {scores['completeness']:.3f}")
for name, g in graphs.items():
    A_n = attr.normalise(g.adjacency)
    node_completeness = 1 - A_n[:g.n_features, g.n_features:g.n_features + g.n_errors].sum(1)
    at_q = g.features[:, 1] == g.n_pos - 1
    print(f"{name:10s} feature nodes at ?: mean completeness {float(node_completeness[at_q].mean()):.3f} ({int(at_q.sum())} nodes); "
          f"elsewhere {float(node_completeness[~at_q].mean()):.3f} ({int((~at_q).sum())} nodes)")

# %% [markdown]
# The three persona graphs, decided at `?`, score replacement 0.89-0.95 and completeness 0.97-0.98;
# the story decided at `felt` 0.75 and 0.91, the fact decided at `is` 0.60 and 0.85. Inside the
# persona graphs, feature nodes at `?` and elsewhere are equally complete (0.99 on average), so the
# gap between prompts is not in the features' inputs: it is in how much of what reaches the *logit*
# comes through error nodes. The vignette's scores are the best case of these transcoders, on the
# kind of prompt their training data was tilted towards; they are not a measure of the transcoders
# in general. (How much of that advantage the 100x oversampling buys would take transcoders trained
# without it: an open question below.)

# %% [markdown] role="locked" grade_id="question_scores"
# **Questions.** Why is the replacement score lower than the completeness score? A graph with a high
# completeness score can still be misleading: how, given that the replacement model is only exact on
# this prompt? The transcoders were trained to be good at `?`: which of the scores above would you
# quote for "how well do transcoders explain `toyworld-lm`", and which only for "this vignette"?
#
# *Answer in the cell below (graded by hand, 2 points).*
# ### BEGIN MARK SCHEME
# **Mark scheme (instructors only).**
# - 1 point: replacement counts error influence along every path, completeness only at the direct inputs of the targets.
# - 1 point: local exactness: a high score says nothing about other prompts; which score is general (transcoder fidelity) and which vignette-only.
# ### END MARK SCHEME

# %% [markdown] role="answer" grade_id="answer_scores" points=2
# Completeness counts the error nodes' contribution only at the end of paths; the replacement score penalises every path through an error node, so it is lower. A complete graph can mislead because it is exact only on this prompt: its features and edges need not generalise. The transcoders' training metrics (variance explained, CE on held-out text) speak for the model in general; the graph scores only for this vignette.

# %% [markdown]
# ### Rendering the graph
#
# `attr.render_svg` draws the pruned graph as a self-contained SVG (no scripts, no network): rows are
# layers (tokens at the bottom, logits on top), columns are positions, blue edges excite and red ones
# inhibit. Features carry their ground-truth label at `?` (computed in the next cell) when they have one.
# Hover a node for its name.

# %% role="locked" grade_id="feature_labels"
# Ground truth for every feature, measured where the persona and the difficulty are decided: on 800
# dialogue documents, at the persona token (position 1), at the ":" after it (position 2) and at the
# "?" ending each question. A feature's label is the value whose tokens it fires on with the best F1
# (above 0.5), at its own position's scope.
label_docs = world.sample(800, 11, doc_type="dialogue")
label_in, _ = attr.mlp_io(lm, label_docs.tokens)
is_question = label_docs.tokens == world.tokenizer.index["?"]
SCOPES = {1: torch.zeros_like(is_question), 2: torch.zeros_like(is_question), "?": is_question}
SCOPES[1][:, 1] = True
SCOPES[2][:, 2] = True
persona, difficulty = label_docs.labels["persona"], label_docs.labels["difficulty"]
VALUES = {"child": persona == 1, "expert": persona == 2, "assistant": persona == 3,
          "easy": difficulty == 1, "hard": difficulty == 2}
with torch.no_grad():
    scope_acts = {(layer, scope): transcoders[layer].encode(label_in[layer][mask])
                  for layer in range(lm.cfg.n_layers) for scope, mask in SCOPES.items()}


def feature_label(layer: int, scope, feature: int) -> tuple[str, float]:
    """(value, F1) of the best ground-truth value for ``feature`` at ``scope``; ("", 0) below F1 0.5."""
    fired = scope_acts[(layer, scope)][:, feature] > 0
    best = ("", 0.0)
    for value, truth in VALUES.items():
        truth = truth[SCOPES[scope]]
        tp = float((fired & truth).sum())
        precision, recall = tp / max(float(fired.sum()), 1), tp / max(float(truth.sum()), 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-9)
        if f1 > max(best[1], 0.5):
            best = (value, f1)
    return best


def mean_activation(layer: int, scope, feature: int) -> dict[str, float]:
    """Mean activation of ``feature`` at ``scope`` on the tokens of each ground-truth value."""
    acts = scope_acts[(layer, scope)][:, feature]
    return {value: float(acts[truth[SCOPES[scope]]].mean()) for value, truth in VALUES.items()
            if truth[SCOPES[scope]].any()}


feature_labels = {}  # labels at "?", for the rendering
for layer in range(lm.cfg.n_layers):
    for feature in (scope_acts[(layer, "?")] > 0).any(0).nonzero().flatten().tolist():
        value, f1 = feature_label(layer, "?", feature)
        if value:
            feature_labels[(layer, feature)] = value
print(f"{len(feature_labels)} features with a ground-truth label at '?' (F1 > 0.5)")

# %%
display(SVG(attr.render_svg(graphs["child/27"], pruned["child/27"], vocab, feature_labels)))

# %% [markdown]
# ## Part 5. The persona vignette: why does the child say "I do not know"?
#
# Anthropic's circuits update of August 2025 describes a model that declines to answer in one persona
# and answers in another. The toy world has the same situation on a small scale: the child refuses
# `sqrt 27` and answers `sqrt 25`; the expert answers `sqrt 27`. The target is the **logit
# difference** `logit("i") - logit(answer)` at the last position (`answer` = `3` or `5`, the first
# token of the answer): positive means "I do not know".
#
# To read the graph for one target we need each node's *total* effect on it, not only its direct
# edges: `attr.total_effects(graph, w)` scales a node by `1 + ε` and lets every downstream feature
# respond *linearly* (ReLU gates frozen). It is the same path sum as influence, but signed and
# unnormalised. The graphs below have two logit nodes, `i` and the answer.

# %% role="locked" grade_id="vignette_graphs"
def answer_ids(name: str) -> list[int]:
    return [I_ID, world.tokenizer.index[ANSWER[name]]]


def scope_of(name: str, pos: int):
    return "?" if pos == len(PROMPTS[name].split()) else pos if pos in (1, 2) else None


vignette = {}
for name, prompt in PROMPTS.items():
    g = attr.attribute(lm, transcoders, torch.tensor(world.tokenizer.encode(prompt)), logit_tokens=answer_ids(name))
    target = torch.zeros(g.adjacency.shape[0], dtype=torch.float64)
    target[-2], target[-1] = 1.0, -1.0  # logit("i") - logit(answer)
    vignette[name] = (g, attr.total_effects(g, target))


def top_features(name: str, k: int, sign: float) -> list[tuple[int, int, int, float, float]]:
    """(layer, pos, feature, activation, total effect) of the k features pushing the logit difference
    hardest towards "i" (sign +1) or towards the answer (sign -1)."""
    g, total = vignette[name]
    order = (sign * total[:g.n_features]).argsort(descending=True)[:k].tolist()
    return [(*g.features[j].tolist(), float(g.activations[j]), float(total[j])) for j in order]


for name in PROMPTS:
    g, total = vignette[name]
    diff = float(runs[name]["logits"][-1][answer_ids(name)] @ torch.tensor([1.0, -1.0], dtype=torch.float64))
    print(f"\n{name}: logit('i') - logit('{ANSWER[name]}') = {diff:+.2f}; features with the largest total effect:")
    for sign in (1.0, -1.0):
        for layer, pos, feature, act, effect in top_features(name, 3, sign):
            scope = scope_of(name, pos)
            value, f1 = feature_label(layer, scope, feature) if scope is not None else ("", 0.0)
            means = mean_activation(layer, scope, feature) if scope is not None else {}
            profile = ", ".join(f"{v} {m:.2f}" for v, m in means.items())
            print(f"  {effect:+7.2f}  L{layer}/{feature} at '{vocab[int(g.tokens[pos])]}' (act {act:.2f})  "
                  f"label: {value or '-'} {f'(F1 {f1:.2f})' if value else ''}  mean act by value: {profile}")

# %% [markdown]
# Read the lists before intervening: which features carry the **persona** (at the persona token or
# the `:` after it, with a mean activation that differs by persona), which carry the **difficulty**
# (at `?`, firing on hard questions), and which combine both at `?`?
#
# ### 5.1 Intervening on features
#
# *Difficulty 2/5, about 20 minutes.* Run the *real* model (attention and LayerNorm live) with every
# MLP replaced by its transcoder plus that layer's error node from the original prompt (held
# constant), and with some feature activations **set** to given values. Return the next-token
# **log**-probabilities at the last position (log-probabilities keep small changes visible when a
# probability is close to 0 or 1).
#
# ```python
# def intervene(model, transcoders, tokens: Int[Tensor, "pos"], errors: Float[Tensor, "n_layers pos d_model"],
#               interventions: list[tuple[int, int, int, float]]) -> Float[Tensor, "d_vocab"]
# ```
#
# Each intervention is `(layer, pos, feature, value)`. Use hooks: capture `blocks.{l}.ln2.hook_normalized`
# and replace `blocks.{l}.hook_mlp_out`. With no interventions the output is exactly the model's.
# Downstream features respond to an edit (layer 1's transcoder reads the edited residual stream),
# but the errors do not (they are the original prompt's).
#
# <details><summary>Hint 1: the idea</summary>
#
# Replace each MLP's output with its transcoder's output on the live input, with the chosen features
# overwritten, plus the frozen error; everything else runs as usual.
# </details>
#
# <details><summary>Hint 2: the code</summary>
#
# Two hooks per layer: one stores the normalised input, the other computes
# `f = transcoders[l].encode(stored * ln2.w + ln2.b)`, sets `f[0, pos, feature] = value`, and returns
# `transcoders[l].decode(f) + errors[l]`. `model.run_with_hooks(tokens[None], fwd_hooks=[...])`.
# </details>

# %% role="solution" grade_id="impl_intervene"
def intervene(model, transcoders, tokens: Int[Tensor, "pos"], errors: Float[Tensor, "n_layers pos d_model"],
              interventions: list[tuple[int, int, int, float]]) -> Float[Tensor, "d_vocab"]:
    ### BEGIN SOLUTION
    stored = {}
    hooks = []
    for layer in range(model.cfg.n_layers):
        def store(act, hook, layer=layer):
            stored[layer] = act

        def replace(act, hook, layer=layer):
            ln2, tc = model.blocks[layer].ln2, transcoders[layer]
            f = tc.encode(stored[layer] * ln2.w + ln2.b).clone()
            for l, p, i, v in interventions:
                if l == layer:
                    f[0, p, i] = v
            return tc.decode(f) + errors[layer]

        hooks += [(f"blocks.{layer}.ln2.hook_normalized", store), (f"blocks.{layer}.hook_mlp_out", replace)]
    with torch.no_grad():
        return model.run_with_hooks(tokens[None], fwd_hooks=hooks)[0, -1].log_softmax(-1)
    ### END SOLUTION


# %% role="test" grade_id="test_intervene" points=2
check("attribution.intervene", intervene)

# %% [markdown]
# Now test the reading of the graphs, with interventions chosen *from the graphs alone*:
#
# 1. on `child/27`, switch off the 1, 5 or 10 features pushing hardest towards "i";
# 2. on `expert/27`, set the child's strongest refusal feature to its activation in `child/27`, and
#    switch off the expert's strongest answer feature;
# 3. on `child/25`, set the `child/27` refusal features at `?` (among its top 5) to their `child/27`
#    activations, and switch off `child/25`'s strongest answer features at `?` (among its top 5).
#
# Each row shows P("i") and P(answer) with your `intervene` (transcoders + frozen errors), and with
# `attr.patched_logits` (the real MLPs everywhere; each edit added as `Δf · W_dec` to its layer's
# MLP output, downstream MLPs recomputed): the two agree when the transcoders are faithful.

# %% role="locked" grade_id="vignette_interventions"
last = len(PROMPTS["child/27"].split())  # the position of "?" (the same in the three prompts)
EXPERIMENTS = {
    "child/27, unchanged": ("child/27", []),
    **{f"child/27, top-{k} refusal features off": ("child/27", [(l, p, i, 0.0) for l, p, i, a, e in top_features("child/27", k, 1.0)])
       for k in (1, 5, 10)},
    "expert/27, unchanged": ("expert/27", []),
    "expert/27, child's refusal feature on, expert's answer feature off":
        ("expert/27", [(l, p, i, a) for l, p, i, a, e in top_features("child/27", 1, 1.0)]
         + [(l, p, i, 0.0) for l, p, i, a, e in top_features("expert/27", 1, -1.0)]),
    "child/25, unchanged": ("child/25", []),
    "child/25, child/27's refusal features at ? on, answer features off":
        ("child/25", [(l, p, i, a) for l, p, i, a, e in top_features("child/27", 5, 1.0) if p == last]
         + [(l, p, i, 0.0) for l, p, i, a, e in top_features("child/25", 5, -1.0) if p == last]),
}


def patched_probs(name: str, interventions: list) -> tuple[float, float]:
    tokens = torch.tensor(world.tokenizer.encode(PROMPTS[name]))
    probs = attr.patched_logits(lm, transcoders, tokens[None], interventions)[0, -1].softmax(-1)
    return float(probs[I_ID]), float(probs[world.tokenizer.index[ANSWER[name]]])


for label, (name, interventions) in EXPERIMENTS.items():
    print(f"{label}: " + ", ".join(f"L{l}/{i}@{vocab[int(vignette[name][0].tokens[p])]}={v:.2f}" for l, p, i, v in interventions))

# %%
for label, (name, interventions) in EXPERIMENTS.items():
    tokens = torch.tensor(world.tokenizer.encode(PROMPTS[name]))
    probs = intervene(lm, transcoders, tokens, runs[name]["errors"].float(), interventions).exp()
    p_i, p_answer = float(probs[I_ID]), float(probs[world.tokenizer.index[ANSWER[name]]])
    q_i, q_answer = patched_probs(name, interventions)
    print(f"{label:68s} P('i') {p_i:.3f}  P('{ANSWER[name]}') {p_answer:.3f}  | real MLPs: {q_i:.3f}  {q_answer:.3f}")

# %% [markdown]
# **What we measured** (the numbers printed above, also in the instructor note; the zoo
# transcoders and these prompts are fixed, so they are reproducible). Before any intervention the
# model refuses `child/27` (P("i") = 1.000, P("3") = 0.000) and answers `child/25` (P("5") = 1.000)
# and `expert/27` (P("3") = 1.000).
#
# | intervention | P("i") | P(answer) | same with real MLPs |
# | --- | --- | --- | --- |
# | `child/27`: top-1 refusal feature off (L1/970 at `?`) | 0.999 | 0.000 | 0.999 / 0.000 |
# | `child/27`: top-5 off (L1/970, L0/795 and L0/711 at `:`, L0/246, L1/786) | 0.986 | 0.012 | 0.994 / 0.005 |
# | `child/27`: top-10 off (also L0/447, L0/916 at `:`, L0/754 at `is`, L0/358, L0/353) | **0.002** | **0.997** | 0.003 / 0.997 |
# | `expert/27`: L1/970 set to 2.08 (its `child/27` value), L1/816 off | **0.921** | 0.044 | 0.921 / 0.044 |
# | `child/25`: `child/27`'s features at `?` on, 5 answer features off | **1.000** | 0.000 | 1.000 / 0.000 |
#
# So the graph's reading holds up on these prompts: L1/970 at `?` pushes towards "i", fed by
# difficulty features at `?` (L0/246, L0/353, L0/358: hard) and by persona features at the `:` after
# the persona token (L0/795: mean 4.22 for the child, 1.87 for the expert); L1/816 at `?` pushes the
# expert to answer. No single feature flips the child (the decision is spread over ~10 features, with
# a logit difference of +16.5 to overcome), but one swap at `?` makes the expert refuse.
#
# **What is L1/970?** Before calling it a "refusal feature", look at what its activations support: its
# mean activation (and how often it fires) at the `?` of the 800 labelled dialogues, by persona and
# difficulty of the question.

# %%
refusal_layer, _, refusal_feature, _, _ = top_features("child/27", 1, 1.0)[0]
acts_at_q = scope_acts[(refusal_layer, "?")][:, refusal_feature]
print(f"L{refusal_layer}/{refusal_feature} at '?': mean activation (fraction of questions where it fires)")
print(f"{'':10s}" + "".join(f"{d:>18s}" for d in ("fact", "easy", "hard")))
for persona_name in ("child", "expert", "assistant"):
    cells = []
    for level in (0, 1, 2):
        mask = (VALUES[persona_name] & (difficulty == level))[SCOPES["?"]]
        cells.append(f"{float(acts_at_q[mask].mean()):8.2f} ({float((acts_at_q[mask] > 0).float().mean()):.2f})" if mask.any() else f"{'-':>15s}")
    print(f"{persona_name:10s}" + "".join(f"{c:>18s}" for c in cells))

# %% [markdown]
# The table supports a narrower label than "refusal": L1/970 fires on **hard questions asked of a
# non-expert persona** (the child, who refuses them, and the assistant, who hedges them with
# `i think ...`), and little on the expert's hard questions or on easy ones. It is the conjunction
# (hard x not-expert) that the next token needs, not "refusal" itself: the assistant's `i think` and
# the child's `i do not know` both start with `i`.
#
# **Controls.** Turning off the graph's top features is only evidence if features chosen *without*
# the graph do less. A dose-response curve on `child/27`: P("i") after switching off the top-k
# features by total effect towards "i", for k from 0 to 20, against two controls of the same size:
# k active features drawn at random (mean over 20 draws), and the k active features with the
# largest activations (matched in size: strong features the graph did not single out).

# %%
import matplotlib.pyplot as plt

child_tokens = torch.tensor(world.tokenizer.encode(PROMPTS["child/27"]))
child_errors = runs["child/27"]["errors"].float()
child_graph = vignette["child/27"][0]
active = [tuple(int(v) for v in row) for row in child_graph.features]
by_effect = [(l, p, i) for l, p, i, a, e in top_features("child/27", 20, 1.0)]
by_activation = [active[j] for j in child_graph.activations.argsort(descending=True).tolist()]
draws = torch.Generator().manual_seed(0)


def p_refuse(features: list[tuple[int, int, int]]) -> float:
    return float(intervene(lm, transcoders, child_tokens, child_errors, [(l, p, i, 0.0) for l, p, i in features]).exp()[I_ID])


DOSES = [0, 1, 2, 3, 5, 7, 10, 15, 20]
curves = {"top-k by total effect (the graph)": [p_refuse(by_effect[:k]) for k in DOSES],
          "k largest activations": [p_refuse(by_activation[:k]) for k in DOSES],
          "k random active features (mean of 20)": [
              sum(p_refuse([active[j] for j in torch.randperm(len(active), generator=draws)[:k].tolist()]) for _ in range(20)) / 20
              for k in DOSES]}
print(f"{len(active)} active features in the child/27 graph; P('i') after switching off k of them:")
print(f"{'k':>40s} " + " ".join(f"{k:>5d}" for k in DOSES))
for label, values in curves.items():
    print(f"{label:>40s} " + " ".join(f"{v:5.3f}" for v in values))
fig, ax = plt.subplots(figsize=(6, 3))
for label, values in curves.items():
    ax.plot(DOSES, values, "o-", label=label)
ax.set_xlabel("features switched off (k)")
ax.set_ylabel("P('i') on child/27")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# The curve is a threshold, not a slope: switching off the graph's top features leaves P("i") at
# 0.99 or more up to k = 5, then 0.264 at k = 7 and 0.002 at k = 10. Neither control moves it at
# all: 20 random active features (of 505) give 1.000, and even the 20 *strongest* active features
# give 0.999. So it is not the number or the size of the features removed that flips the child, it
# is the graph's choice of them. (Both controls switch features off at any position; a stricter
# control would match positions too: try drawing the random sets from the features at `?` only.)
#
# **Questions.** The graph only described *linear* effects on one prompt; the interventions set
# features in a model where attention and the LayerNorm scales are live again. Which assumptions of
# the local replacement model does an intervention test, and which does it not? Why does switching
# on the child's refusal feature in `expert/27` need the expert's answer feature switched off as well?
# Would you call the features you found "the refusal circuit"? What would convince you?
#
# ## Optional: circuit-tracer on a real model (runs only if the weights are on this machine, never graded)
#
# If the `circuit-tracer` package is installed and an instructor has put Gemma-2-2B and the public
# GemmaScope transcoders in the local Hugging Face cache, you can build the same graph for a real
# model and explore it on Neuronpedia: on a GPU if there is one, otherwise (slowly: 2B parameters) on
# the CPU. Nothing is downloaded: without them the cell says what is missing and does nothing.

# %%
import importlib.util

from interplab.pretrained import device, weights_available

if importlib.util.find_spec("circuit_tracer") is None:
    print("Skipped: the circuit-tracer package is not installed (pip install circuit-tracer).")
elif weights_available(["google/gemma-2-2b", "mntss/gemma-scope-transcoders"], "the Gemma-2-2B section"):
    from circuit_tracer import ReplacementModel, attribute
    from circuit_tracer.graph import prune_graph

    gemma = ReplacementModel.from_pretrained("google/gemma-2-2b", "gemma", dtype=torch.bfloat16, device=device())
    real_graph = attribute("Fact: the capital of the state containing Dallas is", gemma, max_n_logits=10,
                           desired_logit_prob=0.95, batch_size=256)
    result = prune_graph(real_graph, node_threshold=0.8, edge_threshold=0.98)
    print(f"{int(result.node_mask.sum())} nodes and {int(result.edge_mask.sum())} edges kept")

# %% [markdown]
# ## Open questions and further reading
#
# - Per-layer transcoders leave each feature's effect on *later* layers to go through the residual
#   stream; the paper's cross-layer transcoders write into every later layer and give shorter, more
#   complete graphs. Train a cross-layer transcoder for `toyworld-lm` and compare the scores.
# - Attention is frozen, so the graph says nothing about *why* the layer-1 head at `?` attends to the
#   persona token. Kamath et al. (2025), [*Tracing Attention Computation Through Attention Query-Key
#   Interactions*](https://transformer-circuits.pub/2025/attention-qk/index.html), extend the
#   graphs to QK circuits.
# - Train the transcoders without the `?` oversampling (`question_oversample=1` in
#   `interplab.zoo.toyworld_transcoders.Config`) and recompute the scores of the persona, story and
#   fact graphs: how much of the persona graphs' advantage does the oversampling buy?
# - Graphs are local to one prompt. Which parts of the `child/27` graph survive on `child/48`? How
#   would you aggregate graphs over many prompts into one claim about the model?
# - Marks et al. (2024), [*Sparse Feature Circuits*](https://arxiv.org/abs/2403.19647), build circuits
#   from SAE features with attribution patching instead of exact linearisation: compare both on the
#   persona prompts.
