"""The web shell as a service: page shell, top page, entity browser and login (not listed itself)."""

from __future__ import annotations

from society5.core.service import Service
from society5.web import pages

service = Service(
    name="web",
    title="Web ページ",
    title_en="Web pages",
    description="トップページ、エンティティ検索（地図付き）、職員ログイン。",
    pages=pages.router,
    listed=False,
)
