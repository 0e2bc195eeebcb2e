"""Checks of the circuits assignment (see interplab.checking for the contract).

Every input is generated from the case's ``rng``: random attention patterns, random logits and
tokens, random repeated-token batches for the shipped model, and freshly initialised models (every
weight and bias random) for the weight-based exercises, so that nothing passes by matching a
fixed input and no bug hides behind the trained weights' structure.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformer_lens import FactoredMatrix
from transformer_lens.utilities import get_act_name

from interplab.checking import Exercise, Probe, torch_generator
from interplab.zoo import attn_only_2l

ASSIGNMENT = "circuits"
MODEL_TOL = {"float32": (1e-3, 1e-4)}  # whole-model computations: summation order may differ
NORM_TOL = {"float32": (1e-3, 1e-5), "float64": (1e-3, 1e-6)}  # norms via SVD or via the full product


def shipped_model():
    """The trained model, loaded afresh for every case (about 10 ms): hooks left attached or
    weights edited in place by one call cannot leak into the next case or exercise."""
    return attn_only_2l.load()


# --------------------------------------------------------------------------------------------
# Input generators
# --------------------------------------------------------------------------------------------


def _random_logits_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    batch, pos, d_vocab = int(rng.integers(1, 5)), int(rng.integers(3, 13)), int(rng.integers(5, 41))
    return {"logits": torch.randn(batch, pos, d_vocab, generator=g) * 3,
            "tokens": torch.randint(0, d_vocab, (batch, pos), generator=g)}


def _causal_pattern(rng: np.random.Generator, pos: int) -> torch.Tensor:
    g = torch_generator(rng)
    batch, heads = int(rng.integers(1, 5)), int(rng.integers(1, 7))
    scores = torch.randn(batch, heads, pos, pos, generator=g) * 2
    causal = torch.ones(pos, pos, dtype=torch.bool).tril()
    return scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)


def _pattern_case(rng: np.random.Generator) -> dict[str, Any]:
    return {"pattern": _causal_pattern(rng, int(rng.integers(3, 17)))}


def _repeated_pattern_case(rng: np.random.Generator) -> dict[str, Any]:
    return {"pattern": _causal_pattern(rng, 1 + 2 * int(rng.integers(2, 13)))}


def _ablation_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    return {"model": shipped_model(),
            "tokens": attn_only_2l.repeated_tokens(int(rng.integers(4, 9)), int(rng.integers(5, 16)), g)}


def _logit_diff_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    batch, pos, d_vocab = int(rng.integers(1, 6)), int(rng.integers(2, 9)), int(rng.integers(4, 41))
    correct = torch.randint(0, d_vocab, (batch,), generator=g)
    wrong = (correct + torch.randint(1, d_vocab, (batch,), generator=g)) % d_vocab  # never equal to correct
    return {"logits": torch.randn(batch, pos, d_vocab, generator=g) * 3, "correct": correct, "wrong": wrong}


def _patching_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    prompts = attn_only_2l.induction_prompts(int(rng.integers(4, 9)), int(rng.integers(6, 16)), g)
    return {"model": shipped_model(), **prompts}


def _random_model_head_case(rng: np.random.Generator) -> dict[str, Any]:
    model = attn_only_2l.random_model(torch_generator(rng))
    return {"model": model, "layer": int(rng.integers(0, 2)), "head": int(rng.integers(0, model.cfg.n_heads))}


def _factored_pair_case(rng: np.random.Generator) -> dict[str, Any]:
    g = torch_generator(rng)
    d, m_a, m_b = int(rng.integers(8, 25)), int(rng.integers(2, 7)), int(rng.integers(2, 7))
    return {"W_A": FactoredMatrix(torch.randn(d, m_a, generator=g), torch.randn(m_a, d, generator=g)),
            "W_B": FactoredMatrix(torch.randn(d, m_b, generator=g), torch.randn(m_b, d, generator=g))}


def _random_model_case(rng: np.random.Generator) -> dict[str, Any]:
    return {"model": attn_only_2l.random_model(torch_generator(rng))}


# --------------------------------------------------------------------------------------------
# Known mistakes (probes): each is a plausible wrong implementation
# --------------------------------------------------------------------------------------------


def _nll(logits, targets):
    return -logits.log_softmax(-1).gather(-1, targets[..., None])[..., 0]


def _diag_mean(pattern, offset, skip_first=0):
    return pattern.diagonal(offset=offset, dim1=-2, dim2=-1)[..., skip_first:].mean(dim=(0, -1))


def _ablate_all(model, tokens, fill):
    """Loss increase per head for ablation ``fill(z_head) -> replacement``; probes vary ``fill``."""
    with torch.no_grad():
        def loss(logits):
            return _nll(logits[:, :-1], tokens[:, 1:]).mean()

        clean = loss(model(tokens))
        out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads):
                def hook(z, hook, head=head):
                    z[:, :, head] = fill(z[:, :, head])
                    return z
                out[layer, head] = loss(model.run_with_hooks(tokens, fwd_hooks=[(get_act_name("z", layer), hook)])) - clean
        return out, clean


def _ablation_probe(zero_fill, mean_fill, offset=False):
    def probe(model, tokens, ablation):
        increase, clean = _ablate_all(model, tokens, zero_fill if ablation == "zero" else mean_fill)
        return increase + clean if offset else increase
    return probe


_ZERO = torch.zeros_like
_BATCH_MEAN = lambda z: z.mean(dim=0, keepdim=True).expand_as(z)  # noqa: E731
_ALL_MEAN = lambda z: z.mean(dim=(0, 1), keepdim=True).expand_as(z)  # noqa: E731


def _final_logit_diff(logits, correct, wrong, pos=-1):
    final = logits[:, pos]
    return final.gather(-1, correct[:, None])[:, 0] - final.gather(-1, wrong[:, None])[:, 0]


def _patching_probe(hook_kind="z", denoise=True, normalise=True):
    """Patch one head's ``hook_<hook_kind>`` between the runs; ``denoise`` = clean into corrupted."""
    def probe(model, clean, corrupted, correct, wrong):
        with torch.no_grad():
            source, target = (clean, corrupted) if denoise else (corrupted, clean)
            _, cache = model.run_with_cache(source)
            clean_ld = _final_logit_diff(model(clean), correct, wrong).mean()
            corrupted_ld = _final_logit_diff(model(corrupted), correct, wrong).mean()
            out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
            for layer in range(model.cfg.n_layers):
                name = get_act_name(hook_kind, layer)
                head_dim = 1 if hook_kind == "pattern" else 2
                for head in range(model.cfg.n_heads):
                    def hook(act, hook, head=head):
                        index = (slice(None),) * head_dim + (head,)
                        act[index] = cache[hook.name][index]
                        return act
                    patched = _final_logit_diff(model.run_with_hooks(target, fwd_hooks=[(name, hook)]), correct, wrong).mean()
                    out[layer, head] = (patched - corrupted_ld) / (clean_ld - corrupted_ld) if normalise else patched - corrupted_ld
            return out
    return probe


def _comp(W_A, W_B):
    return (W_A @ W_B).norm() / (W_A.norm() * W_B.norm())


def _dense(matrix: FactoredMatrix | torch.Tensor) -> torch.Tensor:
    """A circuit returned as a FactoredMatrix or as the dense matrix it stands for: both are correct."""
    return matrix.AB if isinstance(matrix, FactoredMatrix) else matrix


def _composition_probe(k_right="QK.T", order="AB", transpose_out=False):
    def probe(model, kind):
        right = {"Q": model.QK[1], "K": model.QK[1] if k_right == "QK" else model.QK[1].T, "V": model.OV[1]}[kind]
        out = torch.zeros(model.cfg.n_heads, model.cfg.n_heads)
        for h0 in range(model.cfg.n_heads):
            for h1 in range(model.cfg.n_heads):
                A, B = model.OV[0][h0], right[h1]
                out[h0, h1] = _comp(A, B) if order == "AB" else _comp(B, A)
        return out.T if transpose_out else out
    return probe


def _all_kinds(fn, case):
    return {kind: fn(case["model"], kind) for kind in ("Q", "K", "V")}


# --------------------------------------------------------------------------------------------
# Exercises
# --------------------------------------------------------------------------------------------

EXERCISES = [
    Exercise(
        id="circuits.per_token_loss",
        make_case=_random_logits_case,
        probes=[
            Probe("no_shift", lambda logits, tokens: _nll(logits[:, :-1], tokens[:, :-1]),
                  "you scored the logits at position p against the token at p; they predict the token at p+1 "
                  "(drop the last logit and the first token)"),
            Probe("no_shift_drop_first", lambda logits, tokens: _nll(logits[:, 1:], tokens[:, 1:]),
                  "you scored the logits at position p against the token at p (you dropped the first logit "
                  "instead of the last); logits[:, :-1] predict tokens[:, 1:]"),
            Probe("shift_wrong_way", lambda logits, tokens: _nll(logits[:, 1:], tokens[:, :-1]),
                  "you shifted the wrong way: logits[:, :-1] predict tokens[:, 1:]"),
            Probe("softmax_over_positions", lambda logits, tokens: -logits[:, :-1].log_softmax(1).gather(-1, tokens[:, 1:, None])[..., 0],
                  "you normalised over the position axis; log_softmax must run over the vocabulary (last) axis"),
            Probe("log_prob_not_loss", lambda logits, tokens: -_nll(logits[:, :-1], tokens[:, 1:]),
                  "you returned log-probabilities; the loss is their negative"),
        ],
    ),
    Exercise(
        id="circuits.current_token_score",
        make_case=_pattern_case,
        probes=[
            Probe("include_first_query", lambda pattern: _diag_mean(pattern, 0),
                  "you included query position 0, which can only attend to itself; average over queries 1.."),
            Probe("mean_over_heads", lambda pattern: pattern.diagonal(dim1=-2, dim2=-1)[..., 1:].mean(dim=(1, -1)),
                  "you averaged over heads instead of over the batch"),
        ],
    ),
    Exercise(
        id="circuits.previous_token_score",
        make_case=_pattern_case,
        probes=[
            Probe("current_token", lambda pattern: _diag_mean(pattern, 0, 1),
                  "wrong diagonal offset: you measured attention to the current token (offset 0), not the previous one (offset -1)"),
            Probe("offset_minus_two", lambda pattern: _diag_mean(pattern, -2),
                  "wrong diagonal offset: you looked two tokens back (offset -2)"),
            Probe("key_query_swapped", lambda pattern: _diag_mean(pattern, 1),
                  "you read the pattern as [key, query]; its last two axes are [query_pos, key_pos], so the "
                  "previous token is the diagonal just below the main one"),
            Probe("divide_by_all_queries", lambda pattern: pattern.diagonal(-1, -2, -1).sum(-1).mean(0) / pattern.shape[-2],
                  "you divided by every query position; query 0 has no previous token, average over queries 1.."),
        ],
    ),
    Exercise(
        id="circuits.first_token_score",
        make_case=_pattern_case,
        probes=[
            Probe("include_first_query", lambda pattern: pattern[..., :, 0].mean(dim=(0, -1)),
                  "you included query position 0, which must attend to itself (= the first token); average over queries 1.."),
            Probe("key_query_swapped", lambda pattern: pattern[..., 0, 1:].mean(dim=(0, -1)),
                  "you indexed [key, query]; the pattern's last two axes are [query_pos, key_pos]"),
        ],
    ),
    Exercise(
        id="circuits.induction_score",
        make_case=_repeated_pattern_case,
        probes=[
            Probe("duplicate_token", lambda pattern: _diag_mean(pattern, -((pattern.shape[-1] - 1) // 2), 1),
                  "you measured attention to the earlier copy of the same token (a duplicate-token head); an "
                  "induction head attends to the token right after it (offset -(seq_len - 1))"),
            Probe("one_too_far", lambda pattern: _diag_mean(pattern, -((pattern.shape[-1] - 1) // 2 + 1), 0),
                  "wrong diagonal offset: you looked at the token before the earlier copy (offset -(seq_len + 1))"),
            Probe("all_queries", lambda pattern: _diag_mean(pattern, -((pattern.shape[-1] - 1) // 2 - 1)),
                  "you also averaged over queries in the first half (and the BOS/first-copy boundary); only queries "
                  "in the repeated half, positions seq_len+1 .. 2*seq_len, can do induction"),
        ],
    ),
    Exercise(
        id="circuits.ablation_loss_increase",
        make_case=_ablation_case,
        call=lambda fn, case: {mode: fn(case["model"], case["tokens"], mode) for mode in ("zero", "mean")},
        n_public=1, n_hidden=2,
        tolerances=MODEL_TOL,
        probes=[
            Probe("zero_when_mean_asked", _ablation_probe(_ZERO, _ZERO),
                  "with ablation='mean' you ablated with zeros; replace the head's hook_z by its mean over the batch"),
            Probe("mean_over_positions_too", _ablation_probe(_ZERO, _ALL_MEAN),
                  "your mean ablation also averaged over positions; average over the batch only, position by position"),
            Probe("ablated_loss_not_increase", _ablation_probe(_ZERO, _BATCH_MEAN, offset=True),
                  "you returned the ablated loss; return its increase over the clean loss"),
        ],
    ),
    Exercise(
        id="circuits.logit_diff",
        make_case=_logit_diff_case,
        probes=[
            Probe("sign_flipped", lambda logits, correct, wrong: -_final_logit_diff(logits, correct, wrong),
                  "the sign is flipped: correct minus wrong"),
            Probe("first_position", lambda logits, correct, wrong: _final_logit_diff(logits, correct, wrong, pos=0),
                  "you read the logits at the first position; the prediction that matters is at the last one"),
            Probe("probabilities", lambda logits, correct, wrong: _final_logit_diff(logits.softmax(-1), correct, wrong),
                  "you took a difference of probabilities; use the raw logits"),
            Probe("mean_over_batch", lambda logits, correct, wrong: _final_logit_diff(logits, correct, wrong).mean(),
                  "you averaged over the batch; return one logit difference per prompt"),
        ],
    ),
    Exercise(
        id="circuits.head_patching_effect",
        make_case=_patching_case,
        n_public=1, n_hidden=2,
        tolerances=MODEL_TOL,
        probes=[
            Probe("patched_values", _patching_probe(hook_kind="v"),
                  "you patched hook_v (the values); patch hook_z, the head's output before W_O"),
            Probe("patched_pattern", _patching_probe(hook_kind="pattern"),
                  "you patched the attention pattern; patch hook_z, the head's output before W_O"),
            Probe("noising", _patching_probe(denoise=False),
                  "you patched corrupted activations into the clean run; patch clean activations into the corrupted run"),
            Probe("not_normalised", _patching_probe(normalise=False),
                  "you returned patched - corrupted; divide by (clean - corrupted)"),
        ],
    ),
    Exercise(
        id="circuits.full_ov_circuit",
        make_case=_random_model_head_case,
        call=lambda fn, case: _dense(fn(**case)),
        n_public=1, n_hidden=2,
        probes=[
            Probe("transposed", lambda model, layer, head: FactoredMatrix(model.W_E @ model.W_V[layer, head], model.W_O[layer, head] @ model.W_U).T,
                  "your matrix is transposed: rows are the attended-to (source) token, columns the output logits"),
            Probe("qk_instead", lambda model, layer, head: FactoredMatrix(model.W_E @ model.W_Q[layer, head], model.W_K[layer, head].T @ model.W_U),
                  "you used W_Q and W_K; the OV circuit is W_E W_V W_O W_U"),
        ],
    ),
    Exercise(
        id="circuits.pos_qk_circuit",
        make_case=_random_model_head_case,
        call=lambda fn, case: _dense(fn(**case)),
        n_public=1, n_hidden=2,
        probes=[
            Probe("transposed", lambda model, layer, head: FactoredMatrix(model.W_pos @ model.W_K[layer, head], (model.W_pos @ model.W_Q[layer, head]).T),
                  "your matrix is transposed: rows are query positions, columns key positions (W_pos W_Q W_K^T W_pos^T)"),
            Probe("scaled", lambda model, layer, head: FactoredMatrix(model.W_pos @ model.W_Q[layer, head], (model.W_pos @ model.W_K[layer, head]).T / model.cfg.d_head ** 0.5),
                  "you divided by sqrt(d_head); return the raw bilinear form"),
            Probe("embeddings_not_positions", lambda model, layer, head: FactoredMatrix(model.W_E @ model.W_Q[layer, head], (model.W_E @ model.W_K[layer, head]).T),
                  "you used the token embeddings W_E; the positional circuit uses W_pos on both sides"),
        ],
    ),
    Exercise(
        id="circuits.composition_score",
        make_case=_factored_pair_case,
        call=lambda fn, case: float(fn(**case)),
        tolerances=NORM_TOL,
        probes=[
            Probe("reversed_order", lambda W_A, W_B: _comp(W_B, W_A),
                  "you multiplied in the wrong order (W_B W_A); the earlier head's matrix comes first: W_A W_B"),
            Probe("not_normalised", lambda W_A, W_B: (W_A @ W_B).norm(),
                  "you did not divide by ||W_A||_F ||W_B||_F"),
        ],
    ),
    Exercise(
        id="circuits.composition_scores",
        make_case=_random_model_case,
        call=_all_kinds,
        n_public=1, n_hidden=2,
        tolerances=NORM_TOL,
        probes=[
            Probe("k_uses_qk", _composition_probe(k_right="QK"),
                  "your K-composition equals Q-composition: the earlier head feeds the keys, so use W_QK transposed (model.QK.T)"),
            Probe("reversed_order", _composition_probe(order="BA"),
                  "you multiplied in the wrong order (W_B W_A); the layer-0 head's W_OV comes first"),
            Probe("axes_swapped", _composition_probe(transpose_out=True),
                  "rows and columns are swapped: rows are layer-0 heads, columns layer-1 heads"),
        ],
    ),
]
