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
    assert "promoted" in row(rows, "feedback latency")[0]
    assert {prefix for prefix in ROWS if row(rows, prefix)[1] != "-"} == {
        "webhook latency",
        "/predict 1,000 tasks",
        "/predict 1 task",
        "RSS per web worker",
        "ranking",
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
