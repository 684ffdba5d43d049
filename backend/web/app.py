"""The Flask app factory: settings, auth, JSON errors, metrics, blueprints."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import orjson
from flask import Flask, Response, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from .. import metrics
from ..config import Settings
from ..labelconfig import preload as preload_label_interface
from ..payload import InvalidPayload
from ..runtime import Runtime
from .auth import BasicAuth, Roles

log = logging.getLogger(__name__)


class FastJSON(DefaultJSONProvider):
    """Responses encoded by orjson: a 100-task `/predict` answer takes a tenth of the stdlib's time
    (keys in insertion order, UTF-8 instead of \\u escapes). What orjson refuses (an int beyond
    64 bits, a non-string key) goes through the stdlib encoder as before."""

    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if not kwargs:
            try:
                return orjson.dumps(obj, default=self.default).decode()
            except TypeError:  # orjson.JSONEncodeError
                pass
        return super().dumps(obj, **kwargs)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        try:
            body = orjson.dumps(obj, default=self.default)
        except TypeError:
            body = super().dumps(obj).encode()
        return self._app.response_class(body, mimetype=self.mimetype)


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Flask:
    """Build the WSGI app. With no REDIS_URL the retrain worker runs as a thread of this process."""
    settings = settings or (runtime.settings if runtime else Settings.from_env())
    runtime = runtime or Runtime.build(settings)
    settings.configure_logging()
    app = Flask(__name__)
    app.json = FastJSON(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.extensions["backend"] = runtime
    roles = Roles(
        BasicAuth(settings.basic_auth_user, settings.basic_auth_pass) if settings.auth_enabled else None,
        BasicAuth(settings.admin_user, settings.admin_pass) if settings.admin_auth_enabled else None,
        settings.metrics_public,
    )

    @app.before_request
    def _before() -> Any:
        g.started, g.cpu = time.perf_counter(), time.thread_time()
        if settings.embedded:
            from ..jobs.worker import start_embedded_worker

            start_embedded_worker(runtime)
        refused = roles.decide(request.path, request.headers.get("Authorization"))
        if refused == 403:
            response = jsonify(error="Label Studio's credentials do not reach the admin routes")
            response.status_code = 403
            return response
        if refused is not None:
            response = jsonify(error="authentication required")
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Basic realm="Login required"'
            return response
        return None

    @app.after_request
    def _after(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        metrics.REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
        metrics.LATENCY.labels(endpoint).observe(elapsed)
        cpu = time.thread_time() - g.get("cpu", time.thread_time())  # this request's own CPU, whatever else runs
        response.headers["Server-Timing"] = f"app;dur={elapsed * 1000:.2f}, cpu;dur={cpu * 1000:.2f}"
        response.headers["X-Backend-Worker"] = str(os.getpid())
        log.debug("%s %s %s %.1f ms", request.method, endpoint, response.status_code, elapsed * 1000)
        return response

    @app.errorhandler(InvalidPayload)
    def _invalid(exc: InvalidPayload) -> tuple[Response, int]:
        return jsonify(error=exc.message), exc.status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(error=exc.name, detail=exc.description), exc.code or 500

    @app.errorhandler(RedisError)
    def _redis(exc: RedisError) -> tuple[Response, int]:
        log.error("redis unavailable on %s %s: %s", request.method, request.path, type(exc).__name__)
        return jsonify(error="storage unavailable, try again"), 503

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(error="internal error"), 500

    from .admin import admin
    from .api import api
    from .ui import mount_rq_dashboard, ui

    preload_label_interface()
    app.register_blueprint(api)
    app.register_blueprint(admin)
    app.register_blueprint(ui)
    if not settings.embedded:
        mount_rq_dashboard(app, settings)
    return app
