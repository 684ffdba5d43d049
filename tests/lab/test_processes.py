import time

import pytest

from lab import processes


def test_waits_stretch_with_the_load_within_bounds(monkeypatch):
    assert 1.0 <= processes.stretch() <= processes.MAX_STRETCH
    monkeypatch.setattr(processes.os, "getloadavg", lambda: (100.0, 0.0, 0.0))
    assert processes.stretch() == processes.MAX_STRETCH
    monkeypatch.setattr(processes.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert processes.stretch() == 1.0


def test_wait_for_returns_the_value_or_fails_after_the_stretched_timeout(monkeypatch):
    assert processes.wait_for(lambda: "ready", timeout=1) == "ready"
    monkeypatch.setattr(processes, "stretch", lambda: 3.0)
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"0\.1 s on an idle machine"):
        processes.wait_for(lambda: None, timeout=0.1, interval=0.01)
    assert time.monotonic() - started >= 0.3
