"""The reference: a bare ThreadingHTTPServer (HTTP/1.1 keep-alive, TCP_NODELAY, listen
backlog 128) answering a fixed ~200-byte JSON on every path, GET or POST.

It is the ceiling of this design on this machine, measured in the same run as the
real server so that results are ratios. Prints {"port": N} and serves until killed.
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import HOST, REFERENCE_BODY  # noqa: E402

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(REFERENCE_BODY)).encode() + b"\r\n\r\n" + REFERENCE_BODY)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.wfile.write(RESPONSE)  # one write: headers and body

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a load generator hanging up at the end is not news


def main() -> None:
    server = Server((HOST, 0), Handler)
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
