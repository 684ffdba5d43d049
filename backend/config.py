"""Configuration: every environment variable the backend reads, in one place."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Process-wide settings, read once from the environment (names LS users know).

    `worker_nice` (WORKER_NICE): the CPU priority (Linux nice value, 0-19) of train workers (the
    `worker` process and its work-horses, or the embedded worker thread), so training on the host
    of the web workers yields the CPU to requests; 0 keeps the priority it was started with.
    """

    label_studio_url: str = ""
    label_studio_api_key: str = ""
    model_dir: Path = Path("models")
    basic_auth_user: str = ""
    basic_auth_pass: str = ""
    admin_user: str = ""  # with admin_pass: the admin routes' own credential (backend/web/auth.py)
    admin_pass: str = ""
    metrics_public: bool = False  # /metrics without credentials, for a scraper
    redis_url: str = ""
    redis_sentinels: str = ""  # host:port,host:port: find the master through Sentinel instead of REDIS_URL
    redis_master_name: str = ""  # the master's name in Sentinel's configuration
    redis_password: str = ""  # the data servers' (REDIS_URL's own password wins where it has one)
    redis_sentinel_password: str = ""  # the Sentinels' own `requirepass`
    redis_min_replicas_ack: int = 0  # a webhook is answered 2xx only once this many replicas hold its writes
    log_level: str = "INFO"
    host: str = "0.0.0.0"
    port: int = 9090
    workers: int = 2
    threads: int = 4
    max_request_bytes: int = 32 * 1024 * 1024
    max_text_chars: int = 20_000
    max_tasks_per_request: int = 10_000
    queue_name: str = "retrain"
    retrain_threshold: int = 5
    retrain_min_interval: float = 1.0
    job_timeout: int = 900
    job_retries: int = 3
    gate_metric: str = "macro_f1"
    gate_margin: float = 0.01
    multilabel_threshold: float = 0.5
    swap_poll_interval: float = 0.25
    redis_timeout: float = 0.3
    model_title: str = "TextClassifier"
    label_studio_timeout: float = 30.0
    trigger_check_interval: float = 10.0  # seconds between live-accuracy / drift trigger checks per project
    worker_nice: int = 10
    labeling_rules_file: str = ""  # a JSON list of labeling rules every project starts with (backend/rules.py)
    model_families: str = ""  # extra model families, `package.module:Class,...` (backend/families)
    embedded_store: str = "auto"  # without REDIS_URL: auto | redis (a private redis-server in MODEL_DIR/.redis) | memory (fakeredis)

    def configure_logging(self) -> None:
        """One log format for web processes and workers, at LOG_LEVEL."""
        logging.basicConfig(level=self.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    @property
    def auth_enabled(self) -> bool:
        return bool(self.basic_auth_user and self.basic_auth_pass)

    @property
    def admin_auth_enabled(self) -> bool:
        return bool(self.admin_user and self.admin_pass)

    @property
    def embedded(self) -> bool:
        """Neither REDIS_URL nor REDIS_SENTINELS: the embedded store (`connection`, EMBEDDED_STORE) and
        in-process worker threads."""
        return not self.redis_url and not self.redis_sentinels

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = env.get(field.name.upper())
            if field.name == "label_studio_url" and not raw:
                raw = env.get("LABEL_STUDIO_HOST")
            if field.name == "label_studio_api_key" and not raw:
                raw = env.get("LABEL_STUDIO_ACCESS_TOKEN")
            if raw is None or raw == "":
                continue
            default = field.default
            if isinstance(default, bool):
                values[field.name] = _bool(raw)
            elif isinstance(default, int):
                values[field.name] = int(raw)
            elif isinstance(default, float):
                values[field.name] = float(raw)
            elif isinstance(default, Path):
                values[field.name] = Path(raw)
            else:
                values[field.name] = raw
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
