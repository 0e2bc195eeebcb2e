"""Reference solutions of the circuits assignment, as a module the tests can import.

The same bodies sit between the ``### BEGIN/END SOLUTION`` markers of
``assignments/circuits/circuits.py``; ``interplab build`` checks that the master scores full marks,
so a drift between the two fails the build.
"""
from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import FactoredMatrix, HookedTransformer
from transformer_lens.utilities import get_act_name


def per_token_loss(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos-1"]:
    log_probs = logits[:, :-1].log_softmax(dim=-1)
    return -log_probs.gather(dim=-1, index=tokens[:, 1:, None])[..., 0]


def current_token_score(pattern: Float[Tensor, "batch head q_pos k_pos"]) -> Float[Tensor, "head"]:
    return pattern.diagonal(offset=0, dim1=-2, dim2=-1)[..., 1:].mean(dim=(0, -1))


def previous_token_score(pattern: Float[Tensor, "batch head q_pos k_pos"]) -> Float[Tensor, "head"]:
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))


def first_token_score(pattern: Float[Tensor, "batch head q_pos k_pos"]) -> Float[Tensor, "head"]:
    return pattern[..., 1:, 0].mean(dim=(0, -1))


def induction_score(pattern: Float[Tensor, "batch head q_pos k_pos"]) -> Float[Tensor, "head"]:
    seq_len = (pattern.shape[-1] - 1) // 2
    return pattern.diagonal(offset=-(seq_len - 1), dim1=-2, dim2=-1)[..., -seq_len:].mean(dim=(0, -1))


def ablation_loss_increase(model: HookedTransformer, tokens: Int[Tensor, "batch pos"], ablation: str) -> Float[Tensor, "n_layers n_heads"]:
    def ablate(z: Float[Tensor, "batch pos head d_head"], hook, head: int) -> Float[Tensor, "batch pos head d_head"]:
        if ablation == "zero":
            z[:, :, head] = 0.0
        else:  # "mean": the head's average output at each position, over the batch
            z[:, :, head] = z[:, :, head].mean(dim=0, keepdim=True)
        return z

    with torch.no_grad():
        clean = model(tokens, return_type="loss")
        increase = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads):
                hook = (get_act_name("z", layer), lambda z, hook, head=head: ablate(z, hook, head))
                increase[layer, head] = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[hook]) - clean
    return increase


def logit_diff(logits: Float[Tensor, "batch pos d_vocab"], correct: Int[Tensor, "batch"], wrong: Int[Tensor, "batch"]) -> Float[Tensor, "batch"]:
    final = logits[:, -1]
    return final.gather(-1, correct[:, None])[:, 0] - final.gather(-1, wrong[:, None])[:, 0]


def head_patching_effect(model: HookedTransformer, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
                         correct: Int[Tensor, "batch"], wrong: Int[Tensor, "batch"]) -> Float[Tensor, "n_layers n_heads"]:
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean, names_filter=lambda name: name.endswith("hook_z"))
        clean_ld = logit_diff(clean_logits, correct, wrong).mean()
        corrupted_ld = logit_diff(model(corrupted), correct, wrong).mean()
        effect = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        for layer in range(model.cfg.n_layers):
            name = get_act_name("z", layer)
            for head in range(model.cfg.n_heads):
                def patch(z, hook, head=head):
                    z[:, :, head] = clean_cache[hook.name][:, :, head]
                    return z

                patched_ld = logit_diff(model.run_with_hooks(corrupted, fwd_hooks=[(name, patch)]), correct, wrong).mean()
                effect[layer, head] = (patched_ld - corrupted_ld) / (clean_ld - corrupted_ld)
    return effect


def full_ov_circuit(model: HookedTransformer, layer: int, head: int) -> FactoredMatrix:
    return FactoredMatrix(model.W_E @ model.W_V[layer, head], model.W_O[layer, head] @ model.W_U)


def pos_qk_circuit(model: HookedTransformer, layer: int, head: int) -> FactoredMatrix:
    return FactoredMatrix(model.W_pos @ model.W_Q[layer, head], (model.W_pos @ model.W_K[layer, head]).T)


def composition_score(W_A: FactoredMatrix, W_B: FactoredMatrix) -> Float[Tensor, ""]:
    return (W_A @ W_B).norm() / (W_A.norm() * W_B.norm())


def composition_scores(model: HookedTransformer, kind: str) -> Float[Tensor, "head0 head1"]:
    W_OV0 = model.OV[0]  # [head0] d_model d_model: what each layer-0 head writes
    W_B = {"Q": model.QK[1], "K": model.QK[1].T, "V": model.OV[1]}[kind]
    scores = torch.zeros(model.cfg.n_heads, model.cfg.n_heads)
    for h0 in range(model.cfg.n_heads):
        for h1 in range(model.cfg.n_heads):
            scores[h0, h1] = composition_score(W_OV0[h0], W_B[h1])
    return scores
