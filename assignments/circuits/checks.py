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


def _causal_pattern(rng: np.random.Generator, pos: int, batch: int | None = None, heads: int | None = None) -> torch.Tensor:
    g = torch_generator(rng)
    batch, heads = batch or int(rng.integers(1, 5)), heads or int(rng.integers(1, 7))
    scores = torch.randn(batch, heads, pos, pos, generator=g) * 2
    causal = torch.ones(pos, pos, dtype=torch.bool).tril()
    return scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)


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


def _patching_probe(hook_kind="z", denoise=True, normalise=True, positions="all"):
    """Patch one head's ``hook_<hook_kind>`` between the runs; ``denoise`` = clean into corrupted.
    ``positions``: "all" at once (a ``[layer, head]`` result), or one position at a time, "each"
    alone or every position up to it ("prefix"), for a ``[layer, head, pos]`` result."""
    def probe(model, clean, corrupted, correct, wrong):
        with torch.no_grad():
            source, target = (clean, corrupted) if denoise else (corrupted, clean)
            _, cache = model.run_with_cache(source)
            clean_ld = _final_logit_diff(model(clean), correct, wrong).mean()
            corrupted_ld = _final_logit_diff(model(corrupted), correct, wrong).mean()
            head_dim = 1 if hook_kind == "pattern" else 2
            wheres = [slice(None)] if positions == "all" else \
                [pos if positions == "each" else slice(0, pos + 1) for pos in range(clean.shape[1])]
            out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, len(wheres))
            for layer in range(model.cfg.n_layers):
                name = get_act_name(hook_kind, layer)
                for head in range(model.cfg.n_heads):
                    for i, where in enumerate(wheres):
                        def hook(act, hook, head=head, where=where):
                            # the position axis is the one before the head axis (pattern: the query axis after it)
                            index = (slice(None), head, where) if head_dim == 1 else (slice(None), where, head)
                            act[index] = cache[hook.name][index]
                            return act
                        patched = _final_logit_diff(model.run_with_hooks(target, fwd_hooks=[(name, hook)]), correct, wrong).mean()
                        delta = patched - corrupted_ld
                        out[layer, head, i] = delta / (clean_ld - corrupted_ld) if normalise else delta
            return out[..., 0] if positions == "all" else out
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


# --------------------------------------------------------------------------------------------
# New exercises (science): a parametrised detector, a detector to design, per-position patching,
# direct logit attribution
# --------------------------------------------------------------------------------------------


def _target_pattern_case(rng: np.random.Generator) -> dict[str, Any]:
    """A random causal pattern and a random causal detection mask with: several target keys in
    some rows (a sum, not a mean), query 0 always targeted (leaving it out must matter on every
    case), and at least one row q >= 1 with a target and one without (only rows with a target
    are averaged)."""
    pos = int(rng.integers(4, 17))
    batch = int(rng.integers(2, 5))  # batch != heads, both > 1: averaging over the wrong axis shows
    pattern = _causal_pattern(rng, pos, batch, batch + int(rng.integers(1, 4)))
    target = np.tril(rng.random((pos, pos)) < rng.uniform(0.15, 0.45))
    target[0, 0] = True
    with_target, without, several = rng.choice(np.arange(1, pos), size=3, replace=False)
    target[with_target] = False  # exactly one of its q + 1 >= 2 keys: a score below 1 (a full row
    target[with_target, int(rng.integers(0, with_target + 1))] = True  # scores 1, like query 0)
    target[without] = False
    target[several, rng.choice(several + 1, size=2, replace=False)] = True  # a row with two target keys
    return {"pattern": pattern, "target": torch.from_numpy(target)}


def _attention_on_target(pattern, target, rows, reduce_keys="sum"):
    on_target = (pattern * target).sum(-1)
    if reduce_keys == "mean":
        on_target = on_target / target.sum(-1).clamp(min=1)
    return on_target[..., rows].mean(dim=(0, -1))


def _rows_with_target(target, skip_first=True):
    rows = target.any(-1)
    if skip_first:
        rows[0] = False
    return rows


def _offset_mask(pos: int, k: int) -> torch.Tensor:
    return torch.ones(pos, pos, dtype=torch.bool).tril(-k).triu(-k)


def _planted_model_case(rng: np.random.Generator) -> dict[str, Any]:
    """A random model with 1-3 heads planted to attend k in 1..4 back (the answer), one head planted
    on BOS and one on the current token (k = 0): distractors that must not be reported."""
    model = attn_only_2l.random_model(torch_generator(rng))
    heads = [(layer, head) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)]
    n_offset = int(rng.integers(1, 4))
    targets = [int(k) for k in rng.integers(1, 5, size=n_offset)] + ["bos", 0]
    planted = []
    for i, (index, target) in enumerate(zip(rng.permutation(len(heads)), targets)):
        layer, head = heads[index]
        attn_only_2l.plant_head(model, layer, head, target, float(rng.uniform(3.5, 6.0)))
        if i < n_offset:
            planted.append((layer, head, target))
    return {"model": model, "planted": planted}


def _triples(found: Any) -> np.ndarray:
    """A detector's answer as a sorted ``[n, 3]`` int64 array of (layer, head, k)."""
    try:
        rows = sorted({tuple(int(x) for x in triple) for triple in found})
    except (TypeError, ValueError) as error:
        raise TypeError(f"find_offset_heads must return a list of (layer, head, k) triples of ints: {error}") from None
    if any(len(row) != 3 for row in rows):
        raise TypeError("find_offset_heads must return (layer, head, k) triples: three ints each")
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def _call_detector(fn, case):
    # The planted truth travels with the output; the grader takes it from the reference run only.
    return {"found": _triples(fn(case["model"])), "planted": _triples(case["planted"])}


def _judge_offset_heads(output: Any, reference: Any) -> tuple[bool, str]:
    try:
        found = {tuple(row) for row in np.asarray(output["found"]).reshape(-1, 3).tolist()}
        planted = {tuple(row) for row in np.asarray(reference["planted"]).reshape(-1, 3).tolist()}
    except (TypeError, KeyError, ValueError):
        return False, "output: expected the (layer, head, k) triples of find_offset_heads"
    if found == planted:
        return True, ""
    return False, (f"output: {len(planted - found)} of {len(planted)} planted offset heads missed, "
                   f"{len(found - planted)} reported that are not planted (a right head with a wrong k counts as both)")


def _offset_detector_probe(ks=range(1, 5), threshold=0.3):
    def probe(model):
        pos = model.cfg.n_ctx
        tokens = torch.randint(1, model.cfg.d_vocab, (16, pos), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)
        found = []
        for layer in range(model.cfg.n_layers):
            pattern = cache["pattern", layer]
            scores = torch.stack([_attention_on_target(pattern, m, _rows_with_target(m))
                                  for m in (_offset_mask(pos, k) for k in ks)])
            best, index = scores.max(dim=0)
            found += [(layer, head, list(ks)[int(index[head])]) for head in range(model.cfg.n_heads) if best[head] > threshold]
        return found
    return probe


def _dla_case(rng: np.random.Generator) -> dict[str, Any]:
    """Random weights and biases (b_O, b_U non-zero: a bias counted in a head shows), induction prompts."""
    g = torch_generator(rng)
    prompts = attn_only_2l.induction_prompts(int(rng.integers(2, 7)), int(rng.integers(4, 12)), g)
    return {"model": attn_only_2l.random_model(g), "tokens": prompts["clean"],
            "correct": prompts["correct"], "wrong": prompts["wrong"]}


def _dla_probe(direction="difference", positions="last", bias_share=False, sign=1.0):
    def probe(model, tokens, correct, wrong):
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)
            W_dir = model.W_U[:, correct] if direction == "correct" else model.W_U[:, correct] - model.W_U[:, wrong]
            out = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
            for layer in range(model.cfg.n_layers):
                z = cache["z", layer] if positions == "all" else cache["z", layer][:, -1:]
                heads_out = torch.einsum("bphd,hdm->bphm", z, model.W_O[layer])
                if bias_share:
                    heads_out = heads_out + model.b_O[layer] / model.cfg.n_heads
                out[layer] = torch.einsum("bphm,mb->bph", heads_out, W_dir).mean(dim=(0, 1))
            return sign * out
    return probe


EXERCISES += [
    Exercise(
        id="circuits.attention_score",
        make_case=_target_pattern_case,
        probes=[
            Probe("include_first_query", lambda pattern, target: _attention_on_target(pattern, target, _rows_with_target(target, False)),
                  "you included query 0, which can only attend to itself; leave it out of the average"),
            Probe("all_queries", lambda pattern, target: (pattern * target).sum(-1)[..., 1:].mean(dim=(0, -1)),
                  "you averaged over every query 1..pos-1; average only over the queries whose row of target has a True"),
            Probe("mask_transposed", lambda pattern, target: _attention_on_target(pattern, target.T, _rows_with_target(target.T)),
                  "you read the mask as [key, query]; target, like the pattern, is [query_pos, key_pos]"),
            Probe("mean_over_target_keys", lambda pattern, target: _attention_on_target(pattern, target, _rows_with_target(target), "mean"),
                  "you averaged the attention over a row's target keys; sum it (the attention the query puts on its targets)"),
            Probe("mean_over_heads", lambda pattern, target: (pattern * target).sum(-1)[..., _rows_with_target(target)].mean(dim=(1, -1)),
                  "you averaged over heads instead of over the batch; return one score per head"),
        ],
    ),
    Exercise(
        id="circuits.find_offset_heads",
        make_case=_planted_model_case,
        call=_call_detector,
        n_public=2, n_hidden=4,
        judge=_judge_offset_heads,
        probes=[
            Probe("no_threshold", _offset_detector_probe(threshold=float("-inf")),
                  "you reported a k for every head; most heads attend to no fixed offset: keep only heads whose "
                  "attention on their best offset stands far above a random head's"),
            Probe("current_token_reported", _offset_detector_probe(ks=range(0, 5)),
                  "you reported heads that attend to the current token (k = 0); only k = 1..4 count"),
        ],
    ),
    Exercise(
        id="circuits.head_position_patching_effect",
        make_case=_patching_case,
        n_public=1, n_hidden=2,
        tolerances=MODEL_TOL,
        probes=[
            Probe("noising", _patching_probe(denoise=False, positions="each"),
                  "you patched corrupted activations into the clean run; patch clean activations into the corrupted run"),
            Probe("not_normalised", _patching_probe(normalise=False, positions="each"),
                  "you returned patched - corrupted; divide by (clean - corrupted)"),
            Probe("prefix", _patching_probe(positions="prefix"),
                  "you patched every position up to p; patch the head at position p alone"),
        ],
    ),
    Exercise(
        id="circuits.head_logit_attribution",
        make_case=_dla_case,
        tolerances=MODEL_TOL,
        probes=[
            Probe("correct_only", _dla_probe(direction="correct"),
                  "you projected on W_U[:, correct] only; the logit difference needs W_U[:, correct] - W_U[:, wrong]"),
            Probe("sign_flipped", _dla_probe(sign=-1.0),
                  "the sign is flipped: correct minus wrong"),
            Probe("all_positions", _dla_probe(positions="all"),
                  "you averaged over every position; the logit difference is read at the last position"),
            Probe("bias_shared", _dla_probe(bias_share=True),
                  "you shared b_O among the heads; the bias belongs to no head: leave it out"),
        ],
    ),
]
