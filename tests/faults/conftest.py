"""Fixtures of the fault suite: one small dataset, built once, that each test copies into its own run."""
import json
import shutil

import pytest

from ray_pipeline.cli import main
from ray_pipeline.paths import RunPaths

from ..conftest import CONFIGS

TINY = [
    "data.generate.families=[{family: rb, sizes: [small], count: 5}, {family: ksat, sizes: [small], count: 3}]",
    "data.generate.heldout=[]", "data.augment.factor=2", "data.label.states_per_instance=4",
    "data.label.top_k=6", "data.label.node_budget=300", "train.teacher.hidden=16", "train.teacher.heads=2",
    "data.instances_per_block=2",  # several blocks: the kill test stops the driver between two of them
    "train.teacher.optim.epochs=4",
    # the faults exercised here live in the shared training loop; one model is enough to show each of them
    "train.models=[teacher]",
]


@pytest.fixture(scope="session")
def root(tmp_path_factory, ray_session):
    r = tmp_path_factory.mktemp("runs")
    assert main(["generate", str(CONFIGS / "quick.yaml"), f"run.root={r}", "run.name=base", *TINY]) == 0
    return r


def _copy_dataset(root, name):
    """A run that starts from the base run's finished dataset (same bytes, same manifest entry)."""
    src, dst = RunPaths.of(root, "base"), RunPaths.of(root, name)
    shutil.copytree(src.run / "datasets", dst.run / "datasets")
    m = json.loads(src.manifest.read_text())
    m["stages"] = {"generate": m["stages"]["generate"]}
    m["config"]["run"]["name"] = name
    dst.manifest.write_text(json.dumps(m))
    return dst




def wait_for(what: str, check, timeout: float, poll: float = 0.2):
    """Poll `check()` until it returns something truthy (returned) or fail after `timeout` s, naming `what`."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _field(obj, name):
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def wait_until_driver_reaped(pid: int, dashboard_url: str, timeout: float = 120.0) -> str:
    """The cluster has noticed that the driver process `pid` died and released what its job held: no live
    non-detached actor and no placement group of that job remains. Returns the job id."""
    from ray.util.state import list_actors, list_jobs, list_placement_groups

    address = f"http://{dashboard_url}"

    def dead_job():
        for j in list_jobs(address=address):
            info = _field(j, "driver_info")
            if info is not None and str(_field(info, "pid")) == str(pid) and _field(j, "status") != "RUNNING":
                return _field(j, "job_id")
        return None

    job_id = wait_for(f"the job of driver pid {pid} to be marked finished", dead_job, timeout)

    def released():
        pgs = [pg for pg in list_placement_groups(address=address, filters=[("creator_job_id", "=", job_id)])
               if pg.state in ("PENDING", "CREATED", "RESCHEDULING")]
        actors = [a for a in list_actors(address=address, filters=[("job_id", "=", job_id)], detail=True)
                  if a.state in ("ALIVE", "PENDING_CREATION", "RESTARTING", "DEPENDENCIES_UNREADY")
                  and not a.is_detached]
        return not pgs and not actors

    wait_for(f"job {job_id}'s actors and placement groups to be released", released, timeout, poll=0.5)
    return job_id
