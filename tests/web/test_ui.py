"""The status page: rendered by Flask for every state, and loaded in headless Chromium against
real processes (gunicorn, RQ worker, redis-server) with a screenshot kept as a CI artifact."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from backend.config import Settings
from backend.runtime import Runtime
from backend.state.registry import Registry
from backend.web.app import create_app
from backend.web.auth import basic_header
from tests.jobs.test_entry import post_labels, predict, settled
from tests.web.test_api import train

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("ARTIFACTS_DIR", ROOT / "artifacts"))


def test_page_without_projects(client):
    response = client.get("/ui")
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert "none yet" in response.get_data(as_text=True)


def test_page_of_a_trained_project_shows_every_section(client, tweets):
    version = train(client, tweets, n=150)
    client.put("/projects/1/settings", json={"batch_size": 5, "rules": [{"label": "positive", "keyword": "thanks"}]})
    html = client.get("/ui?project=1").get_data(as_text=True)
    assert f'<b id="current-version">{version}</b>' in html
    assert re.search(r'<svg id="learning-curve".*<polyline class="series" data-series="offline accuracy"', html, re.S)
    for section in ("summary", "drift", "history", "queue", "jobs", "agreement", "rules", "mislabels", "audit"):
        assert f'id="{section}"' in html
    assert 'aria-label="agreement per annotator"' in html and "Consensus: majority" in html
    assert "promoted" in html and "settings changed: batch_size" in html
    assert "positive keyword &#39;thanks&#39;" in html and "1 rules (rules-" in html
    assert f"Served model {version}: trained without rules" in html  # trained before the rules were set
    assert 'href="rq/"' not in html  # embedded mode has no RQ dashboard


def test_bad_project_is_a_json_400(client):
    response = client.get("/ui?project=abc")
    assert response.status_code == 400 and "project" in response.json["error"]


def test_page_is_authenticated_like_the_api(tmp_path):
    import fakeredis

    settings = Settings(model_dir=tmp_path / "m", basic_auth_user="ann", basic_auth_pass="pw")
    rt = Runtime.build(settings, redis=fakeredis.FakeRedis())
    client = create_app(settings, rt).test_client()
    assert client.get("/ui").status_code == 401
    assert client.get("/ui", headers={"Authorization": basic_header("ann", "pw")}).status_code == 200
    rt.stop()


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
def test_status_page_in_headless_chromium(services, tweets):
    browser = chromium()
    if browser is None:
        if os.environ.get("REQUIRE_REAL_SERVICES"):
            pytest.fail("chromium is required (apt-get install chromium chromium-driver)")
        pytest.skip("chromium not installed")
    url, _ = services.web(workers=2, RETRAIN_THRESHOLD="200")
    services.worker()
    registry = Registry(services.model_dir)
    post_labels(url, tweets, 0, 200)
    record = settled(registry, 1, 200)[-1]
    assert record["decision"] == "promoted"
    predict(url, tweets.texts[5000:5100])
    assert requests.get(f"{url}/rq/", timeout=10).status_code == 200  # rq-dashboard is mounted
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "status-page.png"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={services.tmp_path / 'chromium'}",
    ]
    page = f"{url}/ui?project=1"
    dom = subprocess.run([browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    assert f'id="current-version">{record["version"]}<' in dom
    assert '<svg id="learning-curve"' in dom and 'data-series="offline accuracy"' in dom
    assert 'href="rq/"' in dom and record["version"] in dom.split('id="history"')[1]
    assert "confidence drift (PSI)" in dom and 'id="audit"' in dom and "promotion" in dom
    subprocess.run(
        [browser, *flags, "--window-size=1280,2200", f"--screenshot={screenshot}", page], capture_output=True, timeout=120, check=True
    )
    assert screenshot.stat().st_size > 10_000
