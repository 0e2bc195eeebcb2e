"""The discovery assignment: every check passes the master's own solution and names each known
mistake; the solutions agree with independent implementations on the shipped model; the graph
machinery is exact where it claims to be.

Independent oracles:

* TransformerLens's own patching utilities (``transformer_lens.patching``) for activation patching
  by layer and position and per head;
* ``interplab.circuit_graph.run_with_edges`` (one edge removed) for path patching, which the
  solution implements with hooks of its own;
* exact activation patching for attribution patching (correlation, and the documented failure);
* a 2-layer model with a planted circuit (``ioi_3l.planted_circuit_model``) for ACDC;
* faithfulness 1 for the full model and 0 for the empty circuit, by construction.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from transformer_lens import patching

from interplab.circuit_graph import Graph, ablated_senders, run_with_edges
from interplab.ioi import ioi_prompts
from interplab.zoo import ioi_3l

from conftest import Master

DISCOVERY = Master("discovery", hidden_seed=1515)


@pytest.fixture(scope="module")
def ns() -> dict[str, Any]:
    """The master's solution cells and setup (the notebook's own reference code)."""
    torch.set_num_threads(1)
    return DISCOVERY.namespace(setup_only=True)


@pytest.fixture(scope="module")
def model():
    return ioi_3l.load()


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    p = ioi_prompts(16, torch.Generator().manual_seed(5), split="test")
    return {k: p[k] for k in ("clean", "corrupted", "io", "s")}


def _normalised_metric(model, batch):
    ld = ioi_3l.logit_diff
    with torch.no_grad():
        ld_clean = ld(model(batch["clean"]), batch["io"], batch["s"]).mean()
        ld_corrupted = ld(model(batch["corrupted"]), batch["io"], batch["s"]).mean()
    return lambda logits: (ld(logits, batch["io"], batch["s"]).mean() - ld_corrupted) / (ld_clean - ld_corrupted)


def test_master_structure() -> None:
    DISCOVERY.assert_structure(min_exercises=10)


@pytest.mark.parametrize("exercise_id", sorted(DISCOVERY.exercises))
def test_reference_passes_and_probes_are_named(ns, exercise_id) -> None:
    DISCOVERY.assert_reference_passes_and_probes_are_named(exercise_id, ns[exercise_id.split(".")[1]])


def test_shipped_model_meets_its_card(model) -> None:
    results = ioi_3l.verify(model)
    assert all(results.values()), results


@pytest.mark.parametrize("kind", ["resid_pre", "attn_out", "mlp_out"])
def test_patch_by_position_agrees_with_transformer_lens(ns, model, batch, kind) -> None:
    ours = ns["patch_by_position"](model, **batch, kind=kind)
    utility = {"resid_pre": patching.get_act_patch_resid_pre, "attn_out": patching.get_act_patch_attn_out,
               "mlp_out": patching.get_act_patch_mlp_out}[kind]
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(batch["clean"])
        theirs = utility(model, batch["corrupted"], clean_cache, _normalised_metric(model, batch))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_patch_heads_agrees_with_transformer_lens(ns, model, batch) -> None:
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(batch["clean"])
        metric = _normalised_metric(model, batch)
        all_pos = patching.get_act_patch_attn_head_out_all_pos(model, batch["corrupted"], clean_cache, metric)
        by_pos = patching.get_act_patch_attn_head_out_by_pos(model, batch["corrupted"], clean_cache, metric)
    torch.testing.assert_close(ns["patch_heads"](model, **batch, per_position=False), all_pos, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ns["patch_heads"](model, **batch, per_position=True), by_pos, rtol=1e-4, atol=1e-5)


def test_path_patching_is_removing_one_edge(ns, model, batch) -> None:
    """Path patching sender -> receiver input equals running the graph with exactly those edges
    resample-ablated (an implementation that shares no code with the solution)."""
    graph = Graph(model)
    ablated = ablated_senders(model, graph, batch["corrupted"])
    metric = _normalised_metric(model, batch)
    with torch.no_grad():
        one = metric(run_with_edges(model, graph, graph.mask(), batch["clean"], ablated)) - 1
    receivers, component = [(2, 0), (2, 3)], "q"
    ours = ns["path_patch_to_heads"](model, **batch, receivers=receivers, component=component)
    to_logits = ns["path_patch_to_logits"](model, **batch)
    for layer in range(2):
        for head in range(model.cfg.n_heads):
            names = [f"a{layer}.{head}->a{l}.{h}<{component}>" for l, h in receivers]
            mask = graph.mask() & ~graph.mask(names)
            with torch.no_grad():
                expected = metric(run_with_edges(model, graph, mask, batch["clean"], ablated)) - 1 - one
            assert abs(ours[layer, head] - expected) < 1e-3, (layer, head, ours[layer, head], expected)
    assert torch.isnan(ours[2:]).all()
    mask = graph.mask() & ~graph.mask(["a2.1->logits"])
    with torch.no_grad():
        expected = metric(run_with_edges(model, graph, mask, batch["clean"], ablated)) - 1
    assert abs(to_logits[2, 1] - expected) < 1e-3


def test_attribution_patching_tracks_exact_patching(ns, model, batch) -> None:
    exact = ns["patch_heads"](model, **batch, per_position=True)
    atp = ns["attribution_patching"](model, **batch)
    r = np.corrcoef(exact.flatten().numpy(), atp.flatten().numpy())[0, 1]
    print(f"AtP vs exact patching per head and position: r = {r:.3f}")
    assert r > 0.8


def test_attribution_patching_fails_on_saturated_attention(ns) -> None:
    """The documented failure (Kramar et al. 2024, section 3): when a later head's attention is
    saturated, the softmax's gradient is ~0, so a patch that *moves* that attention to another key
    is invisible to AtP, while exact patching sees the whole effect.

    Planted 2-layer attention-only model: a layer-0 head (uniform attention) writes a key feature
    at the position of token ``a``; a layer-1 head's query (from a marker at the last position)
    matches that feature with a score of 30, against 15 on ``<bos>``: saturated on ``a``'s position
    in the clean run, on ``<bos>`` in the corrupted run (``a`` replaced). It copies the feature into
    the logit of ``a``. Patching the layer-0 head at ``a``'s position restores everything; its
    gradient on the corrupted run is ~e^-15."""
    model = ioi_3l.build(ioi_3l.config(n_layers=2, attn_only=True))
    marker, a, x, c = 1, 2, 3, 4
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        model.W_E[0, 5] = model.W_E[a, 1] = model.W_E[marker, 0] = 1.0
        first, second = model.blocks[0].attn, model.blocks[1].attn  # (model.W_Q etc. are stacked copies)
        first.W_V[0, 1, 0], first.W_O[0, 0, 4] = 1.0, 3.0  # mean of 3 positions, times 3
        scale = model.cfg.d_head ** 0.5  # TransformerLens divides scores by sqrt(d_head)
        second.W_Q[0, 0, 0] = 1.0
        second.W_K[0, 4, 0], second.W_K[0, 5, 0] = 30 * scale, 15 * scale
        second.W_V[0, 4, 1], second.W_O[0, 1, 3] = 1.0, 1.0
        model.W_U[3, a] = 5.0
    clean, corrupted = torch.tensor([[0, x, a, marker]]), torch.tensor([[0, x, c, marker]])
    io, s = torch.tensor([a]), torch.tensor([c])
    exact = ns["patch_heads"](model, clean, corrupted, io, s, per_position=True)
    atp = ns["attribution_patching"](model, clean, corrupted, io, s)
    with torch.no_grad():
        pattern = model.run_with_cache(corrupted)[1]["pattern", 1][0, 0, -1]
    assert pattern[0] > 0.999  # saturated on <bos>
    # the layer-1 head's output enters the logits linearly: AtP is exact there
    assert exact[1, 3, 0] == pytest.approx(1.0, abs=1e-3) and atp[1, 3, 0] == pytest.approx(1.0, abs=1e-3)
    # the layer-0 head at a's position acts through the saturated softmax: AtP misses it
    assert exact[0, 2, 0] == pytest.approx(1.0, abs=1e-3)
    assert abs(atp[0, 2, 0]) < 1e-3


def test_acdc_recovers_a_planted_circuit(ns) -> None:
    for seed in range(3):
        model, edges = ioi_3l.planted_circuit_model(torch.Generator().manual_seed(seed))
        graph = Graph(model)
        p = ioi_prompts(8, torch.Generator().manual_seed(100 + seed))
        found = ns["acdc"](model, graph, p["clean"], p["corrupted"], p["io"], p["s"], threshold=0.05)
        assert sorted(graph.edges[i].name for i in found.nonzero().flatten().tolist()) == sorted(edges)


@pytest.mark.parametrize("ablation", ["resample", "mean"])
def test_faithfulness_of_full_model_is_one_and_of_empty_circuit_zero(ns, model, batch, ablation) -> None:
    graph = Graph(model)
    full = ns["faithfulness"](model, graph, graph.mask(), **batch, ablation=ablation)
    empty = ns["faithfulness"](model, graph, ~graph.mask(), **batch, ablation=ablation)
    assert full == pytest.approx(1.0, abs=1e-6) and empty == pytest.approx(0.0, abs=1e-6)


def test_empty_circuit_is_the_corrupted_run(model, batch) -> None:
    graph = Graph(model)
    with torch.no_grad():
        logits = run_with_edges(model, graph, ~graph.mask(), batch["clean"], ablated_senders(model, graph, batch["corrupted"]))
        torch.testing.assert_close(logits, model(batch["corrupted"]), rtol=1e-4, atol=1e-4)
        full = run_with_edges(model, graph, graph.mask(), batch["clean"], ablated_senders(model, graph, batch["corrupted"]))
        torch.testing.assert_close(full, model(batch["clean"]))
