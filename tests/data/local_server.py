"""A local HTTP server for the download tests: serves a folder, and can fail or cut short chosen requests once."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Server:
    """``base`` URL; ``requests``: the paths asked for, in order; a path put in ``fail_once`` gets one 503, one in
    ``cut_once`` gets its full Content-Length header but only half its body once, then the connection closes."""

    base: str
    requests: list[str] = field(default_factory=list)
    fail_once: set[str] = field(default_factory=set)
    cut_once: set[str] = field(default_factory=set)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, server_state: Server, **kwargs):
        self.state = server_state
        super().__init__(*args, **kwargs)

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.state.requests.append(self.path)
        if self.path in self.state.fail_once:
            self.state.fail_once.remove(self.path)
            self.send_error(503)
            return
        if self.path in self.state.cut_once:
            self.state.cut_once.remove(self.path)
            body = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[Server]:
    """Serve ``folder`` on 127.0.0.1 (a free port) while the block runs."""
    state = Server("")
    handler = functools.partial(_Handler, directory=str(folder), server_state=state)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
