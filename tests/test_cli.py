import dataclasses
import os
import subprocess
import sys
import threading

import pytest

from backend.cli import control_socket, main
from lab.processes import Process, free_port, healthy
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


@pytest.mark.slow
def test_two_backends_on_one_host_keep_their_own_gunicorn_control_sockets(tmp_path):
    """gunicorn 27's default control socket is one path per user: each `serve` gets its own, so one
    instance's exit cannot take another's (gunicorn 23, which the requirements allow, has none)."""
    import gunicorn.config

    if "control_socket" not in {setting.name for setting in gunicorn.config.KNOWN_SETTINGS}:
        pytest.skip("this gunicorn has no control socket")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "LABEL_STUDIO", "XDG_RUNTIME_DIR"))}
    env.update(HOME=str(tmp_path / "home"), EMBEDDED_STORE="memory")
    started = []
    try:
        for name in ("a", "b"):
            port = free_port()
            variables = {**env, "MODEL_DIR": str(tmp_path / name), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"metrics-{name}")}
            process = Process(
                [sys.executable, "-m", "backend", "serve", "--host", "127.0.0.1", "--port", str(port)], variables, tmp_path / f"{name}.log"
            )
            started.append((port, process))
            wait_for(lambda port=port: healthy(f"http://127.0.0.1:{port}"), timeout=60, interval=0.2)
        for port, process in started:
            assert wait_for(lambda port=port: os.path.exists(control_socket(port)), timeout=30), process.log.read_text()[-2000:]
        assert not (tmp_path / "home" / ".gunicorn" / "gunicorn.ctl").exists()  # nobody took the shared default
        (port_a, a), (port_b, b) = started
        a.stop()
        assert os.path.exists(control_socket(port_b)) and healthy(f"http://127.0.0.1:{port_b}")
    finally:
        for _, process in started:
            process.stop()
