import dataclasses
import os
import subprocess
import sys
import threading

import pytest

from backend.cli import main
from tests.conftest import ROOT, wait_for
from tests.test_serving import publish


def test_models_lists_history_and_rollback_moves_the_pointer(tmp_path, tweets, monkeypatch, capsys):
    from backend.state.registry import Registry

    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    registry = Registry(tmp_path)
    publish(registry, tweets, 100, 0)
    publish(registry, tweets, 200, 1)
    assert main(["models", "--project", "1"]) == 0
    out = capsys.readouterr().out
    assert "p1-v1" in out and "* p1-v2" in out
    assert main(["rollback", "--project", "1", "--to", "p1-v1"]) == 0
    assert registry.pointer(1).version == "p1-v1" and registry.pointer(1).seq == 3
    assert main(["rollback", "--project", "1", "--to", "p1-v7"]) == 1
    assert main(["models", "--project", "5"]) == 0 and "no current model" in capsys.readouterr().out


def test_worker_refuses_embedded_mode(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["worker"]) == 2


def report_priority() -> int:
    """A job that answers the nice value of the thread that runs it."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_worker_trains_in_work_horses_at_worker_nice(redis_server, tmp_path):
    import redis
    from rq import Queue
    from rq.serializers import JSONSerializer

    ours = os.getpriority(os.PRIO_PROCESS, 0)
    if ours >= 19:
        pytest.skip("this test already runs at the lowest priority")
    nice = min(19, ours + 5)
    connection = redis.Redis.from_url(redis_server)
    connection.flushall()
    job = Queue("retrain", connection=connection, serializer=JSONSerializer).enqueue("tests.test_cli.report_priority")
    env = {**os.environ, "REDIS_URL": redis_server, "MODEL_DIR": str(tmp_path), "WORKER_NICE": str(nice)}
    subprocess.run([sys.executable, "-m", "backend", "worker", "--burst"], env=env, cwd=ROOT, timeout=120, check=True)
    job.refresh()
    assert job.is_finished and job.return_value() == nice  # the forked work-horse inherited the worker's priority
    assert os.getpriority(os.PRIO_PROCESS, 0) == ours


def test_embedded_worker_thread_runs_at_worker_nice_and_leaves_requests_alone(settings):
    from backend.jobs.worker import start_embedded_worker
    from backend.runtime import Runtime

    ours = os.getpriority(os.PRIO_PROCESS, 0)
    if ours >= 19:
        pytest.skip("this test already runs at the lowest priority")
    nice = min(19, ours + 4)
    import fakeredis

    # a Redis of its own: the process-wide embedded one may already have a worker thread of an earlier test
    runtime = Runtime.build(dataclasses.replace(settings, worker_nice=nice), redis=fakeredis.FakeRedis())
    thread = start_embedded_worker(runtime)
    assert wait_for(lambda: os.getpriority(os.PRIO_PROCESS, thread.native_id) == nice, timeout=10)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == ours  # the request threads keep theirs
    runtime.stop()
