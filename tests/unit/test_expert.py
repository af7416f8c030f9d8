"""The expert heuristic (the labeller run online) and the probe definition it shares with the label step."""
import pytest

from ray_pipeline.problems import generate
from ray_pipeline.solver import Solver


class FirstDecision:
    """A Python tracer that keeps the first decision's variable and the state it was taken in."""

    def __init__(self):
        self.chosen = None

    def on_decision(self, solver, depth, chosen):
        if self.chosen is None:
            self.chosen = chosen
            self.dom, self.weights = solver.snapshot()
        return None

    def on_outcome(self, token, subtree, solved):
        pass


def _instances():
    return [generate("rb", "medium", i, 7, {}) for i in range(3)] + [generate("coloring", "small", 0, 7, {}),
                                                                      generate("ksat", "small", 1, 7, {})]


@pytest.mark.parametrize("inst", _instances(), ids=lambda i: i.name)
def test_probe_costs_are_separate_probe_searches(inst):
    """probe_costs(c) = nodes of a dom/wdeg search from the same state with c branched on first (budget+1 when
    over budget): the label step's definition before the probes moved into the core."""
    s = Solver(inst)
    cands = s.dom_wdeg_order(s.unassigned())[:6]
    budget = 40
    costs = s.probe_costs(cands, budget)
    expected = []
    for c in cands:
        r = Solver(inst, first_var=c, node_limit=budget).solve()
        expected.append(budget + 1 if r.status == "UNKNOWN" else r.stats.nodes)
    assert costs == expected
    assert s.stats.probes == len(cands)


@pytest.mark.parametrize("inst", _instances(), ids=lambda i: i.name)
def test_expert_branches_first_on_the_cheapest_probe(inst):
    budget = 500
    t = FirstDecision()
    r = Solver(inst, heuristic="expert", top_k=4, max_depth=0, probe_budget=budget, tracer=t).solve()
    root = Solver(inst, domains=t.dom, weights=t.weights)
    cands = root.dom_wdeg_order(root.unassigned())[:4]
    costs = root.probe_costs(cands, budget)
    assert t.chosen == cands[costs.index(min(costs))]  # first minimum: ties keep dom/wdeg's order
    assert r.stats.probes >= len(cands) and r.stats.probe_nodes >= sum(costs) - len(cands)
    assert r.status == Solver(inst).solve().status


def test_expert_with_one_candidate_is_dom_wdeg():
    for i in range(3):
        inst = generate("rb", "medium", i, 3, {})
        a = Solver(inst).solve()
        e = Solver(inst, heuristic="expert", top_k=1, probe_budget=50).solve()
        assert (e.status, e.stats.nodes) == (a.status, a.stats.nodes)


def test_expert_search_is_deterministic_and_saves_nodes_on_model_rb():
    """With probes as large as the searches, branching on the cheapest probe near the root takes fewer nodes
    than dom/wdeg on these instances (the ceiling the learned heuristic imitates)."""
    ratios = []
    for i in range(4):
        inst = generate("rb", "medium", 100 + i, 0, {})
        a = Solver(inst).solve()
        e1 = Solver(inst, heuristic="expert", top_k=8, max_depth=1, probe_budget=5000).solve()
        e2 = Solver(inst, heuristic="expert", top_k=8, max_depth=1, probe_budget=5000).solve()
        assert e1.status == a.status and e1.stats.nodes == e2.stats.nodes
        ratios.append(e1.stats.nodes / a.stats.nodes)
    assert sum(ratios) / len(ratios) < 1.0


def test_probe_budget_must_be_non_negative():
    inst = generate("rb", "small", 0, 0, {})
    with pytest.raises(ValueError, match="probe budget"):
        Solver(inst).probe_costs([0], -1)


def test_probes_after_a_timed_solve_do_not_inherit_its_deadline():
    """A solver stopped by its node limit, with a time limit long passed: probes from its state are the same as
    from a fresh solver on that state (the finished search's deadline once censored every probe)."""
    import time

    inst = generate("rb", "medium", 5, 0, {})
    s = Solver(inst, node_limit=30, time_limit=0.05)
    assert s.solve().status == "UNKNOWN"
    time.sleep(0.1)
    cands = s.dom_wdeg_order(s.unassigned())[:4]
    fresh = Solver(inst, domains=s.dom, weights=s.weights)
    assert s.probe_costs(cands, 2000) == fresh.probe_costs(cands, 2000)
    assert min(fresh.probe_costs(cands, 2000)) <= 2000


def test_expert_settings_are_refused_where_they_do_not_belong(capsys):
    from ray_pipeline.cli import main
    from ray_pipeline.config import ConfigError, load_config

    from ..conftest import BENCHMARKS, CONFIGS

    for key in ("data.trace.heuristic", "evaluate.baseline"):  # no model, no probes there
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(CONFIGS / "quick.yaml", [f"{key}=expert"])
    assert main(["solve", str(BENCHMARKS / "sat" / "uf20-01.cnf"), "--probe-budget", "10"]) == 2
    assert "--probe-budget is only used with --heuristic expert" in capsys.readouterr().err
    with pytest.raises(ValueError, match="probe_budget"):
        Solver(generate("rb", "small", 0, 0, {}), heuristic="expert", probe_budget=-1)


def test_solve_cli_expert_takes_the_config_defaults(capsys):
    import json

    from ray_pipeline.cli import main
    from ray_pipeline.config import ExpertSection

    from ..conftest import BENCHMARKS

    path = str(BENCHMARKS / "sat" / "uuf50-01.cnf")
    assert main(["solve", path, "--heuristic", "expert", "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stats"]
    from ray_pipeline.problems import read_instance

    want = Solver(read_instance(path), heuristic="expert", **ExpertSection().solver_kwargs()).solve().stats
    assert (got["nodes"], got["probes"], got["probe_nodes"]) == (want.nodes, want.probes, want.probe_nodes)
    assert main(["solve", path, "--heuristic", "expert", "--probe-budget", "7", "--max-depth", "0", "--json"]) == 0
    small = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stats"]
    assert small["probes"] < got["probes"] and small["probe_nodes"] <= 8 * small["probes"]
