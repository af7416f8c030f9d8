"""A multi-node Ray cluster on one machine: one head and N worker nodes as separate `ray start` processes,
each with its own CPUs, token authentication on, dashboard on 127.0.0.1.

    python -m ray_pipeline.local_cluster start --workers 1 --cpus 1     # prints the addresses; Ctrl-C stops
    (cluster/local_multinode.sh wraps this)

Every node runs `ray start --block` in its own process group, so stopping kills exactly these nodes (never
`ray stop`, which would also stop any other Ray on the machine). Ports are picked free, so it can run next to
another local Ray.
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


_handed_out: set[int] = set()


def free_port() -> int:
    """A port free now and not handed out before by this process: the kernel may give the same just-released
    port to consecutive bind(0) calls, and two nodes' agents on one port kill the second node at start-up."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _ray_bin() -> str:
    exe = Path(sys.executable).parent / "ray"
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


@dataclass
class LocalCluster:
    gcs_address: str
    dashboard_url: str
    token: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """Environment for clients of this cluster (CLI, JobSubmissionClient, drivers)."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "RAY_ADDRESS": self.dashboard_url}

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self.procs.clear()


def _node_args(cpus: float) -> list[str]:
    return [f"--num-cpus={cpus:g}", "--num-gpus=0", "--node-ip-address=127.0.0.1",
            f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
            "--disable-usage-stats", "--block"]


def _wait_ready(url: str, token: str, timeout: float, procs: list[subprocess.Popen]) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a Ray node exited during start-up (exit codes {[p.poll() for p in procs]})")
        try:
            req = urllib.request.Request(f"{url}/api/version", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"Ray head at {url} not ready after {timeout:.0f} s")


def can_hide_dirs() -> bool:
    """True when this process may give a child its own mount namespace (Linux, CAP_SYS_ADMIN): see `start`."""
    import tempfile

    if not sys.platform.startswith("linux") or not shutil.which("unshare"):
        return False
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run(_hidden(["true"], [d]), capture_output=True)
    return r.returncode == 0


def _hidden(cmd: list[str], dirs: list[str]) -> list[str]:
    """`cmd` in a private mount namespace where each of `dirs` is an empty tmpfs: the node cannot see what
    the head writes there, as on a cluster without a shared filesystem."""
    import shlex

    mounts = " && ".join(f"mount -t tmpfs ray-pipeline-private {shlex.quote(d)}" for d in dirs)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f"{mounts} && exec {' '.join(shlex.quote(c) for c in cmd)}"]


def start(workers: int = 1, cpus: float = 1.0, head_cpus: float | None = None, token: str | None = None,
          timeout: float = 120.0, log_dir: str | None = None, hide_from_workers: list[str] | None = None
          ) -> LocalCluster:
    """`hide_from_workers`: directories the worker nodes see empty (their own tmpfs; needs `can_hide_dirs()`),
    to run a multi-node job the way it runs without a shared filesystem."""
    token = token or secrets.token_hex(32)
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    # Job entrypoints say `python`: on this machine that must be the interpreter Ray runs under, as on a cluster.
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    gcs, dash = free_port(), free_port()
    cluster = LocalCluster(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}", token)
    out = open(Path(log_dir) / "ray-nodes.log", "ab") if log_dir else subprocess.DEVNULL
    head = [_ray_bin(), "start", "--head", f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
            f"--ray-client-server-port={free_port()}", *_node_args(cpus if head_cpus is None else head_cpus)]
    try:
        cluster.procs.append(subprocess.Popen(head, env=env, stdout=out, stderr=out, start_new_session=True))
        _wait_ready(cluster.dashboard_url, token, timeout, cluster.procs)
        for _ in range(workers):
            cmd = [_ray_bin(), "start", f"--address={cluster.gcs_address}", *_node_args(cpus)]
            if hide_from_workers:
                cmd = _hidden(cmd, [str(Path(d).resolve()) for d in hide_from_workers])
            cluster.procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=out, start_new_session=True))
        _wait_nodes(cluster, 1 + workers, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def alive_nodes(cluster: LocalCluster) -> int:
    import json

    req = urllib.request.Request(f"{cluster.dashboard_url}/nodes?view=summary",
                                 headers={"Authorization": f"Bearer {cluster.token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        data = json.loads(r.read())
    return sum(1 for n in data["data"]["summary"] if n.get("raylet", {}).get("state") == "ALIVE")


def _wait_nodes(cluster: LocalCluster, n: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if alive_nodes(cluster) >= n:
                return
        except (OSError, KeyError, ValueError):
            pass
        if any(p.poll() is not None for p in cluster.procs):
            raise RuntimeError("a Ray worker node exited during start-up")
        time.sleep(0.5)
    raise TimeoutError(f"{n} Ray nodes not alive after {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ray_pipeline.local_cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["start"])
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cpus", type=float, default=1.0, help="CPUs of each worker node")
    p.add_argument("--head-cpus", type=float, default=None, help="CPUs of the head (default: --cpus)")
    a = p.parse_args(argv)
    c = start(a.workers, a.cpus, a.head_cpus)
    print(f"Ray cluster: {1 + a.workers} nodes, token auth on, dashboard {c.dashboard_url}\n"
          f"  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN={c.token}\n"
          f"  export RAY_ADDRESS={c.dashboard_url}     # for `ray job submit`\n"
          f"  ray-pipeline run configs/quick.yaml --address {c.gcs_address}   # or a driver that joins\n"
          "Ctrl-C stops every node of this cluster.", flush=True)
    try:
        while all(pr.poll() is None for pr in c.procs):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
