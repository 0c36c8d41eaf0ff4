"""Servers on 127.0.0.1 for tests: a file served slowly (downloads that take long enough to watch,
cancel or kill), and the app of ``napari-iog serve`` on uvicorn on a free port."""

import http.server
import socket
import threading
import time


class _SlowFile(http.server.BaseHTTPRequestHandler):
    body = b""
    chunk = 1 << 18
    delay = 0.0

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        for i in range(0, len(self.body), self.chunk):
            self.wfile.write(self.body[i:i + self.chunk])
            time.sleep(self.delay)

    def log_message(self, *args):
        pass


class SlowFileServer:
    """Serves ``body`` at any path, ``chunk`` bytes then a ``delay`` pause at a time;
    ``handler.delay`` may be changed while it runs. A client going away mid-file is no error."""

    def __init__(self, body: bytes, chunk: int = 1 << 18, delay: float = 0.0):
        self.handler = type("Handler", (_SlowFile,), {"body": body, "chunk": chunk, "delay": delay})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        self.httpd.handle_error = lambda request, address: None
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``napari-iog serve``'s app on uvicorn in a thread on 127.0.0.1, stopped by :meth:`stop`."""

    def __init__(self, app):
        self.port = free_port()
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)
