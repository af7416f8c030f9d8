"""`ray-pipeline ui`: a local web app over a run root -- the Control Center (every run, its stages and models,
side-by-side comparison) and the Model Explorer (a model's card, live solves against dom/wdeg, the root
decision, the cost estimate, an embedding view and a drift check).

Why aiohttp: it is a well-kept async web library that this project already installs (ray[default] depends on
it, pinned in requirements/constraints.txt), so the app adds no dependency; FastAPI would add FastAPI,
Starlette, uvicorn and python-multipart for the same handful of routes. Pages are plain server-rendered HTML
(every value escaped) with a few lines of JS and inline SVG for the chart: nothing is fetched from a CDN.

Safety and load: binds 127.0.0.1 by default; bound anywhere else it demands a token (query `?token=`, then a
cookie, or `Authorization: Bearer`). Uploads are capped (`--max-upload`, 413 with a page). Solves and drift
checks run in a small process pool (spawned, so a long solve neither blocks the event loop nor other requests)
with a node and a time limit each, capped by the server. A bad file shows the reader's message (file:line);
any other failure shows a short error page and is logged, never a stack trace in the page.
"""
from __future__ import annotations

import asyncio
import html
import json
import logging
import multiprocessing
import secrets
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlencode

from aiohttp import web

from .. import learned_setting
from ..config import SIZES
from ..errors import ModelError
from ..kinds import KINDS
from ..paths import RunPaths
from . import explore, runs

log = logging.getLogger("ray_pipeline.ui")

LOOPBACK = ("127.0.0.1", "localhost", "::1")
FAMILIES = ("rb", "ksat", "coloring", "nqueens", "sudoku")


@dataclass
class Settings:
    root: Path
    host: str = "127.0.0.1"
    port: int = 8766
    token: Optional[str] = None  # required when host is not loopback
    max_upload: int = 2 * 1024 * 1024
    node_limit: int = 20_000  # default per solve
    time_limit: float = 10.0
    max_node_limit: int = 200_000  # what a request may ask for at most
    max_time_limit: float = 60.0
    workers: int = 2
    store: Optional[Path] = None  # uploaded / generated instances; a temp dir by default
    cache: dict[str, Any] = field(default_factory=dict)


class BadRequest(Exception):
    """A request the app refuses with a message for the user (HTTP 400 unless status says otherwise)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------------------------ HTML helpers
def e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return e(v)


def fixed(v: Any) -> str:
    """Ratios and accuracies: three decimals, as the README and the report print them."""
    return "–" if v is None else f"{float(v):.3f}"


def ci(v: Any) -> str:
    return f"[{fixed(v[0])}, {fixed(v[1])}]" if isinstance(v, (list, tuple)) and len(v) == 2 else ""


def size(b: Any) -> str:
    return "–" if b is None else f"{b / 1024:.1f} KB"


CSS = """
body{font-family:system-ui,sans-serif;margin:1.2em 2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 7px;text-align:left;
font-size:14px}th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums}
nav a{margin-right:1em}.running{color:#b36b00;font-weight:bold}.failed{color:#b00020;font-weight:bold}
.done{color:#1b7f3b}.error{background:#fde8e8;border:1px solid #e99;padding:.6em 1em;white-space:pre-wrap}
.ok{background:#e8f6ec;border:1px solid #9c9;padding:.6em 1em}.chosen{background:#fff4c2}
.side{display:flex;gap:2em;flex-wrap:wrap}.side>div{flex:1;min-width:420px;overflow-x:auto}form{margin:.4em 0}
pre{background:#f7f7f7;padding:.6em;overflow:auto;max-height:30em}small{color:#666}
"""

JS = """
// one small script: say "solving..." while a solve is on its way (the page itself is server-rendered)
document.querySelectorAll('form.busy').forEach(f => f.addEventListener('submit', () => {
  const b = f.querySelector('button'); if (b) { b.disabled = true; b.textContent = 'working…'; }
}));
"""


def page(title: str, body: str, status: int = 200) -> web.Response:
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)} · ray_pipeline</title>"
           f"<style>{CSS}</style></head><body><nav><a href='/'>Control Center</a><a href='/explore'>Model "
           f"Explorer</a></nav><h1>{e(title)}</h1>{body}<script>{JS}</script></body></html>")
    return web.Response(text=doc, content_type="text/html", status=status)


def error_page(message: str, status: int = 400) -> web.Response:
    return page("Error", f"<div class='error' id='error'>{e(message)}</div>", status)


def link(path: str, **q: Any) -> str:
    q = {k: v for k, v in q.items() if v is not None}
    return e(path + ("?" + urlencode(q) if q else ""))


# ------------------------------------------------------------------------------------------ Control Center
def _stage_rows(info: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{e(s['name'])}</td><td class='{e(s['status'])}'>{e(s['status'])}</td>"
        f"<td class='n'>{num(s['seconds'])}</td><td>{e(s['started'])}</td><td>{e(s['finished'])}</td>"
        f"<td>{e((s['error'] or '')[:200])}</td></tr>" for s in info["stages"])
    return ("<table><tr><th>stage</th><th>status</th><th>seconds</th><th>started</th><th>finished</th>"
            f"<th>error</th></tr>{rows}</table>")


def _model_rows(info: dict[str, Any]) -> str:
    run = info["name"]
    rows = []
    for m in info["models"]:
        mname = m["name"]
        card_url, curves_url = link(f"/files/{run}/models/{mname}/card.md"), link(f"/files/{run}/models/{mname}/curves.png")
        files = [f"<a href='{card_url}'>card</a>"] if m["card"] else []
        if m["curves"]:
            files.append(f"<a href='{curves_url}'>curves</a>")
        explore_url = link("/explore", model=f"{run}/{mname}")
        explore_link = f"<a href='{explore_url}'>explore</a>" if m["kind"] in KINDS and KINDS[m["kind"]].scorer \
            else ""
        hp = ", ".join(f"{k}={v}" for k, v in (m["hparams"] or {}).items() if not isinstance(v, dict))
        rows.append(
            f"<tr data-model='{e(m['name'])}'><td>{e(m['name'])}</td><td>{e(m['kind'])}</td>"
            f"<td class='n'>{num(m['params'])}</td><td><small>{e(hp)}</small></td>"
            f"<td class='n' data-k='top1'>{fixed(m['top1'])}</td><td>{e(m['deploy'])}</td>"
            f"<td class='n'>{size(m['fp32_bytes'])}</td><td class='n'>{size(m['int8_bytes'])}</td>"
            f"<td class='n'>{num(m['fp32_latency_us'])}</td><td class='n'>{num(m['int8_latency_us'])}</td>"
            f"<td>{' '.join(files)} {explore_link}</td></tr>")
    return ("<table><tr><th>model</th><th>kind</th><th>params</th><th>hparams</th><th>top-1 (test)</th>"
            "<th>deployed</th><th>FP32</th><th>INT8</th><th>FP32 µs/decision</th><th>INT8 µs/decision</th>"
            f"<th>files</th></tr>{''.join(rows)}</table>" if rows else "<p>No trained models yet.</p>")


def _ratio_rows(info: dict[str, Any]) -> str:
    if not info["ratios"]:
        return "<p>No speedup evaluation yet.</p>"
    rows = "".join(
        f"<tr data-split='{e(r['split'])}'><td>{e(r['split'])}</td><td class='n'>{num(r['instances'])}</td>"
        f"<td class='n' data-k='node_ratio'>{fixed(r['node_ratio'])}</td><td>{ci(r['node_ci'])}</td>"
        f"<td class='n' data-k='time_ratio'>{fixed(r['time_ratio'])}</td><td>{ci(r['time_ci'])}</td></tr>"
        for r in info["ratios"])
    return ("<table><tr><th>split</th><th>instances</th><th>node ratio (learned / dom-wdeg)</th><th>95% CI</th>"
            f"<th>time ratio</th><th>95% CI</th></tr>{rows}</table><small>geometric means over instances; below "
            "1 favours the learned heuristic, and only an interval wholly below 1 supports that claim</small>")


def _ran(info: dict[str, Any]) -> str:
    m = info.get("learned_model")
    return f" (<span data-k='learned_model'>{e(m)}</span>)" if m else ""


def _run_section(info: dict[str, Any]) -> str:
    run = info["name"]
    links = []
    if info["report"]:
        links.append(f"<a href='{link('/files/' + run + '/reports/report.md')}'>report.md</a>")
    links += [f"<a href='{link('/files/' + run + '/' + p)}'>{e(p.split('/')[-1])}</a>" for p in info["plots"]]
    tb = (f"<p>TensorBoard logdir: <code>{e(info['tensorboard'])}</code> "
          f"(<code>tensorboard --logdir {e(info['tensorboard'])}</code>)</p>" if info["tensorboard"] else "")
    notes = "".join(f"<div class='error'>{e(n)}</div>" for n in info["notes"])
    return (f"<section id='run-{e(run)}'><h2>{e(run)} <span class='{e(info['status'])}' data-k='status'>"
            f"{e(info['status'])}</span></h2><p><small>{e(info['dir'])} · created {e(info['created'])} · "
            f"updated {e(info['updated'])} · commit {e(info['git_commit'])} · config {e(info['config_hash'])}"
            f"</small></p>{notes}<h3>Stages</h3>{_stage_rows(info)}<h3>Models</h3>{_model_rows(info)}"
            f"<h3>Learned heuristic{_ran(info)} vs dom/wdeg</h3>{_ratio_rows(info)}<p>{' · '.join(links)}</p>{tb}</section>")


def _stage_list(info: dict[str, Any]) -> str:
    return ", ".join(f"{x['name']}:{x['status']}" for x in info["stages"])


async def control_center(request: web.Request) -> web.Response:
    s: Settings = request.app["settings"]
    names = runs.run_names(s.root)
    if not names:
        return page("Control Center", f"<p>No runs under <code>{e(s.root)}</code> yet "
                                      "(<code>ray-pipeline run configs/quick.yaml</code>).</p>")
    infos = [runs.run_info(s.root, n) for n in names]
    summary = "".join(
        f"<tr><td><a href='#run-{e(i['name'])}'>{e(i['name'])}</a></td><td class='{e(i['status'])}'>"
        f"{e(i['status'])}</td><td>{e(_stage_list(i))}</td>"
        f"<td>{e(i['updated'])}</td></tr>" for i in infos)
    def opts(selected: int) -> str:
        return "".join(f"<option{' selected' if i == selected else ''}>{e(n)}</option>" for i, n in enumerate(names))

    compare = (f"<form action='/compare' method='get'>Compare <select name='a'>{opts(0)}</select> with "
               f"<select name='b'>{opts(1)}</select> <button>compare</button></form>" if len(names) > 1 else "")
    body = (f"<p>Run root <code>{e(s.root)}</code>: {len(names)} run(s).</p><table><tr><th>run</th><th>status</th>"
            f"<th>stages</th><th>updated</th></tr>{summary}</table>{compare}"
            + "".join(_run_section(i) for i in infos))
    return page("Control Center", body)


def _compare_value(info: dict[str, Any], key: str) -> Any:
    kind, _, field_ = key.partition(".")
    if kind == "stage":
        return next((s["seconds"] for s in info["stages"] if s["name"] == field_), None)
    if kind == "ratio":
        split, _, what = field_.partition(".")
        r = next((r for r in info["ratios"] if r["split"] == split), None)
        return None if r is None else (f"{fixed(r[what])} {ci(r[what.replace('ratio', 'ci')])}")
    m = next((m for m in info["models"] if m["name"] == kind), None)
    return None if m is None else m.get(field_)


async def compare(request: web.Request) -> web.Response:
    s: Settings = request.app["settings"]
    a, b = request.query.get("a", ""), request.query.get("b", "")
    names = runs.run_names(s.root)
    for n in (a, b):
        if n not in names:
            raise BadRequest(f"unknown run {n!r}; runs under {s.root}: {', '.join(names) or 'none'}", 404)
    ia, ib = runs.run_info(s.root, a), runs.run_info(s.root, b)
    keys = [f"stage.{x['name']}" for x in ia["stages"]]
    present = {m["name"] for m in ia["models"] + ib["models"]}  # an optional kind only where a run has it
    keys += [f"{k}.{f}" for k in runs.MODEL_KINDS if k in present or k in KINDS
             for f in ("params", "top1", "deploy", "fp32_bytes", "int8_bytes", "fp32_latency_us", "int8_latency_us")]
    keys += [f"ratio.{r['split']}.{w}" for r in ia["ratios"] for w in ("node_ratio", "time_ratio")]
    rows = []
    for k in keys:
        va, vb = _compare_value(ia, k), _compare_value(ib, k)
        diff = " class='chosen'" if va != vb else ""
        rows.append(f"<tr{diff}><td>{e(k)}</td><td class='n'>{num(va)}</td><td class='n'>{num(vb)}</td></tr>")
    cfg_a, cfg_b = _flatten(ia["config"]), _flatten(ib["config"])
    cfg_rows = "".join(f"<tr class='chosen'><td>{e(k)}</td><td>{e(cfg_a.get(k))}</td><td>{e(cfg_b.get(k))}</td></tr>"
                       for k in sorted(set(cfg_a) | set(cfg_b)) if cfg_a.get(k) != cfg_b.get(k))
    body = (f"<table><tr><th></th><th>{e(a)} <span class='{e(ia['status'])}'>{e(ia['status'])}</span></th>"
            f"<th>{e(b)} <span class='{e(ib['status'])}'>{e(ib['status'])}</span></th></tr>{''.join(rows)}</table>"
            f"<h3>Config differences</h3><table><tr><th>key</th><th>{e(a)}</th><th>{e(b)}</th></tr>"
            f"{cfg_rows or '<tr><td colspan=3>none</td></tr>'}</table>"
            f"<div class='side'><div>{_run_section(ia)}</div><div>{_run_section(ib)}</div></div>")
    return page(f"Compare {a} and {b}", body)


def _flatten(d: Any, prefix: str = "") -> dict[str, str]:
    if not isinstance(d, dict):
        return {prefix: json.dumps(d, sort_keys=True)}
    out: dict[str, str] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


_CONTENT_TYPES = {".png": "image/png", ".md": "text/plain; charset=utf-8", ".json": "application/json",
                  ".csv": "text/plain; charset=utf-8", ".txt": "text/plain; charset=utf-8"}


async def run_file(request: web.Request) -> web.StreamResponse:
    """A file the pipeline wrote in a run directory: reports, plots, model cards (read-only, no listing)."""
    s: Settings = request.app["settings"]
    run, rel = request.match_info["run"], request.match_info["path"]
    base = RunPaths.of(s.root, run).run
    target = (base / rel).resolve()
    if not target.is_relative_to(base.resolve()) or run not in runs.run_names(s.root):
        raise BadRequest(f"{run}/{rel}: not a file of a run", 404)
    if target.suffix not in _CONTENT_TYPES or not target.is_file():
        raise BadRequest(f"{run}/{rel}: no such report, plot or card", 404)
    return web.FileResponse(target, headers={"Content-Type": _CONTENT_TYPES[target.suffix]})


# ------------------------------------------------------------------------------------------ Model Explorer
@dataclass
class Model:
    run: str
    name: str
    dir: Path
    run_dir: Path
    spec: dict[str, Any]
    scorer_file: Path
    setting: Any  # learned_setting.Chosen: the setting stored with the model (or the defaults), for the card


def _model(s: Settings, key: str) -> Model:
    from .. import drift

    run, _, name = key.partition("/")
    known = [f"{r}/{m}" for r, m in runs.explorable_models(s.root)]
    if key not in known:
        raise BadRequest(f"unknown model {key!r}; exported scorers under {s.root}: {', '.join(known) or 'none'}",
                         404)
    ref = drift.resolve_model(RunPaths.of(s.root, run).model(name))
    assert ref.scorer_file is not None  # explorable_models lists only exported ones
    try:
        setting = learned_setting.choose(learned_setting.stored_in(ref.spec, str(ref.dir / "model.json")), {})
    except ModelError as err:
        raise BadRequest(str(err), 400) from None
    return Model(run, name, ref.dir, ref.run, ref.spec, ref.scorer_file, setting)


@dataclass
class Stored:
    path: Path
    colors: Optional[int]
    label: str
    created: float


def _store(request: web.Request) -> dict[str, Stored]:
    return request.app["instances"]


def _put(request: web.Request, name: str, data: bytes, colors: Optional[int], label: str) -> str:
    store = _store(request)
    while len(store) >= 200:  # keep the store bounded: forget the oldest
        old = min(store, key=lambda k: store[k].created)
        shutil.rmtree(store.pop(old).path.parent, ignore_errors=True)
    tok = secrets.token_hex(8)
    d = request.app["store_dir"] / tok
    d.mkdir(parents=True)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name)[:80] or "instance"
    path = d / safe
    path.write_bytes(data)
    store[tok] = Stored(path, colors, label, time.time())
    return tok


def _instance(request: web.Request, tok: str) -> Stored:
    st = _store(request).get(tok)
    if st is None:
        raise BadRequest(f"unknown instance {tok!r} (uploads last as long as the server; upload it again)", 404)
    return st


def _int_param(q: Any, key: str, default: int, lo: int, hi: int) -> int:
    raw = q.get(key)
    if raw in (None, ""):
        return default
    try:
        v = int(raw)
    except ValueError:
        raise BadRequest(f"{key} must be an integer, got {raw!r}") from None
    if not lo <= v <= hi:
        raise BadRequest(f"{key} must be in {lo}..{hi}, got {v}")
    return v


def _float_param(q: Any, key: str, default: float, lo: float, hi: float) -> float:
    raw = q.get(key)
    if raw in (None, ""):
        return default
    try:
        v = float(raw)
    except ValueError:
        raise BadRequest(f"{key} must be a number, got {raw!r}") from None
    if not lo < v <= hi:
        raise BadRequest(f"{key} must be in ({lo}, {hi}], got {v}")
    return v


async def _in_pool(request: web.Request, fn: Any, *args: Any, timeout: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    request.app["busy"] += 1  # reported by /healthz: solves and drift checks in flight
    try:
        return await asyncio.wait_for(loop.run_in_executor(request.app["pool"], fn, *args), timeout)
    except asyncio.TimeoutError:
        raise BadRequest(f"the worker did not answer within {timeout:.0f} s", 503) from None
    finally:
        request.app["busy"] -= 1


async def upload(request: web.Request) -> web.Response:
    s: Settings = request.app["settings"]
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise BadRequest(f"upload larger than the limit of {s.max_upload:,} bytes", 413) from None
    model = str(form.get("model", ""))
    _model(s, model)
    f = form.get("file")
    if not isinstance(f, web.FileField) or not f.filename:
        raise BadRequest("no file in the upload (field 'file': a DIMACS .cnf, .col or project .json)")
    data = f.file.read(s.max_upload + 1)  # the request cap leaves room for the other fields: check the file
    if len(data) > s.max_upload:
        raise BadRequest(f"{f.filename}: upload larger than the limit of {s.max_upload:,} bytes", 413)
    if not data:
        raise BadRequest(f"{f.filename}: empty file")
    colors = None
    if str(form.get("colors", "")).strip():
        colors = _int_param(form, "colors", 0, 1, 4096)
    suffix = Path(f.filename).suffix.lower()
    if suffix not in (".cnf", ".col", ".json"):
        raise BadRequest(f"{f.filename}: unknown format (use a .cnf, .col or .json file)")
    if suffix == ".col" and colors is None:
        raise BadRequest(f"{f.filename}: a .col graph needs the number of colours")
    tok = _put(request, f.filename, data, colors, f.filename)
    q = {"model": model, "instance": tok, "solve": 1}
    for k in ("node_limit", "time_limit"):
        if str(form.get(k, "")).strip():
            q[k] = str(form[k])
    raise web.HTTPSeeOther(link("/explore", **q).replace("&amp;", "&"))


async def generate(request: web.Request) -> web.Response:
    from ..problems import dumps
    from ..problems import generate as gen

    s: Settings = request.app["settings"]
    q = request.query
    model = q.get("model", "")
    _model(s, model)
    family, size_ = q.get("family", ""), q.get("size", "")
    if family not in FAMILIES or size_ not in SIZES:
        raise BadRequest(f"family must be one of {FAMILIES} and size one of {SIZES}, got {family!r}, {size_!r}")
    index = _int_param(q, "index", 0, 0, 10**9)
    seed = _int_param(q, "seed", 0, 0, 2**31)
    try:
        inst = gen(family, size_, index, seed)
    except ValueError as err:
        raise BadRequest(str(err)) from None
    tok = _put(request, f"{inst.name}-seed{seed}.json", dumps(inst).encode(), None,
               f"generated {family}/{size_} index {index} seed {seed}")
    limits = {k: q[k] for k in ("node_limit", "time_limit") if q.get(k)}
    raise web.HTTPSeeOther(link("/explore", model=model, instance=tok, solve=1, **limits).replace("&amp;", "&"))


def _model_picker(s: Settings, current: Optional[str]) -> str:
    opts = "".join(f"<option{' selected' if f'{r}/{m}' == current else ''}>{e(r)}/{e(m)}</option>"
                   for r, m in runs.explorable_models(s.root))
    return (f"<form method='get' action='/explore'>Model <select name='model'>{opts or '<option>none</option>'}"
            "</select> <button>open</button></form>")


def _forms(s: Settings, m: Model) -> str:
    fam = "".join(f"<option>{f}</option>" for f in FAMILIES)
    sizes = "".join(f"<option>{z}</option>" for z in SIZES)
    key = e(f"{m.run}/{m.name}")
    limits = (f"nodes <input name='node_limit' size='7' value='{s.node_limit}'> seconds "
              f"<input name='time_limit' size='4' value='{s.time_limit:g}'>")
    return (
        "<h2>Instance</h2><div class='side'><div>"
        f"<form class='busy' method='post' action='/upload' enctype='multipart/form-data'>"
        f"<input type='hidden' name='model' value='{key}'>Upload DIMACS .cnf / .col / JSON "
        f"(≤ {s.max_upload // 1024} KB) <input type='file' name='file'> colours for .col "
        f"<input name='colors' size='3'> {limits} <button>upload and solve</button></form></div><div>"
        f"<form class='busy' method='get' action='/generate'><input type='hidden' name='model' value='{key}'>"
        f"Generate <select name='family'>{fam}</select> <select name='size'>{sizes}</select> index "
        f"<input name='index' size='4' value='0'> seed <input name='seed' size='6' value='0'> "
        "<button>generate and solve</button></form></div></div>")


def _card(m: Model) -> str:
    card = m.dir / "card.md"
    text = card.read_text(errors="replace") if card.is_file() else "(no model card: run the export stage)"
    spec = m.spec
    families = None
    try:
        families = json.loads((m.run_dir / "manifest.json").read_text())["config"]["train"]["families"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        pass
    meta = [("kind", spec.get("kind")), ("feature version", spec.get("feature_version")),
            ("features", len(spec.get("features") or [])), ("training families", ", ".join(families) if families else "all"),
            ("dataset hash", spec.get("dataset_hash")), ("hparams", json.dumps(spec.get("hparams"))),
            ("deployed file", m.scorer_file.name),
            ("evaluated setting", m.setting.stored.describe() if m.setting.stored else
             "not stored in this model (exported before models carried it): the live solve uses the defaults "
             f"top-{m.setting.values['top_k']}, depth {m.setting.values['max_depth']}, min margin "
             f"{m.setting.values['min_margin']:g}; re-export it to store the setting it was evaluated with")]
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in meta)
    return f"<div class='side'><div><table>{rows}</table></div><div><pre>{e(text)}</pre></div></div>"


def _solve_table(r: dict[str, Any]) -> str:
    cols = ("learned", "dom-wdeg")
    fields = (("status", "status"), ("nodes", "nodes"), ("backtracks", "backtracks"), ("time_s", "time (s)"),
              ("model_calls", "model calls"), ("model_time_s", "model time (s)"), ("feature_time_s", "feature time (s)"))
    rows = []
    for key, label in fields:
        cells = []
        for c in cols:
            v = r[c]["status"] if key == "status" else r[c]["stats"].get(key)
            cells.append(f"<td class='n' id='{e(c)}-{e(key)}'>{e(v) if key == 'status' else num(v, 4)}</td>")
        rows.append(f"<tr><th>{e(label)}</th>{''.join(cells)}</tr>")
    cost = r.get("cost")
    if cost and "error" not in cost:
        rows.append(f"<tr><th>cost predictor estimate</th><td></td><td class='n' id='cost-nodes'>"
                    f"{num(cost['nodes'])} nodes, {num(cost['time_s'])} s</td></tr>")
    elif cost:
        rows.append(f"<tr><th>cost predictor</th><td colspan='2'>{e(cost['error'])}</td></tr>")
    else:
        rows.append("<tr><th>cost predictor</th><td colspan='2'>no cost model in this run</td></tr>")
    lim = r["limits"]
    return (f"<table id='solves'><tr><th></th><th>learned</th><th>dom/wdeg</th></tr>{''.join(rows)}</table>"
            f"<small>{e(r['setting']['propagation'].upper())}; limits {lim['node_limit']:,} nodes, "
            f"{lim['time_limit']:g} s each; <span id='setting'>{e(r['setting_text'])}</span></small>")


def _root_table(root: Optional[dict[str, Any]]) -> str:
    if not root:
        return "<p>The model was not called (the instance was decided by propagation, or one candidate).</p>"
    names = root["feature_names"]
    labels = root.get("labels") or [f"#{i}" for i in range(len(root["scores"]))]
    head = "".join(f"<th><small>{e(n)}</small></th>" for n in names)
    rows = []
    for i, (lab, sc, feats) in enumerate(zip(labels, root["scores"], root["features"])):
        cls = " class='chosen'" if i == root["chosen"] else ""
        rows.append(f"<tr{cls}><td>{i}</td><td>{e(lab)}</td><td class='n' data-k='score'>{num(sc, 4)}</td>"
                    + "".join(f"<td class='n'>{num(v, 3)}</td>" for v in feats) + "</tr>")
    return ("<div style='overflow-x:auto'><table id='root'><tr><th>dom/wdeg rank</th><th>variable</th>"
            f"<th>score</th>{head}</tr>{''.join(rows)}</table></div><small>Root decision: the top candidates "
            "by dom/wdeg (rank 0 = dom/wdeg's choice), the raw features the model got and its scores; the "
            "highlighted row is the variable the learned heuristic branched on.</small>")


def _drift_table(d: dict[str, Any]) -> str:
    if "error" in d:
        return f"<div class='error' id='drift-error'>{e(d['error'])}</div>"
    cls = "ok" if d["in_distribution"] else "error"
    rows = "".join(
        f"<tr{' class=chosen' if r['outside'] else ''}><td>{e(r['group'])}</td><td>{e(r['feature'])}</td>"
        f"<td class='n'>{num(r['ks'])}</td><td class='n'>{num(r['p'])}</td><td class='n'>{num(r['n_new'])}</td>"
        f"<td>[{num(r['train_min'])}, {num(r['train_max'])}]</td><td>[{num(r['new_min'])}, {num(r['new_max'])}]</td>"
        "</tr>" for r in sorted(d["features"], key=lambda r: -r["ks"]))
    return (f"<div class='{cls}' id='drift-verdict'>{e(d['verdict'])}</div><small>KS per feature vs the "
            f"model's training data; flagged when p &lt; {num(d['p_threshold'])} (α {d['alpha']} / features) and "
            f"KS ≥ {d['min_stat']}. {d['rows']['candidate']} candidate rows.</small><table><tr><th>group</th>"
            "<th>feature</th><th>KS</th><th>p</th><th>rows</th><th>training range</th><th>this instance</th></tr>"
            f"{rows}</table>")


def _svg_scatter(emb: dict[str, Any]) -> str:
    if "error" in emb:
        return f"<p>{e(emb['error'])}</p>"
    pts = emb["points"]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    w, h, pad = 480, 360, 20

    def sx(v: float) -> float:
        return pad + (v - x0) / ((x1 - x0) or 1) * (w - 2 * pad)

    def sy(v: float) -> float:
        return h - pad - (v - y0) / ((y1 - y0) or 1) * (h - 2 * pad)

    dots = "".join(f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='3' fill='{'#1b7f3b' if b else '#d9480f'}' "
                   f"fill-opacity='0.6'/>" for (x, y), b in zip(pts, emb["best"]))
    n_best = sum(emb["best"])
    return (f"<svg id='embedding' width='{w}' height='{h}' style='border:1px solid #ccc'>{dots}</svg><br><small>"
            f"PCA of the student's last hidden layer ({emb['hidden']} units) for dom/wdeg's candidate in "
            f"{emb['states']} training states; PC1/PC2 explain {emb['explained'][0]:.0%} / "
            f"{emb['explained'][1]:.0%}. Green: dom/wdeg's choice was a best probe ({n_best}); orange: it was not "
            f"({len(pts) - n_best}).</small>")


async def _embedding(request: web.Request, m: Model) -> dict[str, Any]:
    s: Settings = request.app["settings"]
    key = f"emb:{m.dir}:{m.spec.get('dataset_hash')}"
    if key not in s.cache:
        loop = asyncio.get_running_loop()
        try:  # torch in a thread of this process: done once per model, then cached
            s.cache[key] = await loop.run_in_executor(None, explore.embedding, m.dir, m.run_dir)
        except Exception as err:  # noqa: BLE001 -- the view is optional; say why it is missing
            log.exception("embedding of %s", m.dir)
            s.cache[key] = {"error": f"embedding unavailable: {type(err).__name__}: {str(err)[:200]}"}
    return s.cache[key]


async def explorer(request: web.Request) -> web.Response:
    s: Settings = request.app["settings"]
    q = request.query
    key = q.get("model")
    if not key:
        models = runs.explorable_models(s.root)
        if not models:
            return page("Model Explorer", f"<p>No exported scorer under <code>{e(s.root)}</code>.</p>")
        key = f"{models[0][0]}/{models[0][1]}"
    m = _model(s, key)
    parts = [_model_picker(s, key), f"<h2>{e(key)}</h2>", _card(m), _forms(s, m)]
    tok = q.get("instance")
    if tok:
        st = _instance(request, tok)
        node_limit = _int_param(q, "node_limit", s.node_limit, 1, s.max_node_limit)
        time_limit = _float_param(q, "time_limit", s.time_limit, 0.0, s.max_time_limit)
        display_root = str(st.path.parent) + "/"
        parts.append(f"<p>Instance: <b id='instance-label'>{e(st.label)}</b> "
                     f"<a href='{link('/explore', model=key, instance=tok, solve=1, node_limit=node_limit, time_limit=time_limit)}'>solve</a> · "
                     f"<a href='{link('/explore', model=key, instance=tok, drift=1)}'>drift check</a></p>")
        if q.get("solve"):
            r = await _in_pool(request, explore.solve_pair, str(st.path), st.colors, str(m.scorer_file), node_limit,
                               time_limit, str(m.run_dir), display_root, timeout=2 * time_limit + 60)
            if "error" in r:
                return page("Model Explorer", "".join(parts) + f"<div class='error' id='error'>{e(r['error'])}</div>",
                            400)
            inst = r["instance"]
            parts.append(f"<p><small>{e(inst['name'])}: family {e(inst['family'])}, {inst['n']} variables, "
                         f"{inst['binary']} binary constraints, {inst['clauses']} clauses</small></p>"
                         f"<h2>Solves</h2>{_solve_table(r)}<h2>Root decision</h2>{_root_table(r['root'])}")
        if q.get("drift"):
            d = await _in_pool(request, explore.drift_one, str(st.path), st.colors, str(m.dir), display_root,
                               timeout=120)
            parts.append(f"<h2>Drift check</h2>{_drift_table(d)}")
    if explore.has_embedding(m.spec.get("kind")):
        parts.append(f"<h2>Embedding</h2>{_svg_scatter(await _embedding(request, m))}")
    return page("Model Explorer", "".join(parts))


# ------------------------------------------------------------------------------------------ app
@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as err:
        return error_page(str(err), err.status)
    except web.HTTPRequestEntityTooLarge:
        s: Settings = request.app["settings"]
        return error_page(f"upload larger than the limit of {s.max_upload:,} bytes", 413)
    except web.HTTPException as err:
        if err.status >= 400:
            return error_page(f"{err.status} {err.reason}: {request.path}", err.status)
        raise
    except Exception:  # noqa: BLE001 -- log the trace for the operator, show none to the browser
        log.exception("%s %s", request.method, request.path_qs)
        return error_page("internal error; the server log has the details", 500)


def token_middleware(token: str) -> Any:
    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.query.get("token") or request.cookies.get("rp_token") or \
            request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not given or not secrets.compare_digest(given, token):
            return error_page("this server needs its token: open the URL it printed (…?token=…)", 401)
        resp = await handler(request)
        if request.query.get("token"):
            resp.set_cookie("rp_token", token, httponly=True, samesite="Strict")
        return resp
    return check


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "busy": request.app["busy"]})


def make_app(s: Settings) -> web.Application:
    mws = [errors] + ([token_middleware(s.token)] if s.token else [])
    app = web.Application(middlewares=mws, client_max_size=s.max_upload + 64 * 1024)  # + multipart overhead
    app["settings"] = s
    app["instances"] = {}
    app["busy"] = 0

    async def startup(app: web.Application) -> None:
        app["store_dir"] = Path(s.store) if s.store else Path(tempfile.mkdtemp(prefix="ray-pipeline-ui-"))
        # spawn, not fork: the server holds an event loop and threads a forked child must not inherit
        app["pool"] = ProcessPoolExecutor(max_workers=s.workers, mp_context=multiprocessing.get_context("spawn"))

    async def cleanup(app: web.Application) -> None:
        app["pool"].shutdown(wait=False, cancel_futures=True)
        if not s.store:
            shutil.rmtree(app["store_dir"], ignore_errors=True)

    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    app.router.add_get("/", control_center)
    app.router.add_get("/compare", compare)
    app.router.add_get("/files/{run}/{path:.+}", run_file)
    app.router.add_get("/explore", explorer)
    app.router.add_post("/upload", upload)
    app.router.add_get("/generate", generate)
    app.router.add_get("/healthz", healthz)
    return app


# ------------------------------------------------------------------------------------------ command
def run(args: Any) -> int:
    import os
    import sys

    root = Path(args.root).expanduser().resolve()
    if not root.is_dir():
        print(f"error: --root {root}: no such directory (run the pipeline first, or give run.root)", file=sys.stderr)
        return 2
    if not 0 < args.port < 65536 or args.workers < 1 or args.max_upload_kb < 1 or args.node_limit < 1 or \
            args.time_limit <= 0:
        print("error: --port, --workers, --max-upload-kb, --node-limit and --time-limit must be positive",
              file=sys.stderr)
        return 2
    token = args.token or os.environ.get("RAY_PIPELINE_UI_TOKEN")
    if args.host not in LOOPBACK and not token:
        token = secrets.token_urlsafe(24)
    s = Settings(root=root, host=args.host, port=args.port, token=token,
                 max_upload=args.max_upload_kb * 1024, node_limit=args.node_limit, time_limit=args.time_limit,
                 max_node_limit=max(200_000, args.node_limit), max_time_limit=max(60.0, args.time_limit),
                 workers=args.workers)
    url = f"http://{args.host}:{args.port}/" + (f"?token={s.token}" if s.token else "")
    print(f"ray-pipeline ui: {root} on {url}", flush=True)
    web.run_app(make_app(s), host=args.host, port=args.port, print=None, access_log=None)
    return 0
