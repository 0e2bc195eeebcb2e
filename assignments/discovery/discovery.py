# %% [markdown]
# # Discovery: finding circuits automatically
#
# In `circuits` you found the induction circuit by hand. Research practice goes further: it asks
# *which* path between two components carries the effect, approximates thousands of patching
# experiments with one backward pass, lets an algorithm find the circuit, and then asks whether
# the circuit is any good. This notebook does all of that on an **indirect-object-identification**
# (IOI) task, the task of the best-studied circuit in a real language model:
#
# > when anna and boris went to the market , boris gave the book to → **anna**
#
# **After this notebook you will be able to**
#
# - attribute a logit difference to every head and layer directly (**direct logit attribution**);
# - localise a behaviour with **activation patching** by layer, position and head, with a
#   normalised metric, and say which direction (noising or denoising) you patched in;
# - separate the roles of heads with **path patching** from a sender head to the logits and to a
#   receiver head's queries, keys or values;
# - approximate every patching experiment at once with **attribution patching** (AtP), and say
#   where the linear approximation fails;
# - find a circuit automatically with **edge attribution patching** (EAP) and **ACDC** on the
#   model's computational graph;
# - judge a circuit by its **faithfulness**, **completeness** and **minimality**.
#
# **Read first**
#
# 1. Wang et al. (2022), [*Interpretability in the Wild: a Circuit for Indirect Object Identification in GPT-2 small*](https://arxiv.org/abs/2211.00593):
#    sections 2 (the task, the ABC distribution, path patching) and 3 (the circuit: duplicate-token,
#    S-inhibition and name-mover heads) and 4 (faithfulness, completeness, minimality).
# 2. Heimersheim & Nanda (2024), [*How to use and interpret activation patching*](https://arxiv.org/abs/2404.15255): noising vs denoising.
# 3. Nanda (2023), [*Attribution Patching*](https://www.neelnanda.io/mechanistic-interpretability/attribution-patching),
#    and Kramár et al. (2024), [*AtP\**](https://arxiv.org/abs/2403.00745) (section 3: where AtP fails).
# 4. Conmy et al. (2023), [*Towards Automated Circuit Discovery*](https://arxiv.org/abs/2304.14997) (ACDC), and
#    Syed et al. (2023), [*Attribution Patching Outperforms Automated Circuit Discovery*](https://arxiv.org/abs/2310.10348) (EAP).
#
# **The model.** `ioi-3l` from the zoo (`interplab zoo list` shows its card): three layers, four
# heads of size 16 per layer, MLPs, **no LayerNorm** (so the logits are exactly the sum of what each
# component writes, and every method below is exact where it claims to be), trained by our own
# script on the IOI task of `interplab.ioi` with its own 82-word vocabulary. It is tested on
# templates and name pairs it never saw. Every name is one token and every batch uses one template,
# so the positions of the names (`IO`, `S1`, `S2`) and of the last token (`END`) line up across a batch.
#
# **Conventions used throughout** (the checks hold you to them):
#
# - the metric is the **logit difference** `LD = logit(IO) - logit(S)` at the last position,
#   averaged over the batch (`logit_diff(logits, io, s).mean()`, imported);
# - a **clean** prompt and its **corrupted** (ABC) twin: the same template with three fresh names,
#   so nothing in it points to `IO` or `S`;
# - a **normalised** effect divides a change of the mean LD by `LD_clean - LD_corrupted`.
#
# **How the checks work.** Each exercise ends with `check("discovery.<name>", your_function)`; it
# runs your function on fresh inputs (new prompts, other templates, randomly initialised models)
# and compares with the reference, naming known mistakes when your answer matches one.

# %% role="locked" grade_id="setup"
import time

import matplotlib.pyplot as plt
import torch
from jaxtyping import Bool, Float, Int
from scipy.stats import pearsonr
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities import get_act_name

from interplab import check
from interplab.circuit_graph import Graph, ablated_senders, run_with_edges
from interplab.ioi import decode, ioi_prompts
from interplab.plots import head_labels, heatmap
from interplab.zoo.ioi_3l import load, logit_diff

torch.set_num_threads(1)  # a model this small runs fastest on one thread
model: HookedTransformer = load()
N_LAYERS, N_HEADS = model.cfg.n_layers, model.cfg.n_heads
prompts = ioi_prompts(32, torch.Generator().manual_seed(0), split="test")
clean, corrupted, io, s = prompts["clean"], prompts["corrupted"], prompts["io"], prompts["s"]
with torch.no_grad():
    clean_logits, clean_cache = model.run_with_cache(clean)
    corrupted_logits = model(corrupted)
print("clean:    ", decode(clean[0]), "->", decode(io[:1]), "(not", decode(s[:1]) + ")")
print("corrupted:", decode(corrupted[0]))
print(f"mean LD clean {logit_diff(clean_logits, io, s).mean():.2f}, corrupted {logit_diff(corrupted_logits, io, s).mean():.2f}; "
      f"accuracy {(clean_logits[:, -1].argmax(-1) == io).float().mean():.2f}")

# %% [markdown]
# ## 1. Direct logit attribution
#
# Without LayerNorm the final residual stream at `END` is a sum: the embeddings, each head's output
# (`hook_result`, one `d_model` vector per head, without the attention bias `b_O`), each layer's
# attention bias and each MLP's output. The logit difference is linear in it, so each term's
# contribution is its dot product with the **logit-difference direction** `W_U[:, IO] - W_U[:, S]`
# (one direction per prompt).
#
# ### 1a. Per head
#
# *Difficulty 1/5, about 10 minutes.* The direct contribution of every head to the logit difference
# at the last position, averaged over the batch.
#
# ```python
# def head_dla(model: HookedTransformer, cache: ActivationCache, io: Int[Tensor, "batch"],
#              s: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers n_heads"]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# `cache["result", layer]` is `[batch, pos, head, d_model]`. Keep the last position, take the dot
# product of every head's vector with its own prompt's direction, average over the batch.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `direction = model.W_U[:, io] - model.W_U[:, s]` is `[d_model, batch]`;
# `torch.einsum("bhd,db->h", cache["result", layer][:, -1], direction) / batch` is one layer.
# </details>

# %% role="solution" grade_id="impl_head_dla"
def head_dla(model: HookedTransformer, cache: ActivationCache, io: Int[Tensor, "batch"],
             s: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers n_heads"]:
    ### BEGIN SOLUTION
    direction = model.W_U[:, io] - model.W_U[:, s]
    result = torch.stack([cache["result", layer][:, -1] for layer in range(model.cfg.n_layers)])
    return torch.einsum("lbhd,db->lh", result, direction) / io.shape[0]
    ### END SOLUTION


# %% role="test" grade_id="test_head_dla" points=1
check("discovery.head_dla", head_dla)

# %% [markdown]
# ### 1b. Per layer
#
# *Difficulty 1/5, about 10 minutes.* The same for the coarse components, in this order:
# the embeddings (`hook_resid_pre` of layer 0), then for each layer its attention output
# (`hook_attn_out`, which includes `b_O`) and its MLP output (`hook_mlp_out`). Add the unembedding
# bias's difference `b_U[IO] - b_U[S]` and the sum is exactly the mean logit difference: the checks
# do not test that, the cell below does.
#
# ```python
# def component_dla(model: HookedTransformer, cache: ActivationCache, io: Int[Tensor, "batch"],
#                   s: Int[Tensor, "batch"]) -> Float[Tensor, "1+2*n_layers"]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Collect the `[batch, d_model]` vectors at the last position in the stated order, stack them, and
# project each on its prompt's direction as in 1a.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `[cache["resid_pre", 0][:, -1]] + [cache[kind, layer][:, -1] for layer in ... for kind in ("attn_out", "mlp_out")]`,
# then `torch.einsum("cbd,db->c", torch.stack(parts), direction) / batch`.
# </details>

# %% role="solution" grade_id="impl_component_dla"
def component_dla(model: HookedTransformer, cache: ActivationCache, io: Int[Tensor, "batch"],
                  s: Int[Tensor, "batch"]) -> Float[Tensor, "1+2*n_layers"]:
    ### BEGIN SOLUTION
    direction = model.W_U[:, io] - model.W_U[:, s]
    parts = [cache["resid_pre", 0][:, -1]]
    for layer in range(model.cfg.n_layers):
        parts += [cache["attn_out", layer][:, -1], cache["mlp_out", layer][:, -1]]
    return torch.einsum("cbd,db->c", torch.stack(parts), direction) / io.shape[0]
    ### END SOLUTION


# %% role="test" grade_id="test_component_dla" points=1
check("discovery.component_dla", component_dla)

# %%
with torch.no_grad():
    dla_heads = head_dla(model, clean_cache, io, s)
    dla_parts = component_dla(model, clean_cache, io, s)
bias = (model.b_U[io] - model.b_U[s]).mean()
print(f"sum of components + unembedding bias = {dla_parts.sum() + bias:.4f}; mean LD = {logit_diff(clean_logits, io, s).mean():.4f}")
fig, axes = plt.subplots(1, 2, figsize=(13, 3.4))
heatmap(dla_heads, ax=axes[0], xticklabels=[f"H{h}" for h in range(N_HEADS)], yticklabels=[f"L{l}" for l in range(N_LAYERS)],
        title="Direct logit attribution per head")
labels = ["embed"] + [f"{kind}{layer}" for layer in range(N_LAYERS) for kind in ("attn", "mlp")]
axes[1].bar(labels, dla_parts.numpy())
axes[1].set_title("Direct logit attribution per component")
plt.show()

# %% [markdown] role="locked" grade_id="question_direct_vs_important"
# **Questions.** Which heads write the answer directly, and which *against* it (negative)? In
# Wang et al. the name movers are in the last layers: is that so here? A head with a large direct
# effect need not be important, and an important head need not have a direct effect: give an
# example of each from what you know about IOI (which heads act only through other heads?).
#
# *Answer in the cell below (graded by hand, 2 points).*
# ### BEGIN MARK SCHEME
# **Mark scheme (instructors only).**
# - 1 point: reads the notebook's numbers: names the positive and negative heads and whether they sit in the last layer.
# - 1 point: one valid example of each kind (indirect heads such as duplicate-token / S-inhibition; a direct writer that is compensated, cancelled or redundant).
# ### END MARK SCHEME

# %% [markdown] role="answer" grade_id="answer_direct_vs_important" points=2
# Heads with large positive direct logit attribution (the name-mover-like heads of the last layer) write the answer, negative ones write against it. Direct effect without importance: a head whose write is cancelled or compensated downstream (e.g. a backup mover). Importance without direct effect: heads acting through others, such as S-inhibition or duplicate-token heads, which move the name movers' attention but write nothing to the logit themselves.

# %% [markdown]
# ## 2. Activation patching
#
# Direct attribution sees only the last step. **Activation patching** intervenes: run the
# corrupted prompt, but overwrite one activation with its value from the clean run (**denoising**:
# clean → corrupted), and measure how much of the clean logit difference comes back:
#
# $$\text{effect} = \frac{LD_\text{patched} - LD_\text{corrupted}}{LD_\text{clean} - LD_\text{corrupted}}$$
#
# (0: nothing restored, 1: fully restored; means over the batch before the ratio). The opposite
# direction (**noising**: corrupted → clean) answers a different question, *is it necessary*, and
# gives different numbers where components are redundant (Heimersheim & Nanda, section 2).
#
# ### 2a. By layer and position
#
# *Difficulty 2/5, about 20 minutes.* For `kind` in `"resid_pre"`, `"attn_out"`, `"mlp_out"`,
# patch the activation `get_act_name(kind, layer)` at one position at a time (all prompts at once)
# and return the normalised effect for every layer and position.
#
# ```python
# def patch_by_position(model: HookedTransformer, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
#                       io: Int[Tensor, "batch"], s: Int[Tensor, "batch"], kind: str) -> Float[Tensor, "n_layers pos"]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# One clean run with a cache, one corrupted run for the baseline, then one hooked corrupted run
# per (layer, position): the hook copies the clean value at that position only.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `def hook(act, hook, pos): act[:, pos] = clean_cache[hook.name][:, pos]; return act`, bound with
# a default argument in a loop, `model.run_with_hooks(corrupted, fwd_hooks=[(get_act_name(kind, layer), ...)])`.
# </details>

# %% role="solution" grade_id="impl_patch_by_position"
def patch_by_position(model: HookedTransformer, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
                      io: Int[Tensor, "batch"], s: Int[Tensor, "batch"], kind: str) -> Float[Tensor, "n_layers pos"]:
    ### BEGIN SOLUTION
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(clean)
        ld_clean = logit_diff(clean_logits, io, s).mean()
        ld_corrupted = logit_diff(model(corrupted), io, s).mean()

        def patch(act: Tensor, hook: HookPoint, pos: int) -> Tensor:
            act[:, pos] = cache[hook.name][:, pos]
            return act

        effect = torch.zeros(model.cfg.n_layers, clean.shape[1])
        for layer in range(model.cfg.n_layers):
            for pos in range(clean.shape[1]):
                hooks = [(get_act_name(kind, layer), lambda act, hook, pos=pos: patch(act, hook, pos))]
                ld = logit_diff(model.run_with_hooks(corrupted, fwd_hooks=hooks), io, s).mean()
                effect[layer, pos] = (ld - ld_corrupted) / (ld_clean - ld_corrupted)
    return effect
    ### END SOLUTION


# %% role="test" grade_id="test_patch_by_position" points=1
check("discovery.patch_by_position", patch_by_position)

# %%
positions = [f"{i}:{w}" for i, w in enumerate(["<bos>"] + decode(clean[0]).split())]
fig, axes = plt.subplots(3, 1, figsize=(13, 7.5))
for ax, kind in zip(axes, ("resid_pre", "attn_out", "mlp_out")):
    heatmap(patch_by_position(model, clean, corrupted, io, s, kind), ax=ax, xticklabels=positions,
            yticklabels=[f"L{l}" for l in range(N_LAYERS)], title=f"Denoising {kind} by position", annotate=False)
plt.tight_layout()
plt.show()
print("first prompt:", decode(clean[0]), "| IO at", prompts["pos_io"][0].item(), "S1 at", prompts["pos_s1"][0].item(),
      "S2 at", prompts["pos_s2"][0].item())

# %% [markdown]
# **Questions.** (The position labels are those of the first prompt; `IO` and `S1` swap places between
# ABBA and BABA prompts, `S2` and `END` do not.) In the residual stream the information starts at the
# name positions and ends at `END`: in which layer does it move from `S2` to `END`? Which component
# moves it, attention or MLP? Why is patching `resid_pre` of layer 0 at `END` zero?
#
# ### 2b. Per head
#
# *Difficulty 2/5, about 15 minutes.* Patch one head's output `z` (`hook_z`, `[batch, pos, head, d_head]`)
# from the clean run into the corrupted run, at **every** position (`per_position=False`,
# `[n_layers, n_heads]`) or at one position at a time (`per_position=True`, `[n_layers, pos, n_heads]`),
# and return the normalised effects.
#
# ```python
# def patch_heads(model: HookedTransformer, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
#                 io: Int[Tensor, "batch"], s: Int[Tensor, "batch"], per_position: bool) -> Float[Tensor, "..."]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# As in 2a, with the head axis: `z[:, :, head]` (all positions) or `z[:, pos, head]` (one).
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# Use `slice(None)` for "all positions" so one hook serves both cases:
# `index = (slice(None), pos, head)`; `act[index] = cache[hook.name][index]`.
# </details>

# %% role="solution" grade_id="impl_patch_heads"
def patch_heads(model: HookedTransformer, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
                io: Int[Tensor, "batch"], s: Int[Tensor, "batch"], per_position: bool) -> Float[Tensor, "..."]:
    ### BEGIN SOLUTION
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(clean)
        ld_clean = logit_diff(clean_logits, io, s).mean()
        ld_corrupted = logit_diff(model(corrupted), io, s).mean()
        positions = list(range(clean.shape[1])) if per_position else [slice(None)]
        effect = torch.zeros(model.cfg.n_layers, len(positions), model.cfg.n_heads)
        for layer in range(model.cfg.n_layers):
            for p, pos in enumerate(positions):
                for head in range(model.cfg.n_heads):
                    def patch(z: Tensor, hook: HookPoint, index: tuple = (slice(None), pos, head)) -> Tensor:
                        z[index] = cache[hook.name][index]
                        return z
                    ld = logit_diff(model.run_with_hooks(corrupted, fwd_hooks=[(get_act_name("z", layer), patch)]), io, s).mean()
                    effect[layer, p, head] = (ld - ld_corrupted) / (ld_clean - ld_corrupted)
    return effect if per_position else effect[:, 0]
    ### END SOLUTION


# %% role="test" grade_id="test_patch_heads" points=1
check("discovery.patch_heads", patch_heads)

# %%
start = time.perf_counter()
exact_by_pos = patch_heads(model, clean, corrupted, io, s, per_position=True)
exact_seconds = time.perf_counter() - start
heads_all_pos = patch_heads(model, clean, corrupted, io, s, per_position=False)
heatmap(heads_all_pos, xticklabels=[f"H{h}" for h in range(N_HEADS)], yticklabels=[f"L{l}" for l in range(N_LAYERS)],
        title="Denoising each head's output (all positions)", figsize=(6, 3))
plt.show()

# %% [markdown]
# **Questions.** Which heads restore most of the logit difference alone? Compare with direct
# logit attribution: a head that matters here but has no direct effect acts *through* later heads.
# Do the effects add up to 1? Where they add to more, the heads are not independent.
#
# ## 3. Path patching
#
# Activation patching of a head changes everything downstream of it. **Path patching**
# (Wang et al.; Goldowsky-Dill et al. 2023) changes one *path*: the sender head's output reaches one
# receiver (the logits, or a later head's query, key or value input) as in the corrupted run, and
# every other path stays clean. Here we patch in the **noising** direction, as Wang et al. do
# (corrupted sender into the clean run), and report
#
# $$\frac{LD_\text{patched} - LD_\text{clean}}{LD_\text{clean} - LD_\text{corrupted}}$$
#
# (0: this path does not matter, -1: it carries the whole effect).
#
# Without LayerNorm a receiver's input is a sum, so a path is easy to isolate: add
# `result_corrupted - result_clean` of the sender to the receiver's input, and nothing else. The
# model has `use_split_qkv_input`, so `blocks.{l}.hook_q_input` is `[batch, pos, head, d_model]`:
# each head's own query input. Everything that is not on the path stays at its clean value
# **including MLPs between sender and receiver** (Wang et al. and ARENA let MLPs recompute; ours
# isolates the direct edge, which is what ACDC's edges are too).
#
# ### 3a. From each head to the logits
#
# *Difficulty 2/5, about 15 minutes.* For every head, the effect of its direct path to the logits
# (the final residual stream, `blocks.{n_layers-1}.hook_resid_post`).
#
# ```python
# def path_patch_to_logits(model: HookedTransformer, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
#                          io: Int[Tensor, "batch"], s: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers n_heads"]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Cache both runs. For each head, run the clean prompt with a hook on the final residual stream
# that adds the head's `result` difference (corrupted minus clean) at every position.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `delta = corrupted_cache["result", layer][:, :, head] - clean_cache["result", layer][:, :, head]`;
# `fwd_hooks=[(f"blocks.{n_layers - 1}.hook_resid_post", lambda x, hook: x + delta)]`. (Why is the
# answer also the head's direct logit attribution on the difference of the two runs?)
# </details>

# %% role="solution" grade_id="impl_path_patch_to_logits"
def path_patch_to_logits(model: HookedTransformer, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
                         io: Int[Tensor, "batch"], s: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers n_heads"]:
    ### BEGIN SOLUTION
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean)
        corrupted_logits, corrupted_cache = model.run_with_cache(corrupted)
        ld_clean = logit_diff(clean_logits, io, s).mean()
        ld_corrupted = logit_diff(corrupted_logits, io, s).mean()
        final = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
        effect = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads):
                delta = corrupted_cache["result", layer][:, :, head] - clean_cache["result", layer][:, :, head]
                logits = model.run_with_hooks(clean, fwd_hooks=[(final, lambda x, hook, delta=delta: x + delta)])
                effect[layer, head] = (logit_diff(logits, io, s).mean() - ld_clean) / (ld_clean - ld_corrupted)
    return effect
    ### END SOLUTION


# %% role="test" grade_id="test_path_patch_to_logits" points=1
check("discovery.path_patch_to_logits", path_patch_to_logits)

# %% [markdown]
# ### 3b. From each head to a group of receiver heads' queries, keys or values
#
# *Difficulty 3/5, about 25 minutes.* `receivers` is a list of `(layer, head)` in **one** layer
# `L`; `component` is `"q"`, `"k"` or `"v"`. For every sender head in a layer before `L`, add its
# `result` difference (corrupted minus clean, every position) to the chosen input of **every**
# receiver at once, run the clean prompt, and report the normalised effect as in 3a. Senders in
# layer `L` or later cannot reach the receivers: their entries are `nan`.
#
# ```python
# def path_patch_to_heads(model: HookedTransformer, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
#                         io: Int[Tensor, "batch"], s: Int[Tensor, "batch"], receivers: list[tuple[int, int]],
#                         component: str) -> Float[Tensor, "n_layers n_heads"]
# ```
#
# The common mistake is to activation-patch the sender and let the change flow to the receivers
# through *every* path: then a layer-0 sender also reaches a layer-2 receiver through layer 1,
# and you no longer measure the path you named.
#
# <details><summary>Hint 1 (the idea)</summary>
#
# One hooked clean run per sender: a hook on `blocks.{L}.hook_{component}_input` adds the sender's
# difference to the slices `[:, :, receiver_head]`; nothing else is touched, so everything else is
# frozen at its clean value by construction.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `def hook(x, hook, delta): x = x.clone(); x[:, :, heads] += delta[:, :, None]; return x` with
# `heads = [h for _, h in receivers]`; start from `torch.full((n_layers, n_heads), float("nan"))`.
# </details>

# %% role="solution" grade_id="impl_path_patch_to_heads"
def path_patch_to_heads(model: HookedTransformer, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
                        io: Int[Tensor, "batch"], s: Int[Tensor, "batch"], receivers: list[tuple[int, int]],
                        component: str) -> Float[Tensor, "n_layers n_heads"]:
    ### BEGIN SOLUTION
    receiver_layer = receivers[0][0]
    heads = [head for _, head in receivers]
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean)
        corrupted_logits, corrupted_cache = model.run_with_cache(corrupted)
        ld_clean = logit_diff(clean_logits, io, s).mean()
        ld_corrupted = logit_diff(corrupted_logits, io, s).mean()

        def add(x: Tensor, hook: HookPoint, delta: Tensor) -> Tensor:
            x = x.clone()
            x[:, :, heads] += delta[:, :, None]
            return x

        effect = torch.full((model.cfg.n_layers, model.cfg.n_heads), float("nan"))
        for layer in range(receiver_layer):
            for head in range(model.cfg.n_heads):
                delta = corrupted_cache["result", layer][:, :, head] - clean_cache["result", layer][:, :, head]
                hook = (f"blocks.{receiver_layer}.hook_{component}_input", lambda x, hook, delta=delta: add(x, hook, delta))
                ld = logit_diff(model.run_with_hooks(clean, fwd_hooks=[hook]), io, s).mean()
                effect[layer, head] = (ld - ld_clean) / (ld_clean - ld_corrupted)
    return effect
    ### END SOLUTION


# %% role="test" grade_id="test_path_patch_to_heads" points=2
check("discovery.path_patch_to_heads", path_patch_to_heads)

# %% [markdown]
# Before path patching, look at where the heads attend from `END`, and from `S2`: attention to the
# two names of the first clause (`IO`, `S1`) and to the repeated name (`S2`), mean over prompts.

# %%
rows = torch.arange(clean.shape[0])
attention = {}
for layer in range(N_LAYERS):
    end = clean_cache["pattern", layer][:, :, -1]  # batch head key
    attention[layer] = {"END->IO": end[rows, :, prompts["pos_io"]].mean(0), "END->S1": end[rows, :, prompts["pos_s1"]].mean(0),
                        "END->S2": end[rows, :, prompts["pos_s2"]].mean(0)}
    for name, values in attention[layer].items():
        print(f"L{layer} {name}: " + "  ".join(f"H{h} {v:.2f}" for h, v in enumerate(values.tolist())))

# %% [markdown]
# Now path patching. First each head's direct path to the logits; then the paths into the
# queries, keys and values of the head that matters most under activation patching (2b).

# %%
to_logits = path_patch_to_logits(model, clean, corrupted, io, s)
key_layer, key_head = divmod(int(heads_all_pos.flatten().argmax()), N_HEADS)
fig, axes = plt.subplots(1, 4, figsize=(19, 3.2))
heatmap(to_logits, ax=axes[0], title="path -> logits", xticklabels=[f"H{h}" for h in range(N_HEADS)],
        yticklabels=[f"L{l}" for l in range(N_LAYERS)])
path_maps = {}
for ax, component in zip(axes[1:], "qkv"):
    path_maps[component] = path_patch_to_heads(model, clean, corrupted, io, s, [(key_layer, key_head)], component)
    heatmap(path_maps[component].nan_to_num(0.0), ax=ax, title=f"path -> {component} of L{key_layer}H{key_head}",
            xticklabels=[f"H{h}" for h in range(N_HEADS)], yticklabels=[f"L{l}" for l in range(N_LAYERS)])
plt.show()
print(f"most important head under denoising: L{key_layer}H{key_head} ({heads_all_pos[key_layer, key_head]:.2f}); "
      f"its direct path to the logits: {to_logits[key_layer, key_head]:+.2f}; "
      f"largest head -> logits path: {to_logits.min():+.2f}")

# %% [markdown]
# **Questions.** In GPT-2 (Wang et al.) name-mover heads attend from `END` to `IO` and write it
# into the logits, S-inhibition heads move "S is the repeated name" to `END` and act on the name
# movers' *queries*, and duplicate-token heads at `S2` attend to `S1`. Which of these roles do you
# find here? Look at the numbers: which heads attend from `END` to both first-clause names, which one
# attends to `S2`, and how large are the heads' *direct* paths to the logits compared with their
# effects under activation patching (2b) and the MLPs' direct attribution (1b)? If no head writes
# the answer directly, who does? (Section 6 answers it edge by edge.) Why might a model this small
# need no duplicate-token head at all on these templates? (Where is `S2` in every template?)

# %% [markdown]
# ## 4. Attribution patching
#
# Activation patching costs one forward pass per component and position: `n_layers x pos x n_heads`
# runs. **Attribution patching** (Nanda 2023) replaces them all by one forward and one backward
# pass, with a first-order Taylor expansion of the metric around the corrupted run:
#
# $$LD(\text{corrupted with } z_i \leftarrow z_i^{\text{clean}}) - LD_\text{corrupted} \approx (z_i^{\text{clean}} - z_i^{\text{corrupted}}) \cdot \nabla_{z_i} LD\big|_{\text{corrupted}}$$
#
# The gradient must be taken on the run you patch **into** (here: the corrupted run, because 2b
# denoised). A gradient from the clean run approximates the opposite experiment (noising).
#
# *Difficulty 3/5, about 25 minutes.* Return the attribution-patching estimate of 2b's
# `per_position=True` result: for every layer, position and head, the dot product above (summed over
# `d_head`, averaged over the batch through the mean LD), normalised by `LD_clean - LD_corrupted`.
#
# ```python
# def attribution_patching(model: HookedTransformer, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
#                          io: Int[Tensor, "batch"], s: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers pos n_heads"]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Keep the corrupted run's `hook_z` activations with their gradients: a forward hook can store the
# activation and call `.retain_grad()` on it; then `logit_diff(...).mean().backward()`.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `with torch.enable_grad(): logits = model.run_with_hooks(corrupted, fwd_hooks=[(lambda n: n.endswith("hook_z"), keep)])`;
# then `((clean_z - z) * z.grad).sum(-1).mean(0)` is `[pos, head]` for one layer (why the mean over the batch?).
# </details>

# %% role="solution" grade_id="impl_attribution_patching"
def attribution_patching(model: HookedTransformer, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
                         io: Int[Tensor, "batch"], s: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers pos n_heads"]:
    ### BEGIN SOLUTION
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean)
        ld_clean = logit_diff(clean_logits, io, s).mean()
    kept: dict[str, Tensor] = {}

    def keep(z: Tensor, hook: HookPoint) -> None:
        z.retain_grad()
        kept[hook.name] = z

    with torch.enable_grad():
        ld_corrupted = logit_diff(model.run_with_hooks(corrupted, fwd_hooks=[(lambda name: name.endswith("hook_z"), keep)]),
                                  io, s).mean()
        ld_corrupted.backward()
    model.zero_grad(set_to_none=True)
    scores = [((clean_cache["z", layer] - kept[get_act_name("z", layer)]) * kept[get_act_name("z", layer)].grad).sum(-1)
              for layer in range(model.cfg.n_layers)]
    return (torch.stack(scores).sum(dim=1) / (ld_clean - ld_corrupted)).detach()
    ### END SOLUTION


# %% role="test" grade_id="test_attribution_patching" points=1
check("discovery.attribution_patching", attribution_patching)

# %% [markdown]
# Compare with the exact result of 2b (computed above, `exact_by_pos`): one dot per head and position.

# %%
start = time.perf_counter()
atp = attribution_patching(model, clean, corrupted, io, s)
atp_seconds = time.perf_counter() - start
r = pearsonr(exact_by_pos.flatten().numpy(), atp.flatten().numpy())[0]
worst = (atp - exact_by_pos).abs().flatten().argmax().item()
w_layer, w_pos, w_head = worst // (clean.shape[1] * N_HEADS), (worst // N_HEADS) % clean.shape[1], worst % N_HEADS
plt.figure(figsize=(5, 5))
plt.scatter(exact_by_pos.flatten(), atp.flatten(), s=8)
lim = [min(exact_by_pos.min(), atp.min()).item(), max(exact_by_pos.max(), atp.max()).item()]
plt.plot(lim, lim, "k--", lw=0.8)
plt.xlabel("exact patching (normalised)"); plt.ylabel("attribution patching"); plt.title(f"per head and position: r = {r:.3f}")
plt.show()
print(f"AtP vs exact patching per head and position: r = {r:.3f}")
print(f"exact: {exact_seconds:.2f} s for {exact_by_pos.numel()} runs; AtP: {atp_seconds:.3f} s for one forward and backward")
print(f"largest disagreement: L{w_layer}H{w_head} at position {w_pos} ({positions[w_pos]}): "
      f"exact {exact_by_pos[w_layer, w_pos, w_head]:+.3f}, AtP {atp[w_layer, w_pos, w_head]:+.3f}")
pattern = clean_cache["pattern", w_layer][:, w_head, w_pos]
print(f"that head's attention at that position (clean run, mean over prompts): max {pattern.max(-1).values.mean():.3f} on one key")

# %% [markdown] role="locked" grade_id="question_atp_failure"
# **Questions.** Where does the linear approximation fail? Kramár et al. (AtP\*, section 3) name
# two causes: **saturated attention** (when the softmax is near one-hot, its gradient is near zero,
# so a patch that *moves* the attention to another key is invisible to the gradient) and
# **cancellation** between a component's several effects. Is the largest disagreement above at a
# head whose attention is saturated? AtP\* fixes the first by recomputing the attention pattern
# exactly for queries and keys; what would that cost here?
#
# *Answer in the cell below (graded by hand, 2 points).*
# ### BEGIN MARK SCHEME
# **Mark scheme (instructors only).**
# - 1 point: checks the largest disagreement against the head's attention maximum printed above (saturated or not) and draws the right conclusion.
# - 1 point: the cost of AtP*: an exact attention recomputation per head (and position) instead of the single backward pass, still far cheaper than full patching.
# ### END MARK SCHEME

# %% [markdown] role="answer" grade_id="answer_atp_failure" points=2
# AtP uses the gradient at the clean (or corrupted) point; where attention is saturated the softmax gradient is near zero, so a patch that moves attention to another key is invisible, and AtP underestimates. Recomputing the attention pattern exactly (AtP*) needs one extra forward of each head's attention per patched query/key, i.e. on the order of the number of heads times positions extra passes instead of one backward pass.

# %% [markdown]
# ## 5. Circuits as subgraphs: faithfulness
#
# The **computational graph** of the model (`interplab.circuit_graph.Graph`, as in ACDC): nodes are
# the embeddings, every head and every MLP, and the logits; an edge runs from a node that writes
# into the residual stream (a *sender*) to a later node's input: a head's query, key or value
# input (three edges), an MLP's input, or the logits.

# %%
graph = Graph(model)
print(len(graph.nodes), "nodes,", len(graph), "edges; e.g.", graph.edges[0].name, "...", graph.edges[-1].name)
print("senders:", graph.senders)

# %% [markdown]
# A **circuit** is a boolean mask over the edges. `run_with_edges(model, graph, mask, tokens, ablated)`
# runs the model where every edge *outside* the circuit carries the sender's **ablated** output
# instead of its actual one; `ablated_senders(model, graph, corrupted, ablation)` computes those
# (`"resample"`: the sender's output on the corrupted prompts; `"mean"`: its mean over them, per
# position). The **faithfulness** of a circuit `C` (Wang et al., normalised as in Conmy et al.) is
#
# $$F(C) = \frac{LD(C) - LD(\varnothing)}{LD(M) - LD(\varnothing)}$$
#
# where `M` is the full model (every edge) and `∅` the empty circuit, all on the clean prompts with
# the same ablation. The full model has `F = 1`, the empty circuit `F = 0`, by construction.
#
# *Difficulty 2/5, about 15 minutes.* Return `F(C)` as a Python float.
#
# ```python
# def faithfulness(model: HookedTransformer, graph: Graph, mask: Bool[Tensor, "n_edges"], clean: Int[Tensor, "batch pos"],
#                  corrupted: Int[Tensor, "batch pos"], io: Int[Tensor, "batch"], s: Int[Tensor, "batch"],
#                  ablation: str = "resample") -> float
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Three runs of `run_with_edges` with the same `ablated` senders: the circuit, every edge, no edge.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `graph.mask()` holds every edge, `~graph.mask()` none; `.item()` makes a float.
# </details>

# %% role="solution" grade_id="impl_faithfulness"
def faithfulness(model: HookedTransformer, graph: Graph, mask: Bool[Tensor, "n_edges"], clean: Int[Tensor, "batch pos"],
                 corrupted: Int[Tensor, "batch pos"], io: Int[Tensor, "batch"], s: Int[Tensor, "batch"],
                 ablation: str = "resample") -> float:
    ### BEGIN SOLUTION
    with torch.no_grad():
        ablated = ablated_senders(model, graph, corrupted, ablation)

        def ld(edges: Tensor) -> Tensor:
            return logit_diff(run_with_edges(model, graph, edges, clean, ablated), io, s).mean()

        full, empty = ld(graph.mask()), ld(~graph.mask())
        return ((ld(mask) - empty) / (full - empty)).item()
    ### END SOLUTION


# %% role="test" grade_id="test_faithfulness" points=1
check("discovery.faithfulness", faithfulness)

# %% [markdown]
# ## 6. Edge attribution patching
#
# Removing one edge is one run; the graph has hundreds. **EAP** (Syed et al. 2023) estimates the
# effect of removing every edge at once, with attribution patching on the edges: removing edge
# `u → v` changes `v`'s input by `out_u^corrupted - out_u^clean`, so, to first order,
#
# $$\Delta LD(u \to v) \approx (\text{out}_u^{\text{corrupted}} - \text{out}_u^{\text{clean}}) \cdot \nabla_{\text{in}_v} LD\big|_{\text{clean}}$$
#
# Removing edges is **noising** (from the clean run), so the gradient is the clean run's, at the
# receiver's input (`graph.receiver_hook(node, input)` says which hook and head slice;
# `graph.sender_hook(node)` the same for a sender's output; `graph.sender_outputs(cache)` stacks
# every sender's output).
#
# *Difficulty 3/5, about 25 minutes.* Return the EAP score of every edge (resample ablation),
# in `graph.edges` order: the dot product summed over positions and `d_model`, through the mean
# LD over the batch, normalised by `LD_clean - LD_corrupted` (so it estimates `F(M without the edge) - 1`).
#
# ```python
# def edge_attribution_patching(model: HookedTransformer, graph: Graph, clean: Int[Tensor, "batch pos"],
#                               corrupted: Int[Tensor, "batch pos"], io: Int[Tensor, "batch"],
#                               s: Int[Tensor, "batch"]) -> Float[Tensor, "n_edges"]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# One clean forward and backward pass with every receiver hook's activation kept (`retain_grad`),
# one corrupted run for the senders' outputs. Then one dot product per edge.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `diff = graph.sender_outputs(corrupted_cache) - graph.sender_outputs(clean_cache)` (`[n_senders, batch, pos, d_model]`);
# for edge `e`, `grad = kept[name].grad` (sliced `[:, :, head]` when the hook has a head axis) and
# `(diff[graph.senders.index(e.sender)] * grad).sum()`.
# </details>

# %% role="solution" grade_id="impl_edge_attribution_patching"
def edge_attribution_patching(model: HookedTransformer, graph: Graph, clean: Int[Tensor, "batch pos"],
                              corrupted: Int[Tensor, "batch pos"], io: Int[Tensor, "batch"],
                              s: Int[Tensor, "batch"]) -> Float[Tensor, "n_edges"]:
    ### BEGIN SOLUTION
    with torch.no_grad():
        corrupted_logits, corrupted_cache = model.run_with_cache(corrupted)
    receiver_hooks = {graph.receiver_hook(node, input)[0] for node, input in graph.receivers()}
    kept: dict[str, Tensor] = {}

    def keep(act: Tensor, hook: HookPoint) -> None:
        act.retain_grad()
        kept[hook.name] = act

    with torch.enable_grad():
        clean_logits, clean_cache = model.run_with_cache(clean)
        ld_clean = logit_diff(model.run_with_hooks(clean, fwd_hooks=[(lambda name: name in receiver_hooks, keep)]), io, s).mean()
        ld_clean.backward()
    model.zero_grad(set_to_none=True)
    ld_corrupted = logit_diff(corrupted_logits, io, s).mean()
    diff = graph.sender_outputs(corrupted_cache) - graph.sender_outputs(clean_cache).detach()
    scores = torch.zeros(len(graph))
    for i, edge in enumerate(graph.edges):
        name, head = graph.receiver_hook(edge.receiver, edge.input)
        grad = kept[name].grad if head is None else kept[name].grad[:, :, head]
        scores[i] = (diff[graph.senders.index(edge.sender)] * grad).sum()
    return (scores / (ld_clean - ld_corrupted)).detach()
    ### END SOLUTION


# %% role="test" grade_id="test_edge_attribution_patching" points=1
check("discovery.edge_attribution_patching", edge_attribution_patching)

# %% [markdown]
# How good is the estimate? Compare with the exact effect of removing each edge alone.

# %%
eap = edge_attribution_patching(model, graph, clean, corrupted, io, s)
start = time.perf_counter()
ablated = ablated_senders(model, graph, corrupted)
with torch.no_grad():
    ld_full = logit_diff(run_with_edges(model, graph, graph.mask(), clean, ablated), io, s).mean()
    exact_edges = torch.zeros(len(graph))
    for i in range(len(graph)):
        without = graph.mask()
        without[i] = False  # F(M without the edge) - 1, with the empty circuit = the corrupted run
        ld = logit_diff(run_with_edges(model, graph, without, clean, ablated), io, s).mean()
        exact_edges[i] = (ld - ld_full) / (ld_full - logit_diff(corrupted_logits, io, s).mean())
exact_edges_seconds = time.perf_counter() - start
r_edges = pearsonr(exact_edges.numpy(), eap.numpy())[0]
print(f"EAP vs removing each edge alone: r = {r_edges:.3f} over {len(graph)} edges ({exact_edges_seconds:.1f} s exact)")
top = eap.abs().argsort(descending=True)[:8]
for i in top.tolist():
    print(f"  {graph.edges[i].name:22s} EAP {eap[i]:+.3f}   exact {exact_edges[i]:+.3f}")

# %% [markdown]
# ## 7. ACDC
#
# **ACDC** (Conmy et al. 2023) builds the circuit greedily from the output backwards. Start with
# every edge. Visit the receivers in **reverse topological order** (`reversed(graph.receivers())`:
# the logits first) and, for each, its incoming edges in **reverse order** (`reversed(graph.incoming(node, input))`).
# Remove the edge; if the circuit's faithfulness (resample ablation) changes by less than `threshold`
# **in absolute value**, leave it out (and the current faithfulness becomes the new one); otherwise
# put it back.
#
# We threshold the **absolute** change, so an edge whose removal *raises* the logit difference
# (a component working against the answer, like Wang et al.'s negative name movers) stays in the
# circuit. ACDC's reference code thresholds the signed change of a KL divergence by default and has
# an `abs_value_threshold` option for metrics like ours; with the signed rule, every edge that works
# against the answer would be cut, and the circuit would look more faithful than the model.
#
# *Difficulty 3/5, about 20 minutes.*
#
# ```python
# def acdc(model: HookedTransformer, graph: Graph, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
#          io: Int[Tensor, "batch"], s: Int[Tensor, "batch"], threshold: float) -> Bool[Tensor, "n_edges"]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Compute the ablated senders once; each try is one `run_with_edges`. Faithfulness needs the full
# model's and the empty circuit's LD: compute them once, not once per edge.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `for node, input in reversed(graph.receivers()): for i in reversed(graph.incoming(node, input)): mask[i] = False; ...`
# </details>

# %% role="solution" grade_id="impl_acdc"
def acdc(model: HookedTransformer, graph: Graph, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
         io: Int[Tensor, "batch"], s: Int[Tensor, "batch"], threshold: float) -> Bool[Tensor, "n_edges"]:
    ### BEGIN SOLUTION
    with torch.no_grad():
        ablated = ablated_senders(model, graph, corrupted)

        def ld(edges: Tensor) -> float:
            return logit_diff(run_with_edges(model, graph, edges, clean, ablated), io, s).mean().item()

        mask = graph.mask()
        full, empty = ld(mask), ld(~mask)
        current = 1.0
        for node, input in reversed(graph.receivers()):
            for i in reversed(graph.incoming(node, input)):
                mask[i] = False
                score = (ld(mask) - empty) / (full - empty)
                if abs(score - current) < threshold:
                    current = score
                else:
                    mask[i] = True
    return mask
    ### END SOLUTION


# %% role="test" grade_id="test_acdc" points=2
check("discovery.acdc", acdc)

# %%
THRESHOLD = 0.02
start = time.perf_counter()
acdc_mask = acdc(model, graph, clean, corrupted, io, s, THRESHOLD)
acdc_seconds = time.perf_counter() - start
eap_mask = torch.zeros(len(graph), dtype=torch.bool)
eap_mask[eap.abs().argsort(descending=True)[:int(acdc_mask.sum())]] = True  # EAP: the same number of edges, by |score|
print(f"ACDC (threshold {THRESHOLD}): {int(acdc_mask.sum())} of {len(graph)} edges in {acdc_seconds:.1f} s")
for name, mask in (("ACDC", acdc_mask), ("EAP top-k", eap_mask)):
    print(f"{name:10s} faithfulness resample {faithfulness(model, graph, mask, clean, corrupted, io, s):.3f}, "
          f"mean {faithfulness(model, graph, mask, clean, corrupted, io, s, 'mean'):.3f}")
print("ACDC edges:", [graph.edges[i].name for i in acdc_mask.nonzero().flatten().tolist()])

# %% [markdown]
# ## 8. Completeness and minimality
#
# Faithfulness alone rewards circuits that are too big (the full model is perfectly faithful) and
# can be fooled by circuits that leave out components which *cancel* (Wang et al., section 4).
# Knocking out a set of nodes `K` means removing every edge that leaves or enters them
# (`graph.node_edges(K)` is that edge set).
#
# ### 8a. Completeness
#
# A complete circuit contains everything that matters: for every `K` inside the circuit, the
# circuit without `K` and the whole model without `K` should behave the same. Return the
# **completeness gap** `|F(C \ K) - F(M \ K)|` for one `K` (resample ablation, faithfulness
# normalised as in 5).
#
# *Difficulty 2/5, about 10 minutes.*
#
# ```python
# def completeness_gap(model: HookedTransformer, graph: Graph, mask: Bool[Tensor, "n_edges"], knockout: list[str],
#                      clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
#                      io: Int[Tensor, "batch"], s: Int[Tensor, "batch"]) -> float
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# Two faithfulness calls: the circuit minus `K`'s edges, every edge minus `K`'s edges.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# `gone = graph.node_edges(knockout)`; `mask & ~gone` and `graph.mask() & ~gone`.
# </details>

# %% role="solution" grade_id="impl_completeness_gap"
def completeness_gap(model: HookedTransformer, graph: Graph, mask: Bool[Tensor, "n_edges"], knockout: list[str],
                     clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
                     io: Int[Tensor, "batch"], s: Int[Tensor, "batch"]) -> float:
    ### BEGIN SOLUTION
    gone = graph.node_edges(knockout)
    circuit = faithfulness(model, graph, mask & ~gone, clean, corrupted, io, s)
    whole = faithfulness(model, graph, graph.mask() & ~gone, clean, corrupted, io, s)
    return abs(circuit - whole)
    ### END SOLUTION


# %% role="test" grade_id="test_completeness_gap" points=1
check("discovery.completeness_gap", completeness_gap)

# %% [markdown]
# ### 8b. Minimality
#
# A minimal circuit contains nothing that does not matter. For every sender node `v` of the circuit
# (a sender with at least one outgoing edge in `mask`), return `F(C) - F(C \ {v})`, knocking `v`
# out as in 8a; `nan` for senders outside the circuit. Wang et al. look for the best set `K` to
# knock out together with `v`; we use `K = ∅`, which can call a redundant node unnecessary (a
# node backed up by another looks useless alone): keep that in mind when you read the numbers.
#
# *Difficulty 2/5, about 10 minutes.*
#
# ```python
# def minimality(model: HookedTransformer, graph: Graph, mask: Bool[Tensor, "n_edges"], clean: Int[Tensor, "batch pos"],
#                corrupted: Int[Tensor, "batch pos"], io: Int[Tensor, "batch"], s: Int[Tensor, "batch"]) -> Float[Tensor, "n_senders"]
# ```
#
# <details><summary>Hint 1 (the idea)</summary>
#
# One faithfulness call for the circuit, one per sender in it.
# </details>
# <details><summary>Hint 2 (the code)</summary>
#
# A sender is in the circuit if `any(mask[i] for i, e in enumerate(graph.edges) if e.sender == v)`.
# </details>

# %% role="solution" grade_id="impl_minimality"
def minimality(model: HookedTransformer, graph: Graph, mask: Bool[Tensor, "n_edges"], clean: Int[Tensor, "batch pos"],
               corrupted: Int[Tensor, "batch pos"], io: Int[Tensor, "batch"], s: Int[Tensor, "batch"]) -> Float[Tensor, "n_senders"]:
    ### BEGIN SOLUTION
    base = faithfulness(model, graph, mask, clean, corrupted, io, s)
    out = torch.full((len(graph.senders),), float("nan"))
    for j, node in enumerate(graph.senders):
        if any(mask[i] for i, e in enumerate(graph.edges) if e.sender == node):
            out[j] = base - faithfulness(model, graph, mask & ~graph.node_edges([node]), clean, corrupted, io, s)
    return out
    ### END SOLUTION


# %% role="test" grade_id="test_minimality" points=1
check("discovery.minimality", minimality)

# %% [markdown]
# ## 9. The circuit by hand, by EAP and by ACDC
#
# The circuit read off sections 1-3: the layer-0 heads that collect both first-clause names at `END`
# (attention to `IO` plus `S1` above 0.8), the heads that attend from `END` to `S2` (above 0.5: they
# bring the repeated name to `END`), and the MLPs, which write most of the answer (1b); with every
# edge between these nodes, from the embeddings into them and from them to the logits. Compare it
# with what the algorithms found.

# %%
def circuit_of(nodes: list[str]) -> Tensor:
    """Every edge between the given nodes, from the embeddings into them, and from them to the logits."""
    keep = set(nodes) | {"embed", "logits"}
    return torch.tensor([e.sender in keep and e.receiver in keep for e in graph.edges])


collectors = [f"a0.{h}" for h in range(N_HEADS) if attention[0]["END->IO"][h] + attention[0]["END->S1"][h] > 0.8]
s_movers = [f"a{l}.{h}" for l in range(N_LAYERS) for h in range(N_HEADS) if attention[l]["END->S2"][h] > 0.5]
hand_nodes = collectors + s_movers + [f"m{l}" for l in range(N_LAYERS)]
hand_mask = circuit_of(hand_nodes)
print("name collectors:", collectors, "| S movers:", s_movers)


def nodes_of(mask: Tensor) -> set[str]:
    return {graph.edges[i].sender for i in mask.nonzero().flatten().tolist()} - {"embed"}


hand_faithfulness = faithfulness(model, graph, hand_mask, clean, corrupted, io, s)
print(f"hand       {int(hand_mask.sum()):3d} edges, F = {hand_faithfulness:.3f}, nodes {sorted(nodes_of(hand_mask))}")
for name, mask in (("EAP top-k", eap_mask), ("ACDC", acdc_mask)):
    print(f"{name:10s} {int(mask.sum()):3d} edges, F = {faithfulness(model, graph, mask, clean, corrupted, io, s):.3f}, "
          f"nodes {sorted(nodes_of(mask))}")
print(f"ACDC and EAP share {int((acdc_mask & eap_mask).sum())} edges (of {int(acdc_mask.sum())}); ACDC and the hand "
      f"circuit {int((acdc_mask & hand_mask).sum())}; hand nodes ACDC found: {sorted(set(hand_nodes) & nodes_of(acdc_mask))}")
print("completeness gap of the hand circuit, knocking out each of its nodes:",
      {v: round(completeness_gap(model, graph, hand_mask, [v], clean, corrupted, io, s), 3) for v in hand_nodes})
mini = minimality(model, graph, hand_mask, clean, corrupted, io, s)
print("minimality of the hand circuit's nodes:", {graph.senders[j]: round(v, 3) for j, v in enumerate(mini.tolist()) if v == v})

# %% [markdown]
# **Questions.** Does ACDC recover the heads you found by hand, and what does it add (MLPs? edges
# from the embeddings)? Which circuit is more faithful per edge? How does the answer change with
# the threshold (try 0.005 and 0.05), and with mean instead of resample ablation? The minimality of
# some nodes is tiny: are they unnecessary, or backed up by another node (try knocking out two at once)?
#
# ## Open questions
#
# - ACDC's result depends on the order in which edges are visited. Visit the incoming edges in
#   forward order instead: how much does the circuit change?
# - EAP ranks edges by `|score|` and we took the top-k. Hanna et al. (2024) show that EAP with
#   integrated gradients (EAP-IG) finds more faithful circuits. Implement EAP-IG by averaging the
#   gradient over a few points between the corrupted and the clean run.
# - Our path patching freezes MLPs between sender and receiver; Wang et al. let them recompute.
#   Where in this model would the two answers differ?
# - The corrupted distribution decides what "removing" means. Replace ABC with prompts that keep
#   the names but swap their order: which heads stop mattering, and why?
#
# ## Further reading
#
# - Goldowsky-Dill et al. (2023), [*Localizing Model Behavior with Path Patching*](https://arxiv.org/abs/2304.05969).
# - Kramár et al. (2024), [*AtP\*: An efficient and scalable method for localizing LLM behaviour to components*](https://arxiv.org/abs/2403.00745).
# - Hanna, Pezzelle & Belinkov (2024), [*Have Faith in Faithfulness: Going Beyond Circuit Overlap When Finding Model Mechanisms*](https://arxiv.org/abs/2403.17806) (EAP-IG).
# - Miller, Chughtai & Saunders (2024), [*Transformer Circuit Faithfulness Metrics are not Robust*](https://arxiv.org/abs/2407.08734).
# - Zhang & Nanda (2024), [*Towards Best Practices of Activation Patching*](https://arxiv.org/abs/2309.16042).
