"""A real local webhook for alert tests: a Slack-compatible HTTP server in a thread that
can be "down"."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Webhook:
    """Records every POST; answers 500 while ``down``, and sleeps ``delay`` first."""

    def __init__(self) -> None:
        self.down = False
        self.delay = 0.0
        self.requests: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(hook.delay)
                status = 500 if hook.down else 200
                hook.requests.append(
                    {"text": body["text"], "key": self.headers["Idempotency-Key"], "status": status}
                )
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def accepted(self) -> list[dict]:
        return [r for r in self.requests if r["status"] == 200]

    def texts(self, since: int = 0) -> list[str]:
        """The accepted messages' texts, from the ``since``-th accepted one on."""
        return [r["text"] for r in self.accepted[since:]]

    def stale_alerts(self, since: int = 0) -> list[str]:
        return [t for t in self.texts(since) if "incident" in t and "is stale" in t]

    def stale_recoveries(self, since: int = 0) -> list[str]:
        return [t for t in self.texts(since) if "recovered" in t and "is stale" in t]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
