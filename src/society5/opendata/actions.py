"""The CKAN Action API's registry: every action is ``fn(ctx, data) -> result`` registered by name.

CKAN clients (``ckanapi``, harvesters) call ``/api/3/action/<name>`` with a JSON body (or query parameters for
GET) and expect ``{"help", "success", "result"}`` back, or ``{"help", "success": false, "error": {"__type",
"message", <field>: [messages]}}`` with CKAN's status codes. Actions raise the errors below; the HTTP layer
(``api``) turns them into that envelope, so actions stay plain functions callable in-process (pages, DCAT
export, publishers and tests call them the same way).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from society5.core.auth import Principal


@dataclass
class Upload:
    """A file sent with an action (multipart ``upload`` field), already spooled to ``path`` on disk."""

    filename: str
    path: str
    size: int
    content_type: str = ""


@dataclass
class ActionContext:
    platform: Any  # society5.core.platform.Platform
    principal: Principal
    base_url: str = ""  # e.g. "http://127.0.0.1:8000": for absolute resource URLs and DCAT identifiers
    uploads: dict[str, Upload] = field(default_factory=dict)


ActionFn = Callable[[ActionContext, dict[str, Any]], Any]


@dataclass(frozen=True)
class Action:
    name: str
    fn: ActionFn
    write: bool  # POST only, needs an API token

    @property
    def help(self) -> str:
        return (self.fn.__doc__ or self.name).strip()


ACTIONS: dict[str, Action] = {}


def action(name: str, *, write: bool = False) -> Callable[[ActionFn], ActionFn]:
    def register(fn: ActionFn) -> ActionFn:
        if name in ACTIONS:
            raise ValueError(f"two CKAN actions are named {name!r}")
        ACTIONS[name] = Action(name, fn, write)
        return fn

    return register


def call(name: str, ctx: ActionContext, data: dict[str, Any] | None = None) -> Any:
    """Run an action in-process (the registry is filled by importing ``society5.opendata.api``)."""
    found = ACTIONS.get(name)
    if found is None:
        raise ActionNotFound(f"action {name!r} does not exist")
    if found.write and ctx.principal.anonymous:
        raise AuthorizationError(f"action {name} needs an API token")
    data = dict(data or {})
    where = _nul_in(data)
    if where is not None:  # named by its top-level field, as CKAN names errors; the path says where inside
        top = where.split(".")[0].split("[")[0] or where
        inside = f" (at {where})" if where != top else ""
        raise ValidationError({top: [f"must not contain the NUL character (U+0000){inside}"]})
    return found.fn(ctx, data)


def _nul_in(value: Any, path: str = "") -> str | None:
    """The first place (``field`` or ``field.sub``) holding a NUL character: no CKAN value needs one, and
    PostgreSQL text cannot store or even compare it."""
    if isinstance(value, str):
        return (path or "data") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return here.replace("\x00", "\\0")
            found = _nul_in(item, here)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _nul_in(item, f"{path}[{i}]" if path else f"[{i}]")
            if found is not None:
                return found
    return None


class CkanError(Exception):
    """An action's failure as CKAN reports it: ``__type`` and HTTP status, a message, per-field messages."""

    type_name = "Error"
    status = 400

    def __init__(self, message: str, fields: dict[str, list[str]] | None = None,
                 extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.fields = dict(fields or {})
        self.extra = dict(extra or {})  # structured members beside CKAN's lists (e.g. a validation report)

    def error(self) -> dict[str, Any]:
        # CKAN clients read ``message`` as text; per-field lists ride beside it (a field that happens to be
        # called "message" is already part of that text).
        fields = {k: v for k, v in self.fields.items() if k != "message"}
        return {"__type": self.type_name, **fields, **self.extra, "message": self.message}


class ValidationError(CkanError):
    """Bad input; ``fields`` names each field and what is wrong with it (CKAN answers 409)."""

    type_name = "Validation Error"
    status = 409

    def __init__(self, fields: dict[str, list[str]] | str, message: str = "",
                 extra: dict[str, Any] | None = None):
        if isinstance(fields, str):  # a message alone: CKAN's error then carries just that string
            message, fields = message or fields, {}
        text = message or "; ".join(f"{k}: {', '.join(v)}" for k, v in fields.items())
        super().__init__(text, fields, extra)


class NotFoundError(CkanError):
    type_name = "Not Found Error"
    status = 404


class AuthorizationError(CkanError):
    type_name = "Authorization Error"
    status = 403


class ActionNotFound(CkanError):
    """An unknown action name (CKAN: 400 with a message naming it)."""

    type_name = "Bad request - Action Error"
    status = 400


class SearchError(CkanError):
    """A search the engine cannot run (bad ``fq``, ``sort`` …): CKAN's 409 Search Query Error."""

    type_name = "Search Query Error"
    status = 409


def require(data: dict[str, Any], name: str) -> Any:
    """``data[name]``, or a Validation Error naming the missing field (as CKAN words it)."""
    value = data.get(name)
    if value is None or value == "":
        raise ValidationError({name: ["Missing value"]})
    return value


def check_edit(principal: Principal, tenant: str, what: str = "this organization's datasets") -> None:
    """Writers of an organization's data: admins, and operators of the tenant the organization belongs to.

    Every organization belongs to one tenant (a municipality's organization: its 団体コード; a partner firm's:
    the municipality that registered it), so one municipality's keys never edit another's datasets.
    """
    if principal.is_admin:
        return
    if principal.anonymous:
        raise AuthorizationError(f"editing {what} needs an API token (Authorization header)")
    if principal.role != "operator" or principal.tenant != tenant:
        raise AuthorizationError(f"this API token may not edit {what} (tenant {tenant})")


def can_read(principal: Principal, tenant: str, private: bool) -> bool:
    """Public data is everyone's; private data only its tenant's keys (any role) and admins'."""
    return not private or principal.can_read_private(tenant)
