"""web: answers GET / with the newest greeting in its database, and how often it was asked (redis)."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

import resp


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        try:
            with psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=5) as conn:
                row = conn.execute("SELECT message FROM greeting ORDER BY id DESC LIMIT 1").fetchone()
            body = {"message": row[0] if row else None, "hits": resp.command("INCR", "hits"),
                    "worker": resp.command("GET", "worker:beat"),
                    "workspace": os.environ.get("SANDBOX_WORKSPACE")}
            code = 200
        except Exception as exc:  # noqa: BLE001 - the example reports, it does not crash
            body, code = {"error": str(exc)}, 500
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
