"""Authentication and tenancy: API keys (stored hashed), staff users, roles, tenants.

Roles, from most to least power:

- ``admin``: everything, every tenant.
- ``operator``: read and write everything of one tenant (a municipality's staff).
- ``device``: write only entities whose id starts with its ``entity_prefix``, in its tenant; read them back.
- ``reader``: read everything (public and private) of one tenant.
- anonymous: read public entities only (scope ``/public`` or below).

API keys look like ``s5_<key_id>_<secret>``. The secret is 32 random bytes, so a single SHA-256 is enough to
store it (a slow password hash only matters for guessable secrets); staff passwords are guessable and
use scrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from society5.core import tables
from society5.core.errors import BadRequest, Forbidden, NotFound, Unauthorized
from society5.core.timeutil import now_iso

ROLES = ("admin", "operator", "device", "reader")
DEFAULT_TENANT = "default"
PUBLIC_SCOPE = "/public"
_TENANT_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


@dataclass(frozen=True)
class Principal:
    """Who is calling. ``tenant`` is None for admins (all tenants)."""

    role: str  # one of ROLES or "anonymous"
    tenant: str | None = None
    entity_prefix: str | None = None
    name: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def anonymous(self) -> bool:
        return self.role == "anonymous"

    def can_read_private(self, tenant: str) -> bool:
        if self.role == "admin":
            return True
        return self.role in ("operator", "reader", "device") and self.tenant == tenant

    def check_write(self, tenant: str, entity_id: str | None = None) -> None:
        """Raise Forbidden unless this principal may write ``entity_id`` in ``tenant``."""
        if self.role == "admin":
            return
        if self.role == "anonymous":
            raise Unauthorized("writing needs an API key: send 'Authorization: Bearer <key>'")
        if self.tenant != tenant:
            raise Forbidden(f"this key belongs to tenant {self.tenant!r}, not {tenant!r}")
        if self.role == "operator":
            return
        if self.role == "device" and entity_id is not None and self.entity_prefix is not None:
            if entity_id.startswith(self.entity_prefix):
                return
            raise Forbidden(
                f"a device key may write only entities whose id starts with {self.entity_prefix!r}"
            )
        raise Forbidden(f"role {self.role!r} may not write")


ANONYMOUS = Principal(role="anonymous")
SUPERUSER = Principal(role="admin", name="system")


def validate_tenant_name(name: str) -> str:
    if not _TENANT_RE.match(name):
        raise BadRequest(
            f"tenant {name!r} is not valid: use the 6-digit municipality code (e.g. 011002) or letters, "
            "digits, '-' and '_' (at most 64)"
        )
    return name


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class NewKey:
    key_id: str
    key: str


class KeyStore:
    """Creates, lists, revokes and verifies API keys. Verified keys are cached for a few seconds."""

    CACHE_SECONDS = 5.0

    def __init__(self, engine: Engine):
        self.engine = engine
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def create(
        self, role: str, tenant: str | None = None, entity_prefix: str | None = None, label: str = ""
    ) -> NewKey:
        if role not in ROLES:
            raise BadRequest(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if role != "admin" and not tenant:
            raise BadRequest(f"a {role} key needs a tenant")
        if role == "device" and not entity_prefix:
            raise BadRequest("a device key needs entity_prefix (the ids it may write start with it)")
        if tenant:
            validate_tenant_name(tenant)
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(
                tables.api_keys.insert().values(
                    key_id=key_id,
                    secret_hash=_digest(secret),
                    role=role,
                    tenant=tenant if role != "admin" else None,
                    entity_prefix=entity_prefix,
                    label=label,
                    created_at=now_iso(),
                )
            )
        return NewKey(key_id=key_id, key=f"s5_{key_id}_{secret}")

    def list(self) -> list[dict[str, object]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tables.api_keys).order_by(tables.api_keys.c.created_at)).mappings()
            return [{k: v for k, v in row.items() if k != "secret_hash"} for row in rows]

    def revoke(self, key_id: str) -> None:
        with self.engine.begin() as conn:
            done = conn.execute(
                tables.api_keys.update()
                .where(tables.api_keys.c.key_id == key_id, tables.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now_iso())
            )
        if done.rowcount == 0:
            raise NotFound(f"no active key with id {key_id!r}")
        with self._lock:
            self._cache.clear()

    def verify(self, key: str) -> Principal:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.CACHE_SECONDS:
            principal = hit[1]
        else:
            principal = self._lookup(key)
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key] = (now, principal)
        if principal is None:
            raise Unauthorized("unknown or revoked API key")
        return principal

    def _lookup(self, key: str) -> Principal | None:
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != "s5":
            return None
        _, key_id, secret = parts
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(tables.api_keys).where(tables.api_keys.c.key_id == key_id))
                .mappings()
                .first()
            )
        if row is None or row["revoked_at"] is not None:
            return None
        if not hmac.compare_digest(row["secret_hash"], _digest(secret)):
            return None
        return Principal(
            role=row["role"], tenant=row["tenant"], entity_prefix=row["entity_prefix"], name=f"key:{key_id}"
        )


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt$16384$8$1${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


class UserStore:
    """Staff accounts for the web pages (same roles as keys)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def create(
        self, username: str, password: str, role: str, tenant: str | None, display_name: str = ""
    ) -> None:
        if role not in ROLES or role == "device":
            raise BadRequest("a staff user's role is admin, operator or reader")
        if len(password) < 8:
            raise BadRequest("password: use at least 8 characters")
        if role != "admin" and not tenant:
            raise BadRequest(f"a {role} user needs a tenant")
        with self.engine.begin() as conn:
            exists = conn.execute(
                sa.select(tables.users.c.username).where(tables.users.c.username == username)
            ).first()
            values = dict(
                password_hash=hash_password(password),
                role=role,
                tenant=tenant if role != "admin" else None,
                display_name=display_name or username,
            )
            if exists:
                conn.execute(
                    tables.users.update().where(tables.users.c.username == username).values(**values)
                )
            else:
                conn.execute(tables.users.insert().values(username=username, created_at=now_iso(), **values))

    def authenticate(self, username: str, password: str) -> Principal | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(tables.users).where(tables.users.c.username == username))
                .mappings()
                .first()
            )
        if row is None or not check_password(password, row["password_hash"]):
            return None
        return Principal(role=row["role"], tenant=row["tenant"], name=row["display_name"] or username)


class TenantStore:
    """Municipalities (and other organisations) as tenants, named by their 6-digit 団体コード."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._known: set[str] = {DEFAULT_TENANT}

    def exists(self, code: str) -> bool:
        if code in self._known:
            return True
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(tables.tenants.c.code).where(tables.tenants.c.code == code)
            ).first()
        if found:
            self._known.add(code)
        return found is not None

    def ensure(
        self, code: str, name: str = "", name_en: str = "", lat: float | None = None, lon: float | None = None
    ) -> None:
        validate_tenant_name(code)
        if code == DEFAULT_TENANT or (code in self._known and not name):
            return
        with self.engine.begin() as conn:
            found = conn.execute(
                sa.select(tables.tenants.c.code).where(tables.tenants.c.code == code)
            ).first()
            values = dict(name=name, name_en=name_en, lat=lat, lon=lon)
            if found is None:
                conn.execute(tables.tenants.insert().values(code=code, created_at=now_iso(), **values))
            elif name:
                conn.execute(tables.tenants.update().where(tables.tenants.c.code == code).values(**values))
        self._known.add(code)

    def list(self) -> list[dict[str, object]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tables.tenants).order_by(tables.tenants.c.code)).mappings()
            return [dict(r) for r in rows]

    def check_can_create(self, principal: Principal, code: str) -> None:
        if not principal.is_admin:
            raise NotFound(f"tenant {code!r} does not exist (only an admin may create tenants)")
