"""The attribution assignment and library, checked against independent computations.

* The local replacement model (our written-out float64 forward) reproduces TransformerLens's own
  forward pass of the model, in float64 to ~1e-10, in float32 to float32 precision.
* The direct-effect adjacency (batched backward passes) equals finite-difference interventions
  computed with **TransformerLens's forward pass** (no autograd): attention patterns and LayerNorm
  scales frozen by hooks, each source node scaled by (1 + eps) with every other node held fixed, the
  change of every target read off.
* Influence equals the explicit path sum A + A^2 + ... (power series, not a linear solve).
* Pruning keeps the stated cumulative fractions, and is minimal.
* The persona vignette's interventions change the answer with margin.
* The notebook's solutions (executed from the master) pass their checks, and every probe is caught
  and named; they agree with the library (adjacency additionally with finite differences).
"""
from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import torch

from interplab import attribution as attr
from interplab import zoo
from interplab.toyworld import ToyWorld

from conftest import Master

ATTRIBUTION = Master("attribution", hidden_seed=5151)
EXERCISES = ATTRIBUTION.exercises
WORLD = ToyWorld()
CHILD_27 = "child : what is sqrt 27 ?"


@pytest.fixture(scope="module")
def shipped():
    torch.set_num_threads(1)
    return zoo.load("toyworld-lm"), zoo.load("toyworld-transcoders")


def _float64(model):
    model = copy.deepcopy(model)
    model.cfg.dtype = torch.float64
    return model.double()


def tl_replacement(model64, transcoders, tokens, frozen: attr.Frozen, embeddings, acts, errors):
    """The local replacement model run by TransformerLens itself (float64 copy of the model): hooks
    replace the embeddings, the attention patterns, the LayerNorm scales and the MLP outputs; feature
    pre-activations are read from the MLP's input. Returns (pre, logits) like attr.replacement_forward."""
    pres = {}
    n_layers = model64.cfg.n_layers

    def fixed(value):
        return lambda act, hook: value.reshape(act.shape).to(act.dtype)

    hooks = [("hook_embed", fixed(embeddings[None])), ("hook_pos_embed", lambda act, hook: torch.zeros_like(act)),
             ("ln_final.hook_scale", fixed(frozen.ln_final[None]))]
    for l in range(n_layers):
        tc = transcoders[l]

        def read(act, hook, l=l, tc=tc):
            ln2 = model64.blocks[l].ln2
            pres[l] = (act * ln2.w + ln2.b) @ tc.W_enc.double() + tc.b_enc.double()
            return act

        def write(act, hook, l=l, tc=tc):
            return (acts[l] @ tc.W_dec.double() + tc.b_dec.double() + errors[l])[None]

        hooks += [(f"blocks.{l}.ln1.hook_scale", fixed(frozen.ln1[l][None])),
                  (f"blocks.{l}.attn.hook_pattern", fixed(frozen.patterns[l][None])),
                  (f"blocks.{l}.ln2.hook_scale", fixed(frozen.ln2[l][None])),
                  (f"blocks.{l}.ln2.hook_normalized", read), (f"blocks.{l}.hook_mlp_out", write)]
    with torch.no_grad():
        logits = model64.run_with_hooks(tokens[None], fwd_hooks=hooks)[0]
    return torch.stack([pres[l][0] for l in range(n_layers)]), logits


def finite_difference_adjacency(model64, transcoders, tokens, run, features, logit_tokens, eps=1e-3):
    """Each source scaled by (1 + eps) with all other nodes fixed, through tl_replacement."""
    base = (run["embeddings"], run["feature_acts"], run["errors"])

    def targets(e, a, r):
        pre, logits = tl_replacement(model64, transcoders, tokens, run["frozen"], e, a, r)
        centred = logits[-1] - logits[-1].mean()
        return torch.cat([pre[tuple(features.T)], centred[logit_tokens]])

    y0 = targets(*base)
    n_f, (n_layers, n_pos) = len(features), run["errors"].shape[:2]
    sources = [("a", tuple(f)) for f in features.tolist()] + \
              [("r", (l, p)) for l in range(n_layers) for p in range(n_pos)] + [("e", (p,)) for p in range(n_pos)]
    n_nodes = len(sources) + len(logit_tokens)
    A = torch.zeros(n_nodes, n_nodes, dtype=torch.float64)
    rows = list(range(n_f)) + list(range(n_nodes - len(logit_tokens), n_nodes))
    for col, (kind, index) in enumerate(sources):
        e, a, r = (t.clone() for t in base)
        {"e": e, "a": a, "r": r}[kind][index] *= 1 + eps
        A[rows, col] = (targets(e, a, r) - y0) / eps
    return A


# --------------------------------------------------------------------------------------------
# The local replacement model
# --------------------------------------------------------------------------------------------


def test_replacement_model_reproduces_the_real_model(shipped) -> None:
    model, transcoders = shipped
    model64 = _float64(model)
    w = attr.Weights.of(model, transcoders)
    for prompt in (CHILD_27, "expert : what is sqrt 48 ? 4 root 3 . what is sqrt 25 ?", "repeat : toma red sqrt | toma red"):
        tokens = torch.tensor(WORLD.tokenizer.encode(prompt))
        run = attr.full_forward(w, model, tokens)
        with torch.no_grad():
            tl64 = model64(tokens[None])[0]
            tl32 = model(tokens[None])[0].double()
        torch.testing.assert_close(run["logits"], tl64, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(run["logits"], tl32, atol=2e-4, rtol=1e-4)
        pre, logits = attr.replacement_forward(w, run["frozen"], run["embeddings"], run["feature_acts"], run["errors"])
        torch.testing.assert_close(logits, tl64, atol=1e-10, rtol=1e-10)
        # the same replacement model run by TransformerLens's own forward, through hooks
        pre_tl, logits_tl = tl_replacement(model64, transcoders, tokens, run["frozen"], run["embeddings"],
                                           run["feature_acts"], run["errors"])
        torch.testing.assert_close(logits_tl, logits, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(pre_tl, pre, atol=1e-10, rtol=1e-10)


def test_replacement_model_is_affine_in_node_values(shipped) -> None:
    model, transcoders = shipped
    w = attr.Weights.of(model, transcoders)
    run = attr.full_forward(w, model, torch.tensor(WORLD.tokenizer.encode(CHILD_27)))
    args = (run["embeddings"], run["feature_acts"], run["errors"])
    g = torch.Generator().manual_seed(0)
    other = tuple(torch.randn(t.shape, generator=g, dtype=torch.float64) for t in args)
    zero = tuple(torch.zeros_like(t) for t in args)
    f = lambda xs: attr.replacement_forward(w, run["frozen"], *xs)[1]
    mixed = f(tuple(0.3 * a + 0.7 * b for a, b in zip(args, other)))
    torch.testing.assert_close(mixed, 0.3 * f(args) + 0.7 * f(other), atol=1e-9, rtol=1e-9)  # affine: weights sum to 1
    assert (f(tuple(2 * a for a in args)) - 2 * f(args) + f(zero)).abs().max() < 1e-9


# --------------------------------------------------------------------------------------------
# The adjacency
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["tiny_random", "zoo_child_27"])
def test_adjacency_equals_finite_difference_interventions(shipped, which) -> None:
    if which == "tiny_random":
        g = torch.Generator().manual_seed(3)
        model = attr.tiny_model(g)
        transcoders = attr.random_transcoders(g, 2, model.cfg.d_model, 20)
        tokens = torch.randint(model.cfg.d_vocab, (7,), generator=g)
        logit_tokens = None
    else:
        model, transcoders = shipped
        tokens = torch.tensor(WORLD.tokenizer.encode(CHILD_27))
        logit_tokens = [WORLD.tokenizer.index[w] for w in ("i", "3", "5")]
    graph = attr.attribute(model, transcoders, tokens, logit_tokens=logit_tokens)
    run = attr.full_forward(attr.Weights.of(model, transcoders), model, tokens)
    fd = finite_difference_adjacency(_float64(model), transcoders, tokens, run, graph.features, graph.logit_tokens)
    scale = graph.adjacency.abs().max()
    assert (graph.adjacency - fd).abs().max() <= 1e-7 * scale, float((graph.adjacency - fd).abs().max() / scale)
    # structure: token and error rows are empty, nothing flows out of logits
    inputs = slice(graph.n_features, graph.n_features + graph.n_errors + graph.n_pos)
    assert not graph.adjacency[inputs].any() and not graph.adjacency[:, -graph.n_logits:].any()
    # each target's value = its row sum + the bias constant (the replacement model with all nodes zeroed)
    zero = attr.replacement_forward(attr.Weights.of(model, transcoders), run["frozen"],
                                    *(torch.zeros_like(run[k]) for k in ("embeddings", "feature_acts", "errors")))
    centred = lambda logits: logits[-1] - logits[-1].mean()
    values = torch.cat([run["feature_pre"][tuple(graph.features.T)], centred(run["logits"])[graph.logit_tokens]])
    biases = torch.cat([zero[0][tuple(graph.features.T)], centred(zero[1])[graph.logit_tokens]])
    rows = list(range(graph.n_features)) + list(range(len(graph.adjacency) - graph.n_logits, len(graph.adjacency)))
    torch.testing.assert_close(graph.adjacency[rows].sum(1) + biases, values, atol=1e-9, rtol=1e-9)


# --------------------------------------------------------------------------------------------
# Influence, pruning, scores
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def child_graph(shipped) -> attr.Graph:
    model, transcoders = shipped
    return attr.attribute(model, transcoders, torch.tensor(WORLD.tokenizer.encode(CHILD_27)))


def test_influence_is_the_path_sum(child_graph) -> None:
    An = attr.normalise(child_graph.adjacency)
    w = child_graph.logit_weights
    series, term = torch.zeros_like(w), w.clone()
    for _ in range(10):  # 2 layers: no path is longer than 4 edges
        term = term @ An
        series += term
    assert not term.any()
    torch.testing.assert_close(attr.influence(An, w), series, atol=1e-12, rtol=1e-10)


def test_pruning_keeps_the_stated_cumulative_fractions(child_graph) -> None:
    g = child_graph
    w = g.logit_weights
    scores = attr.influence(attr.normalise(g.adjacency), w)
    for threshold in (0.5, 0.8, 0.9):
        mask = attr.prune_nodes(g.adjacency, w, g.n_pos, g.n_logits, threshold)
        free = torch.ones_like(mask)
        free[-(g.n_pos + g.n_logits):] = False  # tokens and logits are always kept
        kept = scores[mask].sum() / scores.sum()
        assert kept >= threshold
        # minimal: without the weakest chosen node (ties aside) the fraction is not reached
        chosen = scores >= scores[mask & free].min()
        weakest = scores[chosen].min()
        assert (scores[chosen].sum() - weakest) / scores.sum() < threshold
        assert mask.all() or (scores[mask & free].min() >= scores[~mask].max())
    nodes = attr.prune_nodes(g.adjacency, w, g.n_pos, g.n_logits, 0.8)
    edges = attr.prune_edges(g.adjacency, nodes, w, 0.98)
    pruned = g.adjacency.clone()
    pruned[~nodes] = 0
    pruned[:, ~nodes] = 0
    An = attr.normalise(pruned)
    edge_scores = An * (attr.influence(An, w) + w)[:, None]
    assert edge_scores[edges].sum() / edge_scores.sum() >= 0.98
    assert not (edges & ~nodes[:, None]).any() and not (edges & ~nodes[None, :]).any()


def test_graph_scores_bounds_and_definitions(child_graph) -> None:
    g = child_graph
    scores = attr.graph_scores(g.adjacency, g.logit_weights, g.n_features, g.n_errors, g.n_pos)
    assert 0 < scores["replacement"] < 1 and 0 < scores["completeness"] < 1
    no_errors = g.adjacency.clone()
    no_errors[:, g.n_features:g.n_features + g.n_errors] = 0
    perfect = attr.graph_scores(no_errors, g.logit_weights, g.n_features, g.n_errors, g.n_pos)
    assert perfect["replacement"] == pytest.approx(1.0) and perfect["completeness"] == pytest.approx(1.0)


def test_persona_vignette_interventions_change_the_answer(shipped) -> None:
    """The notebook's vignette, recomputed from the library: features chosen by their total effect on
    logit("i") - logit(answer); measured P("i") in comments (transcoders + frozen errors)."""
    model, transcoders = shipped
    i_id = WORLD.tokenizer.index["i"]
    prompts = {"child/27": ("child : what is sqrt 27 ?", "3"), "expert/27": ("expert : what is sqrt 27 ?", "3"),
               "child/25": ("child : what is sqrt 25 ?", "5")}
    w = attr.Weights.of(model, transcoders)
    graphs, errors, tokens = {}, {}, {}
    for name, (prompt, answer) in prompts.items():
        tokens[name] = torch.tensor(WORLD.tokenizer.encode(prompt))
        g = attr.attribute(model, transcoders, tokens[name], logit_tokens=[i_id, WORLD.tokenizer.index[answer]])
        target = torch.zeros(g.adjacency.shape[0], dtype=torch.float64)
        target[-2], target[-1] = 1.0, -1.0
        graphs[name] = (g, attr.total_effects(g, target))
        errors[name] = attr.full_forward(w, model, tokens[name])["errors"].float()

    def top(name, k, sign):
        g, total = graphs[name]
        return [(*g.features[j].tolist(), float(g.activations[j])) for j in (sign * total[:g.n_features]).argsort(descending=True)[:k].tolist()]

    def probs(name, interventions):
        answer = WORLD.tokenizer.index[prompts[name][1]]
        spliced = attr.spliced_logits(model, transcoders, tokens[name][None], errors[name][:, None], interventions)[0, -1].softmax(-1)
        patched = attr.patched_logits(model, transcoders, tokens[name][None], interventions)[0, -1].softmax(-1)
        return float(spliced[i_id]), float(spliced[answer]), float(patched[i_id]), float(patched[answer])

    p_i, p_a, q_i, q_a = probs("child/27", [])
    assert p_i > 0.99 and q_i > 0.99  # 1.000: the child refuses
    p_i, p_a, q_i, q_a = probs("child/27", [(l, p, i, 0.0) for l, p, i, a in top("child/27", 10, 1.0)])
    assert p_i < 0.05 and p_a > 0.9 and q_i < 0.05 and q_a > 0.9  # 0.002 / 0.997 (real MLPs 0.003 / 0.997)
    swap = [(l, p, i, a) for l, p, i, a in top("child/27", 1, 1.0)] + [(l, p, i, 0.0) for l, p, i, a in top("expert/27", 1, -1.0)]
    assert probs("expert/27", [])[0] < 0.01  # 0.000: the expert answers
    p_i, p_a, q_i, q_a = probs("expert/27", swap)
    assert p_i > 0.75 and q_i > 0.75  # 0.921 (0.921)
    last = len(tokens["child/25"]) - 1
    inject = [(l, p, i, a) for l, p, i, a in top("child/27", 5, 1.0) if p == last] + \
             [(l, p, i, 0.0) for l, p, i, a in top("child/25", 5, -1.0) if p == last]
    assert probs("child/25", [])[0] < 0.01  # 0.000: the child answers easy roots
    p_i, p_a, q_i, q_a = probs("child/25", inject)
    assert p_i > 0.95 and q_i > 0.95  # 1.000 (1.000)


def test_refusal_feature_fires_on_hard_questions_of_non_experts(shipped) -> None:
    """The notebook's relabelling of L1/970 by its activations at "?" (800 labelled dialogues)."""
    model, transcoders = shipped
    docs = WORLD.sample(800, 11, doc_type="dialogue")
    mlp_in, _ = attr.mlp_io(model, docs.tokens)
    at_q = docs.tokens == WORLD.tokenizer.index["?"]
    with torch.no_grad():
        acts = transcoders[1].encode(mlp_in[1][at_q])[:, 970]
    persona, difficulty = docs.labels["persona"][at_q], docs.labels["difficulty"][at_q]

    def mean(who: int, level: int) -> float:
        return float(acts[(persona == who) & (difficulty == level)].mean())

    child, expert, assistant = 1, 2, 3
    assert mean(child, 2) > 1.5 and mean(assistant, 2) > 1.5  # 2.07, 1.88
    assert mean(expert, 2) < 0.6  # 0.33
    assert max(mean(who, level) for who in (child, expert, assistant) for level in (0, 1)) < 0.25  # <= 0.10


def test_dose_response_beats_random_and_size_matched_controls(shipped) -> None:
    """Switching off the graph's top-10 features flips child/27; 10 random or 10 largest do nothing."""
    model, transcoders = shipped
    i_id = WORLD.tokenizer.index["i"]
    tokens = torch.tensor(WORLD.tokenizer.encode(CHILD_27))
    g = attr.attribute(model, transcoders, tokens, logit_tokens=[i_id, WORLD.tokenizer.index["3"]])
    target = torch.zeros(g.adjacency.shape[0], dtype=torch.float64)
    target[-2], target[-1] = 1.0, -1.0
    total = attr.total_effects(g, target)
    errors = attr.full_forward(attr.Weights.of(model, transcoders), model, tokens)["errors"].float()
    active = [tuple(row.tolist()) for row in g.features]

    def p_i(features) -> float:
        edits = [(l, p, i, 0.0) for l, p, i in features]
        return float(attr.spliced_logits(model, transcoders, tokens[None], errors[:, None], edits)[0, -1].softmax(-1)[i_id])

    by_effect = [active[j] for j in total[:g.n_features].argsort(descending=True)[:10].tolist()]
    by_size = [active[j] for j in g.activations.argsort(descending=True)[:20].tolist()]
    assert p_i(by_effect[:5]) > 0.9 and p_i(by_effect) < 0.05  # 0.986, then 0.002: a threshold
    assert p_i(by_size) > 0.95  # 0.999 with the 20 largest
    draws = torch.Generator().manual_seed(0)
    for _ in range(3):
        assert p_i([active[j] for j in torch.randperm(len(active), generator=draws)[:20].tolist()]) > 0.95  # 1.000


def test_total_effects_equal_interventions_with_linear_downstream(shipped) -> None:
    """total_effects against finite differences in the replacement model where downstream features
    respond with frozen ReLU gates (TransformerLens forward, iterated layer by layer)."""
    g_ = torch.Generator().manual_seed(5)
    model = attr.tiny_model(g_)
    transcoders = attr.random_transcoders(g_, 2, model.cfg.d_model, 16)
    tokens = torch.randint(model.cfg.d_vocab, (6,), generator=g_)
    graph = attr.attribute(model, transcoders, tokens, logit_tokens=[1, 2])
    run = attr.full_forward(attr.Weights.of(model, transcoders), model, tokens)
    model64 = _float64(model)
    gate = run["feature_acts"] > 0

    def weighted_logit_difference(source: tuple[int, int, int] | None, scale: float) -> float:
        a = run["feature_acts"].clone()
        for layer in range(model.cfg.n_layers):
            if layer > 0:  # downstream features follow their pre-activations (frozen gates)
                pre, _ = tl_replacement(model64, transcoders, tokens, run["frozen"], run["embeddings"], a, run["errors"])
                a[layer] = pre[layer] * gate[layer]
            if source is not None and source[0] == layer:
                a[source] *= scale
        _, logits = tl_replacement(model64, transcoders, tokens, run["frozen"], run["embeddings"], a, run["errors"])
        return float(logits[-1, 1] - logits[-1, 2])

    target = torch.zeros(graph.adjacency.shape[0], dtype=torch.float64)
    target[-2], target[-1] = 1.0, -1.0
    total = attr.total_effects(graph, target)
    base = weighted_logit_difference(None, 1.0)
    eps = 1e-4
    for j in range(graph.n_features):
        changed = weighted_logit_difference(tuple(graph.features[j].tolist()), 1 + eps)
        assert (changed - base) / eps == pytest.approx(float(total[j]), rel=1e-5, abs=1e-7)
    assert graph.features[:, 0].min() == 0 and graph.features[:, 0].max() == 1  # both layers were tested


def test_rendering_is_offline_svg(child_graph) -> None:
    pruned = attr.prune(child_graph)
    svg = attr.render_svg(child_graph, pruned, WORLD.tokenizer.vocab, {(1, 0): "child"})
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert "<script" not in svg and "http" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert svg.count("<circle") + svg.count("<rect") >= int(pruned.node_mask.sum())


# --------------------------------------------------------------------------------------------
# The notebook's solutions and checks
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def solutions(shipped) -> dict[str, Any]:
    return ATTRIBUTION.namespace(setup_only=True)


def test_master_structure() -> None:
    ATTRIBUTION.assert_structure(min_exercises=8)


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_reference_passes_and_probes_are_named(solutions, exercise_id) -> None:
    ATTRIBUTION.assert_reference_passes_and_probes_are_named(exercise_id, solutions[exercise_id.split(".")[1]])


def test_solutions_agree_with_the_library_and_finite_differences(shipped, solutions) -> None:
    model, transcoders = shipped
    tokens = torch.tensor(WORLD.tokenizer.encode(CHILD_27))
    w = attr.Weights.of(model, transcoders)
    run = attr.full_forward(w, model, tokens)
    # error nodes: the library's float64 forward pass
    errors = solutions["error_nodes"](model, transcoders, tokens[None])[:, 0]
    torch.testing.assert_close(errors.double(), run["errors"], atol=2e-3, rtol=1e-4)
    # replacement forward: TransformerLens's forward with frozen hooks
    pre, logits = solutions["replacement_forward"](model, transcoders, run["frozen"], run["embeddings"], run["feature_acts"], run["errors"])
    pre_tl, logits_tl = tl_replacement(_float64(model), transcoders, tokens, run["frozen"], run["embeddings"],
                                       run["feature_acts"], run["errors"])
    torch.testing.assert_close(logits, logits_tl, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(pre, pre_tl, atol=1e-9, rtol=1e-9)
    # adjacency: finite differences (small random model, every node)
    g = torch.Generator().manual_seed(8)
    tiny = attr.tiny_model(g)
    tiny_tc = attr.random_transcoders(g, 2, tiny.cfg.d_model, 16)
    tiny_tokens = torch.randint(tiny.cfg.d_vocab, (6,), generator=g)
    tiny_w = attr.Weights.of(tiny, tiny_tc)
    tiny_run = attr.full_forward(tiny_w, tiny, tiny_tokens)
    features = (tiny_run["feature_acts"] > 0).nonzero()
    logit_tokens = torch.tensor([0, 5])
    A = solutions["adjacency"](lambda e, a, r: attr.replacement_forward(tiny_w, tiny_run["frozen"], e, a, r),
                               tiny_run["embeddings"], tiny_run["feature_acts"], tiny_run["errors"], features, logit_tokens)
    fd = finite_difference_adjacency(_float64(tiny), tiny_tc, tiny_tokens, tiny_run, features, logit_tokens)
    assert (A - fd).abs().max() <= 1e-7 * fd.abs().max()
    # intervention with nothing changed: the model itself
    probs = solutions["intervene"](model, transcoders, tokens, run["errors"].float(), [])
    torch.testing.assert_close(probs, model(tokens[None])[0, -1].log_softmax(-1), atol=2e-4, rtol=1e-4)
