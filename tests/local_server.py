"""A file served slowly from 127.0.0.1: downloads that take long enough to watch, cancel or kill."""

import http.server
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
