"""The bears service: camera-trap AI, sightings from residents and staff, area alerts, the public map.

Each part owns its module; this file only wires them into the service contract (DESIGN.md).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from society5.core.service import Service
from society5.services.bears import (
    alerts,
    api,
    api_alerts,
    api_images,
    background,
    images,
    pages,
    publish,
    reports,
    simulate,
)
from society5.services.bears.sightings import sightings_of

router = APIRouter()
for part in (api.router, reports.router, api_alerts.router, api_images.router):
    router.include_router(part)


def _startup(platform: Any) -> None:
    sightings_of(platform)


def _background(platform: Any) -> Any:
    return background.start(platform)


service = Service(
    name="bears",
    title="ヒグマ出没情報",
    title_en="Brown bear sightings",
    description="カメラ画像のAI判定、住民・職員からの出没情報、地域への警報、出没マップ。",
    router=router,
    pages=pages.router,
    jobs=(*alerts.JOBS, *images.JOBS, *publish.JOBS),
    entity_types=("BearSighting", "CameraTrap", "Alert"),
    simulate=simulate.run,
    on_startup=_startup,
    background=_background,
    extra={"description_en": "Camera-trap AI, sightings from residents and staff, area alerts, "
                             "the sighting map."},
)
