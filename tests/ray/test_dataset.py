"""The generate stage on the session's local Ray: determinism, contents, quarantine, nothing lost."""
import json

import pyarrow.parquet as pq
import pytest

from ray_pipeline import atomic
from ray_pipeline.cli import main
from ray_pipeline.data.dataset import DETERMINISTIC_FILES, read_manifest, read_states
from ray_pipeline.features import FEATURE_VERSION, INPUT_FEATURES

from ..conftest import CONFIGS

pytestmark = pytest.mark.ray

TINY = [
    "data.generate.families=[{family: rb, sizes: [small], count: 4}, {family: ksat, sizes: [small], count: 3},"
    " {family: coloring, sizes: [small], count: 3}]",
    "data.generate.heldout=[{family: rb, sizes: [medium], count: 2}]",
    "data.augment.factor=2", "data.label.states_per_instance=3", "data.label.top_k=6", "data.label.node_budget=300",
]


def _generate(root, name, *extra):
    return main(["generate", str(CONFIGS / "quick.yaml"), f"run.root={root}", f"run.name={name}", *TINY, *extra])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("runs")
    assert _generate(root, "a") == 0
    assert _generate(root, "b") == 0
    return root


def test_same_config_and_seed_give_byte_identical_files(two_runs):
    a, b = two_runs / "a" / "datasets" / "main", two_runs / "b" / "datasets" / "main"
    for name in DETERMINISTIC_FILES:
        assert atomic.sha256_file(a / name) == atomic.sha256_file(b / name), name


def test_dataset_contents(two_runs):
    d = two_runs / "a" / "datasets" / "main"
    m = read_manifest(d)
    assert m["feature_version"] == FEATURE_VERSION and m["input_features"] == list(INPUT_FEATURES)
    assert m["counts"]["instances"] == 4 * 2 + 3 * 2 + 3 * 2 + 2 and m["counts"]["errors"] == 0
    assert 1.0 < m["expansion_factor"] <= 2.0
    assert len(m["norm"]["input"]["mean"]) == len(INPUT_FEATURES)
    splits = {sp: read_states(d, sp) for sp in ("train", "val", "test", "heldout")}
    assert splits["train"].num_rows > 0 and splits["heldout"].num_rows > 0
    bases = {sp: set(t["base_id"].to_pylist()) for sp, t in splits.items()}
    assert not bases["train"] & bases["val"] and not bases["train"] & bases["test"] and not bases["val"] & bases["test"]
    assert all("medium" in b for b in bases["heldout"])
    meta = pq.read_schema(d / "states_train.parquet").metadata
    assert json.loads(meta[b"input_features"]) == list(INPUT_FEATURES)
    row = splits["train"].slice(0, 1).to_pylist()[0]
    assert len(row["features"]) == row["n_cands"] == len(row["costs"]) and len(row["features"][0]) == len(INPUT_FEATURES)
    assert row["costs"][row["best"]] == min(row["costs"]) and min(row["costs"]) < max(row["costs"])
    inst = pq.read_table(d / "instances.parquet")
    assert set(inst["status"].to_pylist()) <= {"SAT", "UNSAT", "UNKNOWN"}
    assert pq.read_table(d / "decisions.parquet").num_rows >= inst.num_rows
    for f in ("report.md", "report.json", "counts.png", "labels.png", "features.png"):
        assert (d / "report" / f).stat().st_size > 0
    rep = json.loads((d / "report" / "report.json").read_text())
    assert rep["instances"]["valid_pct"] == 100.0 and rep["time_s"]["label_cpu"] > 0


def test_rerun_is_skipped_by_the_manifest(two_runs, capsys):
    assert _generate(two_runs, "a") == 0
    assert "generate skipped" in capsys.readouterr().out


def test_quarantine_below_and_above_the_error_bound(two_runs, capsys):
    before = {n: atomic.sha256_file(two_runs / "a" / "datasets" / "main" / n) for n in DETERMINISTIC_FILES}
    # above the bound: the stage fails, names the failing instances, and the old dataset survives untouched
    code = _generate(two_runs, "a", "debug.fail_instance_every=4", "data.max_error_rate=0.05")
    err = capsys.readouterr().err
    assert code == 1 and "data.max_error_rate" in err and "injected failure" in err and "seed" in err
    after = {n: atomic.sha256_file(two_runs / "a" / "datasets" / "main" / n) for n in DETERMINISTIC_FILES}
    assert before == after
    # under the bound: it finishes and the errors table holds each failed instance with its seed
    assert _generate(two_runs, "q", "debug.fail_instance_every=4", "data.max_error_rate=0.5") == 0
    errors = pq.read_table(two_runs / "q" / "datasets" / "main" / "errors.parquet").to_pylist()
    assert len(errors) == 22 // 4  # every 4th of the 22 instances
    assert all(e["step"] == "generate" and e["seed"] > 0 and "injected" in e["message"] for e in errors)


@pytest.mark.timeout(300)  # without the crash journal Ray Data retries a deterministic crash forever: a hang
@pytest.mark.parametrize("per_block", [16, 2])  # 2 blocks; 12 blocks, so one is queued behind the crash
def test_a_crashing_worker_is_quarantined_with_the_instance_seed(two_runs, per_block):
    from ray_pipeline.data import steps

    # ordinal 5 = the 6th instance spec; its worker dies with SIGSEGV while tracing it (as a core crash would)
    name = f"crash-{per_block}"
    assert _generate(two_runs, name, "debug.segfault_instance=5", "data.max_error_rate=0.5",
                     f"data.instances_per_block={per_block}") == 0
    d = two_runs / name / "datasets" / "main"
    errors = pq.read_table(d / "errors.parquet").to_pylist()
    assert [(e["ordinal"], e["step"]) for e in errors] == [(5, "trace")]
    e = errors[0]
    assert "worker process died" in e["message"] and "native solver core" in e["message"]
    spec = steps.instance_specs(read_config_data(), 0)[5]
    assert e["instance_id"] == spec["instance_id"]
    assert e["seed"] == steps.derive_seed(spec["base_seed"], spec["family"], spec["size"], spec["index"])
    # everything else is there, identical to the run without the crash
    a = pq.read_table(two_runs / "a" / "datasets" / "main" / "instances.parquet")
    c = pq.read_table(d / "instances.parquet")
    assert c.num_rows == a.num_rows - 1 and spec["instance_id"] not in c["instance_id"].to_pylist()
    for f in ("decisions.parquet", "states_train.parquet"):  # the rows of the instances around it are whole
        ids = pq.read_table(two_runs / "a" / "datasets" / "main" / f, columns=["instance_id"])["instance_id"]
        assert pq.read_table(d / f).num_rows == sum(i != spec["instance_id"] for i in ids.to_pylist())
    assert not [p for p in (two_runs / name / "datasets").iterdir() if p.name.startswith(".")]  # no leftovers


def read_config_data():
    from ray_pipeline.config import load_config

    return load_config(CONFIGS / "quick.yaml", TINY).data
