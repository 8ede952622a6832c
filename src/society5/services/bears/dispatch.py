"""Drone dispatch tasks: "fly to where the bear was seen and find it" (table ``bears_dispatches``).

A task is made from a sighting or an image (its place, time and photo), by staff or automatically when a
camera is confident enough to alert (BEARS_ALERT_THRESHOLD). Status moves open → assigned → done, and a
task not yet done may be cancelled; ``done`` and ``cancelled`` are final.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from society5.core.errors import BadRequest, Conflict, NotFound
from society5.core.timeutil import now_iso
from society5.services.bears import tables
from society5.services.bears.sightings import parse_model, sightings_of

STATUSES = ("open", "assigned", "done", "cancelled")
STATUS_JA = {"open": "未割当", "assigned": "割当済", "done": "完了", "cancelled": "中止"}
NEXT = {"open": {"assigned", "cancelled"}, "assigned": {"open", "done", "cancelled"}, "done": set(),
        "cancelled": set()}
Status = Literal["open", "assigned", "done", "cancelled"]


class DispatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sighting_id: str | None = Field(default=None, max_length=200, description="the sighting to fly to")
    image_id: str | None = Field(default=None, max_length=36, description="… or a camera or drone image")
    assignee: str | None = Field(default=None, max_length=200, description="pilot or team (担当)")
    note: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _one_source(self) -> DispatchIn:
        if not self.sighting_id and not self.image_id:
            raise ValueError("name a sighting_id or an image_id / 出没情報または画像を指定してください")
        return self


class DispatchPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Status | None = None
    assignee: str | None = Field(default=None, max_length=200)
    note: str | None = Field(default=None, max_length=2000)


def view(row: Any) -> dict[str, Any]:
    out = dict(row._mapping)
    out["status_ja"] = STATUS_JA[out["status"]]
    out["image_url"] = f"/bears/images/{out['image_id']}" if out.get("image_id") else None
    return out



def _image(platform: Any, tenant: str, image_id: str) -> Any:
    t = tables.images
    with platform.engine.connect() as conn:
        row = conn.execute(sa.select(t.c.id, t.c.lat, t.c.lon, t.c.taken_at, t.c.sighting_id, t.c.label)
                           .where(t.c.tenant == tenant, t.c.id == image_id)).first()
    if row is None:
        raise BadRequest(f"image_id: no image {image_id!r} / 該当する画像がありません")
    if row.lat is None:
        raise BadRequest(f"image_id: image {image_id!r} has no location / 画像に位置情報がありません")
    return row


def create(platform: Any, tenant: str, data: DispatchIn | dict[str, Any], *, who: str) -> dict[str, Any]:
    d = parse_model(DispatchIn, data)
    values: dict[str, Any] = {}
    if d.sighting_id:
        try:
            s = sightings_of(platform).get(tenant, d.sighting_id)
        except NotFound:
            raise BadRequest(f"sighting_id: no sighting {d.sighting_id!r} "
                             "/ 該当する出没情報がありません") from None
        if "lat" not in s:
            raise BadRequest("sighting_id: the sighting has no location / 位置情報がありません")
        values = {"sighting_id": s["id"], "lat": s["lat"], "lon": s["lon"], "observed_at": s["observed_at"],
                  "image_id": d.image_id or s.get("photo")}
    if d.image_id:
        img = _image(platform, tenant, d.image_id)
        if img.label == "person":
            raise BadRequest("image_id: images of people are not used for dispatches / 人物画像は使えません")
        if not values:
            values = {"sighting_id": img.sighting_id, "lat": img.lat, "lon": img.lon,
                      "observed_at": img.taken_at, "image_id": img.id}
    return _insert(platform, tenant, values, assignee=d.assignee, note=d.note, who=who)


def _insert(platform: Any, tenant: str, values: dict[str, Any], *, assignee: str | None, note: str | None,
            who: str) -> dict[str, Any]:
    now = now_iso()
    row = {"id": str(uuid.uuid4()), "tenant": tenant, **values, "status": "assigned" if assignee else "open",
           "assignee": assignee, "note": note, "created_by": who[:200], "created_at": now, "updated_at": now}
    with platform.engine.begin() as conn:
        conn.execute(tables.dispatches.insert().values(**row))
    return get(platform, tenant, row["id"])


def open_for_detection(platform: Any, tenant: str, sighting: dict[str, Any],
                       image_id: str) -> dict[str, Any] | None:
    """A task for a confident camera detection, unless the sighting already has one that is not cancelled."""
    t = tables.dispatches
    with platform.engine.connect() as conn:
        found = conn.execute(sa.select(t.c.id).where(
            t.c.tenant == tenant, t.c.sighting_id == sighting["id"], t.c.status != "cancelled")).first()
    if found is not None:
        return None
    values = {"sighting_id": sighting["id"], "lat": sighting["lat"], "lon": sighting["lon"],
              "observed_at": sighting["observed_at"], "image_id": image_id}
    note = "カメラのAI判定（高確度）による自動作成 / opened automatically: confident camera detection"
    return _insert(platform, tenant, values, assignee=None, note=note, who="auto")


def get(platform: Any, tenant: str, dispatch_id: str) -> dict[str, Any]:
    t = tables.dispatches
    with platform.engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.tenant == tenant, t.c.id == dispatch_id)).first()
    if row is None:
        raise NotFound(f"no dispatch {dispatch_id!r} / 該当する出動依頼がありません")
    return view(row)


def list_dispatches(platform: Any, tenant: str, *, statuses: list[str] | None = None,
                    sighting_id: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
    t = tables.dispatches
    query = sa.select(t).where(t.c.tenant == tenant)
    if statuses:
        query = query.where(t.c.status.in_(statuses))
    if sighting_id:
        query = query.where(t.c.sighting_id == sighting_id)
    with platform.engine.connect() as conn:
        rows = conn.execute(query.order_by(t.c.created_at.desc()).limit(limit)).all()
    return [view(r) for r in rows]


def update(platform: Any, tenant: str, dispatch_id: str,
           patch: DispatchPatch | dict[str, Any]) -> dict[str, Any]:
    p = parse_model(DispatchPatch, patch)
    changes = p.model_dump(exclude_unset=True)
    current = get(platform, tenant, dispatch_id)
    status = changes.get("status") or current["status"]
    if status != current["status"] and status not in NEXT[current["status"]]:
        raise Conflict(f"status: a task that is {current['status']} cannot become {status} "
                       f"/ {STATUS_JA[current['status']]}の依頼を{STATUS_JA[status]}にはできません")
    if current["status"] in ("done", "cancelled") and changes.keys() - {"note"}:
        raise Conflict(f"status: the task is {current['status']}; only its note may change "
                       "/ 完了・中止した依頼はメモだけ変更できます")
    assignee = changes.get("assignee", current["assignee"])
    if status == "assigned" and not assignee:
        raise BadRequest("assignee: name who flies before assigning / 担当者を指定してください")
    if "assignee" in changes and assignee and status == "open" and "status" not in changes:
        status = "assigned"  # naming a pilot is assigning the task
    values = {**changes, "status": status, "updated_at": now_iso()}
    t = tables.dispatches
    with platform.engine.begin() as conn:
        done = conn.execute(t.update().where(t.c.tenant == tenant, t.c.id == dispatch_id,
                                             t.c.status == current["status"]).values(**values)).rowcount
    if not done:
        raise Conflict("status: the task changed meanwhile; reload and try again / 他の職員が更新しました")
    return get(platform, tenant, dispatch_id)
