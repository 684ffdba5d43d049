"""The deployment files (docker-compose.yml, Dockerfile) and the scaled-out shape they describe.

There is no Docker engine here, so the files are checked for what they promise, and their commands
and environments are run as processes on loopback: each "machine" gets its own working and temp
directory and shares only Redis and the artifact directory (MODEL_DIR) with the others.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import fields
from typing import Any

import pytest
import redis
import requests
import yaml
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.scheduler import SCHEDULER_LOCKING_KEY_TEMPLATE
from rq.serializers import JSONSerializer

from backend.config import Settings
from backend.jobs.trigger import retrain_queue
from backend.state import keys
from backend.state.registry import Registry
from tests.conftest import ROOT, Process, free_port, healthy, wait_for
from tests.jobs.test_entry import post_labels, predict, settled
from tests.test_faults import start_training

SERVE = ["python", "-m", "backend", "serve"]
WORKER = ["python", "-m", "backend", "worker"]
SETTINGS_ENV = {f.name.upper() for f in fields(Settings)} | {"LABEL_STUDIO_HOST", "LABEL_STUDIO_ACCESS_TOKEN"}
OTHER_ENV = {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}  # read by python itself
OURS = ("redis", "backend", "worker")  # the services `docker compose up` starts
SENTINEL_PROFILE = ("redis-replica-1", "redis-replica-2", "sentinel-1", "sentinel-2", "sentinel-3")


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def image_env() -> dict[str, str]:
    return dict(pair.split("=", 1) for args in (a for i, a in dockerfile() if i == "ENV") for pair in args.split())


def image_cmd() -> list[str]:
    return json.loads(next(a for i, a in dockerfile() if i == "CMD"))


def service_env(service: str, given: dict[str, str] | None = None) -> dict[str, str]:
    """A service's environment as compose resolves it with the variables `given` (an `--env-file`):
    `${NAME:-default}` is the default when NAME is unset or empty, `${NAME-default}` only when unset."""
    given = given or {}

    def resolve(match: re.Match) -> str:
        name, colon, default = match.group(1), match.group(2), match.group(3)
        value = given.get(name)
        return default if value is None or (colon and not value) else value

    env = compose()["services"][service].get("environment", {})
    return {k: re.sub(r"\$\{(\w+)(:?)-([^}]*)\}", resolve, str(v)) for k, v in env.items()}


def env_file(name: str) -> dict[str, str]:
    """A compose `--env-file`: NAME=value lines; comments and blank lines skipped."""
    lines = (line.strip() for line in (ROOT / name).read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def command_of(service: str) -> list[str]:
    return compose()["services"][service].get("command") or image_cmd()


def machine(services, name: str, service: str, **overrides: str) -> Process:
    """Run a compose service's command with its image and service environment as one "machine":
    the compose network's names become loopback, the `models` volume the shared artifact directory."""
    home = services.tmp_path / name
    home.mkdir()
    env = {
        **services.env,
        **image_env(),
        **service_env(service),
        "REDIS_URL": services.redis_url,
        "MODEL_DIR": str(services.model_dir),
        "PYTHONPATH": str(ROOT),
        "TMPDIR": str(home),
        **overrides,
    }
    process = Process([sys.executable, *command_of(service)[1:]], env, services.tmp_path / f"{name}.log", cwd=home)
    services.processes.append(process)
    return process


def web_machine(services, name: str, **overrides: str) -> str:
    port = free_port()
    machine(services, name, "backend", HOST="127.0.0.1", PORT=str(port), **overrides)
    url = f"http://127.0.0.1:{port}"
    auth = (overrides["BASIC_AUTH_USER"], overrides["BASIC_AUTH_PASS"]) if "BASIC_AUTH_USER" in overrides else None
    wait_for(lambda: healthy(url, auth=auth), timeout=40, interval=0.2)
    return url


# -- the files ---------------------------------------------------------------------------------------


def test_compose_services_are_as_documented():
    spec = compose()
    services = spec["services"]
    assert set(services) == {*OURS, "label-studio", *SENTINEL_PROFILE}
    assert all("profiles" not in services[s] for s in OURS)
    assert all(services[s]["profiles"] == ["sentinel"] for s in SENTINEL_PROFILE)

    redis_cmd = services["redis"]["command"]
    for flag, value in (("--appendonly", "yes"), ("--appendfsync", "everysec"), ("--maxmemory-policy", "noeviction")):
        assert redis_cmd[redis_cmd.index(flag) + 1] == value
    assert services["redis"]["volumes"] == ["redis-data:/data"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]

    for name in ("backend", "worker"):
        service = services[name]
        assert service["build"] == "."
        assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}
        model_dir = Settings.from_env(service_env(name)).model_dir
        assert service["volumes"] == [f"models:{model_dir}"], "web and workers must share the artifact directory"
        assert Settings.from_env(service_env(name)).redis_url == "redis://redis:6379/0"
    assert services["backend"]["ports"] == ["9090:9090"]
    assert services["backend"]["healthcheck"]["test"][:3] == ["CMD", "python", "-c"]
    assert "/health" in services["backend"]["healthcheck"]["test"][3]
    assert Settings.from_env(service_env("backend")).workers == Settings().workers

    worker = services["worker"]  # `docker compose up --scale worker=N` needs both
    assert "container_name" not in worker and "ports" not in worker

    ls = services["label-studio"]
    assert ls["image"] == "heartexlabs/label-studio:1.23.2" and ls["profiles"] == ["label-studio"]
    assert ls["environment"]["ML_BLOCK_LOCAL_IP"] == "false" and ls["environment"]["SSRF_PROTECTION_ENABLED"] == "false"
    assert service_env("backend")["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    assert set(spec["volumes"]) == {"redis-data", "models", "label-studio-data", "redis-replica-1-data", "redis-replica-2-data"}


def test_every_variable_the_files_set_is_one_the_backend_reads():
    # Not PROMETHEUS_MULTIPROC_DIR either: `serve` picks one per port, and a worker container given one
    # whose directory does not exist fails every job at its first model load (prometheus_client).
    for service in OURS:
        unknown = set(service_env(service)) - SETTINGS_ENV - OTHER_ENV
        assert not unknown, f"{service} sets variables nothing reads: {unknown}"
    assert not set(image_env()) - SETTINGS_ENV - OTHER_ENV
    for service in ("backend", "worker"):
        Settings.from_env({**image_env(), **service_env(service)})  # and each value parses


def test_the_sentinel_profile_is_a_master_two_replicas_and_three_sentinels_the_backend_follows(redis_server, tmp_path):
    """`docker compose --env-file sentinel.env up`: the file turns the profile on and points the
    backend and workers at the three Sentinels; each Sentinel's command, run here with the compose
    network's names as loopback, monitors the `redis` master under the name the backend asks for."""
    import redis as redis_py

    from backend.state.connection import redis_for, sentinel_addresses, storage_kind

    given = env_file("sentinel.env")
    assert given.pop("COMPOSE_PROFILES") == "sentinel" and set(given) <= SETTINGS_ENV
    services = compose()["services"]
    for name in ("redis-replica-1", "redis-replica-2"):
        command = services[name]["command"]
        assert command[command.index("--replicaof") + 1 :] == ["redis", "6379"]
        assert command[command.index("--appendonly") + 1] == "yes" and services[name]["volumes"] == [f"{name}-data:/data"]
    sentinels = [n for n in SENTINEL_PROFILE if n.startswith("sentinel-")]
    for service in ("backend", "worker"):
        settings = Settings.from_env(service_env(service, given))
        assert settings.redis_url == "" and not settings.embedded and settings.redis_min_replicas_ack == 1
        assert sentinel_addresses(settings.redis_sentinels) == [(n, 26379) for n in sentinels]
        assert storage_kind(redis_for(settings)) == "redis-sentinel"
        assert Settings.from_env(service_env(service)).redis_url == "redis://redis:6379/0"  # without the file: one Redis

    master = redis_py.Redis.from_url(redis_server)
    port = master.info("server")["tcp_port"]
    for n, name in enumerate(sentinels):
        script = services[name]["command"][2]
        assert "port 26379" in script and f"sentinel monitor {settings.redis_master_name} redis 6379 2" in script
        own = free_port()
        script = script.replace("redis 6379", f"127.0.0.1 {port}").replace("port 26379", f"port {own}")
        script = script.replace("/tmp/sentinel.conf", str(tmp_path / f"sentinel-{n}.conf"))
        process = Process(["sh", "-c", script], dict(os.environ), tmp_path / f"{name}.log")
        try:
            sentinel = redis_py.Redis(port=own, decode_responses=True)
            address = wait_for(lambda: _master_of(sentinel, settings.redis_master_name), timeout=20)
            assert address == ["127.0.0.1", port]
            assert sentinel.sentinel_master(settings.redis_master_name)["down-after-milliseconds"] == 5000
        finally:
            process.stop()


def _master_of(sentinel, name: str) -> list[str] | None:
    try:
        return list(sentinel.sentinel_get_master_addr_by_name(name) or []) or None
    except Exception:  # noqa: BLE001 - not up yet
        return None


def test_the_image_runs_the_commands_the_tests_run_as_a_non_root_user():
    steps = dockerfile()
    assert image_cmd() == SERVE and command_of("backend") == SERVE and command_of("worker") == WORKER
    users = [args for instruction, args in steps if instruction == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert [i for i, _ in steps].index("USER") < [i for i, _ in steps].index("CMD")
    installs = " ".join(args for instruction, args in steps if instruction == "RUN")
    assert "-r requirements.txt" in installs and "requirements-dev" not in installs
    image = steps[max(i for i, (instruction, _) in enumerate(steps) if instruction == "FROM") :]
    assert [args for instruction, args in image if instruction == "COPY"] == [
        "requirements.txt .",
        "backend ./backend",
        "--from=native /src/backend/_compiled.*.so ./backend/",
    ]
    assert ("RUN", "python -m backend.native") in steps  # its build stage compiles the hashing the image copies


def compose_command() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_accepts_the_file():
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    base = [*command, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml")]
    run = subprocess.run([*base, "config"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    listed = subprocess.run([*base, "--profile", "label-studio", "config", "--services"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == {*OURS, "label-studio"}


# -- the processes -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_backend_healthcheck_passes_with_basic_auth_on(services):
    user, password = "ops", "s3cret"
    url = web_machine(services, "web", WORKERS="1", BASIC_AUTH_USER=user, BASIC_AUTH_PASS=password)
    check = compose()["services"]["backend"]["healthcheck"]["test"][1:]
    argv = [sys.executable, *check[1:]]
    port = url.rsplit(":", 1)[1]
    base = {"PATH": services.env["PATH"], "PORT": port}
    assert subprocess.run(argv, env={**base, "BASIC_AUTH_USER": user, "BASIC_AUTH_PASS": password}, timeout=10).returncode == 0
    assert subprocess.run(argv, env=base, capture_output=True, timeout=10).returncode != 0  # 401 without them
    assert requests.get(f"{url}/health", timeout=5).status_code == 401


def pid_of(worker_name: str) -> int:
    """The pid in a worker name `backend-<host>-<pid>-<suffix>` (backend/jobs/worker.py)."""
    return int(worker_name.rsplit("-", 2)[1])


@pytest.mark.slow
def test_two_web_machines_and_two_workers_share_only_redis_and_the_artifact_directory(services, tweets):
    settings = Settings.from_env({}, redis_url=services.redis_url)
    r = redis.Redis.from_url(services.redis_url)
    queue = retrain_queue(settings, r)
    registry = Registry(services.model_dir)
    quiet = {"RETRAIN_THRESHOLD": "100000", "WORKERS": "1"}  # trainings only on START_TRAINING
    web_a = web_machine(services, "web-a", **quiet)
    web_b = web_machine(services, "web-b", **quiet)
    workers = [machine(services, f"worker-{n}", "worker", SLEEP_AT="fit", SLEEP_SECONDS="3") for n in (1, 2)]
    wait_for(lambda: r.exists(SCHEDULER_LOCKING_KEY_TEMPLATE % settings.queue_name), timeout=30)  # with_scheduler=True

    def served_everywhere(version: str) -> bool:
        return all(predict(url, ["the flight was on time"]).json()["results"][0]["model_version"] == version for url in (web_a, web_b))

    def ran_on(record: dict) -> int:
        return pid_of(Job.fetch(record["job_id"], connection=r, serializer=JSONSerializer).worker_name)

    # labels posted to web A are trained by either worker and served by both web machines
    post_labels(web_a, tweets, 0, 200, threads=4)
    start_training(web_a)
    first = settled(registry, 1, 200)[-1]
    assert first["decision"] == "promoted" and first["examples"] == 200
    assert ran_on(first) in {w.pid for w in workers}
    wait_for(lambda: served_everywhere(first["version"]), timeout=15)
    wait_for(lambda: queue.count == 0 and StartedJobRegistry(queue=queue).count == 0, timeout=60)  # label-error job done

    # annotations posted to web B are in the next retrain, which survives losing the worker running it
    post_labels(web_b, tweets, 200, 300, threads=4)
    start_training(web_b)

    def running_retrain() -> int | None:
        for job in Job.fetch_many(StartedJobRegistry(queue=queue).get_job_ids(), connection=r, serializer=JSONSerializer):
            if job and job.func_name == keys.RETRAIN_JOB and job.worker_name:
                return pid_of(job.worker_name)
        return None

    victim = next(w for w in workers if w.pid == wait_for(running_retrain, timeout=20))
    survivor = next(w for w in workers if w is not victim)
    for child in victim.children():  # its work-horse in `fit` (RQ gives it a process group of its own), its scheduler
        os.kill(child, signal.SIGKILL)
    victim.kill_group()  # and the worker itself: a lost machine
    second = settled(registry, 1, 300, timeout=60)[-1]
    assert second["decision"] == "promoted" and second["examples"] == 300, second["reason"]
    assert second["parent"] == first["version"] and registry.pointer(1).version == second["version"]
    assert ran_on(second) == survivor.pid and survivor.popen.poll() is None
    wait_for(lambda: served_everywhere(second["version"]), timeout=15)
