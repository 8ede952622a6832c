"""The open-data portal as a service: the CKAN Action API, downloads, DCAT export and the portal pages."""

from __future__ import annotations

from typing import Any

from society5.core.service import Service
from society5.opendata import api, ingest, jobs, pages


def _startup(platform: Any) -> None:
    ingest.register(platform)  # uploaded CSVs are loaded into the datastore by outbox messages
    jobs.on_startup(platform)


service = Service(
    name="opendata",
    title="オープンデータ",
    title_en="Open data",
    description="データセットの公開・検索・ダウンロード（CKAN 互換 API、DCAT、標準データセット様式）。",
    router=api.router,
    mount="",  # CKAN clients expect /api/3/action/… at the site root
    pages=pages.router,
    jobs=jobs.JOBS,
    on_startup=_startup,
    background=jobs.background,
    extra={"description_en": "Publish, search and download datasets (CKAN-compatible API, DCAT, Japanese "
                             "standard dataset layouts)."},
)
