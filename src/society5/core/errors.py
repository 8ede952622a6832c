"""The one error hierarchy of society5.

::

    Society5Error                      base; never raised itself
    ├── ConfigError                    bad settings at start-up (not an HTTP error)
    ├── Unavailable                    a dependency (database, MQTT, remote context) is down → 503
    └── ApiError                       an error a client caused or must see; has ``status`` and ``code``
        ├── BadRequest                 400 malformed or invalid input (``BadRequestData``)
        │   ├── InvalidRequest         400 the request itself is malformed (bad JSON, bad parameters)
        │   └── PayloadTooLarge        413
        ├── Unauthorized               401 no or unknown credentials
        ├── Forbidden                  403 credentials lack the right
        ├── NotFound                   404 (``ResourceNotFound``)
        ├── AlreadyExists              409
        ├── Conflict                   409 other conflicts
        ├── UnsupportedMediaType       415
        ├── NotAcceptable              406
        ├── OperationNotSupported      422
        ├── TooManyRequests            429 a client sent more than its share (rate limits)
        └── ContextNotAvailable        503 an @context could not be resolved (``LdContextNotAvailable``)

Third-party errors are translated at the boundary (``raise Unavailable(...) from err``). The broker renders
``ApiError`` as NGSI-LD ProblemDetails; other APIs as ``{"error": {"code", "title", "detail"}}``.
"""

from __future__ import annotations

from typing import Any

NGSI_ERR = "https://uri.etsi.org/ngsi-ld/errors/"


class Society5Error(Exception):
    """Base of every error raised on purpose by society5."""


class ConfigError(Society5Error):
    """Settings are missing or contradictory; the process should stop with this message."""


class ApiError(Society5Error):
    status = 400
    code = "BadRequestData"

    def __init__(self, detail: str, *, title: str | None = None, extra: dict[str, Any] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.title = title or self.default_title()
        self.extra = extra or {}

    @classmethod
    def default_title(cls) -> str:
        return cls.code

    @property
    def type_uri(self) -> str:
        return NGSI_ERR + self.code

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        body.update(self.extra)
        return body


class BadRequest(ApiError):
    status, code = 400, "BadRequestData"


class InvalidRequest(BadRequest):
    status, code = 400, "InvalidRequest"


class PayloadTooLarge(BadRequest):
    status, code = 413, "RequestEntityTooLarge"


class Unauthorized(ApiError):
    status, code = 401, "Unauthorized"


class Forbidden(ApiError):
    status, code = 403, "Forbidden"


class NotFound(ApiError):
    status, code = 404, "ResourceNotFound"


class AlreadyExists(ApiError):
    status, code = 409, "AlreadyExists"


class Conflict(ApiError):
    status, code = 409, "Conflict"


class UnsupportedMediaType(ApiError):
    status, code = 415, "UnsupportedMediaType"


class NotAcceptable(ApiError):
    status, code = 406, "NotAcceptable"


class OperationNotSupported(ApiError):
    status, code = 422, "OperationNotSupported"


class ContextNotAvailable(ApiError):
    status, code = 503, "LdContextNotAvailable"


class TooManyRequests(ApiError):
    status, code = 429, "TooManyRequests"


class Unavailable(ApiError):
    status, code = 503, "ServiceUnavailable"
