import json
import threading

from backend.families import ModelBundle
from backend.families.estimator import ControlModel
from backend.serving import ModelCache
from backend.state.registry import Registry
from tests.conftest import wait_for


def publish(registry, tweets, n, expected_seq):
    model = ControlModel.fit(tweets.texts[:n], [[y] for y in tweets.labels[:n]], ["negative", "neutral", "positive"], False)
    version = registry.next_version(1)
    sha = registry.save_artifact(1, version, ModelBundle({"sentiment": model}))
    registry.save_record(1, {"version": version, "sha256": sha})
    return registry.promote(1, version, sha, n, expected_seq)


def test_a_new_process_serves_the_current_version_and_swaps_in_the_background(tmp_path, tweets):
    registry = Registry(tmp_path)
    publish(registry, tweets, 100, 0)
    cache = ModelCache(registry, poll_interval=0.05)
    assert cache.get(1).version == "p1-v1"
    publish(registry, tweets, 200, 1)
    wait_for(lambda: cache.get(1).version == "p1-v2", timeout=2)
    cache.stop()


def test_the_served_version_never_goes_backwards(tmp_path, tweets):
    registry = Registry(tmp_path)
    publish(registry, tweets, 100, 0)
    publish(registry, tweets, 150, 1)
    cache = ModelCache(registry, poll_interval=0)
    assert cache.get(1).seq == 2
    pointer = registry.pointer(1)
    (tmp_path / "project-1" / "current.json").write_text(
        json.dumps({"version": "p1-v1", "seq": 1, "sha256": registry.record(1, "p1-v1")["sha256"], "watermark": 100})
    )
    assert not cache.refresh(1) and cache.get(1).version == pointer.version


def test_a_broken_artifact_keeps_the_old_model_and_reports_it(tmp_path, tweets):
    registry = Registry(tmp_path)
    publish(registry, tweets, 100, 0)
    cache = ModelCache(registry, poll_interval=0)
    assert cache.get(1).version == "p1-v1"
    pointer = publish(registry, tweets, 200, 1)
    (tmp_path / "project-1" / f"{pointer.version}.skops").write_bytes(b"garbage")
    assert not cache.refresh(1)
    assert cache.get(1).version == "p1-v1" and "checksum" in cache.errors()[1]


def test_concurrent_first_requests_all_get_the_model(tmp_path, tweets):
    registry = Registry(tmp_path)
    publish(registry, tweets, 300, 0)
    cache = ModelCache(registry, poll_interval=0.01)
    versions = []
    threads = [threading.Thread(target=lambda: versions.append(cache.get(1).version)) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert versions == ["p1-v1"] * 16
    cache.stop()


def test_a_web_worker_serves_without_importing_scikit_learn_skops_or_pandas(tmp_path, tweets):
    """What a web worker imports to start, load a model and predict: 120 MB less without them."""
    import os
    import subprocess
    import sys

    registry = Registry(tmp_path / "models")
    publish(registry, tweets, 100, 0)
    script = (
        "import sys\n"
        "from backend.web.app import create_app\n"
        "from backend.config import Settings\n"
        "from backend.families.hashing import hash_texts\n"
        "from backend.state.registry import Registry\n"
        "from backend.serving import ModelCache\n"
        "create_app(Settings.from_env())\n"
        f"served = ModelCache(Registry({str(tmp_path / 'models')!r}), 0).get(1)\n"
        "proba = served.bundle.controls['sentiment'].predict_proba(features=hash_texts(['so happy today']))\n"
        "assert proba.shape == (1, 3), proba\n"
        "print(sorted(m for m in ('sklearn', 'skops', 'pandas') if m in sys.modules))\n"
    )
    env = {**os.environ, "MODEL_DIR": str(tmp_path / "models"), "REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
