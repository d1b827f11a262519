"""The control API: one FastAPI app over the caches of a process.

Every request carries the bearer token when one is configured (401 without
it); lmcache.control.server refuses to bind anything but a loopback address
without one. Bodies are bounded, token ids checked, and errors are JSON
with one readable line (`detail`).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Literal, Optional, Union

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

import lmcache
from lmcache import metrics
from lmcache.control.registry import CacheRegistry
from lmcache.errors import ClosedError, InvalidArgumentError, InvalidStateError, LMCacheError

MAX_BODY_BYTES = 16 << 20  # a million token ids in JSON, with room to spare
MAX_TOKENS = 1 << 20
CacheName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="A cache of this process.")]


def _json_integer(value):
    # JSON Schema's integer: 249 and 249.0 are one, "249" and true are not.
    if isinstance(value, (str, bool)):
        raise ValueError("a token id is an integer")
    return value


TokenId = Annotated[int, Field(ge=0, lt=1 << 32, strict=False), BeforeValidator(_json_integer)]


class Strict(BaseModel):
    # What the schema says, exactly: "12" is not a token id, unknown fields are refused.
    model_config = ConfigDict(strict=True, extra="forbid")


class Tokens(Strict):
    tokens: list[TokenId] = Field(max_length=MAX_TOKENS, description="The prompt's token ids.")
    cache: CacheName = "main"


class EvictRequest(Tokens):
    include_disk: bool = False


class ClearRequest(Strict):
    # No filter: every cache of the process; each filter given must match.
    model: Optional[str] = Field(default=None, max_length=1024, description="Only the caches of this model id.")
    tenant: Optional[str] = Field(default=None, max_length=1024,
                                  description="Only the caches of this tenant (its tenant_salt).")
    include_disk: bool = True


class LookupResult(BaseModel):
    cache: str
    chunk_size: int
    tokens: int = Field(description="Tokens asked about.")
    hit_tokens: int = Field(description="Leading tokens some tier holds (what the engine would load).")
    host_tokens: int = Field(description="Leading tokens host memory holds on its own.")
    disk_tokens: int
    remote_tokens: int


class ChunkCount(BaseModel):
    cache: str
    chunks: int


class Removed(BaseModel):
    removed: int = Field(description="Records removed (host memory and disk counted apart).")
    caches: list[str]


class Prefetched(BaseModel):
    cache: str
    host_tokens: int = Field(description="Leading tokens in host memory afterwards.")


class Health(BaseModel):
    status: Literal["ok"]
    caches: int


class Version(BaseModel):
    version: str
    device_backend: str


class Stats(BaseModel):
    caches: dict[str, dict[str, Union[int, bool]]]


class Error(BaseModel):
    detail: str


_ERRORS = {400: {"model": Error, "description": "The body is not JSON, or the cache refused the request."},
           401: {"model": Error, "description": "Missing or wrong bearer token."},
           403: {"model": Error, "description": "No token configured, and the caller is another user."},
           404: {"model": Error, "description": "No such cache."},
           409: {"model": Error, "description": "The cache cannot answer yet (no KV shape registered)."},
           411: {"model": Error, "description": "A body without a Content-Length."},
           413: {"model": Error, "description": "Body too large."},
           503: {"model": Error, "description": "The cache is closed."}}


def make_app(caches: CacheRegistry, token: str = "", owner_uid: Optional[int] = None) -> FastAPI:
    """The app for `caches`; with `token`, every request must carry it.
    Without one, `owner_uid` (a real loopback server) answers only
    connections from sockets of that user."""
    bearer = HTTPBearer(auto_error=False)

    def authorized(credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        # Declares the scheme in the schema; the middleware below enforces it
        # on every path, the schema's own included.
        return

    deps = [Depends(authorized)] if token else []
    app = FastAPI(title="lmcache control API", version=lmcache.__version__, dependencies=deps,
                  docs_url=None, redoc_url=None, responses=_ERRORS)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if token and not _has_token(request.headers.get("authorization", ""), token):
            return JSONResponse({"detail": "a valid bearer token is required"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        if not token and owner_uid is not None and not _from_owner(request, owner_uid):
            return JSONResponse({"detail": "only the cache's own user may use this API without a token"},
                                status_code=403)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"detail": f"body larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
        if request.method == "POST" and length is None:
            return JSONResponse({"detail": "a Content-Length header is required"}, status_code=411)
        return await call_next(request)

    def engine(name: str):
        e = caches.get(name)
        if e is None:
            raise HTTPException(404, f"no cache named {name!r} in this process (have: "
                                     f"{', '.join(n for n, _ in caches.items()) or 'none'})")
        return e

    def call(fn, *args, **kwargs):
        # Expected failures are one line for the caller, never a 500.
        try:
            return fn(*args, **kwargs)
        except ClosedError as e:
            raise HTTPException(503, str(e)) from None
        except InvalidStateError as e:
            raise HTTPException(409, str(e)) from None
        except InvalidArgumentError as e:
            raise HTTPException(400, str(e)) from None
        except LMCacheError as e:
            raise HTTPException(503, str(e)) from None

    @app.get("/health", response_model=Health, summary="Whether the process serves its caches.")
    def health() -> Health:
        return Health(status="ok", caches=len(caches))

    @app.get("/version", response_model=Version)
    def version() -> Version:
        return Version(version=lmcache.__version__, device_backend=lmcache._core.device_backend())

    @app.get("/stats", response_model=Stats, summary="Every cache's counters and gauges.")
    def stats() -> Stats:
        out = {}
        for name, e in caches.items():
            if not e.closed:
                out[name] = call(e.stats)
        return Stats(caches=out)

    @app.post("/lookup", response_model=LookupResult, summary="How much of a prompt each tier holds.")
    def lookup(body: Tokens) -> LookupResult:
        e = engine(body.cache)
        found = call(e.locate, body.tokens)
        return LookupResult(cache=body.cache, chunk_size=e.chunk_size, tokens=len(body.tokens),
                            hit_tokens=found["any"], host_tokens=found["host"], disk_tokens=found["disk"],
                            remote_tokens=found["remote"])

    @app.post("/pin", response_model=ChunkCount, summary="Protect a prompt's cached chunks from eviction.")
    def pin(body: Tokens) -> ChunkCount:
        return ChunkCount(cache=body.cache, chunks=call(engine(body.cache).pin, body.tokens))

    @app.post("/unpin", response_model=ChunkCount)
    def unpin(body: Tokens) -> ChunkCount:
        return ChunkCount(cache=body.cache, chunks=call(engine(body.cache).unpin, body.tokens))

    @app.post("/prefetch", response_model=Prefetched, summary="Bring a prompt's cached KV into host memory now.")
    def prefetch(body: Tokens) -> Prefetched:
        return Prefetched(cache=body.cache, host_tokens=call(engine(body.cache).prefetch, body.tokens))

    @app.post("/evict", response_model=Removed, summary="Drop a prompt's chunks (in-use and pinned ones stay).")
    def evict(body: EvictRequest) -> Removed:
        e = engine(body.cache)
        return Removed(removed=call(e.evict, body.tokens, include_disk=body.include_disk), caches=[body.cache])

    @app.post("/clear", response_model=Removed, summary="Drop every chunk of all caches, or of a model or tenant.")
    def clear(body: ClearRequest) -> Removed:
        removed, names = 0, []
        for name, e in caches.items():
            if e.closed or not _in_scope(e.config, body):
                continue
            removed += call(e.clear, include_disk=body.include_disk)
            names.append(name)
        return Removed(removed=removed, caches=names)

    @app.get("/metrics", summary="Prometheus metrics of every cache.", response_class=Response,
             responses={200: {"content": {metrics.CONTENT_TYPE: {}}}})
    def prometheus() -> Response:
        return Response(metrics.exposition(caches.items), media_type=metrics.CONTENT_TYPE)

    return app


def _from_owner(request: Request, owner_uid: int) -> bool:
    from lmcache.control.peer import loopback_peer_uid

    client, server = request.client, request.scope.get("server")
    if client is None or not server:
        return False
    return loopback_peer_uid(client.port, server[1]) == owner_uid


def _has_token(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _in_scope(config, body: ClearRequest) -> bool:
    if body.model is not None and config.model_id != body.model:
        return False
    # The salt is a secret of the namespace: compared, never shown.
    return body.tenant is None or hmac.compare_digest(config.tenant_salt.encode(), body.tenant.encode())
