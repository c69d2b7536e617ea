"""A stateful fake of the parts of Heroku's Platform API the `heroku` architect uses,
behind respx (https://api.heroku.com and a source bucket), so tests need no network.

Every API call's headers are checked (`Accept: application/vnd.heroku+json; version=3`,
`Authorization: Bearer <the good key>`, JSON bodies with their content type); answers
have the documented shapes. A wrong key is answered 401 as Heroku does. The source's
`put_url` keeps the uploaded tarball (its Content-Type must be empty, as the presigned
URL demands); a build of a source never uploaded fails. When the secret arrives in the
config vars, the fake starts a real `mephisto router` with it and gives the app that
router's URL as `web_url` (what Heroku's dyno would be); deleting the app kills it.
`fail_builds` makes builds end `failed`, `builds_hang` keeps them pending. Calls the fake does not know are answered 404
and recorded in `unknown`.
"""

from __future__ import annotations

import io
import itertools
import json
import tarfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import respx

from mephisto.testing.router import RouterProcess

API = "https://api.heroku.com"
SOURCES = "https://heroku-sources.s3.example.com"
GOOD_KEY = "heroku-good-key-0123456789"


class FakeHeroku:
    def __init__(self, tmp_path: Path, start_routers: bool = True) -> None:
        self.tmp_path = tmp_path
        self.start_routers = start_routers
        self.apps: dict[str, dict[str, Any]] = {}  # by name
        self.config_vars: dict[str, dict[str, str]] = {}
        self.routers: dict[str, RouterProcess] = {}
        self.uploads: dict[str, bytes | None] = {}  # source id -> tarball
        self.builds: dict[str, dict[str, Any]] = {}
        self.fail_builds = False
        self.builds_hang = False  # builds stay pending
        self.calls: list[tuple[str, str]] = []
        self.unknown: list[str] = []
        self.deleted: list[str] = []
        self._polls = itertools.count()

    # -- helpers ---------------------------------------------------------------------

    def _check_api(self, request: httpx.Request, json_body: bool = False) -> httpx.Response | None:
        self.calls.append((request.method, request.url.path))
        assert request.headers["accept"] == "application/vnd.heroku+json; version=3"
        if request.headers.get("authorization") != f"Bearer {GOOD_KEY}":
            return httpx.Response(401, json={"id": "unauthorized",
                                             "message": "Invalid credentials provided."})
        if json_body:
            assert request.headers["content-type"] == "application/json"
        return None

    def _app(self, ident: str) -> dict[str, Any] | None:
        for app in self.apps.values():
            if ident in (app["id"], app["name"]):
                return app
        return None

    def _api_app(self, request: httpx.Request, app: str, json_body: bool = False
                 ) -> dict[str, Any] | httpx.Response:
        """The app a Platform API call names, or the answer refusing the call (bad
        credentials: 401; no such app: 404)."""
        refused = self._check_api(request, json_body)
        if refused:
            return refused
        found = self._app(app)
        return self._not_found() if found is None else found

    @staticmethod
    def _not_found() -> httpx.Response:
        return httpx.Response(404, json={"id": "not_found",
                                         "message": "Couldn't find that app."})

    def tarball_names(self, source_id: str | None = None) -> list[str]:
        data = self.uploads[source_id or next(iter(self.uploads))]
        assert data is not None
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            return tar.getnames()

    def tarball_text(self, name: str) -> str:
        data = next(iter(self.uploads.values()))
        assert data is not None
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            member = tar.extractfile(name)
            assert member is not None
            return member.read().decode()

    # -- endpoints -------------------------------------------------------------------

    def create_app(self, request: httpx.Request) -> httpx.Response:
        refused = self._check_api(request, json_body=True)
        if refused:
            return refused
        body = json.loads(request.content)
        assert set(body) <= {"name", "region", "stack", "team"}, body
        name = body.get("name") or f"fake-{uuid.uuid4().hex[:8]}"
        if name in self.apps:
            return httpx.Response(422, json={"id": "invalid_params",
                                             "message": "Name is already taken"})
        app = {"id": str(uuid.uuid4()), "name": name, "region": {"name": body.get("region")},
               "web_url": f"https://{name}-0123456789ab.herokuapp.com/",
               "created_at": "2026-11-30T12:00:00Z"}
        self.apps[name] = app
        return httpx.Response(201, json=app)

    def config_vars_patch(self, request: httpx.Request, app: str) -> httpx.Response:
        found = self._api_app(request, app, json_body=True)
        if isinstance(found, httpx.Response):
            return found
        body = json.loads(request.content)
        assert all(isinstance(v, str) for v in body.values()), body
        config = self.config_vars.setdefault(found["name"], {})
        config.update(body)
        secret = config.get("MEPHISTO_ROUTER_SECRET")
        if secret and self.start_routers and found["name"] not in self.routers:
            router = RouterProcess(self.tmp_path / f"heroku-{found['name']}", secret).start()
            self.routers[found["name"]] = router
            found["web_url"] = router.url
        return httpx.Response(200, json=config)

    def create_source(self, request: httpx.Request) -> httpx.Response:
        refused = self._check_api(request)
        if refused:
            return refused
        source_id = uuid.uuid4().hex
        self.uploads[source_id] = None
        return httpx.Response(201, json={"source_blob": {
            "get_url": f"{SOURCES}/get/{source_id}?signature=g",
            "put_url": f"{SOURCES}/put/{source_id}?signature=p"}})

    def put_source(self, request: httpx.Request, source_id: str) -> httpx.Response:
        if source_id not in self.uploads:
            return httpx.Response(403)
        assert "authorization" not in request.headers  # the key stays with Heroku's API
        assert request.headers.get("content-type", "") == ""
        self.uploads[source_id] = request.content
        return httpx.Response(200)

    def create_build(self, request: httpx.Request, app: str) -> httpx.Response:
        found = self._api_app(request, app, json_body=True)
        if isinstance(found, httpx.Response):
            return found
        blob = json.loads(request.content)["source_blob"]
        source_id = blob["url"].split("/get/")[1].split("?")[0]
        uploaded = self.uploads.get(source_id) is not None
        build = {"id": str(uuid.uuid4()), "app": {"id": found["id"]},
                 "status": "pending", "source_blob": blob, "polls": 0,
                 "fails": self.fail_builds or not uploaded,
                 "output_stream_url": f"https://build-output.heroku.com/streams/{source_id}"}
        self.builds[build["id"]] = build
        return httpx.Response(201, json={k: v for k, v in build.items()
                                         if k not in ("polls", "fails")})

    def get_build(self, request: httpx.Request, app: str, build_id: str) -> httpx.Response:
        found = self._api_app(request, app)
        if isinstance(found, httpx.Response):
            return found
        build = self.builds.get(build_id)
        if build is None:
            return self._not_found()
        build["polls"] += 1
        if build["polls"] >= 2 and not self.builds_hang:  # pending once, then done
            build["status"] = "failed" if build["fails"] else "succeeded"
        return httpx.Response(200, json={k: v for k, v in build.items()
                                         if k not in ("polls", "fails")})

    def get_app(self, request: httpx.Request, app: str) -> httpx.Response:
        found = self._api_app(request, app)
        return found if isinstance(found, httpx.Response) else httpx.Response(200, json=found)

    def delete_app(self, request: httpx.Request, app: str) -> httpx.Response:
        found = self._api_app(request, app)
        if isinstance(found, httpx.Response):
            return found
        del self.apps[found["name"]]
        self.deleted.append(found["name"])
        router = self.routers.pop(found["name"], None)
        if router is not None:
            router.kill()
        return httpx.Response(200, json=found)

    def unknown_call(self, request: httpx.Request) -> httpx.Response:
        self.unknown.append(f"{request.method} {request.url}")
        return httpx.Response(404, json={"id": "not_found", "message": "unknown"})

    def close(self) -> None:
        for router in self.routers.values():
            router.kill()


@contextmanager
def fake_heroku(tmp_path: Path, start_routers: bool = True) -> Iterator[FakeHeroku]:
    fake = FakeHeroku(tmp_path, start_routers)
    app = r"(?P<app>[^/]+)"
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as mock:
        mock.post(f"{API}/apps").mock(side_effect=fake.create_app)
        mock.post(f"{API}/teams/apps").mock(side_effect=fake.create_app)
        mock.patch(url__regex=rf"^{API}/apps/{app}/config-vars$").mock(
            side_effect=fake.config_vars_patch)
        mock.post(f"{API}/sources").mock(side_effect=fake.create_source)
        mock.put(url__regex=rf"^{SOURCES}/put/(?P<source_id>\w+)\?signature=p$").mock(
            side_effect=fake.put_source)
        mock.post(url__regex=rf"^{API}/apps/{app}/builds$").mock(side_effect=fake.create_build)
        mock.get(url__regex=rf"^{API}/apps/{app}/builds/(?P<build_id>[^/]+)$").mock(
            side_effect=fake.get_build)
        mock.get(url__regex=rf"^{API}/apps/{app}$").mock(side_effect=fake.get_app)
        mock.delete(url__regex=rf"^{API}/apps/{app}$").mock(side_effect=fake.delete_app)
        mock.route(host="api.heroku.com").mock(side_effect=fake.unknown_call)
        try:
            yield fake
        finally:
            fake.close()
