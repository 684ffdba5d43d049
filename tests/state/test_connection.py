"""Embedded mode's store (no REDIS_URL): a private redis-server in MODEL_DIR/.redis, or fakeredis
in memory, announced (EMBEDDED_STORE); and `python -m backend serve` keeping labels and models
across a crash and a restart."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import fakeredis
import pytest
import requests
from redis import exceptions as redis_exceptions

from backend.cli import main
from backend.config import Settings
from backend.state import connection
from backend.state.registry import Registry
from tests.conftest import LABEL_CONFIG, ROOT, Process, annotation_event, free_port, healthy, wait_for

needs_redis_server = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


@pytest.fixture(autouse=True)
def fresh_clients(monkeypatch):
    """Each test sees the clients it makes (the process-wide cache would hand back earlier ones)."""
    monkeypatch.setattr(connection, "_clients", {})


def no_redis_server_on_path(monkeypatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


# --- EMBEDDED_STORE ------------------------------------------------------------------------------


def test_embedded_store_is_read_from_the_environment():
    assert Settings.from_env({}).embedded_store == "auto"
    assert Settings.from_env({"EMBEDDED_STORE": "memory"}).embedded_store == "memory"


def test_memory_keeps_fakeredis_and_says_so(tmp_path, caplog):
    settings = Settings.from_env({"EMBEDDED_STORE": "memory"}, model_dir=tmp_path / "models")
    with caplog.at_level(logging.WARNING, logger="backend.state.connection"):
        redis = connection.redis_for(settings)
    assert isinstance(redis, fakeredis.FakeRedis) and connection.storage_kind(redis) == "memory"
    assert "EMBEDDED_STORE=memory" in caplog.text and "LOST when the backend stops" in caplog.text
    assert not (tmp_path / "models" / ".redis").exists()  # no server was started


def test_auto_without_a_binary_falls_back_to_memory_loudly(tmp_path, monkeypatch, caplog):
    no_redis_server_on_path(monkeypatch, tmp_path)
    settings = Settings.from_env({}, model_dir=tmp_path / "models")
    with caplog.at_level(logging.WARNING, logger="backend.state.connection"):
        redis = connection.redis_for(settings)
    assert connection.storage_kind(redis) == "memory"
    ours = [r.levelname for r in caplog.records if r.name == "backend.state.connection"]  # worker threads of earlier tests log too
    assert ours == ["WARNING"] and "no redis-server on PATH" in caplog.text


def test_redis_without_a_binary_refuses_to_start(tmp_path, monkeypatch, capsys):
    no_redis_server_on_path(monkeypatch, tmp_path)
    settings = Settings.from_env({"EMBEDDED_STORE": "redis"}, model_dir=tmp_path / "models")
    with pytest.raises(connection.EmbeddedStoreError, match="no redis-server on PATH"):
        connection.redis_for(settings)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("EMBEDDED_STORE", "redis")
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "models"))
    assert main(["serve", "--port", str(free_port())]) == 2  # before gunicorn starts
    assert "EMBEDDED_STORE=redis" in capsys.readouterr().err


def test_an_unknown_embedded_store_is_an_error(tmp_path):
    with pytest.raises(connection.EmbeddedStoreError, match="auto, redis, memory"):
        connection.redis_for(Settings.from_env({"EMBEDDED_STORE": "disk"}, model_dir=tmp_path))


def test_an_explicit_redis_url_ignores_the_embedded_store(tmp_path):
    settings = Settings.from_env({"EMBEDDED_STORE": "memory"}, model_dir=tmp_path, redis_url="redis://127.0.0.1:1/0")
    assert connection.storage_kind(connection.redis_for(settings)) == "redis"
    assert not (tmp_path / ".redis").exists()


def test_health_reports_where_annotations_are_kept(settings):
    from backend.runtime import Runtime
    from backend.web.app import create_app

    runtime = Runtime.build(settings, redis=fakeredis.FakeRedis())
    app = create_app(runtime=runtime)
    client = app.test_client()
    for path in ("/health", "/"):
        body = client.get(path).json
        assert body["status"] == "UP" and body["storage"] == "memory"
    assert "storage" not in (client.get("/versions").json or {})
    runtime.stop()


# --- the private redis-server --------------------------------------------------------------------

USER = """
import sys
from pathlib import Path
from backend.config import Settings
from backend.state.connection import redis_for, _server_pid
redis = redis_for(Settings.from_env({}, model_dir=Path(sys.argv[1])))
print("ready", _server_pid(Path(sys.argv[1]) / ".redis"), flush=True)
for line in sys.stdin:
    command = line.split()
    if command[0] == "incr":
        print(redis.incr("n"), flush=True)
    elif command[0] == "get":
        print(int(redis.get("n") or 0), flush=True)
    elif command[0] == "pid":
        print(_server_pid(Path(sys.argv[1]) / ".redis"), flush=True)
"""


class User:
    """A process that uses the embedded store of `model_dir` (auto) and answers commands."""

    def __init__(self, model_dir: Path):
        self.popen = subprocess.Popen(
            [sys.executable, "-c", USER, str(model_dir)],
            cwd=ROOT,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "REDIS_URL": ""},
        )

    def ready(self) -> int:
        word, pid = self.popen.stdout.readline().split()
        assert word == "ready"
        return int(pid)

    def ask(self, command: str) -> int:
        self.popen.stdin.write(command + "\n")
        self.popen.stdin.flush()
        return int(self.popen.stdout.readline())

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.stdin.close()
            self.popen.wait(timeout=30)


@needs_redis_server
def test_auto_keeps_the_store_in_a_private_redis_server_in_model_dir(tmp_path):
    settings = Settings.from_env({}, model_dir=tmp_path / "models")
    redis = connection.redis_for(settings)
    server = connection._owned[-1]
    try:
        assert connection.storage_kind(redis) == "embedded-redis"
        assert server.directory == tmp_path / "models" / ".redis" and server.socket.is_socket()
        config = {
            name: redis.config_get(name)[name]
            for name in ("port", "appendonly", "appendfsync", "maxmemory-policy", "unixsocketperm", "dir")
        }
        assert config == {
            "port": "0",
            "appendonly": "yes",
            "appendfsync": "always",
            "maxmemory-policy": "noeviction",
            "unixsocketperm": "700",
            "dir": str(server.directory),
        }
        assert connection.redis_for(settings) is redis  # one client per process and MODEL_DIR
        redis.set("kept", "yes")
    finally:
        server.stop()
    assert not alive(server.process.pid)
    connection._clients.clear()
    again = connection.redis_for(settings)  # started again on the same data
    try:
        assert again.get("kept") == b"yes"
    finally:
        connection._owned[-1].stop()


@needs_redis_server
def test_one_server_per_model_dir_reused_restarted_and_gone_with_its_users(tmp_path):
    model_dir = tmp_path / "models"
    users = [User(model_dir), User(model_dir)]  # start at the same moment: the file lock lets one start it
    try:
        pids = [user.ready() for user in users]
        assert pids[0] == pids[1] and alive(pids[0])
        assert users[0].ask("incr") == 1 and users[1].ask("incr") == 2
        owner = next(
            u
            for u in users
            if int(subprocess.run(["ps", "-o", "ppid=", str(pids[0])], capture_output=True, text=True).stdout) == u.popen.pid
        )
        other = users[1 - users.index(owner)]
        owner.popen.kill()  # SIGKILL: no atexit; the kernel tells the server (PR_SET_PDEATHSIG)
        owner.popen.wait()
        wait_for(lambda: not alive(pids[0]), timeout=10)
        assert other.ask("incr") == 3  # the other user started it again, on the same AOF
        restarted = other.ask("pid")
        assert restarted != pids[0] and alive(restarted)
        other.close()  # a clean exit stops the server it started
        assert not alive(restarted)
    finally:
        for user in users:
            if user.popen.poll() is None:
                user.popen.kill()
                user.popen.wait()


# --- python -m backend serve, killed and restarted -----------------------------------------------


class Backend:
    """`python -m backend serve` in embedded mode on MODEL_DIR, as a new user runs it (bin/run)."""

    def __init__(self, tmp_path: Path, model_dir: Path, name: str):
        port = free_port()
        env = {
            **os.environ,
            "MODEL_DIR": str(model_dir),
            "RETRAIN_THRESHOLD": "10",
            "RETRAIN_MIN_INTERVAL": "0",
            "LOG_LEVEL": "INFO",
            "SWAP_POLL_INTERVAL": "0.1",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"metrics-{name}"),
        }
        for variable in (
            "REDIS_URL",
            "EMBEDDED_STORE",
            "LABEL_STUDIO_URL",
            "LABEL_STUDIO_HOST",
            "LABEL_STUDIO_API_KEY",
            "LABEL_STUDIO_ACCESS_TOKEN",
            "CRASH_AT",
            "SLEEP_AT",
        ):
            env.pop(variable, None)
        self.model_dir = model_dir
        self.url = f"http://127.0.0.1:{port}"
        self.process = Process(
            [sys.executable, "-m", "backend", "serve", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path / f"{name}.log"
        )
        wait_for(lambda: self.process.popen.poll() is not None or healthy(self.url), timeout=60, interval=0.2)
        assert self.process.popen.poll() is None, self.process.log.read_text()[-3000:]
        self.redis_pid = int((model_dir / ".redis" / "redis.pid").read_text())

    def health(self) -> dict:
        return requests.get(f"{self.url}/health", timeout=5).json()

    def labels(self) -> dict:
        return requests.get(f"{self.url}/projects/1/labels", timeout=5).json()

    def setup_version(self) -> str:
        return requests.post(f"{self.url}/setup", json={"project": "1.1700000000", "schema": LABEL_CONFIG}, timeout=5).json()[
            "model_version"
        ]

    def train(self, tweets, start: int, stop: int) -> None:
        """Label tasks `start` to `stop`, then ask for a retrain (START_TRAINING) that sees them all."""
        with requests.Session() as session:
            for i in range(start, stop):
                event = annotation_event(i + 1, i + 1, tweets.texts[i], tweets.labels[i])
                response = session.post(f"{self.url}/webhook", json=event, timeout=5)
                assert response.status_code == 200, response.text
            assert session.post(f"{self.url}/webhook", json={"action": "START_TRAINING", "project": {"id": 1}}, timeout=5).ok

    def settled(self, changes: int, timeout: float = 120) -> list[dict]:
        """The model history once a train job has judged all `changes` label changes."""
        registry = Registry(self.model_dir)

        def done() -> list[dict] | None:
            history = registry.history(1)
            judged = max((r.get("watermark", 0) for r in history), default=0) >= changes
            return history if judged and history[-1]["decision"] != "promoting" else None

        return wait_for(done, timeout=timeout, interval=0.2)


class Labeler(threading.Thread):
    """Posts labels one after another, as an annotator does, until a webhook fails; `acked` is
    every task whose webhook answered 2xx."""

    def __init__(self, backend: Backend, tweets, start: int, stop: int):
        super().__init__(daemon=True)
        self.backend, self.tweets, self.range = backend, tweets, range(start, stop)
        self.acked: list[int] = []

    def run(self) -> None:
        with requests.Session() as session:
            for i in self.range:
                event = annotation_event(i + 1, i + 1, self.tweets.texts[i], self.tweets.labels[i])
                try:
                    response = session.post(f"{self.backend.url}/webhook", json=event, timeout=5)
                except requests.RequestException:
                    return
                if not 200 <= response.status_code < 300:
                    return
                self.acked.append(i)


def label_and_stop(backend: Backend, tweets, first: int, stop) -> list[int]:
    """Label from task `first` on and call `stop()` in the middle of it; the tasks acknowledged."""
    labeler = Labeler(backend, tweets, first, first + 1000)
    labeler.start()
    wait_for(lambda: len(labeler.acked) >= 40, timeout=60)
    stop()
    labeler.join(timeout=60)
    assert not labeler.is_alive() and len(labeler.acked) < 1000
    return list(range(first)) + labeler.acked


def assert_every_acknowledged_label_is_stored(backend: Backend, tweets, acked: list[int]) -> None:
    labels = backend.labels()
    # the one webhook in flight at the kill may have been stored without its answer arriving
    assert len(acked) <= labels["labeled_tasks"] <= len(acked) + 1, (len(acked), labels)
    wanted: dict[str, int] = {}
    for i in acked:
        wanted[tweets.labels[i]] = wanted.get(tweets.labels[i], 0) + 1
    counts = labels["counts"]["sentiment"]
    assert all(counts.get(label, 0) >= n for label, n in wanted.items()), (wanted, counts)
    assert sum(counts.values()) - sum(wanted.values()) <= 1


@pytest.mark.slow
@needs_redis_server
def test_serve_keeps_labels_and_models_when_everything_is_killed(tmp_path, tweets):
    """SIGKILL of the backend's process group and of its redis-server at once, in the middle of
    labeling: every acknowledged label is back after the restart, /setup serves the promoted
    version, and the backend keeps learning (the lost-labels guard stays quiet)."""
    model_dir = tmp_path / "models"
    backend = Backend(tmp_path, model_dir, "first")
    try:
        assert backend.health()["storage"] == "embedded-redis"
        backend.train(tweets, 0, 150)
        backend.settled(150)
        assert Registry(model_dir).pointer(1) is not None

        def crash() -> None:  # the group first: nothing of the backend is left to start the server again
            backend.process.kill_group()
            os.kill(backend.redis_pid, signal.SIGKILL)

        acked = label_and_stop(backend, tweets, 150, crash)
        wait_for(lambda: not alive(backend.redis_pid), timeout=10)  # SIGKILL lands asynchronously
    finally:
        backend.process.stop()
    before = Registry(model_dir).pointer(1)
    assert before is not None and before.watermark >= 150
    killed = backend.redis_pid

    backend = Backend(tmp_path, model_dir, "second")
    try:
        assert backend.redis_pid != killed and backend.health()["storage"] == "embedded-redis"
        assert_every_acknowledged_label_is_stored(backend, tweets, acked)
        assert backend.setup_version() == before.version
        stored = backend.labels()["labeled_tasks"]
        backend.train(tweets, 1000, 1300)
        history = backend.settled(stored + 300)
        newer = Registry(model_dir).pointer(1).version
        assert newer != before.version and backend.setup_version() == newer  # learning goes on
        assert not any("Redis lost" in str(record.get("reason")) for record in history)
    finally:
        backend.process.stop()
    assert not alive(backend.redis_pid)


@pytest.mark.slow
@needs_redis_server
def test_serve_sigterm_stops_its_redis_server_and_keeps_every_label(tmp_path, tweets):
    """SIGTERM in the middle of labeling: gunicorn finishes, then its redis-server stops (no
    orphan); after a restart every acknowledged label and the promoted version are there; a
    SIGKILL of only the gunicorn master takes its redis-server along too."""
    model_dir = tmp_path / "models"
    backend = Backend(tmp_path, model_dir, "first")
    try:
        backend.train(tweets, 0, 150)
        backend.settled(150)
        assert Registry(model_dir).pointer(1) is not None
        acked = label_and_stop(backend, tweets, 150, lambda: os.kill(backend.process.pid, signal.SIGTERM))
        backend.process.popen.wait(timeout=60)
        assert not alive(backend.redis_pid)  # stopped by serve before it exited
    finally:
        backend.process.stop()
    before = Registry(model_dir).pointer(1)

    backend = Backend(tmp_path, model_dir, "second")
    try:
        assert_every_acknowledged_label_is_stored(backend, tweets, acked)
        assert backend.setup_version() == before.version
        workers = {pid for pid in backend.process.children() if pid != backend.redis_pid}
        assert len(workers) == 2  # WORKERS web workers share the private server, as in production
        worker = min(workers)
        os.kill(worker, signal.SIGKILL)  # gunicorn starts another worker, which finds the same server
        [new] = wait_for(lambda: (set(backend.process.children()) - workers - {backend.redis_pid}) or None, timeout=60, interval=0.2)
        wait_for(
            lambda: healthy(backend.url) and requests.get(f"{backend.url}/health", timeout=5).headers["X-Backend-Worker"] == str(new),
            timeout=60,
        )
        assert int((model_dir / ".redis" / "redis.pid").read_text()) == backend.redis_pid and alive(backend.redis_pid)
        assert_every_acknowledged_label_is_stored(backend, tweets, acked)
        os.kill(backend.process.pid, signal.SIGKILL)  # the master alone: no exit handler runs
        backend.process.popen.wait(timeout=10)
        wait_for(lambda: not alive(backend.redis_pid), timeout=10)
    finally:
        backend.process.kill_group()
        backend.process.stop()


@pytest.mark.slow
def test_serve_runs_workers_web_workers_on_the_private_server_and_one_in_memory(tmp_path):
    """WORKERS web workers share the private redis-server; fakeredis lives in one process, so the
    in-memory store gets one worker whatever WORKERS says."""
    for store, expected in (("redis", 3), ("memory", 1)):
        if store == "redis" and shutil.which("redis-server") is None:
            continue
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "LABEL_STUDIO"))}
        env.update(
            MODEL_DIR=str(tmp_path / store), EMBEDDED_STORE=store, WORKERS="3", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / f"m-{store}")
        )
        process = Process(
            [sys.executable, "-m", "backend", "serve", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path / f"{store}.log"
        )
        try:
            wait_for(lambda: healthy(f"http://127.0.0.1:{port}"), timeout=60, interval=0.2)
            redis_pid = tmp_path / store / ".redis" / "redis.pid"
            server = {int(redis_pid.read_text())} if redis_pid.exists() else set()
            assert wait_for(lambda: len(set(process.children()) - server) == expected, timeout=30), process.log.read_text()[-2000:]
        finally:
            process.stop()


# --- REDIS_SENTINELS and REDIS_MIN_REPLICAS_ACK --------------------------------------------------


def test_sentinel_addresses_are_host_port_pairs():
    assert connection.sentinel_addresses("10.0.0.1:26379, sentinel-2:26380,[::1]:5000") == [
        ("10.0.0.1", 26379),
        ("sentinel-2", 26380),
        ("::1", 5000),
    ]
    for bad in ("sentinel", "host:", ":26379", "host:port", "host:70000", "a:1,,b:2"):
        with pytest.raises(connection.RedisSettingsError, match="host:port"):
            connection.sentinel_addresses(bad)


def test_redis_settings_that_name_no_single_way_are_refused(tmp_path):
    both = Settings.from_env({"REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_SENTINELS": "127.0.0.1:2", "REDIS_MASTER_NAME": "m"})
    with pytest.raises(connection.RedisSettingsError, match="not both"):
        connection.redis_for(both)
    with pytest.raises(connection.RedisSettingsError, match="REDIS_MASTER_NAME"):
        connection.redis_for(Settings.from_env({"REDIS_SENTINELS": "127.0.0.1:2"}))
    embedded = Settings.from_env({"REDIS_MIN_REPLICAS_ACK": "1", "EMBEDDED_STORE": "memory"}, model_dir=tmp_path)
    with pytest.raises(connection.RedisSettingsError, match="needs replicas"):
        connection.redis_for(embedded)
    sentinels = Settings.from_env({"REDIS_SENTINELS": "127.0.0.1:2", "REDIS_MASTER_NAME": "m"}, model_dir=tmp_path)
    assert not sentinels.embedded and connection.storage_kind(connection.redis_for(sentinels)) == "redis-sentinel"


@pytest.fixture
def sentinel_group(tmp_path, redis_server):
    from lab.processes import SentinelGroup

    group = SentinelGroup(tmp_path / "sentinel", replicas=1, password="data pass", sentinel_password="sentinel pass")
    yield group
    group.stop()


def test_sentinels_with_passwords_lead_to_the_master_and_after_a_failover_to_the_new_one(sentinel_group, tmp_path):
    settings = Settings.from_env(sentinel_group.env(), model_dir=tmp_path, redis_timeout=2.0)  # room for WAIT on a loaded machine
    redis = connection.redis_for(settings)
    first = sentinel_group.master()
    assert redis.set("before", "1") and redis.info("server")["tcp_port"] == first
    assert connection.replicated(redis, 1, 1.0) == 1  # the one replica holds it
    for wrong in ({"REDIS_PASSWORD": "wrong"}, {"REDIS_SENTINEL_PASSWORD": "wrong"}, {"REDIS_SENTINEL_PASSWORD": ""}):
        stranger = connection.redis_for(Settings.from_env({**sentinel_group.env(), **wrong}, model_dir=tmp_path))
        with pytest.raises(redis_exceptions.RedisError):  # each password is needed where it belongs
            stranger.ping()
    sentinel_group.kill_master()
    wait_for(lambda: sentinel_group.master() != first, timeout=30)
    assert wait_for(lambda: _writes(redis, "after"), timeout=10)  # the same client, no restart
    assert redis.info("server")["tcp_port"] == sentinel_group.master() != first
    assert redis.get("before") == b"1"
    assert connection.replicated(redis, 1, 0.1) == 0  # its only replica is dead


def _writes(redis, key: str) -> bool:
    try:
        return bool(redis.set(key, "1"))
    except redis_exceptions.RedisError:
        return False


def test_replicated_counts_replicas_holding_writes_made_on_other_connections(redis_server, private_redis):
    import redis as redis_py

    master = private_redis()
    replica = private_redis("--replicaof", "127.0.0.1", str(master.port))
    client = redis_py.Redis.from_url(master.url, socket_timeout=5)
    wait_for(lambda: client.info("replication")["connected_slaves"] == 1, timeout=20)
    wait_for(lambda: client.info("replication")["slave0"]["state"] == "online", timeout=20)
    other = redis_py.Redis.from_url(master.url)  # a connection of its own: WAIT there would count nothing of ours
    other.set("label", "x" * 1000)
    assert connection.replicated(client, 1, 1.0) == 1
    assert redis_py.Redis.from_url(replica.url).get("label") == b"x" * 1000
    os.kill(replica.process.pid, signal.SIGSTOP)  # alive but silent: no acknowledgement comes
    try:
        other.set("label", "y")
        assert connection.replicated(client, 1, 0.1) == 0
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
