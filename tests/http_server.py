"""A real HTTP server on 127.0.0.1 for download tests: Range requests, ETags and injected faults."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes
    content_type: str = "application/octet-stream"
    status: int = 200
    drop_after: int | None = None  # close the connection after this many body bytes (once)
    delay_per_chunk_s: float = 0.0  # serve slowly, for kill-during-download tests
    chunk: int = 1 << 16
    requests: list[dict] = field(default_factory=list)


class FileServer:
    """Serves `routes` (path → Route); records each request's headers for assertions."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def _serve(self, head: bool) -> None:
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                route.requests.append(dict(self.headers))
                body, start = route.body, 0
                etag = '"' + hashlib.md5(body).hexdigest() + '"'
                rng = self.headers.get("Range")
                if self.headers.get("If-Range") not in (None, etag):
                    rng = None  # RFC 9110: the file changed, so the whole new file is sent
                if route.status != 200:
                    self.send_response(route.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", etag)
                self.end_headers()
                if head:
                    return
                payload = body[start:]
                if route.drop_after is not None:
                    cut, route.drop_after = route.drop_after, None
                    self.wfile.write(payload[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                for i in range(0, len(payload), route.chunk):
                    if route.delay_per_chunk_s:
                        time.sleep(route.delay_per_chunk_s)
                    try:
                        self.wfile.write(payload[i : i + route.chunk])
                        self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):  # the client was killed
                        return

            def do_GET(self) -> None:
                self._serve(head=False)

            def do_HEAD(self) -> None:
                self._serve(head=True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
