"""The graph scorer in the solver core (native/graph.cpp, solver.policy.NativeGraph) against its Python halves: the
state graph of ray_pipeline/graph.py on live search states, and the network's arithmetic (a numpy transcription of
models/nets.py GraphScorer; the trained PyTorch model: tests/smoke/test_graph_scorer.py). Torch-free, so the
sanitizer build runs them too (test_native_sanitizers.py)."""
import numpy as np
import pytest

from ray_pipeline import graph
from ray_pipeline.problems import generate
from ray_pipeline.solver import Solver, compile_instance
from ray_pipeline.solver.core import _native
from ray_pipeline.solver.policy import NativeGraph, PolicyFileError, graph_array_names, load_native, save_graph
from ray_pipeline.solver.schema import INPUT_FEATURES

F = len(INPUT_FEATURES)
CLIP = 8.0
BINARY = [("rb", "small", 3), ("rb", "medium", 5), ("coloring", "small", 2), ("nqueens", "small", 0),
          ("sudoku", "large", 2)]


class _States:
    """A learned search's scorer that keeps dom/wdeg's order (scores fall with the rank) and collects each
    decision state: (domains as words, weights, candidates, feature rows)."""

    wants_state = True

    def __init__(self, limit=60):
        self.states, self.limit = [], limit

    def score_state(self, solver, cands, x):
        if len(self.states) < self.limit:
            core = solver._core
            self.states.append((core.domain_words(), core.weights(), list(cands), np.array(x), solver.dom))
        return -np.arange(len(cands), dtype=np.float64)


def _live_states(inst, limit=60, node_limit=400):
    rec = _States(limit)
    Solver(inst, heuristic="learned", scorer=rec, top_k=8, node_limit=node_limit).solve()
    return rec.states


def _dense(g, n):
    nodes = np.asarray(g["nodes"], np.float32).reshape(n, len(graph.NODE_FEATURES))
    edges = np.zeros((n, n, len(graph.EDGE_FEATURES)), np.float32)
    adj = np.zeros((n, n), np.float32)
    ef = np.asarray(g["edges"], np.float32).reshape(-1, len(graph.EDGE_FEATURES))
    for j in range(n):
        for k in range(g["in_start"][j], g["in_start"][j + 1]):
            edges[g["src"][k], j], adj[g["src"][k], j] = ef[k], 1.0
    return nodes, edges, adj


def test_versions_agree():
    assert _native.GRAPH_VERSION == graph.GRAPH_VERSION
    assert len(graph.NODE_FEATURES) == 9 and len(graph.EDGE_FEATURES) == 4  # native/graph.hpp's counts


@pytest.mark.parametrize("family,size,index", BINARY)
def test_native_state_graph_equals_python_on_live_states(family, size, index):
    inst = generate(family, size, index, 0, {})
    c = compile_instance(inst)
    sup = graph.supports(c)
    states = _live_states(inst)
    assert len(states) >= 3
    for words, weights, cands, _, dom in states:
        want = graph.state_graph(sup, dom, weights, cands)
        g = _native.state_graph(c.native, words, weights, cands)
        nodes, edges, adj = _dense(g, inst.n)
        np.testing.assert_array_equal(np.asarray(g["open"], np.float32), want["open"])
        np.testing.assert_array_equal(adj, want["adj"])
        np.testing.assert_allclose(nodes, want["nodes"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(edges, want["edges"], rtol=1e-5, atol=1e-5)


def _random_params(rng, hidden, rounds, head=(24, 12)):
    shapes = {"embed0": (hidden, len(graph.NODE_FEATURES)), "embed1": (hidden, hidden)}
    for r in range(rounds):
        shapes.update({f"r{r}.src": (hidden, hidden), f"r{r}.dst": (hidden, hidden),
                       f"r{r}.edge": (hidden, len(graph.EDGE_FEATURES)), f"r{r}.up0": (hidden, 3 * hidden),
                       f"r{r}.up1": (hidden, hidden)})
    shapes.update({"head0": (head[0], hidden + 2 * F), "head1": (head[1], head[0]), "head2": (1, head[1])})
    p = {}
    for name in graph_array_names(rounds):
        layer, what = name.rsplit(".", 1)
        if layer.endswith(".ln"):
            p[name] = (1 + 0.2 * rng.normal(size=hidden)) if what == "w" else 0.1 * rng.normal(size=hidden)
        elif what == "w":
            o, i = shapes[layer]
            p[name] = rng.normal(0, 1 / np.sqrt(i), (o, i))
        else:
            p[name] = 0.1 * rng.normal(size=shapes[layer][0])
    return {k: v.astype(np.float32) for k, v in p.items()}


def _numpy_net(a, g, x, cands):
    """models/nets.py GraphScorer on one dense graph, in numpy float32: the reference of the native network."""
    def lin(v, k):
        return v @ a[f"{k}.w"].T + (a[f"{k}.b"] if f"{k}.b" in a else 0)

    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    h, adj = lin(relu(lin(g["nodes"], "embed0")), "embed1"), g["adj"]
    for r in range(int(a["rounds"])):
        m = relu(lin(h, f"r{r}.src")[:, None] + lin(h, f"r{r}.dst")[None] + lin(g["edges"], f"r{r}.edge")) * adj[..., None]
        mean = m.sum(0) / np.maximum(adj.sum(0), 1)[:, None]
        u = h + lin(relu(lin(np.concatenate([h, mean, m.max(0)], 1), f"r{r}.up0")), f"r{r}.up1")
        mu, var = u.mean(1, keepdims=True), u.var(1, keepdims=True)
        h = (u - mu) / np.sqrt(var + 1e-5) * a[f"r{r}.ln.w"] + a[f"r{r}.ln.b"]
    xn = np.clip((x - a["mean"]) / a["std"], -CLIP, CLIP)
    z = np.concatenate([h[cands], xn, xn - xn.mean(0)], 1)
    return lin(relu(lin(relu(lin(z, "head0")), "head1")), "head2")[:, 0]


def _random_file(path, rng, hidden, rounds, head=(24, 12)):
    save_graph(path, kind="graph", mean=rng.normal(0, 1, F), std=rng.uniform(0.5, 5, F), clip=CLIP, hidden=hidden, rounds=rounds,
               params=_random_params(rng, hidden, rounds, head))
    return NativeGraph(path)


def test_native_graph_net_on_random_weights_and_live_states(tmp_path):
    """Random networks: scores equal the numpy transcription to 1e-4 on live states, and a search scored inside
    the core equals the search that calls the same network from Python, counter for counter."""
    rng = np.random.default_rng(11)
    # the core's fixed-width kernels (8/16/32/64 outputs) and its general loop; 0-3 rounds (the receptive field)
    shapes = [(16, 2, (32, 16)), (8, 3, (64, 8)), (13, 1, (24, 12)), (32, 0, (16, 5)), (5, 2, (24, 12))]
    for t, (family, size, index) in enumerate(BINARY):
        hidden, rounds, head = shapes[t]
        net = _random_file(tmp_path / f"g{t}.npz", rng, hidden, rounds, head)
        inst = generate(family, size, index, 0, {})
        sup = graph.supports(compile_instance(inst))
        states = _live_states(inst, limit=20)
        for words, weights, cands, x, dom in states:
            g = graph.state_graph(sup, dom, weights, cands)
            want = _numpy_net(net.arrays, g, x, cands)
            got = np.asarray(net.native.score(compile_instance(inst).native, words, weights, cands, x))
            assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), (family, hidden, rounds)

        class _FromPython:  # the same network, called back from the search like any Python scorer
            wants_state = True

            def score_state(self, solver, cands, x):
                return net.score_solver(solver, cands, x)

        kw = dict(heuristic="learned", top_k=int(rng.integers(2, 10)), node_limit=1500,
                  max_depth=None if t % 2 else 1, min_margin=float(rng.choice([0.0, 0.05])))
        a = Solver(inst, scorer=net, **kw).solve()
        b = Solver(inst, scorer=_FromPython(), **kw).solve()
        assert a.stats.model_calls > 0
        assert (a.status, a.stats.nodes, a.stats.backtracks, a.stats.model_calls) == \
            (b.status, b.stats.nodes, b.stats.backtracks, b.stats.model_calls), (family, hidden, rounds)
        # the score layer zeroed (bench solver's cost of a decision): every score 0, dom/wdeg's tree
        z = Solver(inst, scorer=net.zeroed(), **kw).solve()
        d = Solver(inst, heuristic="dom-wdeg", node_limit=kw["node_limit"]).solve()
        assert (z.status, z.stats.nodes, z.stats.backtracks) == (d.status, d.stats.nodes, d.stats.backtracks)


def test_bad_graph_files_and_instances_are_refused(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "g.npz"
    net = _random_file(path, rng, 8, 2)
    assert isinstance(load_native(path), NativeGraph)
    with pytest.raises(ValueError, match="clauses"):
        Solver(generate("ksat", "small", 0, 0, {}), heuristic="learned", scorer=net)
    with pytest.raises(PolicyFileError, match="graph scorer reads the solver's state"):
        net(np.zeros((2, F), np.float32))

    def write(name, **change):
        arrays = {**net.arrays, **change}
        p = tmp_path / name
        np.savez(p, **arrays)
        return p

    with pytest.raises(PolicyFileError, match=r"built for graph 'graph-0'.*--force"):
        load_native(write("v.npz", graph_version=np.array("graph-0")))
    with pytest.raises(PolicyFileError, match=r"arrays \['r2.src.w'"):
        load_native(write("r.npz", rounds=np.array(3)))
    with pytest.raises(PolicyFileError, match=r"r1.up0: weight shape differs from \[8, 24\]"):
        load_native(write("s.npz", **{"r1.up0.w": np.zeros((8, 20), np.float32)}))
    with pytest.raises(PolicyFileError, match=r"head1: weight shape differs"):  # transposed: the same count
        load_native(write("t.npz", **{"head1.w": net.arrays["head1.w"].T.copy()}))
    with pytest.raises(PolicyFileError, match=r"\['head0.w'\] have the wrong type or number of dimensions"):
        load_native(write("u.npz", **{"head0.w": net.arrays["head0.w"].reshape(-1)}))
    with pytest.raises(PolicyFileError, match=r"hidden must be an integer in \[1, 4096\]"):
        load_native(write("h.npz", hidden=np.array(10**9)))
    with pytest.raises(PolicyFileError, match="non-finite"):
        load_native(write("f.npz", **{"head1.w": np.full_like(net.arrays["head1.w"], np.nan)}))
    with pytest.raises(ValueError, match="missing or unknown"):
        save_graph(tmp_path / "x.npz", kind="graph", mean=np.zeros(F), std=np.ones(F), clip=CLIP, hidden=8, rounds=1,
                   params=_random_params(rng, 8, 2))


def test_native_graph_on_random_binary_instances(tmp_path):
    """Fuzz: random binary instances with domains of 2 to 150 values (several words), repeated pairs (merged),
    support rows shorter or longer than the domains; top-K from 1 up. The core's graph equals graph.py's and
    its network the numpy transcription at every decision state reached."""
    import random

    from .test_native_fuzz import random_instance

    rng, nrng = random.Random(5), np.random.default_rng(5)
    net = _random_file(tmp_path / "g.npz", nrng, 6, 2)
    checked, wide = 0, 0
    for i in range(150):
        inst = random_instance(rng, i)
        inst.clauses = []
        if not inst.binary:
            continue
        c = compile_instance(inst)
        sup = graph.supports(c)
        rec = _States(limit=10)
        Solver(inst, heuristic="learned", scorer=rec, top_k=rng.choice([1, 2, 8]), node_limit=50).solve()
        for words, weights, cands, x, dom in rec.states:
            want = graph.state_graph(sup, dom, weights, cands)
            g = _native.state_graph(c.native, words, weights, cands)
            nodes, edges, adj = _dense(g, inst.n)
            np.testing.assert_array_equal(adj, want["adj"])
            np.testing.assert_allclose(nodes, want["nodes"], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(edges, want["edges"], rtol=1e-5, atol=1e-5)
            got = np.asarray(net.native.score(c.native, words, weights, cands, x))
            ref = _numpy_net(net.arrays, want, x, cands)
            assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max()), i
            checked += 1
            wide += c.W > 1
    assert checked >= 100 and wide >= 10, (checked, wide)


def score_digest(tmp_dir) -> str:
    """sha256 of the native graph scorer's scores (float64 bytes) at live states of three instances, called in an
    interleaved order, plus a native learned search's counters: equal digests = bitwise the same arithmetic (widths
    8, 16, 32 and 64 take the fixed-width kernels, 8-32 also several rows at a time, 24 the general loop).
    test_native_sanitizers.py compares the build without the AVX2 clones against the installed one with it."""
    import hashlib
    from pathlib import Path

    rng = np.random.default_rng(23)
    nets = [_random_file(Path(tmp_dir) / "d16.npz", rng, 16, 2, (64, 64)),
            _random_file(Path(tmp_dir) / "d24.npz", rng, 24, 2, (24, 12)),
            _random_file(Path(tmp_dir) / "d8.npz", rng, 8, 2, (32, 8)),
            _random_file(Path(tmp_dir) / "d32.npz", rng, 32, 1, (64, 16))]
    insts = [generate("rb", "medium", 7, 0, {}), generate("coloring", "small", 4, 0, {}), generate("rb", "small", 9, 0, {})]
    per = [(compile_instance(i).native, _live_states(i, limit=25)) for i in insts]
    h = hashlib.sha256()
    for k in range(25):
        for c, states in per:
            if k < len(states):
                words, weights, cands, x, _ = states[k]
                for net in nets:
                    h.update(np.asarray(net.native.score(c, words, weights, cands, x), np.float64).tobytes())
    for net in nets:
        r = Solver(insts[0], heuristic="learned", scorer=net, top_k=8, max_depth=None, node_limit=3000).solve()
        h.update(repr((r.status, r.stats.nodes, r.stats.backtracks, r.stats.model_calls)).encode())
    return h.hexdigest()


def test_reused_support_counts_give_the_scores_of_a_first_call(tmp_path):
    """A call reuses the support counts of constraints whose two domains are those of an earlier call on the same
    instance (per thread, keyed by Compiled.uid). Scores after runs of calls on the states of two instances of the
    same shape are bitwise those of a first call on a fresh thread (nothing cached)."""
    import threading

    rng = np.random.default_rng(4)
    net = _random_file(tmp_path / "g.npz", rng, 16, 2, (64, 64))
    insts = [generate("rb", "medium", 2, 0, {}), generate("rb", "medium", 3, 0, {})]
    compiled = [compile_instance(i).native for i in insts]
    states = [_live_states(i, limit=30, node_limit=2000) for i in insts]
    # runs of one instance's states (a search's consecutive states share most domains), then the other's, then
    # back, out of order and repeated
    order = [(a, k) for a in (0, 1) for k in range(len(states[a]))] + [(0, 9), (0, 3), (0, 3), (1, 20), (0, 0)]
    warm = [np.asarray(net.native.score(compiled[a], *states[a][k][:4])) for a, k in order]

    def cold(a, k, out):
        out.append(np.asarray(net.native.score(compiled[a], *states[a][k][:4])))

    distinct = 0
    for (a, k), got in zip(order, warm):
        out = []
        t = threading.Thread(target=cold, args=(a, k, out))
        t.start()
        t.join()
        np.testing.assert_array_equal(got, out[0])
        distinct += len(set(np.round(got, 6))) > 1
    assert len(order) >= 40 and distinct >= 20  # real, varied scores, not a constant
