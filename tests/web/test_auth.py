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
