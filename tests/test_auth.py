import base64

from backend.auth import BasicAuth, basic_header


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
