"""A real multi-node cluster on this machine (head + worker raylets, token auth) running the quick pipeline as
a Ray Job submitted with JobSubmissionClient; a request without the token is refused."""
import json
import os
import time
import urllib.error
import urllib.request

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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("ray-logs")
    c = local_cluster.start(workers=1, cpus=1, log_dir=str(logs))
    yield c
    c.stop()


def _client(c):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(c.dashboard_url, headers={"Authorization": f"Bearer {c.token}"})


def test_two_nodes_are_alive(cluster):
    assert local_cluster.alive_nodes(cluster) == 2


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


def test_quick_pipeline_as_a_ray_job_spreads_over_both_nodes(cluster, tmp_path):
    from ray.job_submission import JobStatus

    client = _client(cluster)
    runs = tmp_path / "runs"  # on this machine every node sees the same filesystem (as with NFS on a cluster)
    entry = " ".join(["python -m jobs.pipeline --config configs/quick.yaml", f"run.root={runs}", "run.name=job",
                      *(f"'{o}'" for o in TINY)])
    job = client.submit_job(entrypoint=entry, runtime_env={
        "working_dir": str(REPO), "excludes": ["runs/", ".venv/", ".git/", "wandb/", "**/__pycache__/"],
        "env_vars": {"WANDB_MODE": "disabled", "RAY_PIPELINE_WANDB_MODE": "disabled",
                     "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}})
    deadline = time.time() + 1200
    status = None
    while time.time() < deadline:
        status = client.get_job_status(job)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            break
        time.sleep(3)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    assert "[jobs.run]" in logs and "run directory:" in logs
    run = runs / "job"
    m = json.loads((run / "manifest.json").read_text())
    assert all(m["stages"][s]["status"] == "done" for s in ("generate", "train", "export", "evaluate", "report"))
    assert (run / "models" / "student" / "model.onnx").exists() and (run / "reports" / "report.md").exists()
    # the data stage really ran on both nodes: each instance records the node that built it
    nodes = set(pq.read_table(run / "datasets" / "main" / "timings.parquet")["node_id"].to_pylist())
    assert len(nodes) == 2, nodes
    assert os.environ.get("RAY_ADDRESS") is None  # the test itself never joined the cluster
