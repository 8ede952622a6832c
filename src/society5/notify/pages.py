"""Staff page ``/notify``: the tenant's recipients and the newest deliveries (Japanese first, ``?lang=en``).

Read-only, for an operator of the tenant or an admin; changes go through the HTTP API. The page stands
alone (the notify layer may not import the web shell) but uses the shell's stylesheet and markup classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from society5.core.auth import DEFAULT_TENANT
from society5.core.errors import ApiError
from society5.core.http import platform_of, principal_of
from society5.core.timeutil import to_jst
from society5.notify.api import check_access, tenant_name
from society5.notify.deliveries import STATUSES
from society5.notify.startup import notifier_of

router = APIRouter(include_in_schema=False)
_env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("page_templates")),
                          autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                          lstrip_blocks=True)
LANG_COOKIE = "s5_lang"  # the web shell's language cookie, so the choice carries across pages

TEXTS: dict[str, dict[str, str]] = {
    "ja": {
        "title": "通知", "site": "北海道 Society 5.0 データ連携基盤", "top": "トップ",
        "lead": "職員・住民への通知の宛先と配信ログです。"
                "宛先の登録・変更は API（/notify/recipients）で行います。",
        "tenant": "テナント", "show": "表示", "recipients": "宛先",
        "deliveries": "配信ログ（新しい順）", "id": "ID", "name": "名前", "lang": "言語",
        "channels": "チャネル（優先順）", "quiet": "通知しない時間帯",
        "active": "有効", "yes": "はい", "no": "いいえ", "none": "なし",
        "no_recipients": "宛先はありません。",
        "no_deliveries": "配信記録はありません。", "created": "作成 (JST)", "recipient": "宛先",
        "channel": "チャネル", "template": "テンプレート", "status": "状態", "attempts": "試行",
        "error": "最後のエラー", "sent_at": "送信 (JST)", "all": "（すべて）", "login": "ログイン",
        "need_login": "このページを見るにはログインしてください（運用担当または管理者）。",
        "queued": "待機中", "deferred": "保留", "failed": "再試行待ち", "sent": "送信済み",
        "dead": "送信不能",
    },
    "en": {
        "title": "Notifications", "site": "Hokkaido Society 5.0 Data Platform", "top": "Home",
        "lead": "Recipients of messages to staff and residents, and the delivery log. "
                "Add or change recipients through the API (/notify/recipients).",
        "tenant": "Tenant", "show": "Show", "recipients": "Recipients",
        "deliveries": "Deliveries (newest first)", "id": "ID", "name": "Name", "lang": "Language",
        "channels": "Channels (in order)", "quiet": "Quiet hours",
        "active": "Active", "yes": "yes", "no": "no", "none": "none", "no_recipients": "No recipients.",
        "no_deliveries": "No deliveries.", "created": "Created (JST)", "recipient": "Recipient",
        "channel": "Channel", "template": "Template", "status": "Status", "attempts": "Attempts",
        "error": "Last error", "sent_at": "Sent (JST)", "all": "(all)", "login": "Log in",
        "need_login": "Log in to see this page (operators and admins).",
        "queued": "queued", "deferred": "deferred", "failed": "retrying", "sent": "sent", "dead": "dead",
    },
}


def _lang(request: Request) -> str:
    for value in (request.query_params.get("lang"), request.cookies.get(LANG_COOKIE)):
        if value in TEXTS:
            return value
    return "ja"


def _jst(value: str | None) -> str:
    return to_jst(value) if value else ""


@router.get("/notify", response_class=HTMLResponse)
def notify_page(request: Request) -> HTMLResponse:
    lang = _lang(request)
    t = TEXTS[lang]
    status_filter = request.query_params.get("status") or None
    context: dict[str, Any] = {
        "lang": lang, "t": t, "statuses": STATUSES, "status_filter": status_filter, "error": None,
        "recipients": [], "deliveries": [], "tenant": "",
        "lang_urls": {code: "/notify?" + urlencode({**request.query_params, "lang": code}) for code in TEXTS},
    }
    code = 200
    try:
        who = principal_of(request)
        tenant = tenant_name(request.query_params.get("tenant") or who.tenant or DEFAULT_TENANT)
        context["tenant"] = tenant
        check_access(request, tenant)
        if status_filter is not None and status_filter not in STATUSES:
            status_filter = context["status_filter"] = None
        notifier = notifier_of(platform_of(request))
        context["recipients"] = notifier.recipients.list(tenant)
        context["deliveries"] = [
            {**d.public(), "created": _jst(d.created_at), "sent": _jst(d.sent_at)}
            for d in notifier.deliveries.list(tenant, status=status_filter, limit=100)]
    except ApiError as err:
        code = err.status
        context["error"] = t["need_login"] if err.status == 401 else err.detail
    response = HTMLResponse(_env.get_template("notify.html").render(context), status_code=code)
    chosen = request.query_params.get("lang")
    if chosen in TEXTS:
        response.set_cookie(LANG_COOKIE, chosen, max_age=365 * 24 * 3600, path="/", samesite="lax")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; style-src 'self'; frame-ancestors 'none'")
    return response
