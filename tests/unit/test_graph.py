"""The state graph (ray_pipeline/graph.py) against a direct count over the instance's own support tables, on
states the solver reaches; and the symmetries it must respect (constraint order, variable renaming)."""
import math
import random

import numpy as np
import pytest

from ray_pipeline import graph
from ray_pipeline.data import augment
from ray_pipeline.problems import generate
from ray_pipeline.problems.instance import Instance
from ray_pipeline.solver import Solver, compile_instance


def _state(inst, decision):
    """(domains, weights, dom/wdeg's top 8) at a decision of the dom/wdeg search."""
    s = Solver(inst, heuristic="dom-wdeg", propagation="mac", node_limit=decision + 1)
    s.record_trace(max_records=0, capture=[decision])
    s.solve()
    dom, weights, _ = s.trace().snapshots[decision]
    at = Solver(inst, heuristic="dom-wdeg", propagation="mac", domains=dom, weights=weights)
    return dom, weights, at.dom_wdeg_order(at.unassigned())[:8]


def _reference_edges(inst: Instance, dom, weights):
    """{(i, j): (tightness, log1p weight, src log-support, dst log-support)} by enumerating value pairs of the
    instance's own tables (merged per pair as the solver merges them); weights by merged-constraint order."""
    tables: dict[tuple[int, int], set] = {}
    for x, y, sup in inst.binary:
        allowed = {(a, b) for a in range(len(sup)) for b in range(64) if sup[a] >> b & 1}
        key, pairs = ((x, y), allowed) if x < y else ((y, x), {(b, a) for a, b in allowed})
        tables[key] = tables[key] & pairs if key in tables else pairs
    order = list(dict.fromkeys((min(x, y), max(x, y)) for x, y, _ in inst.binary))
    vals = [[a for a in range(64) if d >> a & 1] for d in dom]
    out = {}
    for k, (x, y) in enumerate(order):
        if len(vals[x]) < 2 or len(vals[y]) < 2:
            continue
        ok = tables[(x, y)]
        n_ok = sum((a, b) in ok for a in vals[x] for b in vals[y])
        t = 1 - n_ok / (len(vals[x]) * len(vals[y]))
        sx = np.mean([math.log(max(sum((a, b) in ok for b in vals[y]) / len(vals[y]), 1e-3)) for a in vals[x]])
        sy = np.mean([math.log(max(sum((a, b) in ok for a in vals[x]) / len(vals[x]), 1e-3)) for b in vals[y]])
        lw = math.log1p(weights[k])
        out[(x, y)], out[(y, x)] = (t, lw, sx, sy), (t, lw, sy, sx)
    return out


@pytest.mark.parametrize("family,size,index,decision", [("rb", "small", 3, 0), ("rb", "medium", 5, 40),
                                                         ("coloring", "small", 2, 6), ("nqueens", "small", 0, 3)])
def test_edges_and_nodes_match_a_direct_count(family, size, index, decision):
    inst = generate(family, size, index, 0, {})
    dom, weights, cands = _state(inst, decision)
    g = graph.state_graph(graph.supports(compile_instance(inst)), dom, weights, cands)
    ref = _reference_edges(inst, dom, weights)
    n = inst.n
    assert g["nodes"].shape == (n, len(graph.NODE_FEATURES)) and g["edges"].shape == (n, n, len(graph.EDGE_FEATURES))
    assert {(int(i), int(j)) for i, j in zip(*np.nonzero(g["adj"]))} == set(ref)
    for (i, j), want in ref.items():
        np.testing.assert_allclose(g["edges"][i, j], want, rtol=1e-5, atol=1e-5)
    assert not g["edges"][g["adj"] == 0].any()
    sizes = [d.bit_count() for d in dom]
    np.testing.assert_array_equal(g["open"], [float(z > 1) for z in sizes])
    f = {name: g["nodes"][:, k] for k, name in enumerate(graph.NODE_FEATURES)}
    n_open = sum(z > 1 for z in sizes)
    assert n_open >= 5 and len(ref) >= 8  # states with a graph to check
    for v in range(n):
        nbrs = [j for (i, j) in ref if i == v]
        if sizes[v] < 2:
            assert not g["nodes"][v].any()
            continue
        wdeg = sum(math.expm1(ref[(v, j)][1]) for j in nbrs)
        wtight = sum(math.expm1(ref[(v, j)][1]) * ref[(v, j)][0] for j in nbrs)
        assert f["log_dom"][v] == pytest.approx(math.log(sizes[v]))
        assert f["log1p_open_deg"][v] == pytest.approx(math.log1p(len(nbrs)))
        assert f["log1p_wdeg"][v] == pytest.approx(math.log1p(wdeg), rel=1e-5)
        assert f["log_dom_over_wdeg"][v] == pytest.approx(math.log(sizes[v]) - math.log1p(wdeg), abs=1e-5)
        assert f["mean_tightness"][v] == pytest.approx(np.mean([ref[(v, j)][0] for j in nbrs]) if nbrs else 0.0,
                                                       abs=1e-6)
        assert f["log1p_wtight"][v] == pytest.approx(math.log1p(wtight), abs=1e-5)
        assert f["is_candidate"][v] == float(v in cands)
        assert f["candidate_rank"][v] == pytest.approx(cands.index(v) / len(cands) if v in cands else 1.0)
        assert f["open_share"][v] == pytest.approx(n_open / n)


def test_constraint_order_does_not_change_the_graph():
    inst = generate("rb", "medium", 5, 0, {})
    copy = augment.reordered(inst, random.Random(4))
    dom, weights, cands = _state(inst, 40)
    assert len(set(weights)) >= 3  # uneven weights: carrying them over by pair is part of what is checked
    a = graph.state_graph(graph.supports(compile_instance(inst)), dom, weights, cands)
    # the copy numbers its merged constraints in another order: carry each weight over by its variable pair
    pos = {tuple(p): k for k, p in enumerate(compile_instance(copy).cvars)}
    w2 = [0] * len(weights)
    for k, p in enumerate(compile_instance(inst).cvars):
        w2[pos[tuple(p)]] = weights[k]
    b = graph.state_graph(graph.supports(compile_instance(copy)), dom, w2, cands)
    for key in a:  # sums over a variable's constraints run in another order: equal up to rounding
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6, err_msg=key)
    assert a["nodes"].any() and (a["adj"] == b["adj"]).all()


def test_renaming_variables_permutes_the_graph():
    inst = generate("rb", "small", 9, 0, {})
    rng = random.Random(2)
    perm = list(range(inst.n))
    rng.shuffle(perm)
    sym = augment.Symmetry(perm, [list(range(w)) for w in augment.value_widths(inst)])
    other = augment.apply(inst, sym, random.Random(0))
    dom, weights, cands = _state(inst, 2)
    g = graph.state_graph(graph.supports(compile_instance(inst)), dom, weights, cands)
    dom2 = [0] * inst.n
    for v, d in enumerate(dom):
        dom2[perm[v]] = d
    c1, c2 = compile_instance(inst), compile_instance(other)
    pos = {tuple(sorted(p)): k for k, p in enumerate(c2.cvars)}
    w2 = [0] * len(weights)
    for k, (x, y) in enumerate(c1.cvars):
        w2[pos[tuple(sorted((perm[x], perm[y])))]] = weights[k]
    h = graph.state_graph(graph.supports(c2), dom2, w2, [perm[v] for v in cands])
    p = np.asarray(perm)
    np.testing.assert_allclose(h["nodes"][p], g["nodes"], atol=1e-6)
    np.testing.assert_allclose(h["edges"][np.ix_(p, p)], g["edges"], atol=1e-6)
    np.testing.assert_array_equal(h["adj"][np.ix_(p, p)], g["adj"])


def test_what_the_graph_refuses():
    sat = generate("ksat", "small", 0, 0, {})
    with pytest.raises(graph.GraphError, match="clauses"):
        graph.supports(compile_instance(sat))
    inst = generate("rb", "small", 0, 0, {})
    s = graph.supports(compile_instance(inst))
    dom = list(inst.domains)
    w = [1] * len(s.pairs)
    with pytest.raises(graph.GraphError, match="domains"):
        graph.state_graph(s, dom[:-1], w, [0])
    with pytest.raises(graph.GraphError, match="weights"):
        graph.state_graph(s, dom, w[:-1], [0])
    fixed = [1] + dom[1:]
    with pytest.raises(graph.GraphError, match="open variables"):
        graph.state_graph(s, fixed, w, [0, 1])
    with pytest.raises(graph.GraphError, match="empty domain"):
        graph.state_graph(s, [0] + dom[1:], w, [1])


def test_padding_adds_closed_nodes_without_edges():
    inst = generate("rb", "small", 0, 0, {})
    g = graph.state_graph(graph.supports(compile_instance(inst)), list(inst.domains), [1] * 1000, [0, 1])
    p = graph.padded(g, inst.n + 3)
    assert p["nodes"].shape[0] == p["adj"].shape[1] == inst.n + 3
    assert not p["nodes"][inst.n:].any() and not p["adj"][inst.n:].any() and not p["open"][inst.n:].any()
    np.testing.assert_array_equal(p["edges"][: inst.n, : inst.n], g["edges"])
    with pytest.raises(graph.GraphError, match="does not fit"):
        graph.padded(g, inst.n - 1)


def test_the_graph_network_ignores_padding_and_node_order():
    """Scores depend on the graph, not on how many padded nodes a batch carries or how its nodes are numbered."""
    import torch

    from ray_pipeline.kinds import kind_of

    torch.manual_seed(0)
    kind = kind_of("graph")
    model = kind.network({"hidden": 16, "rounds": 2, "dropout": 0.0},
                         {"mean": [0.0] * len(kind.features), "std": [1.0] * len(kind.features)}).eval()
    inst = generate("rb", "small", 4, 0, {})
    dom, weights, cands = _state(inst, 1)
    c = compile_instance(inst)
    g = graph.state_graph(graph.supports(c), dom, weights, cands)
    x = torch.from_numpy(Solver(inst, domains=dom, weights=weights, compiled=c).features(cands, 0))[None]

    def scores(g, cand):
        b = {"x": x, "mask": torch.ones(1, len(cand), dtype=torch.bool), "g_nodes": torch.from_numpy(g["nodes"])[None],
             "g_edges": torch.from_numpy(g["edges"])[None], "g_adj": torch.from_numpy(g["adj"])[None],
             "g_cand": torch.tensor([cand])}
        with torch.no_grad():
            return kind.batch_scores(model, b)[0].numpy()

    base = scores(g, cands)
    np.testing.assert_allclose(scores(graph.padded(g, inst.n + 7), cands), base, rtol=1e-5, atol=1e-6)
    p = np.random.default_rng(0).permutation(inst.n)  # node v moves to p[v]
    inv = np.argsort(p)
    h = {"nodes": g["nodes"][inv], "edges": g["edges"][np.ix_(inv, inv)], "adj": g["adj"][np.ix_(inv, inv)]}
    np.testing.assert_allclose(scores(h, [int(p[v]) for v in cands]), base, rtol=1e-5, atol=1e-5)
    assert np.ptp(base) > 0
