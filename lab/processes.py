"""Real processes of a deployment on loopback (redis-server, gunicorn, RQ workers), shared by the
benchmarks and the tests (tests/conftest.py imports them), so both start the parts the same way."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.cli import control_socket

ROOT = Path(__file__).resolve().parent.parent


MAX_STRETCH = 4.0


def stretch() -> float:
    """How many times longer than on an idle machine a wait may take now: the 1-minute load
    average per core, between 1 and MAX_STRETCH (CI shares 2 cores with whatever else runs)."""
    try:
        load = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return 1.0
    return min(MAX_STRETCH, max(1.0, load))


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until `condition()` is truthy and return it; AssertionError after `timeout` seconds,
    stretched by the machine's load (`stretch`)."""
    started = time.monotonic()
    while True:
        value = condition()
        if value:
            return value
        waited = time.monotonic() - started
        if waited > timeout * stretch():
            raise AssertionError(f"condition not met within {waited:.1f} s ({timeout} s on an idle machine)")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def healthy(url: str, **request: Any) -> bool:
    """True once `GET url/health` answers 200."""
    import requests

    try:
        return requests.get(f"{url}/health", timeout=1, **request).status_code == 200
    except requests.RequestException:
        return False


def start_redis(directory: Path, *options: str, port: int | None = None, password: str = "") -> tuple[subprocess.Popen, str]:
    """A private redis-server on a loopback port (free unless given; AOF on, no eviction, then
    `options`, which override those), once it answers (with `password`, its `requirepass`)."""
    import redis

    port = port or free_port()
    if password:
        options = ("--requirepass", password, "--masterauth", password, *options)
    process = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(directory),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--maxmemory-policy",
            "noeviction",
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: _pings(redis.Redis.from_url(url, password=password or None)), timeout=10)
    return process, url


def _quoted(value: str) -> str:
    """A value for a redis.conf line (Redis reads C-like escapes inside double quotes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class SentinelGroup:
    """A monitored master on loopback: a redis-server master (AOF), `replicas` replicas of it and
    `sentinels` Sentinels (`redis-server --sentinel`, quorum 2) that fail it over `down_after_ms`
    after it stops answering. `password` is the data servers' (REDIS_PASSWORD),
    `sentinel_password` the Sentinels' own (REDIS_SENTINEL_PASSWORD)."""

    def __init__(
        self,
        directory: Path,
        name: str = "lsb",
        replicas: int = 2,
        sentinels: int = 3,
        down_after_ms: int = 1000,
        password: str = "",
        sentinel_password: str = "",
    ):
        self.directory, self.name, self.password = directory, name, password
        self.servers: dict[int, subprocess.Popen] = {}
        self.sentinels: dict[int, subprocess.Popen] = {}
        process, url = self._server("master", ())
        self.master_port = int(url.rsplit(":", 1)[1].split("/")[0])
        self.servers[self.master_port] = process
        for n in range(replicas):
            process, url = self._server(f"replica-{n}", ("--replicaof", "127.0.0.1", str(self.master_port)))
            self.servers[int(url.rsplit(":", 1)[1].split("/")[0])] = process
        wait_for(lambda: self.online_replicas(self.master_port) == replicas, timeout=30)
        for n in range(sentinels):
            port = free_port()
            folder = directory / f"sentinel-{n}"
            folder.mkdir(parents=True)
            lines = [
                f"port {port}",
                "bind 127.0.0.1",
                f"dir {folder}",
                f"sentinel monitor {name} 127.0.0.1 {self.master_port} 2",
                f"sentinel down-after-milliseconds {name} {down_after_ms}",
                f"sentinel failover-timeout {name} {max(3 * down_after_ms, 3000)}",
                f"sentinel parallel-syncs {name} 1",
            ]
            if password:
                lines.append(f"sentinel auth-pass {name} {_quoted(password)}")
            if sentinel_password:
                lines += [f"requirepass {_quoted(sentinel_password)}", f"sentinel sentinel-pass {_quoted(sentinel_password)}"]
            config = folder / "sentinel.conf"
            config.write_text("\n".join(lines) + "\n")
            self.sentinels[port] = subprocess.Popen(
                [shutil.which("redis-server") or "redis-server", str(config), "--sentinel"],
                stdout=open(folder / "sentinel.log", "ab"),
                stderr=subprocess.STDOUT,
            )
        self.sentinel_password = sentinel_password
        wait_for(lambda: all(self._sentinels_known(port, sentinels - 1, replicas) for port in self.sentinels), timeout=30)

    def online_replicas(self, port: int) -> int:
        """Replicas of the server on `port` that are in sync (they acknowledge writes)."""
        info = self.client(port).info("replication")
        return sum(
            1 for key, value in info.items() if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
        )

    def _server(self, role: str, options: tuple[str, ...]) -> tuple[subprocess.Popen, str]:
        folder = self.directory / role
        folder.mkdir(parents=True)
        return start_redis(folder, "--appendfsync", "always", *options, password=self.password)

    def _sentinels_known(self, port: int, others: int, replicas: int) -> bool:
        import redis

        try:
            state = redis.Redis(port=port, password=self.sentinel_password or None, decode_responses=True).sentinel_master(self.name)
        except redis.RedisError:
            return False
        return int(state["num-other-sentinels"]) >= others and int(state["num-slaves"]) >= replicas

    @property
    def addresses(self) -> str:
        """REDIS_SENTINELS for this group."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinels)

    def env(self) -> dict[str, str]:
        """The backend's environment to reach this group through its Sentinels."""
        return {
            "REDIS_URL": "",
            "REDIS_SENTINELS": self.addresses,
            "REDIS_MASTER_NAME": self.name,
            "REDIS_PASSWORD": self.password,
            "REDIS_SENTINEL_PASSWORD": self.sentinel_password,
        }

    def client(self, port: int) -> Any:
        import redis

        return redis.Redis(port=port, password=self.password or None, socket_timeout=5)

    def master(self) -> int:
        """The port of the master the Sentinels name now."""
        import redis

        for port in self.sentinels:
            try:
                client = redis.Redis(port=port, password=self.sentinel_password or None, socket_timeout=1)
                return int(client.sentinel_get_master_addr_by_name(self.name)[1])
            except redis.RedisError:
                continue
        raise AssertionError("no Sentinel answers")

    def kill_master(self) -> int:
        """SIGKILL the current master; its port."""
        port = self.master()
        self.servers[port].kill()
        self.servers[port].wait(timeout=10)
        return port

    def stop(self) -> None:
        for process in [*self.sentinels.values(), *self.servers.values()]:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)


class Process:
    """A subprocess in its own process group, with its log, killed at teardown."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT):
        self.log = log
        self.handle = open(log, "ab")
        self.popen = subprocess.Popen(args, cwd=cwd, env=env, stdout=self.handle, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def kill_group(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill_group()
        self.handle.close()


class Services:
    """Real processes of a deployment on loopback: RQ workers and gunicorn against one Redis."""

    def __init__(self, redis_url: str, tmp_path: Path):
        self.redis_url = redis_url
        self.model_dir = tmp_path / "models"
        self.tmp_path = tmp_path
        self.processes: list[Process] = []
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "MODEL_DIR": str(self.model_dir),
            "RETRAIN_MIN_INTERVAL": "0",
            "LOG_LEVEL": "INFO",
            "SWAP_POLL_INTERVAL": "0.1",
        }
        for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "CRASH_AT", "SLEEP_AT"):
            self.env.pop(name, None)

    def worker(self, **env: str) -> Process:
        process = Process(
            [sys.executable, "-m", "backend", "worker"], {**self.env, **env}, self.tmp_path / f"worker-{len(self.processes)}.log"
        )
        self.processes.append(process)
        return process

    def web(self, workers: int = 2, **env: str) -> tuple[str, Process]:
        port = free_port()
        args = [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            str(workers),
            "--threads",
            "4",
            "--bind",
            f"127.0.0.1:{port}",
            "--timeout",
            "60",
            *gunicorn_control(port),
            "backend.web.app:create_app()",
        ]
        process = Process(args, {**self.env, **env}, self.tmp_path / f"web-{len(self.processes)}.log")
        self.processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: healthy(url), timeout=30, interval=0.2)
        return url, process

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


def gunicorn_control(port: int) -> list[str]:
    """gunicorn's `--control-socket` of its own for the instance on `port` (`backend.cli.control_socket`),
    where gunicorn has one."""
    import gunicorn.config

    known = {setting.name for setting in gunicorn.config.KNOWN_SETTINGS}
    return ["--control-socket", control_socket(port)] if "control_socket" in known else []


class Deployment:
    """A whole deployment in a temp dir for the benchmarks: redis-server, gunicorn and one RQ worker."""

    def __init__(self, web_workers: int, **env: str):
        self.dir = Path(tempfile.mkdtemp(prefix="bench-"))
        self.redis, redis_url = start_redis(self.dir)
        self.services = Services(redis_url, self.dir)
        self.worker = self.services.worker(**env)
        self.url, self.web = self.services.web(web_workers, **env)
        self.web_pids = set(wait_for(lambda: len(self.web.children()) == web_workers and self.web.children(), timeout=30))

    def stop(self) -> None:
        self.services.stop()
        self.redis.terminate()
        self.redis.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)
