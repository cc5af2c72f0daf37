"""HTTP(S) downloads for the data: one GET with a one-line error, retried with back-off on transient failures.

``open_url`` turns every failure into ``ConnectionError`` naming the URL; an HTTP 4xx (404...) is ``NotThere``,
which ``retrying`` does not retry, since asking again will not help. Both the CIFAR-10 archive and GPT-1's
weights are fetched through these two functions.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

__all__ = ["NotThere", "open_url", "retrying"]

T = TypeVar("T")


class NotThere(ConnectionError):
    """The server answered with an HTTP client error (404...): retrying will not help."""


def open_url(url: str, timeout: float = 60):
    """The response to GET ``url``: ``NotThere`` for an HTTP 4xx, ``ConnectionError`` for other failures."""
    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as error:
        kind = NotThere if error.code < 500 else ConnectionError
        raise kind(f"cannot download {url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        raise ConnectionError(f"cannot download {url} ({getattr(error, 'reason', error)})") from error


def retrying(function: Callable[[], T], retries: int, wait: float, hint: str = "check the network") -> T:
    """``function()``, tried again up to ``retries`` times (after ``wait``, ``2 wait``, ...) on network errors.

    A ``NotThere`` and errors other than ``OSError``/``http.client.HTTPException`` (a checksum mismatch is a
    ``ValueError``) are raised at once; the last network error is raised as ``ConnectionError`` ending in ``hint``.
    """
    for attempt in range(retries + 1):
        try:
            return function()
        except NotThere:
            raise
        except (OSError, http.client.HTTPException) as error:
            if attempt == retries:
                raise ConnectionError(f"{error} (after {retries + 1} attempts; {hint})") from error
            time.sleep(wait * 2**attempt)
    raise AssertionError("unreachable")
