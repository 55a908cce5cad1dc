"""HTTP-level guards for the BentoML service: bearer-token access control, the body size
limit (by header and while streaming) and strict form parsing."""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from pydantic import SecretStr

LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (BentoML's own default, only with a token)
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})  # probes, Prometheus
logger = logging.getLogger("bentoml.service")


def default_host(api_token: SecretStr | None) -> str:
    """Where the service listens when neither ``--host`` nor ``BENTOML_HOST`` says:
    loopback while it is open (no token), every interface once a token guards it."""
    return LOOPBACK if api_token is None else ALL_INTERFACES


async def _answer(send: Any, status: int, message: str, headers: list[tuple[bytes, bytes]]):
    """Send a complete JSON error response."""
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BearerTokenAuth:
    """ASGI middleware: every route but ``open_paths`` needs ``Authorization: Bearer
    <token>`` (401 otherwise; compared in constant time). CORS preflights (OPTIONS with
    ``Access-Control-Request-Method``) pass, as browsers send them without credentials.

    With ``token=None`` everything passes and the start-up warns that the service is open.
    """

    def __init__(
        self, app: Any, token: SecretStr | None, open_paths: frozenset[str] = OPEN_PATHS
    ) -> None:
        self.app, self.open_paths = app, open_paths
        self._expected = None if token is None else token.get_secret_value().encode()

    def _authorized(self, headers: dict[bytes, bytes]) -> bool | None:
        """True: right token; False: a wrong one; None: no bearer token at all."""
        scheme, _, credentials = headers.get(b"authorization", b"").strip().partition(b" ")
        if scheme.lower() != b"bearer" or not credentials.strip():
            return None
        return hmac.compare_digest(credentials.strip(), self._expected)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan" and self._expected is None:
            logger.warning(
                "no API token is set (CXR_SERVE__API_TOKEN): /predict, /explain and /info "
                "answer anyone who can reach this port; without --host or BENTOML_HOST "
                "the service listens on %s only",
                LOOPBACK,
            )
        if self._expected is None or scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        preflight = scope.get("method") == "OPTIONS" and b"access-control-request-method" in headers
        if scope["path"] in self.open_paths or preflight:
            return await self.app(scope, receive, send)
        authorized = self._authorized(headers)
        if authorized:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return None
        if authorized is None:
            message, challenge = (
                "missing bearer token: send 'Authorization: Bearer <token>'",
                b"Bearer",
            )
        else:
            message, challenge = "invalid bearer token", b'Bearer error="invalid_token"'
        await _answer(send, 401, message, [(b"www-authenticate", challenge)])
        return None


class _BodyTooLarge(Exception):
    """The request body passed the limit while it was being read."""


class BodySizeLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``, from the Content-Length
    header before reading, and, for chunked uploads without one, as soon as the bytes read
    pass the limit: the rest is not read, the connection is closed, the handler (which
    would save the upload to a file) sees the client gone."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def _refuse(self, send: Any) -> None:
        message = f"request body over the limit of {self.max_bytes} bytes"
        await _answer(send, 413, message, [(b"connection", b"close")])

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send)
        received, started, refused = 0, False, False

        async def limited_receive() -> dict:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if started:  # too late to answer 413: end the request instead
                        raise _BodyTooLarge
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if refused:
                return  # the 413 went out; whatever the handler answers is dropped
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            # the handler failing on the body it was refused (ClientDisconnect) is expected
        return None


def install_strict_multipart() -> None:
    """Answer 400 (not 500) to unknown form fields and to text where a file is expected.

    BentoML 1.4.40's multipart parser JSON-decodes unknown fields (a binary file under a
    wrong name crashes with 500) and treats text in a file field as a URL to download.
    This replaces its private serde entry; the version is pinned in pyproject.toml.
    """
    from _bentoml_impl import serde
    from bentoml.exceptions import BadInput
    from starlette.datastructures import UploadFile
    from starlette.requests import ClientDisconnect

    class StrictMultipartSerde(serde.MultipartSerde):
        async def parse_request(self, request: Any, cls: Any) -> Any:
            try:
                form = await request.form()
            except ClientDisconnect:  # BodySizeLimit cut it, or the client left
                raise BadInput("the upload ended early (over the size limit?)") from None
            expected = set(cls.model_fields)
            unknown = sorted(set(form) - expected)
            if unknown:
                raise BadInput(f"unexpected form field(s) {unknown}; expected {sorted(expected)}")
            for key in form:
                values = form.getlist(key)
                if key in cls.multipart_fields and not all(
                    isinstance(v, UploadFile) for v in values
                ):
                    raise BadInput(f"form field {key!r} must be a file upload")
            return await super().parse_request(request, cls)

    serde.ALL_SERDE["multipart/form-data"] = StrictMultipartSerde
    serde.ALL_SERDE["application/x-www-form-urlencoded"] = StrictMultipartSerde
