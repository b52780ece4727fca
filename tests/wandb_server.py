"""A W&B server in the test process: what `wandb.Api()` reaches over the network.

`wandb.Api()` verifies the login with the server when it is made, and wandb-workspaces sends
every report query through the API's GraphQL transport (`Api._service_api.execute_graphql`,
see `wandb_workspaces._graphql`). `FakeApi` is an `Api` whose transport is this server: the
real `Report`, `Runset` and panels build and serialise their spec exactly as they would for
wandb.ai, and the server keeps what was sent (`views`: the `upsertView` variables, the spec
as JSON) and answers as W&B does (the saved view with its id)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

from wandb_log import read_records


class FakeWandbServer:
    def __init__(self, app_url: str = "https://wandb.example.org", entity: str = "e"):
        self.app_url = app_url
        self.entity = entity
        self.runs: list[SimpleNamespace] = []
        self.projects: set[tuple[str, str]] = set()
        self.upserts: list[dict] = []
        self.fail_upsert: Exception | None = None
        self.down = False
        """True: uploads fail as with no network (`wandb sync` prints an error)."""
        self.syncs: list[tuple[list[str], Path]] = []

    def add_runs(self, ids, group: str | None, job_type: str = "train") -> None:
        self.runs += [SimpleNamespace(id=i, group=group, job_type=job_type) for i in ids]

    def wandb_sync(self, paths: list[str], cwd: Path) -> subprocess.CompletedProcess:
        """`wandb sync PATHS` run in `cwd` against this server: each offline run folder's log
        becomes a run here, and is marked synced beside it as wandb-core marks it."""
        self.syncs.append((list(paths), Path(cwd)))
        if self.down:
            return subprocess.CompletedProcess([], 0, "", "wandb: ERROR network is unreachable")
        for path in paths:
            for log in (Path(cwd) / path).glob("*.wandb"):
                run = next(r.run for r in read_records(log) if r.WhichOneof("record_type") == "run")
                self.add_runs([run.run_id], run.run_group or None, run.job_type)
                log.with_suffix(".wandb.synced").touch()
        return subprocess.CompletedProcess([], 0, f"Synced {len(paths)} run(s)", "")

    def execute_graphql(self, query: str, variables: dict | None = None) -> dict:
        variables = variables or {}
        if "upsertView" in query:
            if self.fail_upsert is not None:
                raise self.fail_upsert
            self.upserts.append(variables)
            view_id = variables.get("id") or f"view{len(self.upserts)}"
            return {"upsertView": {"inserted": not variables.get("id"), "view": {
                "id": view_id, "type": variables["type"], "name": variables["name"],
                "displayName": variables["displayName"], "description": variables["description"],
                "project": {"id": "p1", "name": variables["projectName"],
                            "entityName": variables["entityName"]},
                "spec": variables["spec"], "updatedAt": "2024-06-01T12:00:00",
            }}}  # fmt: skip
        if "internalId" in query:  # a run set's project
            return {
                "project": {"internalId": f"{variables['entityName']}/{variables['projectName']}"}
            }
        raise AssertionError(f"the fake W&B server does not answer: {query.split('(')[0]}")

    @property
    def spec(self) -> dict:
        """The last report spec sent."""
        return json.loads(self.upserts[-1]["spec"])


class FakeApi:
    """`wandb.Api` over `FakeWandbServer`."""

    def __init__(self, server: FakeWandbServer):
        self._service_api = server
        self.default_entity = server.entity

    def projects(self, entity: str):
        return [SimpleNamespace(name=p) for e, p in self._service_api.projects if e == entity]

    def create_project(self, project: str, entity: str) -> None:
        self._service_api.projects.add((entity, project))

    def runs(self, path: str, filters: dict | None = None, **kwargs):
        group = (filters or {}).get("group")
        return [r for r in self._service_api.runs if group is None or r.group == group]
