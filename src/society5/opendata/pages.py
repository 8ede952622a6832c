"""The open-data portal's pages (Japanese first, ``?lang=en``): catalog search, dataset, organizations,
groups, and the officer's form to publish a dataset with a validated file upload.

Every page reads the catalog through the CKAN actions in-process (``actions.call``) with the caller's
principal (API key, staff session cookie, or anonymous), so a page shows exactly what the Action API would
give the same caller: private datasets and drafts stay invisible to those who may not read them. The pages
stand alone (the opendata layer may not import the web shell) but use its stylesheet ``/static/web.css``,
its markup classes and its Leaflet URL ``/static/vendor/leaflet/…`` (mounted here too, from the
``xstatic-leaflet`` package, so maps also work in an app built without the web shell); GSI tiles
(地理院タイル) are the base map.

Publishing (``/dataset/new``, ``/dataset/{name}/edit``): the uploaded file is checked first (CSV against
the chosen standard layout with ``validate.validate_file``, GeoJSON for being GeoJSON); a file with problems
writes nothing and the form comes back with the report per row and column. A good file is published as
CKAN's own form does it: the dataset is created as a draft (invisible), the file added, then the dataset
made active; if a step fails the draft stays invisible and the next submit with the same name continues it.

CSRF: the form posts same-site with the staff session cookie (``SameSite=Lax``, ``HttpOnly``), and a POST
whose ``Origin`` names another site is refused.
"""

from __future__ import annotations

import html
import itertools
import json
import logging
import math
import re
import secrets
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import jinja2
import xstatic.pkg.leaflet as leaflet_pkg
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

import society5.opendata.api  # noqa: F401  (fills the action registry the pages call)
from society5.core.auth import ANONYMOUS, Principal
from society5.core.errors import ApiError
from society5.core.http import platform_of, principal_of
from society5.core.pagekit import GSI_ATTRIBUTION, GSI_TILES, security_headers
from society5.core.timeutil import to_jst
from society5.opendata import catalog_actions, csvio, downloads, files, layouts, validate
from society5.opendata.actions import (
    ActionContext,
    AuthorizationError,
    CkanError,
    NotFoundError,
    ValidationError,
    call,
    check_edit,
)

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
LANGS = ("ja", "en")
LANG_COOKIE = "s5_lang"  # the web shell's language cookie: the choice carries across all pages
HOKKAIDO = {"lat": 43.3, "lon": 142.6, "zoom": 6}
ROWS = 20  # datasets per search page
PREVIEW_ROWS = 10
PREVIEW_RESOURCES = 3
MAP_ROWS = 1000  # points of a CSV drawn on the map
GEOJSON_MAX_BYTES = 5 * 1024 * 1024  # bigger GeoJSON files are downloaded, not drawn
FACETS = ("organization", "groups", "tags", "res_format", "license_id", "frequency", "conforms_to")
SORTS = ("score desc, metadata_modified desc", "metadata_modified desc", "metadata_created desc",
         "title_string asc")
LAT_NAMES = ("緯度", "latitude", "lat", "y座標")
LON_NAMES = ("経度", "longitude", "lon", "lng", "long", "x座標")
LABEL_NAMES = ("名称", "施設名", "name", "title", "名前", "イベント名", "避難場所名")
SECURITY_HEADERS = security_headers(no_store=True)

router = APIRouter(include_in_schema=False)
# Mounts match by prefix and the web shell's come first when it is in the app; without it, these serve.
router.mount("/static/vendor/leaflet", StaticFiles(directory=leaflet_pkg.BASE_DIR), name="opendata-leaflet")
router.mount("/opendata-static", StaticFiles(directory=HERE / "page_static"), name="opendata-static")
router.include_router(downloads.router)

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "page_templates"), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
# CKAN descriptions are Markdown. Raw HTML stays text and unsafe link schemes (javascript:) stay text too.
_markdown = MarkdownIt("commonmark", {"html": False}).disable(["image"])


def markdown_html(text: str) -> Markup:
    return Markup(_markdown.render(text))  # html is off: every tag in the input arrives escaped


def markdown_plain(text: str) -> str:
    """The words of a Markdown text without its markup (for result cards)."""
    return html.unescape(re.sub(r"<[^>]+>", " ", _markdown.render(text)))


_env.filters["markdown"] = markdown_html

TEXTS: dict[str, dict[str, str]] = {
    "ja": {
        "site": "北海道 Society 5.0 データ連携基盤",
        "portal": "オープンデータ",
        "top": "トップ",
        "nav_datasets": "データセット",
        "nav_orgs": "組織",
        "nav_groups": "カテゴリ",
        "nav_new": "データセット登録",
        "nav_login": "ログイン",
        "nav_logout": "ログアウト",
        "lang_switch": "言語",
        "search_title": "データセット検索",
        "search_lead": (
            "北海道と道内市町村が公開するオープンデータを探せます。CKAN 互換の API（/api/3/action/）と DCAT"
            "（/catalog.ttl）でも利用できます。"),
        "q": "キーワード",
        "q_placeholder": "例: AED、避難場所、除雪",
        "sort": "並び順",
        "search": "検索",
        "sort_score desc, metadata_modified desc": "関連度順",
        "sort_metadata_modified desc": "更新日が新しい順",
        "sort_metadata_created desc": "登録日が新しい順",
        "sort_title_string asc": "名前順",
        "facet_organization": "組織",
        "facet_groups": "カテゴリ",
        "facet_tags": "タグ",
        "facet_res_format": "形式",
        "facet_license_id": "ライセンス",
        "facet_frequency": "更新頻度",
        "facet_conforms_to": "標準データセット",
        "filters": "絞り込み",
        "active_filters": "絞り込み中",
        "remove_filter": "解除",
        "clear_all": "すべて解除",
        "count": "{total} 件中 {start}–{end} 件",
        "none": "該当するデータセットはありません。",
        "prev": "前へ",
        "next": "次へ",
        "page_of": "{page} / {pages} ページ",
        "pages": "ページ",
        "updated": "更新",
        "formats": "形式",
        "private": "非公開",
        "draft": "下書き",
        "dataset": "データセット",
        "organization": "組織",
        "groups": "カテゴリ",
        "tags": "タグ",
        "license": "ライセンス",
        "frequency": "更新頻度",
        "contact": "問い合わせ先",
        "spatial": "対象地域",
        "temporal": "対象期間",
        "standard": "準拠する標準データセット",
        "created": "登録日",
        "modified": "更新日",
        "language": "言語",
        "author": "作成者",
        "version": "版",
        "source": "出典",
        "metadata": "メタデータ",
        "resources": "データ（リソース）",
        "no_resources": "リソースはありません。",
        "download": "ダウンロード",
        "original": "元のファイル",
        "utf8bom": "UTF-8 (BOM付き, Excel 向け)",
        "sjis": "Shift_JIS",
        "link": "リンク先を開く",
        "size": "サイズ",
        "in_datastore": "API で検索可",
        "preview": "プレビュー",
        "preview_from_datastore": "データストアの先頭 {n} 行",
        "preview_from_file": "ファイルの先頭 {n} 行",
        "preview_failed": "プレビューを表示できません: {detail}",
        "map": "地図",
        "map_label": "データの地図",
        "map_points": "地図には {n} 件を表示しています。",
        "api": "API の使い方",
        "api_lead": "CKAN 互換の Action API と DCAT でこのデータセットを取得できます。",
        "api_show": "メタデータ (package_show)",
        "api_datastore": "表データの検索 (datastore_search)",
        "api_curl": "コマンドラインの例",
        "api_dcat": "DCAT (RDF)",
        "back": "データセット一覧へ",
        "edit": "編集",
        "published": "データセットを公開しました。",
        "updated_ok": "データセットを更新しました。",
        "orgs_title": "組織",
        "orgs_lead": "データを公開している組織（北海道、道内市町村、パートナー企業）です。",
        "orgs_filter": "組織名で絞り込み",
        "datasets_n": "{n} 件のデータセット",
        "orgs_none": "該当する組織はありません。",
        "org_datasets": "この組織のデータセット",
        "search_in_org": "この組織のデータセットを検索",
        "groups_title": "カテゴリ",
        "groups_lead": "分野ごとのデータセットのまとまりです。",
        "groups_none": "カテゴリはまだありません。",
        "not_found": "ページが見つかりません",
        "dataset_not_found": (
            "データセットが見つかりません（非公開のデータセットは、閲覧できるアカウントでログインすると表示"
            "されます）。"),
        "org_not_found": "組織が見つかりません。",
        "error": "エラー",
        "new_title": "データセットの登録",
        "edit_title": "データセットの編集",
        "new_lead": (
            "メタデータを入力し、ファイルをアップロードしてください。標準データセットの様式を選ぶと、公開前"
            "に列・コード・日付・緯度経度を検査します。問題のあるファイルは公開されません。"),
        "need_login": "データセットを登録・編集するには、職員アカウントでログインしてください。",
        "no_orgs": "このアカウントにはデータセットを編集できる組織がありません（運用担当または管理者のみ）。",
        "forbidden": "このアカウントではこのデータセットを編集できません。",
        "bad_origin": "別のサイトからの送信は受け付けません。ページを開き直して送信してください。",
        "f_title": "タイトル",
        "f_title_help": "例: AED設置箇所一覧（札幌市）",
        "f_name": "URL 名",
        "f_name_help": "半角英小文字・数字・- と _（2〜100 文字）。データセットの URL になります。",
        "f_notes": "説明",
        "f_org": "組織",
        "f_license": "ライセンス",
        "f_license_help": "特に理由がなければ CC BY 4.0（推奨）のままにしてください。",
        "f_frequency": "更新頻度",
        "f_none": "（指定なし）",
        "f_tags": "タグ",
        "f_tags_help": "カンマ（,）または読点（、）で区切ります。例: 防災, 避難所",
        "f_groups": "カテゴリ",
        "f_layout": "標準データセットの様式",
        "f_layout_help": "選んだ様式で CSV の列名・順序・値を検査します。",
        "f_layout_none": "（様式なし: CSV の構造だけ検査）",
        "f_contact_name": "問い合わせ先（部署名）",
        "f_contact_email": "問い合わせ先メール",
        "f_contact_url": "問い合わせ先 URL",
        "f_temporal_start": "対象期間（開始）",
        "f_temporal_end": "対象期間（終了）",
        "f_private": "非公開にする（自団体のアカウントだけが閲覧できます）",
        "f_file": "ファイル",
        "f_file_help": "CSV（UTF-8 / Shift_JIS）、GeoJSON、XLSX、PDF など。上限 {mb} MB。",
        "f_file_edit_help": (
            "新しいファイルを選ぶと追加（または差し替え）します。空のままならファイルは変わりません。"),
        "f_resource_name": "リソース名",
        "f_resource_name_help": "空欄ならファイル名を使います。",
        "f_replace": "ファイルの扱い",
        "f_replace_new": "新しいリソースとして追加",
        "f_replace_of": "差し替え: {name}",
        "required": "必須",
        "submit_new": "検査して公開",
        "submit_edit": "検査して保存",
        "cancel": "キャンセル",
        "form_errors": "入力内容を確認してください。",
        "file_required": "ファイルを選んでください。",
        "report_title": "ファイルの検査結果",
        "report_refused": (
            "問題があるため公開していません。ファイルを直して、もう一度アップロードしてください。"),
        "report_ok": "ファイルの検査に合格しました。",
        "r_encoding": "文字コード",
        "r_rows": "データ行数",
        "r_layout": "様式",
        "r_line": "行",
        "r_column": "列",
        "r_value": "値",
        "r_severity": "種別",
        "r_message": "内容",
        "r_error": "エラー",
        "r_warning": "警告",
        "r_expected": "この様式の列（順番どおり）",
        "layout_not_csv": (
            "標準データセットの様式は CSV ファイルにだけ使えます。様式を「様式なし」にするか、CSV をアップ"
            "ロードしてください。"),
        "geojson_bad": "GeoJSON として読めません: {detail}",
        "login_hint": "ログイン",
        "field_missing": "入力してください。",
        "name_taken": "この URL 名は既に使われています。",
        "fmt_badge_more": "ほか",
    },
    "en": {
        "site": "Hokkaido Society 5.0 Data Platform",
        "portal": "Open data",
        "top": "Home",
        "nav_datasets": "Datasets",
        "nav_orgs": "Organizations",
        "nav_groups": "Categories",
        "nav_new": "Publish a dataset",
        "nav_login": "Log in",
        "nav_logout": "Log out",
        "lang_switch": "Language",
        "search_title": "Search datasets",
        "search_lead": (
            "Open data published by Hokkaido and its municipalities. Also available through the CKAN-compat"
            "ible API (/api/3/action/) and DCAT (/catalog.ttl)."),
        "q": "Keywords",
        "q_placeholder": "e.g. AED, evacuation, snow",
        "sort": "Order",
        "search": "Search",
        "sort_score desc, metadata_modified desc": "Relevance",
        "sort_metadata_modified desc": "Last modified",
        "sort_metadata_created desc": "Newest",
        "sort_title_string asc": "Name",
        "facet_organization": "Organizations",
        "facet_groups": "Categories",
        "facet_tags": "Tags",
        "facet_res_format": "Formats",
        "facet_license_id": "Licenses",
        "facet_frequency": "Update frequency",
        "facet_conforms_to": "Standard datasets",
        "filters": "Filters",
        "active_filters": "Filtered by",
        "remove_filter": "remove",
        "clear_all": "Clear all",
        "count": "{start}–{end} of {total}",
        "none": "No datasets found.",
        "prev": "Previous",
        "next": "Next",
        "page_of": "page {page} of {pages}",
        "pages": "Pages",
        "updated": "Updated",
        "formats": "Formats",
        "private": "Private",
        "draft": "Draft",
        "dataset": "Dataset",
        "organization": "Organization",
        "groups": "Categories",
        "tags": "Tags",
        "license": "License",
        "frequency": "Update frequency",
        "contact": "Contact",
        "spatial": "Spatial coverage",
        "temporal": "Temporal coverage",
        "standard": "Conforms to standard dataset",
        "created": "Created",
        "modified": "Last modified",
        "language": "Language",
        "author": "Author",
        "version": "Version",
        "source": "Source",
        "metadata": "Metadata",
        "resources": "Data and resources",
        "no_resources": "No resources.",
        "download": "Download",
        "original": "Original file",
        "utf8bom": "UTF-8 (BOM, for Excel)",
        "sjis": "Shift_JIS",
        "link": "Open link",
        "size": "Size",
        "in_datastore": "queryable by API",
        "preview": "Preview",
        "preview_from_datastore": "First {n} rows of the datastore table",
        "preview_from_file": "First {n} rows of the file",
        "preview_failed": "No preview: {detail}",
        "map": "Map",
        "map_label": "Map of the data",
        "map_points": "The map shows {n} features.",
        "api": "API",
        "api_lead": "Get this dataset through the CKAN-compatible Action API and DCAT.",
        "api_show": "Metadata (package_show)",
        "api_datastore": "Query the table (datastore_search)",
        "api_curl": "From the command line",
        "api_dcat": "DCAT (RDF)",
        "back": "All datasets",
        "edit": "Edit",
        "published": "The dataset is published.",
        "updated_ok": "The dataset is updated.",
        "orgs_title": "Organizations",
        "orgs_lead": "Publishers of data: Hokkaido, its municipalities and partner firms.",
        "orgs_filter": "Filter by name",
        "datasets_n": "{n} datasets",
        "orgs_none": "No organizations found.",
        "org_datasets": "Datasets of this organization",
        "search_in_org": "Search this organization's datasets",
        "groups_title": "Categories",
        "groups_lead": "Datasets grouped by field.",
        "groups_none": "No categories yet.",
        "not_found": "Not found",
        "dataset_not_found": (
            "Dataset not found (private datasets appear when you log in with an account that may read them)"
            "."),
        "org_not_found": "Organization not found.",
        "error": "Error",
        "new_title": "Publish a dataset",
        "edit_title": "Edit the dataset",
        "new_lead": (
            "Fill in the metadata and upload the file. Choose a standard dataset layout to have columns, co"
            "des, dates and coordinates checked before publishing; a file with problems is not published."),
        "need_login": "Log in with a staff account to publish or edit datasets.",
        "no_orgs": "This account may not edit any organization's datasets (operators and admins only).",
        "forbidden": "This account may not edit this dataset.",
        "bad_origin": "Forms sent from another site are refused; open the page again and send it from there.",
        "f_title": "Title",
        "f_title_help": "e.g. AED locations (Sapporo)",
        "f_name": "URL name",
        "f_name_help": "Lower-case letters, digits, - and _ (2 to 100); the dataset's URL.",
        "f_notes": "Description",
        "f_org": "Organization",
        "f_license": "License",
        "f_license_help": "Keep CC BY 4.0 (recommended) unless there is a reason not to.",
        "f_frequency": "Update frequency",
        "f_none": "(not set)",
        "f_tags": "Tags",
        "f_tags_help": "Separated by commas, e.g. disaster, shelter",
        "f_groups": "Categories",
        "f_layout": "Standard dataset layout",
        "f_layout_help": "The CSV's column names, order and values are checked against it.",
        "f_layout_none": "(no layout: check the CSV's structure only)",
        "f_contact_name": "Contact (department)",
        "f_contact_email": "Contact e-mail",
        "f_contact_url": "Contact URL",
        "f_temporal_start": "Temporal coverage (from)",
        "f_temporal_end": "Temporal coverage (to)",
        "f_private": "Private (only this municipality's accounts can see it)",
        "f_file": "File",
        "f_file_help": "CSV (UTF-8 or Shift_JIS), GeoJSON, XLSX, PDF … up to {mb} MB.",
        "f_file_edit_help": (
            "A new file is added (or replaces the one chosen below); leave empty to keep the files."),
        "f_resource_name": "Resource name",
        "f_resource_name_help": "Empty: the file name.",
        "f_replace": "The new file",
        "f_replace_new": "Add as a new resource",
        "f_replace_of": "Replace: {name}",
        "required": "required",
        "submit_new": "Check and publish",
        "submit_edit": "Check and save",
        "cancel": "Cancel",
        "form_errors": "Please check the form.",
        "file_required": "Choose a file.",
        "report_title": "File check",
        "report_refused": "Not published because of the problems below. Fix the file and upload it again.",
        "report_ok": "The file passed the check.",
        "r_encoding": "Encoding",
        "r_rows": "Data rows",
        "r_layout": "Layout",
        "r_line": "Line",
        "r_column": "Column",
        "r_value": "Value",
        "r_severity": "Severity",
        "r_message": "Problem",
        "r_error": "error",
        "r_warning": "warning",
        "r_expected": "The layout's columns, in order",
        "layout_not_csv": "Standard layouts apply to CSV files only: choose \"no layout\" or upload a CSV.",
        "geojson_bad": "Not readable as GeoJSON: {detail}",
        "login_hint": "Log in",
        "field_missing": "Fill this in.",
        "name_taken": "This URL name is already used.",
        "fmt_badge_more": "more",
    },
}
for _t in TEXTS.values():  # the form's field names, as error lists name them
    _t.update(f_upload=_t["f_file"], f_owner_org=_t["f_org"], f_license_id=_t["f_license"],
              f_conforms_to=_t["f_layout"])
FREQUENCY_EN = {"continuous": "Continuous", "hourly": "Hourly", "daily": "Daily", "weekly": "Weekly",
                "monthly": "Monthly", "quarterly": "Quarterly", "semiannual": "Semiannual",
                "annual": "Annual",
                "irregular": "Irregular", "never": "Never"}
FREQUENCY_JA = {"continuous": "随時", "hourly": "毎時", "daily": "毎日", "weekly": "毎週", "monthly": "毎月",
                "quarterly": "四半期毎", "semiannual": "半年毎", "annual": "毎年", "irregular": "不定期",
                "never": "更新なし"}
FORM_LICENSES = ("CC-BY-4.0", "gsl-2.0", "CC0-1.0", "CC-BY-SA-4.0", "odc-odbl", "other-open")
FORM_FIELDS = ("title", "name", "notes", "owner_org", "license_id", "frequency", "tags", "conforms_to",
               "contact_name", "contact_email", "contact_url", "temporal_start", "temporal_end", "private",
               "resource_name", "replace")
GROUP_FIELD = "group."


# ---------------------------------------------------------------- the shell every page shares


def _lang(request: Request) -> str:
    for value in (request.query_params.get("lang"), request.cookies.get(LANG_COOKIE)):
        if value in LANGS:
            return value
    return "ja"


def url_with(request: Request, path: str | None = None, drop: tuple[str, ...] = (), **changes: Any) -> str:
    """This page's URL (or ``path``) with query parameters changed (None removes one); relative, so safe
    to link."""
    items = [(k, v) for k, v in request.query_params.multi_items() if k not in changes and k not in drop]
    items += [(k, str(v)) for k, v in changes.items() if v is not None and v != ""]
    return (path or request.url.path) + ("?" + urlencode(items) if items else "")


def _principal(request: Request) -> Principal:
    try:
        return principal_of(request)
    except ApiError:  # a bad key or session: the page still renders, as for anyone
        return ANONYMOUS


def _site_base(request: Request) -> str:
    return platform_of(request).settings.opendata_site_url or str(request.base_url).rstrip("/")


def context_of(request: Request) -> ActionContext:
    """The action context of a page request: the caller's principal, the site's base URL."""
    return ActionContext(platform_of(request), _principal(request), _site_base(request))


def may_edit(principal: Principal, tenant: str) -> bool:
    try:
        check_edit(principal, tenant)
    except AuthorizationError:
        return False
    return True


def _shell(request: Request, active: str) -> dict[str, Any]:
    lang = _lang(request)
    principal = _principal(request)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    staff = not principal.anonymous and principal.role in ("admin", "operator")
    return {
        "lang": lang, "t": TEXTS[lang], "active": active, "principal": principal, "staff": staff,
        "user": None if principal.anonymous else (principal.name or principal.role),
        "lang_urls": {code: url_with(request, lang=code) for code in LANGS},
        "login_url": "/login?" + urlencode({"next": here}),
    }


def _render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    response = HTMLResponse(_env.get_template(template).render(context), status_code=status)
    chosen = request.query_params.get("lang")
    if chosen in LANGS and request.cookies.get(LANG_COOKIE) != chosen:
        response.set_cookie(LANG_COOKIE, chosen, max_age=365 * 24 * 3600, path="/", samesite="lax")
    response.headers.update(SECURITY_HEADERS)
    return response


def _error(request: Request, shell: dict[str, Any], message: str, status: int) -> HTMLResponse:
    return _render(request, "od_error.html", {**shell, "message": message, "status": status}, status)


# ---------------------------------------------------------------- values shown on pages


def jst(value: Any) -> str:
    """CKAN's naive-UTC timestamps (and ISO 8601 with Z) as Japan time, ``YYYY-MM-DD HH:MM``."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        return to_jst(value)
    except ValueError:
        return value


def frequency_label(value: str | None, lang: str) -> str:
    if not value:
        return ""
    return (FREQUENCY_EN if lang == "en" else FREQUENCY_JA).get(value, value)


def layout_label(layout_id: str | None, lang: str) -> str:
    if not layout_id:
        return ""
    try:
        found = layouts.get(layout_id)
    except KeyError:
        return layout_id
    return found.name_en if lang == "en" else found.name_ja


def human_size(size: Any) -> str:
    if not isinstance(size, int) or size < 0:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size //= 1024
    return ""


def _facet_label(field: str, item: dict[str, Any], lang: str) -> str:
    if field == "frequency":
        return frequency_label(item["name"], lang)
    if field == "conforms_to":
        return layout_label(item["name"], lang)
    return str(item.get("display_name") or item["name"])


def _card(pkg: dict[str, Any], lang: str) -> dict[str, Any]:
    formats = sorted({str(r.get("format")) for r in pkg.get("resources", []) if r.get("format")})
    notes = " ".join(markdown_plain(str(pkg.get("notes") or "")).split())
    return {
        "name": pkg["name"], "title": pkg.get("title") or pkg["name"], "url": f"/dataset/{pkg['name']}",
        "org": (pkg.get("organization") or {}).get("title") or "",
        "notes": notes[:140] + ("…" if len(notes) > 140 else ""), "formats": formats,
        "updated": jst(pkg.get("metadata_modified"))[:10], "private": bool(pkg.get("private")),
        "draft": pkg.get("state") == "draft",
    }


def _pager(request: Request, page: int, total: int, rows: int) -> dict[str, Any]:
    pages = max(1, math.ceil(total / rows))
    window = sorted({1, pages, *range(max(1, page - 2), min(pages, page + 2) + 1)})
    return {
        "page": page, "pages": pages, "start": (page - 1) * rows + 1 if total else 0,
        "end": min(total, page * rows),
        "prev": url_with(request, page=page - 1 if page > 2 else None) if page > 1 else None,
        "next": url_with(request, page=page + 1) if page < pages else None,
        "links": [{"n": n, "url": url_with(request, page=n if n > 1 else None), "current": n == page,
                   "gap": i > 0 and n - window[i - 1] > 1} for i, n in enumerate(window)],
    }


def _page_number(request: Request) -> int:
    try:
        return max(1, min(10_000, int(request.query_params.get("page") or 1)))
    except ValueError:
        return 1


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------- catalog search


@router.get("/opendata")
def portal_home() -> RedirectResponse:
    """The web shell's top page links every service's pages at ``/<service name>``: the catalog search."""
    return RedirectResponse("/dataset", status_code=307)


@router.get("/dataset", response_class=HTMLResponse)
def dataset_search(request: Request) -> HTMLResponse:
    shell = _shell(request, "datasets")
    lang = shell["lang"]
    q = (request.query_params.get("q") or "").strip()[:500]
    sort = request.query_params.get("sort") or SORTS[0]
    if sort not in SORTS:
        sort = SORTS[0]
    chosen = {f: [v for v in request.query_params.getlist(f) if v] for f in FACETS}
    fq = " ".join(f"{f}:{_quoted(v)}" for f, values in chosen.items() for v in values)
    page = _page_number(request)
    ctx = context_of(request)
    data = {"q": q, "fq": fq, "rows": ROWS, "start": (page - 1) * ROWS, "sort": sort,
            "facet.field": list(FACETS), "facet.limit": 20, "include_private": True}
    try:
        found = call("package_search", ctx, data)
    except CkanError as err:
        return _error(request, shell, err.message, err.status if err.status < 500 else 400)
    facets = []
    for field in FACETS:
        items = []
        for item in found["search_facets"].get(field, {}).get("items", []):
            active = item["name"] in chosen[field]
            others = [v for v in chosen[field] if v != item["name"]]
            target = others if active else [*chosen[field], item["name"]]
            items.append({"label": _facet_label(field, item, lang), "count": item["count"], "active": active,
                          "url": _facet_url(request, field, target)})
        if items:
            facets.append({"field": field, "title": shell["t"][f"facet_{field}"], "entries": items})
    active_filters = [{"field": f, "title": shell["t"][f"facet_{f}"],
                       "label": _value_label(f, v, found, lang),
                       "url": _facet_url(request, f, [x for x in chosen[f] if x != v])}
                      for f in FACETS for v in chosen[f]]
    context = {
        **shell, "q": q, "sort": sort, "sorts": SORTS, "facets": facets, "active_filters": active_filters,
        "chosen": chosen, "total": found["count"], "results": [_card(p, lang) for p in found["results"]],
        "paging": _pager(request, page, found["count"], ROWS),
        "clear_url": url_with(request, drop=(*FACETS, "page")),
    }
    return _render(request, "od_search.html", context)


def _facet_url(request: Request, field: str, values: list[str]) -> str:
    items = [(k, v) for k, v in request.query_params.multi_items() if k not in (field, "page")]
    items += [(field, v) for v in values]
    return request.url.path + ("?" + urlencode(items) if items else "")


def _value_label(field: str, value: str, found: dict[str, Any], lang: str) -> str:
    for item in found["search_facets"].get(field, {}).get("items", []):
        if item["name"] == value:
            return _facet_label(field, item, lang)
    return layout_label(value, lang) if field == "conforms_to" else value


# ---------------------------------------------------------------- one dataset


@router.get("/dataset/new", response_class=HTMLResponse)
def new_dataset_form(request: Request) -> HTMLResponse:
    shell = _shell(request, "new")
    refusal = _officer_refusal(request, shell)
    if refusal is not None:
        return refusal
    values = {"license_id": "CC-BY-4.0", "name": f"dataset-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(2)}",
              "owner_org": request.query_params.get("organization") or ""}
    context = _form_context(request, shell, values, None)
    if not context["orgs"]:  # an operator whose municipality has no organization yet
        return _error(request, shell, shell["t"]["no_orgs"], 403)
    return _render(request, "od_form.html", context)


@router.post("/dataset/new", response_class=HTMLResponse)
async def new_dataset_submit(request: Request) -> Response:
    return await _submit(request, None)


@router.get("/dataset/{name}/edit", response_class=HTMLResponse)
def edit_dataset_form(request: Request, name: str) -> HTMLResponse:
    shell = _shell(request, "new")
    refusal = _officer_refusal(request, shell)
    if refusal is not None:
        return refusal
    try:
        pkg = _editable(request, name)
    except CkanError as err:
        return _error(request, shell, _ckan_message(err, shell), err.status)
    values = {k: pkg.get(k) for k in FORM_FIELDS if pkg.get(k) is not None}
    values["tags"] = ", ".join(tg["name"] for tg in pkg.get("tags", []))
    values["groups"] = [g["name"] for g in pkg.get("groups", [])]
    values["owner_org"] = (pkg.get("organization") or {}).get("name", "")
    for field in ("temporal_start", "temporal_end"):
        values[field] = str(values.get(field) or "")[:10]
    return _render(request, "od_form.html", _form_context(request, shell, values, pkg))


@router.post("/dataset/{name}/edit", response_class=HTMLResponse)
async def edit_dataset_submit(request: Request, name: str) -> Response:
    return await _submit(request, name)


@router.get("/dataset/{name}", response_class=HTMLResponse)
def dataset_page(request: Request, name: str) -> HTMLResponse:
    shell = _shell(request, "datasets")
    lang = shell["lang"]
    ctx = context_of(request)
    try:
        pkg = call("package_show", ctx, {"id": name})
    except CkanError as err:
        return _error(request, shell, _ckan_message(err, shell), err.status)
    org = pkg.get("organization") or {}
    resources = [_resource_view(pkg, r, lang) for r in pkg.get("resources", [])]
    previews = [p for p in (_preview(ctx, pkg, r, shell["t"]) for r in pkg.get("resources", [])
                            if _is_tabular(r)) if p is not None][:PREVIEW_RESOURCES]
    features = _features(ctx, pkg)
    base = _site_base(request)
    datastore_ids = [r["id"] for r in pkg.get("resources", []) if r.get("datastore_active")]
    api = {
        "show": f"{base}/api/3/action/package_show?id={quote(pkg['name'])}",
        "datastore": f"{base}/api/3/action/datastore_search?resource_id={datastore_ids[0]}&limit=5"
        if datastore_ids else None,
        "dcat": [(ext, f"/dataset/{quote(pkg['name'])}.{ext}") for ext in ("ttl", "jsonld", "rdf")],
    }
    api["curl"] = f"curl '{api['datastore'] or api['show']}'"
    context = {
        **shell, "pkg": pkg, "org": org, "resources": resources, "previews": previews,
        "features": features, "map": {"tiles": GSI_TILES, "attribution": GSI_ATTRIBUTION, **HOKKAIDO},
        "meta": _metadata_rows(pkg, lang), "api": api,
        "can_edit": may_edit(ctx.principal, org.get("tenant") or ""),
        "notice": shell["t"]["published"] if request.query_params.get("published") else (
            shell["t"]["updated_ok"] if request.query_params.get("saved") else None),
    }
    return _render(request, "od_dataset.html", context)


def _ckan_message(err: CkanError, shell: dict[str, Any]) -> str:
    if isinstance(err, NotFoundError):
        return str(shell["t"]["dataset_not_found"])
    if isinstance(err, AuthorizationError):
        return str(shell["t"]["forbidden"])
    return err.message


def _metadata_rows(pkg: dict[str, Any], lang: str) -> list[dict[str, Any]]:
    t = TEXTS[lang]
    org = pkg.get("organization") or {}
    rows: list[dict[str, Any]] = [
        {"label": t["organization"], "text": org.get("title") or org.get("name") or "",
         "url": f"/organization/{org['name']}" if org.get("name") else None},
        {"label": t["license"], "text": pkg.get("license_title") or pkg.get("license_id") or "",
         "url": pkg.get("license_url") or None, "external": True},
        {"label": t["frequency"], "text": frequency_label(pkg.get("frequency"), lang)},
    ]
    contact = [str(pkg.get(k)) for k in ("contact_name", "maintainer", "author") if pkg.get(k)][:1]
    contact += [str(pkg.get(k)) for k in ("contact_email", "maintainer_email") if pkg.get(k)][:1]
    rows.append({"label": t["contact"], "text": " / ".join(contact),
                 "url": pkg.get("contact_url") or None, "external": True})
    spatial = pkg.get("spatial")
    rows.append({"label": t["spatial"], "text": _spatial_text(spatial)})
    start, end = str(pkg.get("temporal_start") or "")[:10], str(pkg.get("temporal_end") or "")[:10]
    rows.append({"label": t["temporal"], "text": f"{start} – {end}" if (start or end) else ""})
    standard = pkg.get("conforms_to")
    rows.append({"label": t["standard"], "text": layout_label(standard, lang),
                 "url": f"/dataset?conforms_to={quote(standard)}" if standard else None})
    rows.append({"label": t["groups"], "text": "、".join(g.get("display_name") or g["name"]
                                                        for g in pkg.get("groups", []))})
    rows.append({"label": t["created"], "text": jst(pkg.get("metadata_created"))})
    rows.append({"label": t["modified"], "text": jst(pkg.get("metadata_modified"))})
    if pkg.get("version"):
        rows.append({"label": t["version"], "text": pkg["version"]})
    if pkg.get("url"):
        rows.append({"label": t["source"], "text": pkg["url"], "url": pkg["url"], "external": True})
    for row in rows:
        row.setdefault("url", None)
        row.setdefault("external", False)
        if row["url"] and row.get("external") and not str(row["url"]).startswith(("http://", "https://")):
            row["url"] = None  # only web links become links
    return rows


def _spatial_text(spatial: Any) -> str:
    if isinstance(spatial, str):
        try:
            spatial = json.loads(spatial)
        except ValueError:
            return spatial
    if isinstance(spatial, dict) and spatial.get("type"):
        return str(spatial["type"])
    return ""


def _is_csv(res: dict[str, Any]) -> bool:
    name = str(res.get("url") or "").split("?")[0].lower()
    return str(res.get("format") or "").upper() == "CSV" or name.endswith(".csv")


def _is_tabular(res: dict[str, Any]) -> bool:
    return bool(res.get("datastore_active")) or (_is_csv(res) and res.get("url_type") == "upload")


def _resource_view(pkg: dict[str, Any], res: dict[str, Any], lang: str) -> dict[str, Any]:
    variants = []
    if downloads.can_convert(res):
        variants = [(TEXTS[lang][label], downloads.variant_url(pkg["name"], res, label))
                    for label in ("utf8bom", "sjis")]
    return {"id": res["id"], "name": res.get("name") or res.get("url") or res["id"],
            "description": res.get("description") or "", "format": res.get("format") or "",
            "url": res.get("url") or "", "upload": res.get("url_type") == "upload",
            "size": human_size(res.get("size")), "datastore": bool(res.get("datastore_active")),
            "variants": variants, "modified": jst(res.get("last_modified") or res.get("metadata_modified"))}


def _preview(ctx: ActionContext, pkg: dict[str, Any], res: dict[str, Any], t: dict[str, str],
             ) -> dict[str, Any] | None:
    """The first rows of a tabular resource: from the datastore when it is loaded there, else the file."""
    try:
        if res.get("datastore_active"):
            found = call("datastore_search", ctx, {"resource_id": res["id"], "limit": PREVIEW_ROWS,
                                                   "records_format": "lists", "include_total": False})
            names = [f["id"] for f in found["fields"]]
            keep = [i for i, n in enumerate(names) if n != "_id"]
            rows = [[_cell(row[i]) for i in keep] for row in found["records"]]
            return {"name": res.get("name") or res["id"], "id": res["id"], "header": [names[i] for i in keep],
                    "rows": rows, "source": t["preview_from_datastore"].format(n=len(rows)), "error": None}
        header, rows = _csv_head(ctx, pkg, res, PREVIEW_ROWS)
        return {"name": res.get("name") or res["id"], "id": res["id"], "header": header, "rows": rows,
                "source": t["preview_from_file"].format(n=len(rows)), "error": None}
    except (CkanError, csvio.CsvFormatError, OSError) as err:
        detail = err.message if isinstance(err, CkanError) else str(err)
        return {"name": res.get("name") or res["id"], "id": res["id"], "header": [], "rows": [], "source": "",
                "error": t["preview_failed"].format(detail=detail)}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _csv_head(ctx: ActionContext, pkg: dict[str, Any], res: dict[str, Any], n: int,
              ) -> tuple[list[str], list[list[str]]]:
    _, path = catalog_actions.resource_file(ctx, pkg["id"], res["id"])
    with csvio.open_csv(path, max_problems=10) as reader:
        header = list(reader.header or [])
        rows = [row.values for row in itertools.islice(iter(reader), n)]
    return header, rows


# ---------------------------------------------------------------- the dataset's map


def _features(ctx: ActionContext, pkg: dict[str, Any]) -> list[dict[str, Any]]:
    """What the dataset's map draws: GeoJSON resources, CSV rows with lat/lon columns, the spatial
    coverage."""
    features: list[dict[str, Any]] = []
    for res in pkg.get("resources", []):
        try:
            if _is_geojson(res) and res.get("url_type") == "upload":
                features += _geojson_features(ctx, pkg, res)
            elif _is_tabular(res):
                features += _point_features(ctx, pkg, res)
        except (CkanError, csvio.CsvFormatError, OSError, ValueError) as err:
            log.info("no map features from resource %s: %s", res.get("id"), err)
        if len(features) >= MAP_ROWS:
            break
    spatial = pkg.get("spatial")
    if isinstance(spatial, str):
        try:
            spatial = json.loads(spatial)
        except ValueError:
            spatial = None
    if isinstance(spatial, dict) and spatial.get("type") in ("Polygon", "MultiPolygon", "Point"):
        features.append({"type": "Feature", "geometry": spatial, "properties": {"_coverage": True}})
    return features[:MAP_ROWS + 1]


def _is_geojson(res: dict[str, Any]) -> bool:
    name = str(res.get("url") or "").split("?")[0].lower()
    return str(res.get("format") or "").lower() == "geojson" or name.endswith(".geojson")


def _geojson_features(ctx: ActionContext, pkg: dict[str, Any], res: dict[str, Any]) -> list[dict[str, Any]]:
    _, path = catalog_actions.resource_file(ctx, pkg["id"], res["id"])
    if path.stat().st_size > GEOJSON_MAX_BYTES:
        return []
    data = json.loads(path.read_text(encoding="utf-8-sig"))
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        items = data.get("features") or []
    elif isinstance(data, dict) and data.get("type") == "Feature":
        items = [data]
    elif isinstance(data, dict) and isinstance(data.get("type"), str):
        items = [{"type": "Feature", "geometry": data, "properties": {}}]
    else:
        return []
    out = []
    for item in items[:MAP_ROWS]:
        if not isinstance(item, dict) or not isinstance(item.get("geometry"), dict):
            continue
        raw = item.get("properties")
        props: dict[str, Any] = raw if isinstance(raw, dict) else {}
        cells = [[str(k), _cell(v)[:200]] for k, v in list(props.items())[:8]]
        label = next((_cell(props[k]) for k in props if _norm(k) in LABEL_NAMES), "")
        out.append({"type": "Feature", "geometry": item["geometry"],
                    "properties": {"title": label, "cells": cells}})
    return out


def _norm(name: str) -> str:
    return unicodedata.normalize("NFKC", str(name)).strip().casefold()


def coordinate_columns(header: list[str]) -> tuple[int, int] | None:
    """The indexes of a table's latitude and longitude columns (緯度/経度, lat/lon …), or None."""
    names = [_norm(h) for h in header]
    lat = next((i for i, n in enumerate(names) if n in LAT_NAMES), None)
    lon = next((i for i, n in enumerate(names) if n in LON_NAMES), None)
    return (lat, lon) if lat is not None and lon is not None else None


def _rows_for_map(ctx: ActionContext, pkg: dict[str, Any], res: dict[str, Any]
                  ) -> tuple[list[str], Iterator[list[Any]]]:
    if res.get("datastore_active"):
        found = call("datastore_search", ctx, {"resource_id": res["id"], "limit": MAP_ROWS,
                                               "records_format": "lists", "include_total": False})
        return [f["id"] for f in found["fields"]], iter(found["records"])
    header, rows = _csv_head(ctx, pkg, res, MAP_ROWS)
    return header, iter(rows)


def _point_features(ctx: ActionContext, pkg: dict[str, Any], res: dict[str, Any]) -> list[dict[str, Any]]:
    header, rows = _rows_for_map(ctx, pkg, res)
    found = coordinate_columns(header)
    if found is None:
        return []
    lat_i, lon_i = found
    label_i = next((i for i, h in enumerate(header) if _norm(h) in LABEL_NAMES), None)
    shown = [i for i, h in enumerate(header) if h != "_id"][:8]
    out = []
    for row in rows:
        try:
            lat, lon = float(row[lat_i]), float(row[lon_i])
        except (TypeError, ValueError, IndexError):
            continue
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            continue
        cells = [[header[i], _cell(row[i])[:200]] for i in shown if i < len(row)]
        title = _cell(row[label_i]) if label_i is not None and label_i < len(row) else ""
        out.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
                    "properties": {"title": title, "cells": cells}})
    return out


# ---------------------------------------------------------------- organizations and groups


@router.get("/organization", response_class=HTMLResponse)
def organization_list(request: Request) -> HTMLResponse:
    shell = _shell(request, "orgs")
    q = (request.query_params.get("q") or "").strip()[:200]
    orgs = call("organization_list", context_of(request), {"all_fields": True, "q": q, "sort": "title asc",
                                                           "limit": 1000})
    context = {**shell, "q": q, "orgs": orgs}
    return _render(request, "od_orgs.html", context)


@router.get("/organization/{name}", response_class=HTMLResponse)
def organization_page(request: Request, name: str) -> HTMLResponse:
    shell = _shell(request, "orgs")
    ctx = context_of(request)
    try:
        org = call("organization_show", ctx, {"id": name})
    except CkanError as err:
        message = shell["t"]["org_not_found"] if isinstance(err, NotFoundError) else err.message
        return _error(request, shell, message, err.status)
    page = _page_number(request)
    found = call("package_search", ctx, {"fq": f"organization:{_quoted(org['name'])}", "rows": ROWS,
                                         "start": (page - 1) * ROWS, "sort": "metadata_modified desc",
                                         "include_private": True})
    context = {**shell, "org": org, "total": found["count"],
               "results": [_card(p, shell["lang"]) for p in found["results"]],
               "paging": _pager(request, page, found["count"], ROWS),
               "search_url": "/dataset?" + urlencode({"organization": org["name"]}),
               "can_edit": may_edit(ctx.principal, org.get("tenant") or "")}
    return _render(request, "od_org.html", context)


@router.get("/group", response_class=HTMLResponse)
def group_list(request: Request) -> HTMLResponse:
    shell = _shell(request, "groups")
    groups = call("group_list", context_of(request), {"all_fields": True, "sort": "title asc"})
    return _render(request, "od_groups.html", {**shell, "groups": groups})


@router.get("/group/{name}")
def group_page(name: str) -> RedirectResponse:
    """A category's datasets are a search filtered by it."""
    return RedirectResponse("/dataset?" + urlencode({"groups": name}), status_code=303)


# ---------------------------------------------------------------- the officer's form


def _officer_refusal(request: Request, shell: dict[str, Any]) -> HTMLResponse | None:
    principal = shell["principal"]
    if principal.anonymous:
        return _render(request, "od_login_hint.html", {**shell, "message": shell["t"]["need_login"]}, 401)
    if not shell["staff"]:
        return _error(request, shell, shell["t"]["no_orgs"], 403)
    return None


def _editable_orgs(ctx: ActionContext) -> list[dict[str, Any]]:
    orgs = call("organization_list", ctx, {"all_fields": True, "sort": "title asc", "limit": 1000})
    return [o for o in orgs if may_edit(ctx.principal, o.get("tenant") or "")]


def _editable(request: Request, name: str) -> dict[str, Any]:
    ctx = context_of(request)
    pkg: dict[str, Any] = call("package_show", ctx, {"id": name})
    check_edit(ctx.principal, (pkg.get("organization") or {}).get("tenant") or "", f"dataset {name}")
    return pkg


def _form_context(request: Request, shell: dict[str, Any], values: dict[str, Any], pkg: dict[str, Any] | None,
                  errors: dict[str, str] | None = None, report: dict[str, Any] | None = None,
                  message: str | None = None) -> dict[str, Any]:
    ctx = context_of(request)
    lang = shell["lang"]
    orgs = _editable_orgs(ctx)
    licenses = {lic["id"]: lic for lic in call("license_list", ctx, {})}
    groups = call("group_list", ctx, {"all_fields": True, "sort": "title asc"})
    values = {k: ("" if values.get(k) is None else values[k]) for k in (*FORM_FIELDS, "groups")}
    values["groups"] = values["groups"] or []
    uploads = [r for r in (pkg or {}).get("resources", []) if r.get("url_type") == "upload"]
    return {
        **shell, "values": values, "pkg": pkg, "orgs": orgs, "errors": errors or {}, "report": report,
        "message": message,
        "licenses": [(lid, licenses[lid]["title"]) for lid in FORM_LICENSES if lid in licenses],
        "frequencies": [(k, frequency_label(k, lang)) for k in FREQUENCY_JA],
        "layouts": [(lay.id, lay.name_en if lang == "en" else lay.name_ja) for lay in layouts.all()],
        "groups": groups, "replaceable": [(r["id"], r.get("name") or r["id"]) for r in uploads],
        "max_mb": platform_of(request).settings.opendata_max_upload_mb,
        "action": f"/dataset/{pkg['name']}/edit" if pkg else "/dataset/new",
        "expected_columns": _expected_columns(values.get("conforms_to"), report),
    }


def _expected_columns(layout_id: Any, report: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not report or not layout_id:
        return []
    try:
        return [{"name": c.name, "required": c.required} for c in layouts.get(str(layout_id)).columns]
    except KeyError:
        return []


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin != "null"
    got = urlsplit(origin)
    return (got.scheme, got.netloc) == (request.url.scheme, request.url.netloc)


async def _submit(request: Request, name: str | None) -> Response:
    shell = _shell(request, "new")
    refusal = _officer_refusal(request, shell)
    if refusal is not None:
        return refusal
    if not _same_origin(request):
        return _error(request, shell, shell["t"]["bad_origin"], 403)
    settings = platform_of(request).settings
    body = files.MultipartBody(settings)
    try:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "multipart/form-data":
            raise ValidationError({"upload": ["the form must be sent as multipart/form-data"]})
        await body.read(request)
    except ValidationError as err:  # not multipart, broken, or a file over the size limit: nothing kept
        body.discard()
        errors = {k: "; ".join(map(str, v)) for k, v in err.fields.items()}
        return await run_in_threadpool(_form_again, request, shell, name, errors)
    try:
        return await run_in_threadpool(_publish, request, shell, name, body)
    finally:
        body.discard()


def _form_again(request: Request, shell: dict[str, Any], name: str | None, errors: dict[str, str],
                ) -> HTMLResponse:
    try:
        pkg = _editable(request, name) if name else None
    except CkanError as err:
        return _error(request, shell, _ckan_message(err, shell), err.status)
    values = {k: pkg.get(k) for k in FORM_FIELDS if pkg.get(k) is not None} if pkg else {}
    context = _form_context(request, shell, values, pkg, errors=errors, message=shell["t"]["form_errors"])
    return _render(request, "od_form.html", context, 400)


def _form_values(body: files.MultipartBody) -> dict[str, Any]:
    fields = body.fields
    values: dict[str, Any] = {k: fields.get(k, "").strip() for k in FORM_FIELDS}
    values["private"] = fields.get("private") == "on"
    # One checkbox per group, each its own field name (the multipart reader keeps one value per name).
    values["groups"] = [k[len(GROUP_FIELD):] for k, v in fields.items() if k.startswith(GROUP_FIELD) and v]
    return values


def _publish(request: Request, shell: dict[str, Any], name: str | None, body: files.MultipartBody,
             ) -> Response:
    t = shell["t"]
    ctx = context_of(request)
    try:
        existing = _editable(request, name) if name else None
    except CkanError as err:
        return _error(request, shell, _ckan_message(err, shell), err.status)
    values = _form_values(body)
    upload = body.uploads.get("upload")
    if upload is not None and upload.size == 0 and upload.filename == "file":
        upload = None  # the file input left empty (the multipart reader names a nameless part "file")
    errors: dict[str, str] = {}
    if existing is None and upload is None:
        errors["upload"] = t["file_required"]
    for field in ("title", "owner_org"):
        if not values[field] and existing is None:
            errors[field] = t["field_missing"]
    report = _check_file(upload, values["conforms_to"] or None, shell) if upload is not None else None

    def again(status: int, message: str | None = None) -> HTMLResponse:
        ctx_ = _form_context(request, shell, values, existing, errors=errors, report=report,
                             message=message or t["form_errors"])
        return _render(request, "od_form.html", ctx_, status)

    if errors or (report is not None and not report["ok"]):
        return again(422 if report is not None and not report["ok"] else 400,
                     t["report_refused"] if report is not None and not report["ok"] else None)
    data = _package_data(values, existing)
    try:
        if existing is None:
            pkg = _create_draft(ctx, data)
        else:
            pkg = call("package_patch", ctx, {**data, "id": existing["id"]})
        if upload is not None:
            _add_file(ctx, pkg, upload, values, report)
        if existing is None or existing.get("state") == "draft":
            pkg = call("package_patch", ctx, {"id": pkg["id"], "state": "active"})
    except ValidationError as err:
        errors.update({k: _field_message(v, t) for k, v in err.fields.items()})
        return again(409)
    except CkanError as err:
        return _error(request, shell, _ckan_message(err, shell), err.status)
    flag = "saved=1" if existing is not None else "published=1"
    return RedirectResponse(f"/dataset/{quote(pkg['name'])}?{flag}", status_code=303)


def _field_message(messages: Any, t: dict[str, str]) -> str:
    texts = messages if isinstance(messages, list) else [messages]
    out = []
    for text in texts:
        text = str(text) if not isinstance(text, dict) else json.dumps(text, ensure_ascii=False)
        if text == "Missing value":
            text = t["field_missing"]
        elif text == "That URL is already in use.":
            text = t["name_taken"]
        out.append(text)
    return "; ".join(out)


def _tags(text: str) -> list[dict[str, str]]:
    parts = re.split(r"[,、，\n]", text)
    seen: list[str] = []
    for part in parts:
        tag = part.strip()
        if tag and tag not in seen:
            seen.append(tag)
    return [{"name": tag} for tag in seen]


def _package_data(values: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "title": values["title"], "notes": values["notes"], "owner_org": values["owner_org"],
        "license_id": values["license_id"] or "CC-BY-4.0", "frequency": values["frequency"] or None,
        "tags": _tags(values["tags"]), "groups": [{"name": g} for g in values["groups"]],
        "conforms_to": values["conforms_to"] or None, "contact_name": values["contact_name"] or None,
        "contact_email": values["contact_email"] or None, "contact_url": values["contact_url"] or None,
        "temporal_start": values["temporal_start"] or None, "temporal_end": values["temporal_end"] or None,
        "private": values["private"],
    }
    if existing is None:
        data["name"] = values["name"]
    elif not data["owner_org"]:
        data.pop("owner_org")
    return data


def _create_draft(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """The dataset as an invisible draft; a draft this officer left by an earlier failed submit is reused."""
    try:
        old = call("package_show", ctx, {"id": data["name"]})
    except NotFoundError:
        old = None
    if old is not None and old.get("state") == "draft" and may_edit(
            ctx.principal, (old.get("organization") or {}).get("tenant") or ""):
        result: dict[str, Any] = call("package_update", ctx, {**data, "id": old["id"], "state": "draft"})
        return result
    created: dict[str, Any] = call("package_create", ctx, {**data, "state": "draft"})
    return created


def _add_file(ctx: ActionContext, pkg: dict[str, Any], upload: Any, values: dict[str, Any],
              report: dict[str, Any] | None) -> None:
    resource: dict[str, Any] = {"name": values["resource_name"] or catalog_name(upload.filename)}
    if report is not None:
        resource.update(validation_status="success", validation_timestamp=datetime.now(UTC).isoformat(),
                        validation_layout=report.get("layout_id") or "",
                        encoding=report.get("encoding") or "")
    replace = values["replace"]
    ctx.uploads["upload"] = upload
    try:
        if replace and any(r["id"] == replace for r in pkg.get("resources", [])):
            call("resource_patch", ctx, {**resource, "id": replace})
        else:
            call("resource_create", ctx, {**resource, "package_id": pkg["id"]})
    finally:
        ctx.uploads.pop("upload", None)


def catalog_name(filename: str) -> str:
    return filename.replace("\\", "/").rsplit("/", 1)[-1] or "file"


def _check_file(upload: Any, layout_id: str | None, shell: dict[str, Any]) -> dict[str, Any] | None:
    """The check report of an upload (a dict the form shows), or None when its kind is not checked."""
    t = shell["t"]
    lower = upload.filename.lower()
    if lower.endswith(".csv"):
        try:
            report = validate.validate_file(upload.path, layout_id)
        except KeyError:
            return _one_problem(t["layout_not_csv"], layout_id)
        out = report.as_dict()
        out["layout_id"] = report.layout_id
        return out
    if layout_id:
        return _one_problem(t["layout_not_csv"], layout_id)
    if lower.endswith(".geojson"):
        problem = _geojson_problem(Path(upload.path))
        if problem is not None:
            return _one_problem(t["geojson_bad"].format(detail=problem), None)
        return {"ok": True, "problems": [], "summary_ja": "GeoJSON として読めました。",
                "summary_en": "Readable as GeoJSON.", "encoding_label": "UTF-8", "total_rows": None,
                "layout": None, "layout_id": None, "encoding": "utf-8", "errors": 0, "warnings": 0}
    return None


def _geojson_problem(path: Path) -> str | None:
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as err:
        return str(err)
    kinds = ("FeatureCollection", "Feature", "Point", "MultiPoint", "LineString", "MultiLineString",
             "Polygon", "MultiPolygon", "GeometryCollection")
    if not isinstance(data, dict) or data.get("type") not in kinds:
        return "the top level needs \"type\": FeatureCollection, Feature or a geometry"
    return None


def _one_problem(message: str, layout_id: str | None) -> dict[str, Any]:
    return {"ok": False, "problems": [{"line": None, "column": None, "value": None, "severity": "error",
                                       "kind": "file", "message_ja": message, "message_en": message}],
            "summary_ja": message, "summary_en": message, "encoding_label": None, "total_rows": None,
            "layout": None, "layout_id": layout_id, "encoding": None, "errors": 1, "warnings": 0}
