"""A W&B server on a local port, for W&B's own processes (`wandb sync`, wandb-core): the
network layer, replaced. It answers the GraphQL operations a sync sends with what W&B
answers (a run upserted, an artifact created, its files' upload URLs on this server,
committed) and keeps what it received: the operations with their variables, and the bytes
each uploaded file had. Point W&B at it with WANDB_BASE_URL and any 40-character
WANDB_API_KEY."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WandbHTTPServer:
    def __init__(self):
        self.operations: list[tuple[str, dict]] = []
        """(GraphQL operation name, variables), in the order received."""
        self.uploads: dict[str, int] = {}
        """Uploaded file name -> its size in bytes."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _reply(self, payload: bytes = b"{}") -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):
                body = self._body()
                if self.path != "/graphql":  # file_stream, telemetry: accepted
                    return self._reply()
                query = json.loads(body)
                found = re.search(r"(?:query|mutation)\s+(\w+)", query.get("query", ""))
                name = found.group(1) if found else "?"
                variables = query.get("variables") or {}
                server.operations.append((name, variables))
                self._reply(json.dumps({"data": server.answer(name, variables)}).encode())

            def do_PUT(self):
                server.uploads[self.path.removeprefix("/upload/")] = len(self._body())
                self._reply(b"")

            def do_GET(self):
                self._reply()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> WandbHTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def named(self, operation: str) -> list[dict]:
        return [v for name, v in self.operations if name == operation]

    def answer(self, name: str, v: dict) -> dict:
        inp = v.get("input") or {}
        upload = f"{self.url}/upload/wandb_manifest.json"
        manifest = {"id": "man1", "file": {"id": "f0", "directUrl": "", "uploadHeaders": [],
                                           "uploadUrl": upload}}  # fmt: skip
        if name == "UpsertBucket":
            return {"upsertBucket": {"inserted": True, "bucket": {
                "id": "b1", "name": v.get("name"), "displayName": v.get("displayName"),
                "description": None, "config": "{}", "sweepName": None, "historyLineCount": 0,
                "project": {"id": "p1", "name": v.get("project"),
                            "entity": {"id": "e1", "name": "e"}},
            }}}  # fmt: skip
        if name == "CreateArtifact":
            sequence = {"latestArtifact": None}
            return {"createArtifact": {"artifact": {"id": "art1", "state": "PENDING",
                                                    "artifactSequence": sequence}}}  # fmt: skip
        if name == "CreateArtifactManifest":
            return {"createArtifactManifest": {"artifactManifest": manifest}}
        if name == "UpdateArtifactManifest":
            return {"updateArtifactManifest": {"artifactManifest": manifest}}
        if name == "CreateArtifactFiles":
            return {"createArtifactFiles": {"files": {"edges": [{"node": {
                "id": f"f{i}", "name": f["name"], "displayName": f["name"],
                "uploadUrl": f"{self.url}/upload/{f['name']}", "uploadHeaders": [],
                "uploadMultipartUrls": None, "storagePath": f["name"], "artifact": {"id": "art1"},
            }} for i, f in enumerate(inp.get("artifactFiles", []))]}}}  # fmt: skip
        if name == "CommitArtifact":
            return {"commitArtifact": {"artifact": {"id": "art1", "digest": "d"}}}
        if name == "CreateRunFiles":
            return {"createRunFiles": {"runID": "b1", "uploadHeaders": [], "files": [
                {"name": f, "uploadUrl": f"{self.url}/upload/run/{f}"} for f in v.get("files", [])
            ]}}  # fmt: skip
        return {}  # RunResumeStatus (a new run), ServerFeaturesQuery (none)
