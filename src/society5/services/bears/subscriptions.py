"""Area subscriptions to bear alerts: who wants to hear about which area, and on which channel.

A subscription is a circle (point + radius) or a whole municipality (団体コード), a minimum alert level, and a
notify recipient of the same tenant (tag ``bears``) that carries the channel address; one recipient may hold
several subscriptions. Staff create subscriptions directly (confirmed); the public signs up with an e-mail
address and confirms through a link sent to it (double opt-in), so nobody can subscribe someone else.
:meth:`Subscriptions.matching` is the fan-out query: a SQL bounding box on lat/lon, then haversine.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.engine import Connection

from society5.core.errors import BadRequest, NotFound, TooManyRequests
from society5.core.regions import hokkaido_municipalities
from society5.core.timeutil import iso, now_iso
from society5.notify import MessageTemplate, notifier_of, registry
from society5.services.bears import geo, tables
from society5.services.bears.sightings import parse_model

TAG = "bears"
PUBLIC_TAG = "bears-public"
KINDS = ("resident", "school", "staff", "system")
MIN_RADIUS_M, MAX_RADIUS_M = 50.0, 50_000.0
# The fan-out's bounding box must hold every circle that can reach a point: the largest subscription radius
# plus the largest alert radius (alerts.RADIUS_M).
MAX_REACH_M = MAX_RADIUS_M + 3_000.0
PUBLIC_PER_HOUR = 5  # sign-ups per client address and hour
PENDING_PER_ADDRESS = 3  # unconfirmed sign-ups per e-mail address and day (no mail-bombing a stranger)
CONFIRM_DAYS = 7
t = tables.subscriptions

Channel = Literal["mail", "line", "webhook"]


class SubscriptionIn(BaseModel):
    """A subscription created by staff: an area, and a channel address (or an existing recipient)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["resident", "school", "staff", "system"] = Field(default="resident")
    lat: float | None = Field(default=None, ge=-90, le=90, description="circle centre (WGS84)")
    lon: float | None = Field(default=None, ge=-180, le=180)
    radius_m: float | None = Field(
        default=None, ge=MIN_RADIUS_M, le=MAX_RADIUS_M, description="circle radius (m)"
    )
    municipality: str | None = Field(default=None, description="a whole municipality (6-digit 団体コード)")
    area_name: str | None = Field(default=None, max_length=200, description="what to call the area")
    min_level: int = Field(default=1, ge=1, le=3, description="only alerts of this level (1–3) or higher")
    channel: Channel | None = Field(default=None, description="mail, line or webhook")
    address: str | None = Field(default=None, max_length=2000, description="e-mail, LINE user id or URL")
    recipient: str | None = Field(default=None, max_length=128, description="an existing notify recipient id")
    name: str | None = Field(default=None, max_length=200, description="the recipient's display name")
    language: Literal["ja", "en"] = "ja"

    @model_validator(mode="after")
    def _one_area_one_channel(self) -> SubscriptionIn:
        check_area(self.lat, self.lon, self.radius_m, self.municipality)
        if (self.recipient is None) == (self.channel is None or self.address is None):
            raise ValueError(
                "give channel and address, or recipient (an existing notify recipient) "
                "/ 通知先（channel と address、または recipient）を指定してください"
            )
        if self.area_name is not None and any(ord(c) < 32 for c in self.area_name):
            raise ValueError("area_name contains control characters / 制御文字が含まれています")
        return self


class SubscriptionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    radius_m: float | None = Field(default=None, ge=MIN_RADIUS_M, le=MAX_RADIUS_M)
    area_name: str | None = Field(default=None, max_length=200)
    min_level: int | None = Field(default=None, ge=1, le=3)
    active: bool | None = None


class PublicSubscribeIn(BaseModel):
    """A resident's sign-up: an e-mail address and a circle or a municipality."""

    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=254, description="where alerts go (a confirmation link is sent first)")
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    radius_m: float | None = Field(default=None, ge=MIN_RADIUS_M, le=MAX_RADIUS_M)
    municipality: str | None = None
    area_name: str | None = Field(default=None, max_length=200)
    min_level: int = Field(default=1, ge=1, le=3)
    language: Literal["ja", "en"] = "ja"

    @model_validator(mode="after")
    def _area(self) -> PublicSubscribeIn:
        check_area(self.lat, self.lon, self.radius_m, self.municipality)
        return self


@lru_cache(maxsize=1)
def municipality_codes() -> frozenset[str]:
    return frozenset(m.code for m in hokkaido_municipalities())


def check_area(
    lat: float | None, lon: float | None, radius_m: float | None, municipality: str | None
) -> None:
    circle = (lat, lon, radius_m)
    if municipality is not None:
        if any(v is not None for v in circle):
            raise ValueError(
                "give either lat/lon/radius_m or municipality, not both "
                "/ 円（緯度経度と半径）か市町村のどちらか一方を指定してください"
            )
        if municipality not in municipality_codes():
            raise ValueError(
                f"municipality: {municipality!r} is not a Hokkaido 団体コード "
                "/ 北海道の市町村コード（6桁）ではありません"
            )
        return
    if any(v is None for v in circle):
        raise ValueError(
            "give lat, lon and radius_m (a circle) or municipality "
            "/ 緯度・経度・半径、または市町村を指定してください"
        )
    try:
        geo.check_location(lat, lon)  # type: ignore[arg-type]
    except geo.OutsideHokkaido as err:
        raise ValueError(f"lat/lon: {err}") from None



def recipient_id(channel: str, address: str) -> str:
    """One recipient per channel address and tenant, whatever number of areas it subscribes to."""
    return f"bears-{channel}-{hashlib.sha256(address.strip().lower().encode()).hexdigest()[:24]}"


def public(row: Any) -> dict[str, Any]:
    out = {
        k: row[k]
        for k in (
            "id",
            "tenant",
            "recipient_id",
            "kind",
            "lat",
            "lon",
            "radius_m",
            "municipality",
            "area_name",
            "min_level",
            "confirmed",
            "active",
            "created_at",
            "confirmed_at",
        )
    }
    out["confirmed"], out["active"] = bool(out["confirmed"]), bool(out["active"])
    return out


registry.register(
    MessageTemplate(
        name="bears.subscribe_confirm",
        title={"ja": "【要確認】ヒグマ出没情報の配信登録", "en": "[Please confirm] Bear alert subscription"},
        body={
            "ja": "ヒグマ出没情報（{{ area }}）のメール配信の登録を受け付けました。\n\n"
            "登録を完了するには、{{ days }}日以内に次のリンクを開いてください。\n{{ confirm_url }}\n\n"
            "お心当たりのない場合は、このメールを破棄してください（登録されません）。",
            "en": "We received a request to send bear alerts for {{ area }} to this address.\n\n"
            "To complete it, open this link within {{ days }} days:\n{{ confirm_url }}\n\n"
            "If you did not ask for this, ignore this mail (nothing will be sent).",
        },
    )
)


class Subscriptions:
    def __init__(self, platform: Any) -> None:
        self.platform = platform
        self.engine = platform.engine

    # -- staff ---------------------------------------------------------------------------------------------
    def create(self, tenant: str, data: SubscriptionIn | dict[str, Any]) -> dict[str, Any]:
        s: SubscriptionIn = parse_model(SubscriptionIn, data)
        notifier = notifier_of(self.platform)
        if s.recipient is not None:
            found = notifier.recipients.find(tenant, s.recipient)
            if found is None:
                raise NotFound(
                    f"recipient: no notify recipient {s.recipient!r} in tenant {tenant!r} "
                    "/ 通知先が見つかりません"
                )
            rid = found.id
        else:
            assert s.channel is not None and s.address is not None
            rid = self._recipient(tenant, s.channel, s.address, s.name, s.language, (TAG,))
        return self._insert(tenant, rid, s.kind, s, confirmed=True)

    def _recipient(
        self, tenant: str, channel: str, address: str, name: str | None, language: str, tags: tuple[str, ...]
    ) -> str:
        """Create the notify recipient of this address, or reuse it (adding the tags)."""
        store = notifier_of(self.platform).recipients
        rid = recipient_id(channel, address)
        found = store.find(tenant, rid)
        if found is None:
            label = (
                name
                or {
                    "mail": "ヒグマ出没情報 登録者",
                    "line": "ヒグマ出没情報 LINE",
                    "webhook": "ヒグマ出没情報 連携システム",
                }[channel]
            )
            try:
                store.create(
                    tenant,
                    {
                        "id": rid,
                        "name": label,
                        "language": language,
                        "channels": {channel: address.strip()},
                        "tags": list(tags),
                    },
                )
            except BadRequest as err:  # the address is malformed: say which field in our terms
                raise BadRequest(f"address: {err.detail.split(': ', 1)[-1]}") from None
            except Exception as err:
                if store.find(tenant, rid) is None:  # not a concurrent creation of the same recipient
                    raise err
        elif not set(tags) <= set(found.tags):
            store.update(tenant, rid, {"tags": [*found.tags, *tags]})
        return rid

    def _insert(
        self, tenant: str, rid: str, kind: str, s: Any, *, confirmed: bool, client: str | None = None
    ) -> dict[str, Any]:
        now = now_iso()
        row = {
            "id": str(uuid.uuid4()),
            "tenant": tenant,
            "recipient_id": rid,
            "kind": kind,
            "lat": s.lat,
            "lon": s.lon,
            "radius_m": s.radius_m,
            "municipality": s.municipality,
            "area_name": s.area_name.strip() if s.area_name else None,
            "min_level": s.min_level,
            "confirmed": confirmed,
            "token": secrets.token_urlsafe(32),
            "active": True,
            "created_at": now,
            "confirmed_at": now if confirmed else None,
            "client": client,
        }
        with self.engine.begin() as conn:
            conn.execute(t.insert().values(**row))
        return public(row)

    def list(
        self, tenant: str, *, active: bool | None = None, limit: int = 1000, offset: int = 0
    ) -> list[dict[str, Any]]:
        q = sa.select(t).where(t.c.tenant == tenant)
        if active is not None:
            q = q.where(t.c.active == active)
        q = q.order_by(t.c.created_at.desc(), t.c.id).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [public(r._mapping) for r in conn.execute(q)]

    def get(self, tenant: str, sub_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.tenant == tenant, t.c.id == sub_id)).first()
        if row is None:
            raise NotFound(f"no subscription {sub_id!r} / 該当する配信登録がありません")
        return public(row._mapping)

    def update(self, tenant: str, sub_id: str, patch: SubscriptionPatch | dict[str, Any]) -> dict[str, Any]:
        p: SubscriptionPatch = parse_model(SubscriptionPatch, patch)
        current = self.get(tenant, sub_id)
        changes = p.model_dump(exclude_unset=True, exclude_none=True)
        if "radius_m" in changes and current["radius_m"] is None:
            raise BadRequest(
                "radius_m: this subscription covers a municipality, not a circle "
                "/ 市町村単位の登録には半径を指定できません"
            )
        if changes:
            with self.engine.begin() as conn:
                conn.execute(t.update().where(t.c.tenant == tenant, t.c.id == sub_id).values(**changes))
        return self.get(tenant, sub_id)

    def delete(self, tenant: str, sub_id: str) -> None:
        with self.engine.begin() as conn:
            done = conn.execute(t.delete().where(t.c.tenant == tenant, t.c.id == sub_id))
        if not done.rowcount:
            raise NotFound(f"no subscription {sub_id!r} / 該当する配信登録がありません")

    # -- the public: double opt-in ------------------------------------------------------------------------
    def subscribe(
        self, tenant: str, data: PublicSubscribeIn | dict[str, Any], *, client: str, base_url: str
    ) -> dict[str, Any]:
        """Record an unconfirmed sign-up and mail its confirmation link; returns the pending subscription."""
        s: PublicSubscribeIn = parse_model(PublicSubscribeIn, data)
        from society5.notify.channels.mail import check_address

        try:
            email = check_address(s.email.strip())
        except ValueError as err:
            raise BadRequest(f"email: {err} / メールアドレスが正しくありません") from None
        rid = recipient_id("mail", email)
        self._check_rate(tenant, client, rid)
        rid = self._recipient(tenant, "mail", email, None, s.language, (TAG, PUBLIC_TAG))
        made = self._insert(tenant, rid, "resident", s, confirmed=False, client=client)
        with self.engine.connect() as conn:
            token = conn.execute(sa.select(t.c.token).where(t.c.id == made["id"])).scalar_one()
        area = s.area_name or (
            f"{s.municipality}" if s.municipality else f"{s.lat:.4f}, {s.lon:.4f} ({s.radius_m:.0f} m)"
        )
        notifier_of(self.platform).tell(
            [rid],
            "bears.subscribe_confirm",
            {
                "area": area,
                "days": CONFIRM_DAYS,
                "confirm_url": f"{base_url}/bears/subscribe/confirm?token={token}",
            },
            tenant=tenant,
            channels=["mail"],
            urgent=True,
        )
        return made

    def _check_rate(self, tenant: str, client: str, rid: str) -> None:
        hour = iso(datetime.now(UTC) - timedelta(hours=1))
        day = iso(datetime.now(UTC) - timedelta(days=1))
        with self.engine.connect() as conn:
            by_client = conn.execute(
                sa.select(sa.func.count()).select_from(t).where(t.c.client == client, t.c.created_at >= hour)
            ).scalar_one()
            pending = conn.execute(
                sa.select(sa.func.count())
                .select_from(t)
                .where(
                    t.c.tenant == tenant,
                    t.c.recipient_id == rid,
                    t.c.confirmed == sa.false(),
                    t.c.created_at >= day,
                )
            ).scalar_one()
        if by_client >= PUBLIC_PER_HOUR:
            raise TooManyRequests(
                f"more than {PUBLIC_PER_HOUR} sign-ups in an hour from this device; try "
                "again later / 登録の回数が上限に達しました。しばらくしてからお試しください"
            )
        if pending >= PENDING_PER_ADDRESS:
            raise TooManyRequests(
                "email: this address already has confirmation mails waiting; open the link "
                "in one of them / このアドレスには確認メールを送信済みです。メールのリンクを開いてください"
            )

    def confirm(self, token: str) -> dict[str, Any]:
        row = self.by_token(token)
        if not row["confirmed"]:
            if row["created_at"] < iso(datetime.now(UTC) - timedelta(days=CONFIRM_DAYS)):
                raise NotFound(
                    "token: the link has expired; please sign up again "
                    "/ リンクの有効期限が切れています。もう一度登録してください"
                )
            with self.engine.begin() as conn:
                conn.execute(
                    t.update().where(t.c.id == row["id"]).values(confirmed=True, confirmed_at=now_iso())
                )
        return self.by_token(token)

    def unsubscribe(self, token: str) -> dict[str, Any]:
        row = self.by_token(token)
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.id == row["id"]).values(active=False))
        return self.by_token(token)

    def by_token(self, token: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(t).where(t.c.token == token)).first()
                if 20 <= len(token) <= 64
                else None
            )
        if row is None:
            raise NotFound(
                "token: unknown link; it may have been mistyped or cut "
                "/ リンクが正しくありません（途中で切れていないか確認してください）"
            )
        return public(row._mapping)

    # -- fan-out -------------------------------------------------------------------------------------------
    def matching(
        self,
        conn: Connection,
        tenant: str,
        lat: float,
        lon: float,
        municipality: str | None,
        level: int,
        reach_m: float = 0.0,
    ) -> dict[str, str]:
        """Recipient id → the token of one of its subscriptions, for every active, confirmed subscription of
        ``tenant`` whose circle comes within ``reach_m`` of the point (the alert's radius) or whose
        municipality is the sighting's (or the tenant's own), with ``min_level`` ≤ ``level``."""
        min_lat, min_lon, max_lat, max_lon = geo.bbox_around(lat, lon, MAX_REACH_M)
        base = [
            t.c.tenant == tenant,
            t.c.active == sa.true(),
            t.c.confirmed == sa.true(),
            t.c.min_level <= level,
        ]
        dlat_m = 111_195.0  # metres per degree of latitude: a per-row latitude check before haversine
        circles = sa.select(t.c.recipient_id, t.c.token, t.c.lat, t.c.lon, t.c.radius_m).where(
            *base,
            t.c.lat.between(min_lat, max_lat),
            t.c.lon.between(min_lon, max_lon),
            sa.func.abs(t.c.lat - lat) * dlat_m <= t.c.radius_m + reach_m,
        )
        munis = [m for m in {municipality, tenant} if m]
        whole = sa.select(t.c.recipient_id, t.c.token).where(*base, t.c.municipality.in_(munis))
        out: dict[str, str] = {}
        for r in conn.execute(whole):
            out.setdefault(r.recipient_id, r.token)
        for r in conn.execute(circles):
            if r.recipient_id not in out and geo.haversine_m(lat, lon, r.lat, r.lon) <= r.radius_m + reach_m:
                out[r.recipient_id] = r.token
        return out


def subscriptions_of(platform: Any) -> Subscriptions:
    found = platform.parts.get("bears.subscriptions")
    if found is None:
        found = platform.parts["bears.subscriptions"] = Subscriptions(platform)
    return found
