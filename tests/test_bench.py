"""The benchmark suite runs end to end and reports every row with figures (never judged on timings)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

ROWS = (
    "webhook burst",
    "webhook latency",
    "feedback latency",
    "/predict 1 task",
    "/predict 100 tasks",
    "/predict 1,000 tasks",
    "RSS per web worker",
    "ranking",
    "first ranking",
    "retrain at 300",
    "retrain at 1,000",
    "retrain at 2,000",
    "hash, compiled",
    "score, compiled",
    "hash, numpy, new words",
    "hash, numpy, words in",
    "score, numpy",
    "spans: version trained",
    "spans: /predict 1,000 tweets",
    "spans: /predict 1 task",
    "spans: retrain at 300",
    "spans: retrain at 1,000",
    "replication: webhook, REDIS_MIN_REPLICAS_ACK=0, 1 client",
    "replication: webhook, REDIS_MIN_REPLICAS_ACK=0, 4 clients",
    "replication: webhook, REDIS_MIN_REPLICAS_ACK=1, 1 client",
    "replication: webhook, REDIS_MIN_REPLICAS_ACK=1, 4 clients",
    "replication: webhook, REDIS_MIN_REPLICAS_ACK=2, 1 client",
    "replication: webhook, REDIS_MIN_REPLICAS_ACK=2, 4 clients",
    "one promotion at 1,000",
    "one promotion at 4,000",
)


def bench(*args: str) -> dict[str, list[str]]:
    """Run `python -m bench` and return its table rows by measure: [result, target, verdict]."""
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {}
    for line in done.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4 and cells[0] != "measure":
            rows[cells[0]] = cells[1:]
    assert re.search(r"^\d+ of \d+ targets met", done.stdout, re.M), done.stdout
    return rows


def row(rows: dict[str, list[str]], prefix: str) -> list[str]:
    found = [cells for measure, cells in rows.items() if measure.startswith(prefix)]
    assert len(found) == 1, f"{prefix!r} in {list(rows)}"
    return found[0]


@pytest.mark.slow
def test_the_quick_suite_reports_every_row_with_figures_and_a_verdict_per_target():
    rows = bench()
    assert len(rows) == len(ROWS)
    for prefix in ROWS:
        result, target, verdict = row(rows, prefix)
        assert re.search(r"\d", result) and not re.search(r"\b[1-9]\d* errors", result), (prefix, result)
        assert (target == "-") == (verdict == "-") and verdict in {"-", "pass", "**FAIL**"}, (prefix, target, verdict)
    assert "promoted" in row(rows, "feedback latency")[0] and re.search(r"p950-v\d+, span F1 0\.\d+", row(rows, "spans: version")[0])
    assert {prefix for prefix in ROWS if row(rows, prefix)[1] != "-"} == {
        "webhook latency",
        "/predict 1,000 tasks",
        "/predict 1 task",
        "RSS per web worker",
        "ranking",
        "spans: /predict 1,000 tweets",
        "spans: /predict 1 task",
        "one promotion at 1,000",
        "one promotion at 4,000",
    }
    assert "10 projects loaded" in next(m for m in rows if m.startswith("RSS per web worker"))


@pytest.mark.slow
def test_with_url_it_only_loads_that_backend_over_http(services):
    services.worker()
    url, _ = services.web(workers=1)
    rows = bench("--url", url, "--parts", "webhook,predict,feedback,ranking")
    assert re.search(r"\d+ webhooks/s \(0 errors\)", row(rows, "webhook burst")[0])
    for prefix in ("/predict 1 task", "/predict 100 tasks", "/predict 1,000 tasks"):
        assert re.search(r"p50 [\d.]+ ms, p99 [\d.]+ ms.*\b0 errors\)", row(rows, prefix)[0])
    assert row(rows, "feedback")[0].startswith("skipped") and row(rows, "ranking")[0].startswith("skipped")
    assert not any(m.startswith(("RSS", "retrain")) for m in rows)


WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:9090
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    30.02ms    4.11ms  80.50ms   90.00%
    Req/Sec   266.10     20.00   300.00     70.00%
  Latency Distribution
     50%   29.50ms
     75%   31.00ms
     90%   35.00ms
     99%    1.20s
  2661 requests in 10.00s, 1.20MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:    266.05
Transfer/sec:    122.88KB
"""


def test_wrk_reports_are_read_with_their_units_and_failures():
    from bench.official import parse_wrk

    assert parse_wrk(WRK_OUTPUT) == (266.05, 29.5, 1200.0, 2661, 7)


def test_the_official_requirements_come_from_pypi_without_the_pillow_pin(tmp_path):
    from bench.official import EXAMPLE, official_requirements

    (tmp_path / EXAMPLE).mkdir(parents=True)
    (tmp_path / "requirements.txt").write_text(
        "Flask>2.3\n# label-studio-sdk==1.0.2\nlabel-studio-sdk @ git+https://github.com/x/sdk.git\n"
    )
    (tmp_path / EXAMPLE / "requirements-base.txt").write_text("gunicorn==23.0.0\nlabel-studio-ml @ git+https://github.com/x/ml.git\n")
    (tmp_path / EXAMPLE / "requirements.txt").write_text("scikit-learn\npillow~=10.3\nFlask>2.3\n")
    assert official_requirements(tmp_path) == ["Flask>2.3", "label-studio-sdk", "gunicorn==23.0.0", "scikit-learn"]


def test_texts_the_official_example_would_download_are_left_out():
    from bench.official import downloadable, usable

    assert all(downloadable(t) for t in ("https://t.co/x", " /data/upload/1.txt", "s3://b/k", "upload/x", "http://t.co/a b"))
    assert not any(downloadable(t) for t in ("@united thanks", "see https://t.co/x", "a/b"))
    assert usable(["http://a.b", "fine", "ok"], ["x", "y", "z"]) == (["fine", "ok"], ["y", "z"])


def test_the_stand_in_serves_labeled_tasks_to_the_legacy_sdk_client_the_official_example_uses():
    from label_studio_sdk import Client

    from lab.standin_ls import StandinLabelStudio

    result = [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["positive"]}}]
    with StandinLabelStudio([{"id": i, "data": {"text": f"t{i}"}} for i in range(1, 251)]) as ls:
        for i in range(1, 151):
            ls.annotate(i, result)
        tasks = Client(ls.url, "key").get_project(1).get_labeled_tasks()
    assert [t["id"] for t in tasks] == list(range(1, 151))
    assert tasks[0]["annotations"][0]["result"] == result and tasks[0]["data"] == {"text": "t1"}


def test_runs_are_summarised_by_their_medians_and_every_failure():
    from bench.official import Load, medians

    assert medians([Load(100, 5, 50, 0, 2.0), Load(120, 6, 70, 3, 3.0), Load(110, 7, 60, 1, 4.0)]) == Load(110, 6, 60, 4, 3.0)
