"""A real multi-node cluster on this machine (head + worker raylets, token auth) running the quick pipeline as
a Ray Job submitted with JobSubmissionClient; a request without the token is refused.

The worker node runs in its own mount namespace where the run root is an empty tmpfs: like a second machine
without a shared filesystem, it cannot see what the driver (on the head) writes. What Ray workers share goes
through `run.storage`, an S3 bucket served on localhost by moto's S3-API server (no real S3 here)."""
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ray_pipeline import local_cluster

from ..conftest import REPO

pytestmark = [pytest.mark.multinode, pytest.mark.slow]

TINY = [
    "data.generate.families=[{family: rb, sizes: [small], count: 6}, {family: ksat, sizes: [small], count: 4}]",
    "data.generate.heldout=[{family: rb, sizes: [medium], count: 2}]", "data.augment.factor=2",
    "data.label.states_per_instance=3", "data.label.top_k=6", "data.label.node_budget=300",
    "train.teacher.hidden=16", "train.teacher.heads=2", "train.teacher.optim.epochs=2", "train.student.optim.epochs=2",
    "train.cost.optim.epochs=2", "evaluate.max_instances=2", "evaluate.node_limit=3000",
    "evaluate.heuristics=[mrv, dom-wdeg, learned]", "export.latency_calls=50", "export.parity_rows=32",
    "export.calibration_rows=16",
]


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs-on-the-head")


@pytest.fixture(scope="module")
def s3():
    """(URI options, endpoint) of an S3-API server on 127.0.0.1 that every node reaches."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"endpoint_override={host}:{port}&scheme=http&allow_bucket_creation=true"
    server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, runs):
    if not local_cluster.can_hide_dirs():
        pytest.skip("needs a private mount namespace (Linux, CAP_SYS_ADMIN) to hide the run root from the worker")
    logs = tmp_path_factory.mktemp("ray-logs")
    c = local_cluster.start(workers=1, cpus=1, log_dir=str(logs), hide_from_workers=[str(runs)])
    yield c
    c.stop()


def _client(c):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(c.dashboard_url, headers={"Authorization": f"Bearer {c.token}"})


def test_two_nodes_are_alive_and_the_worker_cannot_see_the_run_root(cluster, runs):
    assert local_cluster.alive_nodes(cluster) == 2
    (runs / "written-by-the-head").write_text("x")
    worker_pid = cluster.procs[1].pid  # `ray start` of the worker node (its raylet is a child, same namespace)
    mounts = Path(f"/proc/{worker_pid}/root{runs}")
    assert (runs / "written-by-the-head").exists() and not (mounts / "written-by-the-head").exists()


def test_requests_without_the_token_are_refused(cluster):
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(f"{cluster.dashboard_url}/api/jobs/", timeout=10)
    assert ei.value.code in (401, 403)
    bad = urllib.request.Request(f"{cluster.dashboard_url}/api/jobs/", headers={"Authorization": "Bearer wrong"})
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(bad, timeout=10)
    assert ei.value.code in (401, 403)
    from ray.job_submission import JobSubmissionClient
    with pytest.raises(Exception, match="(?i)401|unauthori|auth"):
        JobSubmissionClient(cluster.dashboard_url, headers={"Authorization": "Bearer wrong"}).list_jobs()


def test_quick_pipeline_as_a_ray_job_spreads_over_both_nodes(cluster, runs, s3, monkeypatch):
    import pyarrow.fs as pafs
    from ray.job_submission import JobStatus

    client = _client(cluster)
    storage = f"s3://pipeline-runs/shared?{s3}"
    entry = " ".join(["python -m jobs.pipeline --config configs/quick.yaml", f"run.root={runs}", "run.name=job",
                      f"'run.storage={storage}'", *(f"'{o}'" for o in TINY)])
    job = client.submit_job(entrypoint=entry, runtime_env={
        "working_dir": str(REPO), "excludes": ["runs/", ".venv/", ".git/", "wandb/", "**/__pycache__/"],
        "env_vars": {"WANDB_MODE": "disabled", "RAY_PIPELINE_WANDB_MODE": "disabled",
                     "RAY_DATA_DISABLE_PROGRESS_BARS": "1", **S3_ENV}})
    deadline = time.time() + 1200
    status = None
    while time.time() < deadline:
        status = client.get_job_status(job)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            break
        time.sleep(3)
    logs = client.get_job_logs(job)
    run_log = runs / "job" / "logs" / "run.log"  # the job's console shows one line per stage; the rest is here
    assert status == JobStatus.SUCCEEDED, logs[-4000:] + (run_log.read_text()[-4000:] if run_log.exists() else "")
    assert "[jobs.run]" in logs and "run directory:" in logs
    run = runs / "job"
    m = json.loads((run / "manifest.json").read_text())
    assert all(m["stages"][s]["status"] == "done" for s in ("generate", "train", "export", "evaluate", "report"))
    assert (run / "models" / "student" / "model.onnx").exists() and (run / "reports" / "report.md").exists()
    # the data stage really ran on both nodes: each instance records the node that built it
    nodes = set(pq.read_table(run / "datasets" / "main" / "timings.parquet")["node_id"].to_pylist())
    assert len(nodes) == 2, nodes
    # what the workers shared went through the bucket, not the head's disk
    fs, base = pafs.FileSystem.from_uri(storage)
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    stored = {i.path.split(f"{base}/job/", 1)[1] for i in fs.get_file_info(pafs.FileSelector(f"{base}/job",
                                                                                           recursive=True))}
    assert "datasets/main/states_train.parquet" in stored and "datasets/main/_COMPLETE" in stored
    for kind in ("teacher", "student", "cost"):
        assert any(p.startswith(f"checkpoints/{kind}-") and p.endswith("/model.pt") for p in stored), kind
    assert not (run / "checkpoints").exists()
    # and the finished run is archived there too, same layout (a RayJob's head disk goes away with its cluster)
    assert {"manifest.json", "reports/report.md", "models/student/model.onnx"} <= stored
    assert m["config"]["run"]["storage"] == storage
    assert os.environ.get("RAY_ADDRESS") is None  # the test itself never joined the cluster
