"""Redis connections: a real server from REDIS_URL, the current master of REDIS_SENTINELS, else the
embedded store of MODEL_DIR.

With REDIS_SENTINELS (and REDIS_MASTER_NAME) every new connection asks the Sentinels which server
is the master, and a connection to a master that died or was demoted fails and is dropped, so web
processes, workers, the scheduler and the reaper follow a failover without a restart: requests
that need Redis answer 503 until Sentinel has promoted a replica, then work again. `replicated`
tells how many replicas hold a process's writes (REDIS_MIN_REPLICAS_ACK, Redis `WAIT`).

Timeouts are short on purpose: a webhook must answer 503 quickly when Redis is unreachable
instead of hanging past LS's 1 s webhook timeout.

Embedded mode (no REDIS_URL) keeps annotations, the retrain queue and the audit trail in a private
`redis-server` whose data lives next to the models, in MODEL_DIR/.redis/, so a restart loses
nothing (`EMBEDDED_STORE`, default `auto`):

- `auto`: that private server when a `redis-server` binary is on PATH, else fakeredis in memory,
  announced by a WARNING at start and by `"storage": "memory"` in GET /health;
- `redis`: the private server, and an error at start when there is no binary;
- `memory`: fakeredis in memory (everything stored is lost when the process stops).

The private server listens on a unix socket only (`port 0`, socket mode 700), never evicts
(`maxmemory-policy noeviction`) and logs every write to its append-only file with
`appendfsync always`: Redis writes and fsyncs the AOF before it answers, so every annotation
whose webhook got a 2xx is on disk, even if the backend, the server and the machine die the next
moment. `everysec` (the Docker compose Redis) loses nothing when only processes die either, but up
to about a second of acknowledged writes in an OS crash or power cut, and a model trained in that
second would then have seen labels the store no longer has (the registry's lost-labels guard
would then refuse newer models until as many labels arrive again). The price is one fsync per
event-loop turn that writes (group commit): 0.17 ms against 0.015 ms per SET at p50 on the ext4
disk of the development machine, far below a webhook's budget, with a human annotator's rate of
writes.

One server runs per MODEL_DIR and host: whoever needs it first PINGs its socket and, under a file
lock, starts it only when nothing answers and no live server is named in its pid file, so a
second web process, a restarted gunicorn worker or another `serve` on the same MODEL_DIR uses the
running one. The process that started it owns it: it stops the server (SIGTERM: Redis flushes the
AOF and exits) when it exits, and the kernel sends the server SIGTERM when that process dies
without exiting cleanly (PR_SET_PDEATHSIG), so no server outlives its backend. `serve` starts it
before gunicorn forks (`start_embedded`), so it lives as long as the gunicorn master. A process
that finds the socket dead (the owner stopped while it still ran) starts the server again itself.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from redis import ConnectionPool, Redis, UnixDomainSocketConnection
from redis.backoff import NoBackoff
from redis.exceptions import BusyLoadingError, RedisError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from ..config import Settings
from . import keys

log = logging.getLogger(__name__)

STORES = ("auto", "redis", "memory")
DATA_DIR = ".redis"  # inside MODEL_DIR
START_TIMEOUT = 30.0  # seconds for a server to answer after start (longer while it is still loading its AOF)
STOP_TIMEOUT = 30.0

_clients: dict[object, Redis] = {}
_lock = threading.Lock()
_owned: list[EmbeddedServer] = []  # the servers this process started
_owned_lock = threading.Lock()
_exiting = False


class EmbeddedStoreError(RuntimeError):
    """The embedded store cannot be used as configured (EMBEDDED_STORE=redis without a binary, or
    a server that does not start)."""


class RedisSettingsError(ValueError):
    """REDIS_* settings that do not describe one way to reach Redis."""


def redis_for(settings: Settings, blocking: bool = False) -> Redis:
    """The Redis client for these settings (RQ needs bytes, so responses are not decoded).

    `blocking` is for RQ workers, whose dequeue waits up to 15 s on the socket. Without REDIS_URL
    this is the embedded store (see the module docstring): the first call of a process for a
    MODEL_DIR starts its private redis-server when none runs yet.
    """
    timeouts = {
        "socket_timeout": 30.0 if blocking else settings.redis_timeout,
        "socket_connect_timeout": settings.redis_timeout,
        "health_check_interval": 30,
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.redis_sentinels:
        if settings.redis_url:
            raise RedisSettingsError("set REDIS_URL (one Redis) or REDIS_SENTINELS (a monitored master), not both")
        if not settings.redis_master_name:
            raise RedisSettingsError("REDIS_SENTINELS needs REDIS_MASTER_NAME, the master's name in the Sentinels' configuration")
        sentinel = Sentinel(
            sentinel_addresses(settings.redis_sentinels),
            sentinel_kwargs={
                "password": settings.redis_sentinel_password or None,
                "socket_timeout": settings.redis_timeout,
                "socket_connect_timeout": settings.redis_timeout,
            },
        )
        return sentinel.master_for(settings.redis_master_name, password=settings.redis_password or None, **timeouts)
    if settings.redis_url:
        return Redis.from_url(settings.redis_url, password=settings.redis_password or None, **timeouts)
    if settings.redis_min_replicas_ack:
        raise RedisSettingsError("REDIS_MIN_REPLICAS_ACK needs replicas: set REDIS_URL or REDIS_SENTINELS")
    mode = embedded_mode(settings)
    with _lock:
        slot: object = "memory" if mode == "memory" else (embedded_dir(settings), blocking)
        client = _clients.get(slot)
        if client is None:
            if mode == "memory":
                import fakeredis

                warn_memory(settings)
                client = fakeredis.FakeRedis()
            else:
                server = ensure_server(embedded_dir(settings))
                client = _client(server, None if blocking else settings.redis_timeout, settings.redis_timeout)
            _clients[slot] = client
        return client


def sentinel_addresses(value: str) -> list[tuple[str, int]]:
    """REDIS_SENTINELS (`host:port,host:port,...`; an IPv6 host in brackets) as addresses."""
    addresses = []
    for item in (part.strip() for part in value.split(",")):
        host, _, port = item.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RedisSettingsError(f"REDIS_SENTINELS takes host:port pairs separated by commas, not {item!r}")
        addresses.append((host, int(port)))
    return addresses


def replicated(redis: Redis, replicas: int, timeout: float) -> int:
    """How many replicas (up to `replicas`) hold every write this process finished before the call,
    waiting at most `timeout` seconds (Redis `WAIT`).

    WAIT counts the acknowledgements of its own connection's writes, and a pool spreads a request's
    writes over several, so one marker write goes first on the connection that waits: the replication
    stream is in order, and a replica that has the marker has every write finished before it."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.incr(keys.REPLICATION_MARK)
        pipe.wait(replicas, max(1, int(timeout * 1000)))
        return int(pipe.execute()[-1])


def embedded_mode(settings: Settings) -> str:
    """`redis` (a private redis-server) or `memory` (fakeredis) for EMBEDDED_STORE on this host."""
    choice = settings.embedded_store.strip().lower()
    if choice not in STORES:
        raise EmbeddedStoreError(f"EMBEDDED_STORE must be one of {', '.join(STORES)}, not {settings.embedded_store!r}")
    if choice == "memory":
        return "memory"
    if shutil.which("redis-server"):
        return "redis"
    if choice == "redis":
        raise EmbeddedStoreError("EMBEDDED_STORE=redis but no redis-server on PATH: install it (apt-get install redis-server)")
    return "memory"


def warn_memory(settings: Settings) -> None:
    reason = "EMBEDDED_STORE=memory" if settings.embedded_store.strip().lower() == "memory" else "no redis-server on PATH"
    log.warning(
        "%s: annotations, the retrain queue and the audit trail are kept IN MEMORY and are LOST when the "
        "backend stops (models in %s survive). Install redis-server (bin/setup does as root) to keep them "
        "in %s, or set REDIS_URL",
        reason,
        settings.model_dir,
        embedded_dir(settings),
    )


def start_embedded(settings: Settings) -> EmbeddedServer | None:
    """For `serve`, before gunicorn forks: the private redis-server of MODEL_DIR, started by this
    process (which then owns it) unless one already answers; None (after the WARNING) when the
    embedded store is in memory."""
    if embedded_mode(settings) == "memory":
        warn_memory(settings)
        return None
    server = ensure_server(embedded_dir(settings))
    log.info(
        "embedded store: redis-server pid %s, data in %s (appendfsync always)%s",
        server.pid,
        server.directory,
        "" if server.process else ", already running",
    )
    return server


def storage_kind(redis: Redis) -> str:
    """What GET /health reports: `memory` (fakeredis), `embedded-redis`, `redis` (REDIS_URL) or
    `redis-sentinel` (REDIS_SENTINELS)."""
    if _is_fake(redis):
        return "memory"
    if isinstance(redis.connection_pool.connection_kwargs.get("directory"), str):
        return "embedded-redis"
    if issubclass(redis.connection_pool.connection_class, SentinelManagedConnection):
        return "redis-sentinel"
    return "redis"


def blocking_twin(redis: Redis) -> Redis:
    """A client of the same server with a pool of its own and no socket timeout of ours, for a
    thread that blocks on it (RQ's worker raises the timeout of its connection's pool to its
    dequeue wait, which must not reach the request path's short timeouts); fakeredis as it is."""
    if _is_fake(redis):
        return redis
    pool = redis.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": None}
    return Redis(connection_pool=ConnectionPool(connection_class=pool.connection_class, **kwargs))


def _is_fake(redis: Redis) -> bool:
    return type(redis).__module__.split(".")[0] == "fakeredis"


def embedded_dir(settings: Settings) -> Path:
    return (settings.model_dir / DATA_DIR).absolute()


def socket_path(directory: Path) -> Path:
    """The server's socket in its data dir, or in the temp dir when that path is too long for a
    unix socket (108 bytes)."""
    path = directory / "redis.sock"
    if len(os.fsencode(path)) < 100:
        return path
    digest = hashlib.sha256(os.fsencode(directory)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"lsb-redis-{digest}.sock"


@dataclass
class EmbeddedServer:
    """A private redis-server of one data dir; `process` is set in the process that started it."""

    directory: Path
    socket: Path
    process: subprocess.Popen | None = None
    owner: int = field(default_factory=os.getpid)

    @property
    def pid(self) -> int | None:
        return _server_pid(self.directory)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server if this process started it (SIGTERM: Redis flushes its AOF and exits);
        nothing in a process that only uses it, or in a forked child of its owner."""
        if self.process is None or self.owner != os.getpid() or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("embedded redis-server %s did not stop within %.0f s; killed", self.process.pid, timeout)
            self.process.kill()
            self.process.wait()


def ensure_server(directory: Path) -> EmbeddedServer:
    """The running server of `directory`, started by this process when none runs."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    sock = socket_path(directory)
    with _file_lock(directory / "start.lock"):
        state = _ping(sock)
        if state != "up" and _server_pid(directory) is not None:  # running, still loading its AOF or busy
            state = _wait_up(sock, None, directory)
        if state == "up":
            return EmbeddedServer(directory, sock, owner=0)
        binary = shutil.which("redis-server")
        if binary is None:
            raise EmbeddedStoreError("no redis-server on PATH to start the embedded store with")
        server = EmbeddedServer(directory, sock, _start(binary, directory, sock))
        _wait_up(sock, server.process, directory)
        with _owned_lock:
            _owned.append(server)
        log.info("started the embedded redis-server (pid %s) for %s", server.process.pid, directory)
        return server


@atexit.register
def _stop_owned() -> None:
    global _exiting
    _exiting = True  # no connection of a thread still running starts a server again
    with _owned_lock:
        owned = list(_owned)
    for server in owned:
        server.stop()


def _start(binary: str, directory: Path, sock: Path) -> subprocess.Popen:
    args = [
        binary,
        "--port",
        "0",
        "--unixsocket",
        str(sock),
        "--unixsocketperm",
        "700",
        "--dir",
        str(directory),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
        "--pidfile",
        str(directory / "redis.pid"),
        "--logfile",
        str(directory / "redis.log"),
        "--daemonize",
        "no",
    ]
    if threading.current_thread() is threading.main_thread():
        return _spawn(args, directory)
    return _Spawner.get().spawn(args, directory)


def _spawn(args: list[str], directory: Path) -> subprocess.Popen:
    """Start the server in a session of its own (Ctrl-C in a terminal reaches the backend, which
    stops the server once gunicorn has finished its requests), with SIGTERM as its parent-death
    signal on Linux. That signal follows the parent *thread*, so only the main thread and the
    spawner thread, which live as long as the process, call this."""
    parent = os.getpid()
    prctl = None
    if sys.platform.startswith("linux"):
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork

    def die_with_parent() -> None:  # in the child before exec; PR_SET_PDEATHSIG survives exec
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)

    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=directory,
        start_new_session=True,
        preexec_fn=die_with_parent if prctl is not None else None,
    )


class _Spawner:
    """A thread that lives as long as its process and starts servers for other threads (a request
    thread that finds the server gone), so the parent-death signal fires only when the process dies."""

    _instance: _Spawner | None = None
    _create = threading.Lock()

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.requests: queue.Queue = queue.Queue()
        threading.Thread(target=self._run, name="embedded-redis-spawner", daemon=True).start()

    @classmethod
    def get(cls) -> _Spawner:
        with cls._create:
            if cls._instance is None or cls._instance.pid != os.getpid():  # threads do not survive a fork
                cls._instance = cls()
            return cls._instance

    def spawn(self, args: list[str], directory: Path) -> subprocess.Popen:
        answer: queue.Queue = queue.Queue(1)
        self.requests.put((args, directory, answer))
        outcome = answer.get()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _run(self) -> None:
        while True:
            args, directory, answer = self.requests.get()
            try:
                answer.put(_spawn(args, directory))
            except BaseException as exc:  # noqa: BLE001 - handed to the thread that asked
                answer.put(exc)


def _wait_up(sock: Path, process: subprocess.Popen | None, directory: Path) -> str:
    """Wait until the server answers PING; raises when it exits or stays silent (not while loading)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        state = _ping(sock)
        if state == "up":
            return state
        alive = process.poll() is None if process is not None else _server_pid(directory) is not None
        if not alive:
            if process is None:
                return "down"
            raise EmbeddedStoreError(f"redis-server for {directory} exited with {process.returncode}: {_log_tail(directory)}")
        if state == "loading":
            deadline = max(deadline, time.monotonic() + 1.0)
        if time.monotonic() > deadline:
            if process is not None:
                process.kill()
                process.wait()
            raise EmbeddedStoreError(f"redis-server for {directory} does not answer on {sock}: {_log_tail(directory)}")
        time.sleep(0.02)


def _ping(sock: Path) -> str:
    """`up`, `loading` (it answers, but is still reading its AOF) or `down`."""
    client = Redis(unix_socket_path=str(sock), socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0))
    try:
        return "up" if client.ping() else "down"
    except BusyLoadingError:
        return "loading"
    except (RedisError, OSError):
        return "down"
    finally:
        client.close()


def _server_pid(directory: Path) -> int | None:
    """The pid in the server's pid file while a redis-server process has it, else None."""
    try:
        pid = int((directory / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: trust the pid file while the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid
    return pid if b"redis-server" in cmdline else None  # empty for a zombie; another program for a reused pid


def _log_tail(directory: Path, lines: int = 5) -> str:
    try:
        return " | ".join((directory / "redis.log").read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class EmbeddedConnection(UnixDomainSocketConnection):
    """A connection to the private server of `directory` that starts the server again when its
    socket is dead (its owner stopped while this process still runs, or it was killed)."""

    def __init__(self, directory: str = "", **kwargs: object):
        super().__init__(**kwargs)
        self.directory = directory

    def _connect(self):  # type: ignore[no-untyped-def]
        try:
            return super()._connect()
        except (FileNotFoundError, ConnectionRefusedError):
            if _exiting:
                raise
            log.warning("the embedded redis-server of %s is not running; starting it again", self.directory)
            ensure_server(Path(self.directory))
            return super()._connect()


def _client(server: EmbeddedServer, timeout: float | None, connect_timeout: float) -> Redis:
    pool = ConnectionPool(
        connection_class=EmbeddedConnection,
        path=str(server.socket),
        directory=str(server.directory),
        socket_timeout=timeout,
        socket_connect_timeout=connect_timeout,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis(connection_pool=pool)
