"""The download helpers: which failures are retried, how long between tries, and what the last error says."""

from __future__ import annotations

import http.client

import pytest

from replab.data import http as downloads


@pytest.fixture
def sleeps(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(downloads.time, "sleep", waits.append)
    return waits


def failing(errors: list[BaseException], result="done"):
    """A function that raises ``errors`` one per call, then returns ``result``; counts its calls."""

    def function():
        function.calls += 1
        if errors:
            raise errors.pop(0)
        return result

    function.calls = 0
    return function


def test_network_errors_are_retried_with_doubling_waits(sleeps):
    function = failing([ConnectionResetError("reset"), http.client.IncompleteRead(b"x", 10), TimeoutError()])
    assert downloads.retrying(function, retries=3, wait=0.5) == "done"
    assert function.calls == 4 and sleeps == [0.5, 1.0, 2.0]


def test_the_last_error_names_the_attempts_and_the_hint(sleeps):
    function = failing([OSError("down")] * 3)
    with pytest.raises(ConnectionError, match=r"^down \(after 3 attempts; try a mirror\)$"):
        downloads.retrying(function, retries=2, wait=1.0, hint="try a mirror")
    assert function.calls == 3 and sleeps == [1.0, 2.0]


@pytest.mark.parametrize("error", [downloads.NotThere("HTTP 404"), ValueError("MD5 mismatch"), KeyError("x")])
def test_client_errors_and_bad_content_are_not_retried(sleeps, error):
    function = failing([error])
    with pytest.raises(type(error)):
        downloads.retrying(function, retries=5, wait=1.0)
    assert function.calls == 1 and sleeps == []


def test_open_url_names_the_url_of_an_unreachable_server():
    with pytest.raises(ConnectionError, match=r"cannot download http://127\.0\.0\.1:9/x") as info:
        downloads.open_url("http://127.0.0.1:9/x", timeout=5)
    assert not isinstance(info.value, downloads.NotThere)  # worth retrying
