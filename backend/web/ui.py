"""The status page `GET /ui`: server-rendered HTML (no build step, no JavaScript), authenticated
like the API. Per project: the served version and its history, a learning curve, live accuracy
and drift, the head of the queue, recent and failed jobs, suspected label errors and the audit
trail. The RQ dashboard is mounted at `/rq` when workers run against a real Redis.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Flask, render_template, request
from markupsafe import Markup, escape
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from .. import monitor
from ..agreement import per_annotator
from ..config import Settings
from ..consensus import multi_label, votes_by_voter
from ..payload import InvalidPayload
from ..policy import policy_for
from ..state import audit
from ..state.connection import sentinel_addresses
from .admin import rules_of
from .api import runtime

ui = Blueprint("ui", __name__, template_folder="templates")
JOBS_SHOWN = 10


@ui.app_template_filter("when")
def format_time(value: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value)) if value else ""


@ui.get("/ui")
def status_page() -> str:
    rt = runtime()
    projects = sorted(set(rt.registry.projects()) | set(rt.store.projects()))
    chosen = request.args.get("project", type=int)
    if request.args.get("project") is not None and (chosen is None or chosen <= 0):
        raise InvalidPayload("project must be a positive integer")
    if chosen is None and projects:
        chosen = projects[0]
    return render_template(
        "status.html",
        projects=projects,
        project=project_view(chosen) if chosen else None,
        dashboard=not rt.settings.embedded,
        now=time.time(),
    )


def project_view(project: int) -> dict[str, Any]:
    """Everything the page shows about one project, read from the registry and Redis."""
    rt = runtime()
    history = rt.registry.history(project)
    state = monitor.status(rt.redis, rt.registry, project)
    lifetime = state["live"]["lifetime"]
    queue = rt.store.queue(project)
    return {
        "id": project,
        "pointer": rt.registry.pointer(project),
        "history": history[::-1],
        "curve": Markup(learning_curve(history, lifetime)),
        "state": state,
        "queue": queue,
        "queue_head": rt.store.queue_entries(project, 0, 10) if queue else [],
        "jobs": recent_jobs(project),
        "mislabels": rt.store.mislabels(project),
        "agreement": annotator_view(project),
        "rules": rules_of(project),
        "stability": (rt.store.stability(project) or [None])[-1],
        "events": audit.events(rt.redis, project, 30),
    }


def annotator_view(project: int) -> dict[str, Any]:
    """Per control: alpha and how the last train job resolved the tasks (its record), and each
    annotator's labels and leave-one-out agreement with a bar chart (computed from the votes)."""
    rt = runtime()
    history = rt.registry.history(project)
    last = (history[-1].get("consensus") if history else None) or {}
    multiple = multi_label(rt.store.label_config(project))
    trend = policy_for(rt.settings, rt.store.meta(project)).annotator_trend
    votes = rt.store.task_votes(project)
    controls = sorted({c for t in votes for v in t.votes for c, chosen in v.labels.items() if chosen})
    out: dict[str, Any] = {"method": last.get("method"), "controls": {}}
    for control in controls:
        voted = [(t.task, by) for t in votes if (by := votes_by_voter(t, control))]
        people = per_annotator(voted, control, control in multiple, trend)
        out["controls"][control] = {
            "alpha": (last.get("alpha") or {}).get(control),
            "tasks": (last.get("tasks") or {}).get(control, {}),
            "people": people,
            "chart": Markup(agreement_bars(people)),
        }
    return out


def agreement_bars(people: dict[str, dict[str, Any]], width: int = 480, row: int = 18) -> str:
    """An SVG bar per annotator: leave-one-out agreement (grey when there was nothing to compare)."""
    shown = list(people.items())[:30]
    height = row * len(shown) + 4
    bars = []
    for i, (name, figures) in enumerate(shown):
        value = figures.get("agreement")
        length = int((width - 170) * (value or 0))
        y = 2 + i * row
        bars.append(
            f'<text x="0" y="{y + 12}" font-size="11">{escape(name[:20])}</text>'
            f'<rect x="150" y="{y + 2}" width="{length}" height="{row - 6}" fill="{"#4a7" if value is not None else "#ccc"}"/>'
            f'<text x="{155 + length}" y="{y + 12}" font-size="11">{"n/a" if value is None else f"{value:.2f}"}</text>'
        )
    return f'<svg width="{width}" height="{height}" role="img" aria-label="agreement per annotator">{"".join(bars)}</svg>'


def recent_jobs(project: int) -> dict[str, list[dict[str, Any]]]:
    """The project's latest finished, failed and running jobs, from RQ's registries."""
    rt = runtime()
    queue = Queue(rt.settings.queue_name, connection=rt.redis, serializer=JSONSerializer)
    registries = {"running": queue.started_job_registry, "finished": queue.finished_job_registry, "failed": queue.failed_job_registry}
    mine = (f"retrain-{project}-", f"mislabels-{project}-")
    out: dict[str, list[dict[str, Any]]] = {}
    for name, registry in registries.items():
        ids = [i for i in registry.get_job_ids() if i.startswith(mine)][-JOBS_SHOWN:]
        jobs = [j for j in Job.fetch_many(ids, connection=rt.redis, serializer=JSONSerializer) if j is not None]
        out[name] = [
            {
                "id": j.id,
                "description": j.description,
                "ended_at": j.ended_at.isoformat(timespec="seconds") if j.ended_at else None,
                "result": _result(j) if name == "finished" else None,
                "error": (j.exc_info or "").strip().splitlines()[-1][:300] if name == "failed" and j.exc_info else None,
            }
            for j in reversed(jobs)
        ]
    return out


def _result(job: Job) -> Any:
    try:
        return job.return_value()
    except Exception:  # noqa: BLE001 - a result that cannot be read is shown as missing
        return None


def learning_curve(history: list[dict[str, Any]], lifetime: dict[str, Any], width: int = 640, height: int = 240) -> str:
    """An SVG of the offline metrics of every candidate and the live accuracy of every served
    version against the number of labels it was trained on."""
    series: dict[str, list[tuple[float, float]]] = {"offline accuracy": [], "offline macro-F1": [], "live accuracy": []}
    for record in history:
        examples = record.get("examples")
        figures = (record.get("evaluation") or {}).get("challenger") or {}
        values = [m for m in figures.values() if m.get("n")]
        if examples is None or not values:
            continue
        series["offline accuracy"].append((examples, sum(m["accuracy"] for m in values) / len(values)))
        series["offline macro-F1"].append((examples, sum(m["macro_f1"] for m in values) / len(values)))
        live = [c["accuracy"] for c in lifetime.get(record.get("version"), {}).values() if c.get("accuracy") is not None]
        if live:
            series["live accuracy"].append((examples, sum(live) / len(live)))
    points = [p for s in series.values() for p in s]
    if not points:
        return '<p class="empty">No trained candidates yet.</p>'
    left, right, top, bottom = 48, 150, 12, 32
    x_max = max(p[0] for p in points) or 1
    colours = {"offline accuracy": "#1f77b4", "offline macro-F1": "#2ca02c", "live accuracy": "#d62728"}

    def x(v: float) -> float:
        return left + (width - left - right) * v / x_max

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - v)

    parts = [
        f'<svg id="learning-curve" role="img" aria-label="learning curve" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="11">{tick:.2f}</text>'
        )
    parts.append(
        f'<text x="{(width - right + left) / 2:.0f}" y="{height - 4}" text-anchor="middle" font-size="11">labels (max {int(x_max)})</text>'
    )
    for row, (name, values) in enumerate(series.items()):
        colour = colours[name]
        if values:
            path = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in sorted(values))
            parts.append(
                f'<polyline class="series" data-series="{escape(name)}" fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>'
            )
            parts += [f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="3" fill="{colour}"/>' for a, b in values]
        parts.append(
            f'<rect x="{width - right + 10}" y="{top + row * 18}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{width - right + 26}" y="{top + row * 18 + 9}" font-size="11">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def mount_rq_dashboard(app: Flask, settings: Settings) -> None:
    """rq-dashboard at `/rq`, reading our JSON-serialized jobs; behind the app's authentication.
    With REDIS_SENTINELS it asks the Sentinels for the master (its `redis+sentinel://` URL)."""
    import rq_dashboard
    from rq_dashboard import web

    if settings.redis_sentinels:
        hosts = ",".join(
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in sentinel_addresses(settings.redis_sentinels)
        )
        app.config["RQ_DASHBOARD_REDIS_URL"] = f"redis+sentinel://{hosts}/{settings.redis_master_name}/0"
    else:
        app.config["RQ_DASHBOARD_REDIS_URL"] = settings.redis_url
    app.config["RQ_DASHBOARD_REDIS_PASSWORD"] = settings.redis_password or None
    app.config["RQ_DASHBOARD_REDIS_SENTINEL_PASSWORD"] = settings.redis_sentinel_password or None
    web.config.serializer = JSONSerializer
    web.setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix="/rq")
