"""The service's ASGI guards around a real Starlette app: bearer-token access control and
the body size limit, by header and while a chunked upload streams in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cxr.serve.http_guards import (
    ALL_INTERFACES,
    LOOPBACK,
    OPEN_PATHS,
    BearerTokenAuth,
    BodySizeLimit,
    default_host,
)

TOKEN = "unit-test-token-8c1f0e2a9b"
LIMIT = 100_000
CHUNK = 8192


async def _read_body(request: Request) -> JSONResponse:
    """Read the whole body the way the service's form parser does, chunk by chunk."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return JSONResponse({"bytes": size})


async def _ok(request: Request) -> JSONResponse:
    return JSONResponse({"path": request.url.path})


ROUTES = [Route("/predict", _read_body, methods=["POST"])]
ROUTES += [Route(p, _ok, methods=["GET", "POST"]) for p in ["/info", "/new-route", *OPEN_PATHS]]


def _client(token: str | None = TOKEN, limit: int = LIMIT) -> httpx.AsyncClient:
    app = Starlette(routes=ROUTES)
    guarded = BodySizeLimit(app, max_bytes=limit)
    guarded = BearerTokenAuth(guarded, token=SecretStr(token) if token else None)
    return httpx.AsyncClient(transport=httpx.ASGITransport(guarded), base_url="http://test")


def _run(coroutine):
    return asyncio.run(coroutine)


def test_routes_need_the_token_except_health_and_metrics() -> None:
    async def check() -> None:
        async with _client() as client:
            for path in ["/info", "/new-route"]:  # a route nobody listed is guarded too
                missing = await client.post(path)
                assert missing.status_code == 401, path
                assert missing.headers["www-authenticate"] == "Bearer"
                assert "Authorization: Bearer" in missing.json()["error"]
                wrong = await client.post(path, headers={"Authorization": f"Bearer {TOKEN}x"})
                assert wrong.status_code == 401
                assert "invalid_token" in wrong.headers["www-authenticate"]
                basic = await client.post(path, headers={"Authorization": f"Basic {TOKEN}"})
                assert basic.status_code == 401
                right = await client.post(path, headers={"Authorization": f"bearer {TOKEN}"})
                assert right.status_code == 200 and right.json() == {"path": path}
            for path in OPEN_PATHS:
                assert (await client.get(path)).status_code == 200, path
            assert (await client.get("/livez/")).status_code == 401  # exact paths only
            preflight = {"Access-Control-Request-Method": "POST", "Origin": "http://viewer"}
            assert (await client.options("/predict", headers=preflight)).status_code != 401
            assert (await client.options("/predict")).status_code == 401

    _run(check())


def test_without_a_token_everything_is_open_and_binds_loopback() -> None:
    async def check() -> None:
        async with _client(token=None) as client:
            assert (await client.post("/info")).status_code == 200
            assert (await client.post("/predict", content=b"x" * 10)).json() == {"bytes": 10}

    _run(check())
    assert default_host(None) == LOOPBACK
    assert default_host(SecretStr(TOKEN)) == ALL_INTERFACES


def test_unauthorized_upload_is_refused_before_its_body_is_read() -> None:
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(100):
            pulled += 1
            yield b"x" * CHUNK

    async def check() -> None:
        async with _client() as client:
            response = await client.post("/predict", content=body())
            assert response.status_code == 401

    _run(check())
    assert pulled <= 1


@pytest.mark.parametrize("chunks", [LIMIT // CHUNK, 20 * LIMIT // CHUNK])
def test_chunked_upload_is_cut_once_it_passes_the_limit(chunks: int) -> None:
    """No Content-Length: under the limit the app reads it all; over it, 413 arrives after
    about ``LIMIT`` bytes and the rest of the stream is never pulled."""
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(chunks):
            pulled += 1
            yield b"x" * CHUNK

    async def check() -> httpx.Response:
        async with _client() as client:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            response = await client.post("/predict", content=body(), headers=headers)
            assert "content-length" not in response.request.headers
            # the guard keeps serving afterwards
            assert (await client.get("/readyz")).status_code == 200
            return response

    response = _run(check())
    if chunks * CHUNK <= LIMIT:
        assert response.status_code == 200 and response.json() == {"bytes": chunks * CHUNK}
        assert pulled == chunks
    else:
        assert response.status_code == 413, response.text
        assert str(LIMIT) in response.json()["error"]
        assert response.headers["connection"] == "close"
        assert pulled == LIMIT // CHUNK + 1  # the first chunk past the limit, no more


def test_content_length_over_the_limit_is_refused_unread() -> None:
    async def check() -> httpx.Response:
        async with _client() as client:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            return await client.post("/predict", content=b"x" * (LIMIT + 1), headers=headers)

    response = _run(check())
    assert response.status_code == 413


def test_the_token_setting_is_taken_as_typed_and_never_echoed() -> None:
    from cxr.core.config import load_settings
    from cxr.core.errors import ConfigError

    for token in ["0012345678901234567", "0x1234567890abcdef", "yes-" + "n" * 16]:
        serve = load_settings(environ={"CXR_SERVE__API_TOKEN": token}).serve
        assert serve.api_token.get_secret_value() == token  # not parsed as YAML
        assert token not in repr(serve) and "api_token" not in serve.model_dump_json()
    for bad in ["short-secret-9", "has a space in it, long enough"]:
        with pytest.raises(ConfigError, match="serve.api_token must be") as refused:
            load_settings(environ={"CXR_SERVE__API_TOKEN": bad})
        assert bad not in str(refused.value)
    assert load_settings(environ={}).serve.api_token is None
