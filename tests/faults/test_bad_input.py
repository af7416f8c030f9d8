"""Bad input and broken files: each refused with an error naming the file (or key) and the reason, nothing lost."""
import json
import os
import pickle
import signal
import subprocess
import re
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ray_pipeline import atomic
from ray_pipeline.cli import main
from ray_pipeline.data.dataset import DETERMINISTIC_FILES
from ray_pipeline.inference import ModelError, OnnxScorer
from ray_pipeline.models import io as model_io
from ray_pipeline.paths import RunPaths
from ray_pipeline.problems import InstanceError, read_cnf, read_col, read_instance

from ..conftest import CONFIGS, REPO
from .conftest import TINY, _copy_dataset, wait_for

pytestmark = pytest.mark.faults

FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
DIMACS_LINES = st.sampled_from(["c x", "p cnf 3 2", "p cnf 0 0", "p cnf -1 2", "p cnf 3", "p edge 4 3",
                                "p edge 4 3 x", "p col 2 1", "e 1 2", "e 2 2", "e 1 9", "e 1", "1 -2 0", "3 0",
                                "-4 0", "0", "1 2", "x y 0", "%", "", "  ", "n 1 3", "q", "p cnf 99999999999 1"])


def _only_parse_errors(fn, path):
    try:
        fn(path)
    except InstanceError as e:
        assert str(path) in str(e)


@FUZZ
@given(st.lists(DIMACS_LINES, max_size=12))
def test_fuzz_dimacs_line_soup(tmp_path, lines):
    p = tmp_path / "f.cnf"
    p.write_text("\n".join(lines))
    _only_parse_errors(read_cnf, p)
    _only_parse_errors(lambda q: read_col(q, 3), p)


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_bytes_cnf_col_json(tmp_path, data):
    for suffix in (".cnf", ".col", ".json"):
        p = tmp_path / f"f{suffix}"
        p.write_bytes(data)
        _only_parse_errors(lambda q: read_instance(q, colors=3), p)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-5, 70) | st.text(max_size=5),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=20)


@FUZZ
@given(st.fixed_dictionaries({"format": st.just("ray_pipeline.instance"), "version": st.just(1)},
                             optional={"domains": JSON_VALUES, "binary": JSON_VALUES, "clauses": JSON_VALUES,
                                       "params": JSON_VALUES, "seed": JSON_VALUES, "meta": JSON_VALUES}))
def test_fuzz_structured_json(tmp_path, doc):
    p = tmp_path / "f.json"
    p.write_text(json.dumps(doc))
    _only_parse_errors(read_instance, p)


def test_loading_never_executes_a_pickle(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "model.pt"
    with open(bad, "wb") as f:
        pickle.dump({"weight": Evil()}, f)
    with pytest.raises(model_io.ModelError, match="model.pt: cannot load as a weights-only state dict"):
        model_io.load_state(bad)
    torch.save({"weight": Evil()}, bad)
    with pytest.raises(model_io.ModelError, match="weights-only"):
        model_io.load_state(bad)
    assert not marker.exists()


def test_onnx_files_that_are_not_scorers_are_refused(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "junk.onnx").write_bytes(os.urandom(256))
    for name in ("empty.onnx", "junk.onnx", "missing.onnx"):
        with pytest.raises(ModelError, match=name):
            OnnxScorer(tmp_path / name)
    import onnx
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])])
    for kind, error in ((None, "wrong.onnx: no model kind in its metadata"),
                        ("student", r"wrong.onnx: a student model takes \[batch, 34\], this file has inputs"),
                        ("cost", "wrong.onnx: a cost model is not a variable scorer"),
                        ("critic", "wrong.onnx: unknown model kind 'critic'")):
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        if kind:
            helper.set_model_props(m, {"kind": kind})
        onnx.save(m, tmp_path / "wrong.onnx")
        with pytest.raises(ModelError, match=error):
            OnnxScorer(tmp_path / "wrong.onnx")


def test_checkpoint_from_another_config_is_refused(tmp_path):
    from ray_pipeline.train import loop

    net = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(net.parameters())
    spec = {"format": "ray_pipeline.model", "kind": "teacher", "train_key": "aaaa", "dataset_hash": "d",
            "feature_version": model_io.FEATURE_VERSION}
    loop._save_checkpoint(tmp_path, net, None, opt, {"epoch": 1}, spec)
    with pytest.raises(model_io.ModelError, match="model.json: train_key is 'aaaa', expected 'bbbb'"):
        loop._load_checkpoint(tmp_path, dict(spec, train_key="bbbb"), net, None, opt)
    with pytest.raises(model_io.ModelError, match="built for features"):
        (tmp_path / "model.json").write_text(json.dumps(dict(spec, feature_version="v0")))
        loop._load_checkpoint(tmp_path, spec, net, None, opt)


def test_corrupt_or_missing_dataset_files_are_refused_by_name(tmp_path):
    from ray_pipeline.data import dataset as ds_lib

    (tmp_path / "states_train.parquet").write_bytes(b"PAR1" + os.urandom(300))
    with pytest.raises(ds_lib.DatasetError, match="states_train.parquet: unreadable Parquet"):
        ds_lib.read_states(tmp_path, "train")
    with pytest.raises(ds_lib.DatasetError, match="states_val.parquet: missing dataset file"):
        ds_lib.read_states(tmp_path, "val")
    with pytest.raises(ds_lib.DatasetError, match="manifest.json: missing dataset manifest"):
        ds_lib.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(ds_lib.DatasetError, match="manifest.json: not valid JSON"):
        ds_lib.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "ray_pipeline.dataset", "feature_version": "v0"}))
    with pytest.raises(ds_lib.DatasetError, match="dataset has features 'v0'"):
        ds_lib.read_manifest(tmp_path)


@pytest.mark.ray
@pytest.mark.slow
def test_damaged_dataset_is_noticed_and_rebuilt_identically(root, caplog):
    paths = _copy_dataset(root, "trunc")
    f = paths.dataset / "states_train.parquet"
    f.write_bytes(f.read_bytes()[:200])  # truncated behind the manifest's back
    assert main(["generate", str(CONFIGS / "quick.yaml"), f"run.root={root}", "run.name=trunc", *TINY]) == 0
    assert "outputs changed or disappeared on disk" in caplog.text
    base = RunPaths.of(root, "base").dataset
    for name in DETERMINISTIC_FILES:
        assert atomic.sha256_file(base / name) == atomic.sha256_file(paths.dataset / name), name


@pytest.mark.ray
def test_impossible_resources_fail_before_any_work(tmp_path, ray_session, capsys):
    code = main(["train", str(CONFIGS / "quick.yaml"), f"run.root={tmp_path}", "ray.num_cpus=2",
                 "train.num_workers=8"])
    err = capsys.readouterr().err
    assert code == 2 and "train.num_workers x train.cpus_per_worker = 4 CPUs > ray.num_cpus = 2" in err
    code = main(["train", str(CONFIGS / "quick.yaml"), f"run.root={tmp_path}", "train.num_workers=6",
                 "train.cpus_per_worker=1"])  # joins the session's 2-CPU Ray: checked against the cluster
    err = capsys.readouterr().err
    assert code == 2 and "6 CPUs, but the cluster has 2 CPUs" in err
    assert not (tmp_path / "quick" / "datasets").exists()
    code = main(["tune", str(CONFIGS / "tune.yaml"), f"run.root={tmp_path}", "ray.include_dashboard=false"])
    assert code == 2 and "ray.include_dashboard" in capsys.readouterr().err


@pytest.mark.ray
@pytest.mark.slow
def test_driver_killed_during_the_dataset_stage_then_rerun_gives_the_clean_files(root, ray_session):
    cmd = [sys.executable, "-m", "ray_pipeline.cli", "generate", str(CONFIGS / "quick.yaml"), f"run.root={root}",
           "run.name=killgen", *TINY, "--address", ray_session.address]
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    paths = RunPaths.of(root, "killgen")

    def some_but_not_all_instances_built():
        assert p.poll() is None, "the driver ended before it was killed"
        text = paths.log.read_text() if paths.log.exists() else ""
        done = [tuple(map(int, m)) for m in re.findall(r"generate: (\d+)/(\d+) instances", text)]
        return any(d < n for d, n in done)

    # Ray Data has handed the driver its first block and is still building the others: kill the driver there
    wait_for("the first built block in the run's log", some_but_not_all_instances_built, timeout=600)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    assert json.loads(paths.manifest.read_text())["stages"]["generate"]["status"] == "running"
    assert not (paths.dataset / "manifest.json").exists()  # no half dataset under the final name
    q = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert q.returncode == 0, q.stdout[-2000:] + q.stderr[-2000:] + paths.log.read_text()[-3000:]
    base = RunPaths.of(root, "base").dataset
    for name in DETERMINISTIC_FILES:
        assert atomic.sha256_file(base / name) == atomic.sha256_file(paths.dataset / name), name
    assert not [x for x in paths.run.joinpath("datasets").iterdir() if x.name.startswith(".")]  # temp dirs cleaned


def test_unusable_run_storage_fails_before_any_work(tmp_path, capsys, monkeypatch):
    """A relative path, and a bucket that does not exist on a real S3-API server (moto on localhost)."""
    from moto.server import ThreadedMotoServer

    code = main(["run", str(CONFIGS / "quick.yaml"), f"run.root={tmp_path}", "run.storage=relative/runs"])
    assert code == 2 and "run.storage: 'relative/runs' is a relative path" in capsys.readouterr().err
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(k, "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        uri = f"s3://no-such-bucket/runs?endpoint_override={host}:{port}&scheme=http"
        code = main(["train", str(CONFIGS / "quick.yaml"), f"run.root={tmp_path}", f"run.storage={uri}"])
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert code == 2 and "run.storage: cannot write to 's3://no-such-bucket/runs'" in err and "not found" in err
    assert not (tmp_path / "quick" / "manifest.json").exists()  # nothing started, nothing written
