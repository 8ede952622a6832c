"""Page texts in Japanese (the default) and English; every word a page shows comes from here.

The language is ``?lang=ja|en`` (which also sets the ``s5_lang`` cookie), else the cookie, else Japanese.
"""

from __future__ import annotations

from typing import Any

LANGS = ("ja", "en")
DEFAULT_LANG = "ja"
LANG_COOKIE = "s5_lang"

MESSAGES: dict[str, dict[str, str]] = {
    "ja": {
        "site_name": "北海道 Society 5.0 データ連携基盤",
        "site_tagline": "道内179市町村とパートナーのためのデータ連携基盤",
        "nav_top": "トップ",
        "nav_entities": "エンティティ",
        "nav_docs": "API docs",
        "nav_login": "ログイン",
        "nav_logout": "ログアウト",
        "nav_menu": "メニュー",
        "lang_switch": "言語",
        "footer_text": (
            "北海道 Society 5.0 データ連携基盤 — "
            "NGSI-LD (ETSI GS CIM 009) 準拠のコンテキストブローカーと地域サービス"
        ),
        "footer_map": "地図: 地理院タイル（国土地理院）",
        "top_title": "トップ",
        "top_intro": (
            "北海道 Society 5.0 データ連携基盤は、道内の市町村・事業者・住民のデータをつなぐ「都市OS」です。"
            "センサー、車両、施設、住民からの通報などの状態を NGSI-LD のエンティティとして共有し、"
            "履歴の保存、変化の通知、オープンデータとしての公開までを一つの仕組みで行います。"
            "除雪、見守り、鳥獣対策、オンデマンド交通、スマート農業などの地域サービスはこの基盤の上で動きます。"
        ),
        "top_services": "サービス",
        "top_no_services": "登録されたサービスはありません。",
        "top_open": "開く",
        "top_browse_entities": "エンティティを見る",
        "top_api_docs": "API ドキュメント",
        "stats_line": "テナント（市町村など）{tenants} 件 ・ あなたが見られるエンティティ型 {types} 種類",
        "entities_title": "エンティティ",
        "entities_lead": "テナント・型・条件を指定して、データ連携基盤のエンティティを検索します。",
        "field_tenant": "テナント",
        "field_type": "型",
        "field_q": "条件 (q)",
        "field_limit": "件数",
        "q_placeholder": "例: temperature<0",
        "q_help": "NGSI-LD の q 構文。例: temperature<0 ; name~=\"札幌\" ; speed>=10;speed<=30",
        "type_all": "（すべての型）",
        "tenant_default": "既定テナント",
        "btn_search": "検索",
        "btn_search_area": "この地図の範囲で検索",
        "btn_clear_area": "範囲指定を解除",
        "area_active": "地図の範囲で絞り込み中",
        "results_count": "{total} 件中 {start}–{end} 件を表示",
        "results_none": "条件に合うエンティティはありません。",
        "col_id": "ID",
        "col_type": "型",
        "col_name": "名前",
        "col_modified": "更新日時 (JST)",
        "page_prev": "前へ",
        "page_next": "次へ",
        "page_of": "{page} / {pages} ページ",
        "anon_note": "ログインしていないため、公開データ（scope /public）のみ表示しています。",
        "other_tenant_note": (
            "このテナントの非公開データを見る権限がないため、公開データ（scope /public）のみ表示しています。"
        ),
        "map_label": "地図",
        "view_title": "エンティティ詳細",
        "view_attributes": "属性",
        "view_attr_name": "属性名",
        "view_attr_value": "値",
        "view_normalized": "NGSI-LD 正規化形式 (JSON)",
        "view_created": "作成日時 (JST)",
        "view_modified": "更新日時 (JST)",
        "view_tenant": "テナント",
        "view_back": "← 検索に戻る",
        "view_api": "API で取得",
        "view_no_location": "位置情報はありません。",
        "view_observed": "観測 {at}",
        "login_title": "ログイン",
        "login_lead": "自治体・事業者の職員の方はログインすると非公開データも閲覧できます。",
        "field_username": "ユーザー名",
        "field_password": "パスワード",
        "btn_login": "ログイン",
        "login_failed": "ユーザー名またはパスワードが正しくありません。",
        "login_missing": "ユーザー名とパスワードを入力してください。",
        "login_as": "{name} としてログイン中",
        "auth_off_note": (
            "この環境は認証オフ（SOCIETY5_AUTH=off）で動作しているため、"
            "誰でも管理者として閲覧できます。"
        ),
        "role_admin": "管理者",
        "role_operator": "運用担当",
        "role_reader": "閲覧者",
        "role_device": "デバイス",
        "err_title": "エラー",
        "err_back_top": "トップへ戻る",
        "err_q": "条件 (q) が正しくありません: {detail}",
        "err_type": "型の指定が正しくありません: {detail}",
        "err_area": "地図の範囲が正しくありません: {detail}",
        "err_bbox_format": "bbox は「西経度,南緯度,東経度,北緯度」の4つの数値で指定してください",
        "err_limit": "件数は 1〜{max} の整数で指定してください。",
        "err_page": "ページ番号は 1 以上の整数で指定してください。",
        "err_tenant": "テナントを確認してください: {detail}",
        "err_id_missing": "表示するエンティティの id を指定してください。",
        "err_not_found": "エンティティ {id} は見つかりません（存在しないか、閲覧する権限がありません）。",
        "err_generic": "{detail}",
        "err_auth": "認証情報が正しくありません: {detail}",
        "err_server_config": "サーバーの設定が不足しています（管理者に連絡してください）: {detail}",
    },
    "en": {
        "site_name": "Hokkaido Society 5.0 Data Platform",
        "site_tagline": "The data-linkage platform for Hokkaido's 179 municipalities and their partners",
        "nav_top": "Home",
        "nav_entities": "Entities",
        "nav_docs": "API docs",
        "nav_login": "Log in",
        "nav_logout": "Log out",
        "nav_menu": "Menu",
        "lang_switch": "Language",
        "footer_text": "Hokkaido Society 5.0 Data Platform — an NGSI-LD (ETSI GS CIM 009) context broker and "
                       "regional services",
        "footer_map": "Maps: GSI tiles (Geospatial Information Authority of Japan)",
        "top_title": "Home",
        "top_intro": (
            "The Hokkaido Society 5.0 Data Platform is a \"city OS\" that links the data of Hokkaido's "
            "municipalities, businesses and residents. The state of sensors, vehicles, facilities and "
            "residents' reports is shared as NGSI-LD entities, with history, change notifications and "
            "open-data publishing in one system. Regional services such as snow removal, elderly watch, "
            "wildlife alerts, on-demand transport and smart farming run on top of it."
        ),
        "top_services": "Services",
        "top_no_services": "No services are registered.",
        "top_open": "Open",
        "top_browse_entities": "Browse entities",
        "top_api_docs": "API documentation",
        "stats_line": "{tenants} tenants (municipalities and others) · {types} entity types visible to you",
        "entities_title": "Entities",
        "entities_lead": "Search the platform's entities by tenant, type and conditions.",
        "field_tenant": "Tenant",
        "field_type": "Type",
        "field_q": "Condition (q)",
        "field_limit": "Per page",
        "q_placeholder": "e.g. temperature<0",
        "q_help": "NGSI-LD q syntax, e.g. temperature<0 ; name~=\"Sapporo\" ; speed>=10;speed<=30",
        "type_all": "(all types)",
        "tenant_default": "default tenant",
        "btn_search": "Search",
        "btn_search_area": "Search this map area",
        "btn_clear_area": "Clear map area",
        "area_active": "Filtered to the map area",
        "results_count": "Showing {start}–{end} of {total}",
        "results_none": "No entities match.",
        "col_id": "ID",
        "col_type": "Type",
        "col_name": "Name",
        "col_modified": "Modified (JST)",
        "page_prev": "Previous",
        "page_next": "Next",
        "page_of": "Page {page} of {pages}",
        "anon_note": "You are not logged in, so only public data (scope /public) is shown.",
        "other_tenant_note": (
            "You may not see this tenant's non-public data, so only public data (scope /public) is shown."
        ),
        "map_label": "Map",
        "view_title": "Entity",
        "view_attributes": "Attributes",
        "view_attr_name": "Attribute",
        "view_attr_value": "Value",
        "view_normalized": "NGSI-LD normalized form (JSON)",
        "view_created": "Created (JST)",
        "view_modified": "Modified (JST)",
        "view_tenant": "Tenant",
        "view_back": "← Back to search",
        "view_api": "Get it from the API",
        "view_no_location": "No location.",
        "view_observed": "observed {at}",
        "login_title": "Log in",
        "login_lead": "Staff of municipalities and partners can log in to see non-public data as well.",
        "field_username": "User name",
        "field_password": "Password",
        "btn_login": "Log in",
        "login_failed": "Wrong user name or password.",
        "login_missing": "Enter your user name and password.",
        "login_as": "Logged in as {name}",
        "auth_off_note": (
            "This server runs with authentication off (SOCIETY5_AUTH=off): everyone reads as an admin."
        ),
        "role_admin": "admin",
        "role_operator": "operator",
        "role_reader": "reader",
        "role_device": "device",
        "err_title": "Error",
        "err_back_top": "Back to the home page",
        "err_q": "The condition (q) is not valid: {detail}",
        "err_type": "The type is not valid: {detail}",
        "err_area": "The map area is not valid: {detail}",
        "err_bbox_format": (
            "bbox must be four numbers: west longitude,south latitude,east longitude,north latitude"
        ),
        "err_limit": "Per page must be a whole number from 1 to {max}.",
        "err_page": "The page must be a whole number of 1 or more.",
        "err_tenant": "Check the tenant: {detail}",
        "err_id_missing": "Give the id of the entity to show.",
        "err_not_found": "Entity {id} was not found (it does not exist or you may not see it).",
        "err_generic": "{detail}",
        "err_auth": "The credentials are not valid: {detail}",
        "err_server_config": "The server is not fully configured (contact the administrator): {detail}",
    },
}


def pick_lang(query_value: str | None, cookie_value: str | None) -> str:
    """``?lang=`` wins over the cookie; anything unknown falls back to Japanese."""
    for value in (query_value, cookie_value):
        if value in LANGS:
            return value
    return DEFAULT_LANG


class Translator:
    """``t("key", name=...)`` in templates and pages; a missing English text falls back to Japanese."""

    def __init__(self, lang: str):
        self.lang = lang if lang in LANGS else DEFAULT_LANG
        self._texts = MESSAGES[self.lang]

    def __call__(self, key: str, **values: Any) -> str:
        text = self._texts.get(key) or MESSAGES[DEFAULT_LANG].get(key)
        if text is None:
            raise KeyError(f"no page text {key!r}")
        return text.format(**values) if values else text


def missing_keys() -> dict[str, set[str]]:
    """Keys a language lacks compared with the others (a test keeps this empty)."""
    every = set().union(*(set(m) for m in MESSAGES.values()))
    return {lang: every - set(MESSAGES[lang]) for lang in LANGS if every - set(MESSAGES[lang])}
