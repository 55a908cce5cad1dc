"""HTTP-level guards for the BentoML service: body size limit and strict form parsing."""

from __future__ import annotations

import json
from typing import Any


class BodySizeLimit:
    """ASGI middleware: answer 413 from the Content-Length header before reading the body.

    The handler checks the saved upload's size too (chunked uploads have no header).
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                body = json.dumps(
                    {"error": f"request body over the limit of {self.max_bytes} bytes"}
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 413,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def install_strict_multipart() -> None:
    """Answer 400 (not 500) to unknown form fields and to text where a file is expected.

    BentoML 1.4.40's multipart parser JSON-decodes unknown fields (a binary file under a
    wrong name crashes with 500) and treats text in a file field as a URL to download.
    This replaces its private serde entry; the version is pinned in pyproject.toml.
    """
    from _bentoml_impl import serde
    from bentoml.exceptions import BadInput
    from starlette.datastructures import UploadFile

    class StrictMultipartSerde(serde.MultipartSerde):
        async def parse_request(self, request: Any, cls: Any) -> Any:
            form = await request.form()
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
