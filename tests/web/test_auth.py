import base64

import fakeredis
import pytest
import requests
from requests.auth import HTTPBasicAuth

from backend.config import Settings
from backend.runtime import Runtime
from backend.web.app import create_app
from backend.web.auth import BasicAuth, basic_header


def requests_header(user: str, password: str) -> str:
    """The header Label Studio sends: `requests.auth.HTTPBasicAuth` on a prepared request (latin-1)."""
    return requests.Request("GET", "http://x/", auth=HTTPBasicAuth(user, password)).prepare().headers["Authorization"]


def test_basic_auth_accepts_only_the_configured_pair_including_non_ascii():
    auth = BasicAuth("admin", "pässwörd")
    assert auth.check(basic_header("admin", "pässwörd"))
    assert not auth.check(basic_header("admin", "passwort"))
    assert not auth.check(basic_header("Admin", "pässwörd"))
    assert not auth.check(None)
    assert not auth.check("Bearer abc")
    assert not auth.check("Basic !!!not-base64!!!")
    assert not auth.check("Basic " + base64.b64encode(b"no-colon").decode())
    assert not auth.check("Basic é")
    assert not auth.check("Basic " + "A" * 100_000)


def test_label_studio_requests_latin1_header_and_curl_utf8_header_are_both_accepted():
    auth = BasicAuth("admin", "pässwörd")
    latin1, utf8 = requests_header("admin", "pässwörd"), basic_header("admin", "pässwörd")
    assert latin1 != utf8
    assert base64.b64decode(latin1.split()[1]) == "admin:pässwörd".encode("latin-1")
    assert auth.check(latin1)
    assert auth.check(utf8)


def test_wrong_passwords_are_refused_in_either_encoding():
    auth = BasicAuth("admin", "pässwörd")
    for wrong in ("pässwort", "passwörd", "pässwörd ", "PÄSSWÖRD", ""):
        assert not auth.check(requests_header("admin", wrong)), wrong
        assert not auth.check(basic_header("admin", wrong)), wrong
    double_encoded = "pässwörd".encode().decode("latin-1")  # "pÃ¤sswÃ¶rd"
    assert not auth.check(basic_header("admin", double_encoded))


def test_a_password_outside_latin1_is_compared_as_utf8_only():
    auth = BasicAuth("admin", "пароль")
    assert auth.check(basic_header("admin", "пароль"))
    assert not auth.check(basic_header("admin", "парол"))
    with pytest.raises(UnicodeEncodeError):  # why LS cannot send it: requests encodes as latin-1
        requests_header("admin", "пароль")


def test_a_non_ascii_user_name_is_accepted_in_either_encoding():
    auth = BasicAuth("jürgen", "pässwörd")
    assert auth.check(requests_header("jürgen", "pässwörd"))
    assert auth.check(basic_header("jürgen", "pässwörd"))
    assert not auth.check(requests_header("jurgen", "pässwörd"))
    assert not auth.check(basic_header("Jürgen", "pässwörd"))
    cyrillic = BasicAuth("юзер", "pässwörd")
    assert cyrillic.check(basic_header("юзер", "pässwörd"))
    assert not cyrillic.check(basic_header("юзе", "pässwörd"))


def test_health_answers_the_label_studio_header_and_refuses_none(tmp_path):
    settings = Settings(basic_auth_user="admin", basic_auth_pass="pässwörd", model_dir=tmp_path)
    runtime = Runtime.build(settings, redis=fakeredis.FakeRedis())
    try:
        client = create_app(settings, runtime).test_client()
        assert client.get("/health", headers={"Authorization": requests_header("admin", "pässwörd")}).status_code == 200
        assert client.get("/health").status_code == 401
        assert client.get("/health", headers={"Authorization": requests_header("admin", "pässwort")}).status_code == 401
    finally:
        runtime.stop()


LS_CALLS = [
    ("GET", "/"),
    ("GET", "/health"),
    ("POST", "/setup"),
    ("POST", "/predict"),
    ("POST", "/webhook"),
    ("GET", "/versions"),
    ("POST", "/train"),
]
ADMIN_CALLS = [
    ("GET", "/projects/1/models"),
    ("POST", "/projects/1/rollback"),
    ("POST", "/projects/1/train"),
    ("GET", "/projects/1/rules"),
    ("GET", "/projects/1/labels"),
    ("GET", "/projects/1/settings"),
    ("PUT", "/projects/1/settings"),
    ("PATCH", "/projects/1/settings"),
    ("GET", "/projects/1/stopping"),
    ("GET", "/projects/1/monitor"),
    ("GET", "/projects/1/audit"),
    ("GET", "/projects/1/agreement"),
    ("GET", "/projects/1/mislabels"),
    ("DELETE", "/projects/1"),
    ("GET", "/queue?project=1"),
    ("GET", "/ui"),
    ("GET", "/rq/"),
    ("GET", "/metrics"),
]


@pytest.fixture
def app_with(tmp_path):
    """An app built with `Settings(**overrides)`; its runtimes stop after the test."""
    runtimes = []

    def build(**overrides):
        settings = Settings(model_dir=tmp_path, **overrides)
        runtime = Runtime.build(settings, redis=fakeredis.FakeRedis())
        runtimes.append(runtime)
        return create_app(settings, runtime).test_client()

    yield build
    for runtime in runtimes:
        runtime.stop()


def call(client, method: str, path: str, header: str | None) -> int:
    headers = {"Authorization": header} if header else {}
    return client.open(path, method=method, headers=headers, json={}).status_code


LS, ADMIN = ("ls", "lspässword"), ("boss", "bößpass")


@pytest.mark.parametrize("method, path", LS_CALLS + ADMIN_CALLS + [("GET", "/openapi.json")])
def test_with_admin_credentials_each_route_takes_its_role(app_with, method, path):
    client = app_with(basic_auth_user=LS[0], basic_auth_pass=LS[1], admin_user=ADMIN[0], admin_pass=ADMIN[1])
    label_studio, admin = requests_header(*LS), basic_header(*ADMIN)
    assert call(client, method, path, None) == 401
    assert call(client, method, path, basic_header("nobody", "nothing")) == 401
    assert call(client, method, path, admin) not in (401, 403)  # the admin reaches every route
    if (method, path) in ADMIN_CALLS:
        assert call(client, method, path, label_studio) == 403  # LS's credentials stop at the admin routes
    else:
        assert call(client, method, path, label_studio) not in (401, 403)


@pytest.mark.parametrize("method, path", LS_CALLS[:3] + ADMIN_CALLS[:3])
def test_admin_credentials_without_ls_credentials_leave_ls_routes_open(app_with, method, path):
    client = app_with(admin_user=ADMIN[0], admin_pass=ADMIN[1])
    if (method, path) in ADMIN_CALLS:
        assert call(client, method, path, None) == 401 and call(client, method, path, basic_header(*ADMIN)) not in (401, 403)
    else:
        assert call(client, method, path, None) not in (401, 403)


def test_without_admin_credentials_the_one_credential_guards_every_route(app_with):
    client = app_with(basic_auth_user=LS[0], basic_auth_pass=LS[1])
    for method, path in LS_CALLS + ADMIN_CALLS:
        assert call(client, method, path, None) == 401
        assert call(client, method, path, requests_header(*LS)) not in (401, 403), path


def test_metrics_public_opens_only_metrics(app_with):
    client = app_with(basic_auth_user=LS[0], basic_auth_pass=LS[1], admin_user=ADMIN[0], admin_pass=ADMIN[1], metrics_public=True)
    assert call(client, "GET", "/metrics", None) == 200
    assert call(client, "GET", "/projects/1/models", None) == 401 and call(client, "GET", "/health", None) == 401
    closed = app_with(basic_auth_user=LS[0], basic_auth_pass=LS[1], admin_user=ADMIN[0], admin_pass=ADMIN[1])
    assert call(closed, "GET", "/metrics", None) == 401


def test_the_roles_settings_are_read_from_the_environment():
    settings = Settings.from_env({"ADMIN_USER": "boss", "ADMIN_PASS": "x", "METRICS_PUBLIC": "true"})
    assert (settings.admin_user, settings.admin_pass, settings.metrics_public) == ("boss", "x", True)
