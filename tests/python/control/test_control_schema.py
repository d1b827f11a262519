"""The control API against its own OpenAPI schema (schemathesis): generated
requests, valid and not, must never give a server error, and every response
must match the schema. Run over a real cache with chunks in host memory and
on disk, with and without a bearer token."""

import pytest
import schemathesis
from hypothesis import settings
from kv_helpers import flash_attn_cache

import lmcache
from lmcache.control import CacheRegistry
from lmcache.control.app import make_app

TOKEN = "schema-test-token"


def _app(tmp_path, token=""):
    cfg = lmcache.Config(chunk_size=16, l1_capacity_gb=0.01, local_disk_path=str(tmp_path / "disk"),
                         disk_lock_timeout_s=0.2, model_id="m")
    engine = lmcache.CacheEngine(cfg)
    engine.register_kv_caches(flash_attn_cache(blocks=16))
    engine.store(list(range(64)), block_ids=list(range(8)))
    caches = CacheRegistry()
    caches.add("main", engine)
    return engine, make_app(caches, token)


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    open_engine, open_app = _app(tmp_path_factory.mktemp("open"))
    auth_engine, auth_app = _app(tmp_path_factory.mktemp("auth"), TOKEN)
    yield open_app, auth_app
    open_engine.close()
    auth_engine.close()


open_schema = schemathesis.pytest.from_fixture("open_api_schema")
auth_schema = schemathesis.pytest.from_fixture("auth_api_schema")


@pytest.fixture
def open_api_schema(apps):
    return schemathesis.openapi.from_asgi("/openapi.json", apps[0])


@pytest.fixture
def auth_api_schema(apps):
    return schemathesis.openapi.from_asgi("/openapi.json", apps[1], headers={"Authorization": f"Bearer {TOKEN}"})


@open_schema.parametrize()
@settings(max_examples=25, deadline=None)
def test_contract_without_token(case):
    case.call_and_validate()


@auth_schema.parametrize()
@settings(max_examples=15, deadline=None)
def test_contract_with_token(case):
    # With the token every documented call behaves; without it, nothing succeeds.
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})
    response = case.call(headers={})
    assert response.status_code >= 400


def test_every_route_without_the_token_is_401(apps):
    from fastapi.testclient import TestClient

    client = TestClient(apps[1])
    paths = client.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()["paths"]
    assert len(paths) >= 10
    for path, methods in paths.items():
        for method in methods:
            body = {"tokens": [1]} if method == "post" else None
            r = client.request(method.upper(), path, json=body)
            assert r.status_code == 401, (method, path, r.status_code)
            r = client.request(method.upper(), path, json=body, headers={"Authorization": "Bearer nope"})
            assert r.status_code == 401, (method, path, r.status_code)
    # The schema itself is behind the token too.
    assert client.get("/openapi.json").status_code == 401
