"""The web app (`ray-pipeline ui`) and the drift command on the session's smoke run.

The server runs as a real subprocess on a free local port; pages are rendered by headless Chromium
(Debian's package, --dump-dom / --screenshot: no driver, no browser download) and their numbers are checked
against what the pipeline wrote and against `ray-pipeline solve --json` run as a subprocess.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from ray_pipeline.problems import generate, write_json

from ..conftest import BENCHMARKS

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # they read the session's smoke run

BIN = Path(sys.executable).parent
CNF = BENCHMARKS / "sat" / "uf20-01.cnf"  # SATLIB uf20-01, in the repository


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 60) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def post_file(base: str, filename: str, data: bytes, fields: dict[str, str]) -> tuple[int, str, str]:
    """multipart/form-data POST without following the redirect: (status, Location, body)."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 f'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    host, port = base.removeprefix("http://").rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    conn.request("POST", "/upload", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    r = conn.getresponse()
    out = (r.status, r.getheader("Location") or "", r.read().decode())
    conn.close()
    return out


def chromium(tmp: Path, *args: str) -> str:
    exe = shutil.which("chromium")
    if exe is None:
        why = "chromium not installed (make test installs Debian's chromium when run as root)"
        if os.environ.get("RAY_PIPELINE_REQUIRE_BROWSER") == "1":  # CI (.ci/run): a skip would hide the test
            pytest.fail(why)
        pytest.skip(why)
    profile = tmp / f"chromium-{uuid.uuid4().hex[:8]}"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,2400", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def cell(dom: str, ident: str) -> str:
    m = re.search(rf"id=\"{re.escape(ident)}\"[^>]*>([^<]*)<", dom)
    assert m, f"no element #{ident} in the page"
    return m.group(1).strip()


def as_int(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.fixture(scope="module")
def ui_root(smoke_run, tmp_path_factory) -> Path:
    """A copy of the smoke run (the app's drift cache must not touch the shared run) plus a second run whose
    evaluate stage is still running, as the pipeline leaves it mid-stage."""
    root = tmp_path_factory.mktemp("ui-root")
    skip = shutil.ignore_patterns("checkpoints", "wandb", "tensorboard")
    shutil.copytree(smoke_run.run, root / "smoke", ignore=skip)
    (root / "smoke" / "tensorboard").mkdir()
    shutil.copy(smoke_run.run.parent / "registry.sqlite", root / "registry.sqlite")
    shutil.copytree(root / "smoke", root / "smoke-b", ignore=shutil.ignore_patterns("reports", "evaluation"))
    m = json.loads((root / "smoke-b" / "manifest.json").read_text())
    m["run"] = "smoke-b"
    m["stages"]["evaluate"] = {"status": "running", "started": "2026-11-29T12:00:00+00:00"}
    m["stages"].pop("report", None)
    (root / "smoke-b" / "manifest.json").write_text(json.dumps(m))
    return root


def start(root: Path, *args: str, host: str = "127.0.0.1") -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    proc = subprocess.Popen([str(BIN / "ray-pipeline"), "ui", "--root", str(root), "--host", host, "--port",
                             str(port), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = proc.stdout.readline()  # "ray-pipeline ui: <root> on <url>", printed before it binds
    base = f"http://{host}:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return proc, base, first
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"ui exited {proc.returncode}: {first}{proc.stdout.read()}")
            time.sleep(0.1)  # polling the port, with a deadline
    proc.kill()
    raise AssertionError("ui did not listen within 60 s")


@pytest.fixture(scope="module")
def server(ui_root):
    proc, base, _ = start(ui_root, "--max-upload-kb", "16", "--node-limit", "20000", "--time-limit", "20")
    yield base
    proc.terminate()
    proc.wait(timeout=20)


def listening(port: int) -> set[str]:
    """Addresses listening on a TCP port, from /proc/net/tcp{,6} (Linux)."""
    out = set()
    for name in ("tcp", "tcp6"):
        f = Path("/proc/net") / name
        if not f.exists():
            continue
        for line in f.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:  # 0A = LISTEN
                out.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]) if len(addr) == 8 else addr)
    return out


def test_binds_loopback_and_elsewhere_needs_the_token(server, ui_root):
    if not Path("/proc/net/tcp").exists():
        pytest.skip("reads the listening sockets from /proc/net/tcp (Linux)")
    assert listening(int(server.rsplit(":", 1)[1])) == {"127.0.0.1"}
    # 127.0.0.2 is not the loopback address the app trusts: a token is made up, printed, and demanded
    proc, base, first = start(ui_root, host="127.0.0.2")
    try:
        token = re.search(r"\?token=(\S+)", first).group(1)
        status, body = get(base + "/")
        assert status == 401 and "needs its token" in body
        assert get(base + "/?token=wrong")[0] == 401
        status, body = get(f"{base}/?token={token}")
        assert status == 200 and "Control Center" in body
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_control_center_shows_runs_models_and_ratios(server, ui_root, smoke_run, tmp_path):
    dom = chromium(tmp_path, "--dump-dom", server + "/")
    chromium(tmp_path, f"--screenshot={tmp_path / 'control_center.png'}", server + "/")
    assert (tmp_path / "control_center.png").stat().st_size > 10_000
    run_a = dom[dom.index("id=\"run-smoke\""):dom.index("id=\"run-smoke-b\"")]
    run_b = dom[dom.index("id=\"run-smoke-b\""):]
    assert re.search(r"data-k=\"status\">done<", run_a) and re.search(r"data-k=\"status\">running<", run_b)
    summary = json.loads((smoke_run.models / "train_summary.json").read_text())
    student = re.search(r"data-model=\"student\">.*?data-k=\"top1\">([^<]+)<", run_a, re.S).group(1)
    assert float(student) == pytest.approx(summary["test"]["student"]["top1"], abs=5e-4)
    ev = json.loads((smoke_run.evaluation / "evaluation.json").read_text())["speedup"]["summary"]
    shown = re.search(r"data-split=\"heldout\">.*?data-k=\"node_ratio\">([^<]+)<", run_a, re.S).group(1)
    assert float(shown) == pytest.approx(ev["heldout"]["learned"]["geomean_node_ratio"], abs=5e-4)
    export = json.loads((smoke_run.models / "export_summary.json").read_text())
    assert f">{export['student']['deploy']}<" in run_a and "report.md" in run_a
    # the ratios name the model the evaluate stage ran (evaluate.learned.model, here the deployed student)
    assert f"data-k=\"learned_model\">student/{export['student']['deploy']}<" in run_a
    assert "No speedup evaluation yet" in run_b
    # the links serve what the pipeline wrote, and nothing outside a run directory
    status, report = get(server + "/files/smoke/reports/report.md")
    assert status == 200 and report == (smoke_run.reports / "report.md").read_text()
    assert get(server + "/files/smoke/models/student/card.md")[0] == 200
    assert get(server + "/files/smoke/..%2Fregistry.sqlite")[0] == 404
    assert get(server + "/files/smoke/manifest.json")[0] == 200
    dom = chromium(tmp_path, "--dump-dom", server + "/compare?a=smoke&b=smoke-b")
    chromium(tmp_path, f"--screenshot={tmp_path / 'compare.png'}", server + "/compare?a=smoke&b=smoke-b")
    assert "Compare smoke and smoke-b" in dom and "stage.evaluate" in dom


def test_explorer_upload_solve_matches_the_cli(server, ui_root, tmp_path):
    status, location, _ = post_file(server, CNF.name, CNF.read_bytes(), {"model": "smoke/student"})
    assert status == 303 and location.startswith("/explore?") and "solve=1" in location
    dom = chromium(tmp_path, "--dump-dom", server + location)
    chromium(tmp_path, f"--screenshot={tmp_path / 'explorer.png'}", server + location)
    assert (tmp_path / "explorer.png").stat().st_size > 10_000
    assert cell(dom, "instance-label") == CNF.name
    spec = json.loads((ui_root / "smoke" / "manifest.json").read_text())["config"]["evaluate"]["learned"]
    deployed = json.loads((ui_root / "smoke" / "models" / "export_summary.json").read_text())["student"]["deploy"]
    model = ui_root / "smoke" / "models" / "student" / deployed
    # no setting flags: the deployed file carries the evaluated setting, and both sides must run it
    assert json.loads((model.parent / "model.json").read_text())["learned_setting"]["top_k"] == spec["top_k"]
    assert f"top-{spec['top_k']} by dom/wdeg, model called to depth {spec['max_depth']}" in dom
    for heuristic, extra in (("learned", ["--model", str(model)]), ("dom-wdeg", [])):
        out = subprocess.run([str(BIN / "ray-pipeline"), "solve", str(CNF), "--heuristic", heuristic,
                              "--node-limit", "20000", "--time-limit", "20", "--json", *extra],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        cli = json.loads(out.stdout.strip().splitlines()[-1])
        assert cell(dom, f"{heuristic}-status") == cli["status"] == "SAT"
        for key in ("nodes", "backtracks", "model_calls"):
            assert as_int(cell(dom, f"{heuristic}-{key}")) == cli["stats"][key], (heuristic, key)
    assert as_int(cell(dom, "learned-model_calls")) >= 1
    # the root decision: one row per scored candidate (dom/wdeg's order), the highlighted one the model's pick
    root = dom[dom.index("id=\"root\""):]
    root = root[:root.index("</table>")]
    rows = re.findall(r"<tr( class=\"chosen\")?><td>(\d+)</td><td>(\d+)</td><td[^>]*data-k=\"score\">([^<]+)<", root)
    assert 2 <= len(rows) <= spec["top_k"] and [int(r[1]) for r in rows] == list(range(len(rows)))
    scores = [float(r[3]) for r in rows]
    first_max = scores.index(max(scores))
    chosen = [i for i, r in enumerate(rows) if r[0]]
    assert chosen == [first_max if scores[first_max] - scores[0] > spec["min_margin"] else 0]
    assert all(1 <= int(r[2]) <= 20 for r in rows)  # DIMACS variables, 1-based as `solve` prints them
    assert "cost-nodes" in dom and "<svg id=\"embedding\"" in dom and dom.count("<circle") >= 3


def test_generated_instance_and_drift_in_the_explorer(server, tmp_path):
    status, body = get(server + "/generate?model=smoke/student&family=rb&size=small&index=3&seed=0&x=1")
    assert status == 200 and "rb-small-00003" in body and "id='learned-nodes'" in body
    tok = re.search(r"instance=([0-9a-f]{16})", body).group(1)
    dom = chromium(tmp_path, "--dump-dom", f"{server}/explore?model=smoke/student&instance={tok}&drift=1")
    assert cell(dom, "drift-verdict") == "in distribution"  # a Model RB instance of the size the model trained on
    status, location, _ = post_file(server, CNF.name, CNF.read_bytes(), {"model": "smoke/student"})
    tok = re.search(r"instance=([0-9a-f]{16})", location).group(1)
    status, body = get(f"{server}/explore?model=smoke/student&instance={tok}&drift=1")
    assert status == 200 and "these features are outside what the model saw: " in body and "candidate:jw_score" in body


def test_refused_inputs(server, tmp_path):
    big = b"c " + b"x" * (17 * 1024) + b"\np cnf 1 1\n1 0\n"
    status, _, body = post_file(server, "big.cnf", big, {"model": "smoke/student"})
    assert status == 413 and "larger than the limit of 16,384 bytes" in body
    status, location, _ = post_file(server, "bad.cnf", b"p cnf 3 1\n1 -4 0\n", {"model": "smoke/student"})
    assert status == 303  # stored; the reader runs with the solve and names file and line
    status, body = get(server + location)
    assert status == 400 and "bad.cnf:2: literal -4 exceeds the 3 declared variables" in body
    assert "Traceback" not in body and "/tmp" not in body.split("id='error'")[1]
    status, _, body = post_file(server, "g.col", b"p edge 2 1\ne 1 2\n", {"model": "smoke/student"})
    assert status == 400 and "needs the number of colours" in body
    status, body = get(server + "/explore?model=smoke/nope")
    assert status == 404 and "unknown model &#x27;smoke/nope&#x27;" in body and "smoke/student" in body
    status, _, body = post_file(server, "a.cnf", CNF.read_bytes(), {"model": "other/student"})
    assert status == 404 and "unknown model" in body
    status, body = get(server + "/explore?model=smoke/student&instance=0123456789abcdef&solve=1")
    assert status == 404 and "unknown instance" in body
    status, body = get(server + location + "&node_limit=99999999")
    assert status == 400 and "node_limit must be in 1..200000" in body
    assert get(server + "/generate?model=smoke/student&family=nope&size=small")[0] == 400
    assert get(server + "/compare?a=smoke&b=missing")[0] == 404


def test_two_solves_at_once_do_not_block_the_page(server):
    """Two long solves in flight (Model RB n=35, 3 s per heuristic); meanwhile the Control Center answers."""
    urls = [f"{server}/generate?model=smoke/student&family=rb&size=large&index={i}&seed=7&node_limit=200000"
            f"&time_limit=3" for i in range(2)]
    results: list[tuple[int, str]] = []
    threads = [threading.Thread(target=lambda u=u: results.append(get(u, timeout=120))) for u in urls]
    for t in threads:
        t.start()
    deadline, both = time.monotonic() + 60, False
    while time.monotonic() < deadline and not both:  # poll until both solves are running in the pool
        both = json.loads(get(server + "/healthz")[1])["busy"] == 2
    assert both, "the two solves never ran at once"
    latencies = []
    while json.loads(get(server + "/healthz")[1])["busy"] == 2 and len(latencies) < 5:
        t1 = time.monotonic()
        status, body = get(server + "/", timeout=10)
        latencies.append(time.monotonic() - t1)
        assert status == 200 and "Control Center" in body
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 2 and all(s == 200 and "id='learned-nodes'" in b for s, b in results)
    assert len(latencies) >= 3 and max(latencies) < 1.5, latencies


def test_drift_command_verdicts(smoke_run, ui_root, tmp_path):
    """Fresh Model RB of the training size (indices never used by the run) is in distribution; a DIMACS CNF
    file is not; a missing model and a malformed file are bad input (exit 2)."""
    model = ui_root / "smoke" / "models" / "student"
    rb = []
    for i in range(6):
        inst = generate("rb", "small", 3_000_000 + i, 0)
        rb.append(str(write_json(inst, tmp_path / f"{inst.name}.json")))
    drift = [str(BIN / "ray-pipeline"), "drift", "--model", str(model), "--json"]
    out = subprocess.run([*drift, *rb], capture_output=True, text=True, timeout=300)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 0 and res["verdict"] == "in distribution", res["flagged"]
    assert res["rows"]["candidate"] > 20 and (model / "drift_summary.json").is_file()
    out = subprocess.run([*drift, str(CNF)], capture_output=True, text=True, timeout=300)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 1 and res["verdict"].startswith("these features are outside what the model saw")
    assert {"candidate:jw_score", "candidate:la_sat_frac"} <= set(res["flagged"])  # clause features an RB model never saw
    bad = tmp_path / "bad.cnf"
    bad.write_text("p cnf 2 1\n1 x 0\n")
    out = subprocess.run([*drift[:-1], str(bad)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and f"{bad}:2: literal must be an integer, got 'x'" in out.stderr
    out = subprocess.run([*drift[:3], str(tmp_path / "nope"), str(CNF)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "no such model" in out.stderr
