"""Uploaded resource files: streamed in under a size limit, stored by resource id, served back.

An upload is spooled while it arrives into ``<opendata_dir>/tmp`` (hashed on the way, refused the moment it
passes ``opendata_max_upload_mb``; the partial file is deleted), then moved beside the others as
``<opendata_dir>/resources/<resource id>``: one name per resource, whatever the file was called, so odd
file names never reach the file system. The name people see lives in the resource's ``url``.

What an upload sets off (validation before publishing, the datastore load after) is ``ingest``'s.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import FileResponse
from python_multipart.multipart import MultipartParser, parse_options_header

from society5.core.settings import Settings
from society5.opendata.actions import Upload, ValidationError

CHUNK = 1024 * 1024
MAX_FIELD_BYTES = 1024 * 1024  # a form field that is not a file (CKAN's metadata values are short)
MAX_PARTS = 200

# What browsers and clients should be told (mimetypes' table misses several open-data formats).
MIMETYPES = {
    ".csv": "text/csv", ".tsv": "text/tab-separated-values", ".geojson": "application/geo+json",
    ".json": "application/json", ".jsonld": "application/ld+json", ".ttl": "text/turtle",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".xls": "application/vnd.ms-excel", ".ods": "application/vnd.oasis.opendocument.spreadsheet",
    ".pdf": "application/pdf", ".zip": "application/zip", ".kml": "application/vnd.google-earth.kml+xml",
    ".gpkg": "application/geopackage+sqlite3", ".parquet": "application/vnd.apache.parquet",
}


@dataclass
class SpooledUpload(Upload):
    """An upload this module spooled itself: hashed already, and its file may be moved, not copied."""

    sha256: str = ""


@dataclass(frozen=True)
class StoredFile:
    path: Path
    size: int
    sha256: str
    mimetype: str


def max_bytes(settings: Settings) -> int:
    return settings.opendata_max_upload_mb * 1024 * 1024


def too_large(settings: Settings) -> ValidationError:
    return ValidationError({"upload": [
        f"File upload too large: the limit is {settings.opendata_max_upload_mb} MB "
        f"(ファイルが大きすぎます。上限は {settings.opendata_max_upload_mb} MB です)"]})


def resources_dir(settings: Settings) -> Path:
    return Path(settings.opendata_dir) / "resources"


def resource_path(settings: Settings, resource_id: str) -> Path:
    """Where an uploaded resource's file lives (whether or not it exists)."""
    if not resource_id or "/" in resource_id or "\\" in resource_id or resource_id.startswith("."):
        raise ValueError(f"not a resource id: {resource_id!r}")
    return resources_dir(settings) / resource_id


def mimetype_for(filename: str) -> str:
    ext = os.path.splitext(filename)[1].lower()
    return MIMETYPES.get(ext) or mimetypes.guess_type(filename)[0] or "application/octet-stream"


def stage(settings: Settings, upload: Upload, resource_id: str) -> StoredFile:
    """Put an upload beside the stored files under a temporary name (moved when spooled here, else copied
    and hashed). ``publish`` gives it its resource's name once the catalog write has committed; ``discard``
    drops it if that write failed, so a failed update never loses the file it was to replace."""
    if upload.size > max_bytes(settings):
        raise too_large(settings)
    final = resource_path(settings, resource_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{resource_id}.{uuid.uuid4().hex}")
    digest = upload.sha256 if isinstance(upload, SpooledUpload) else ""
    try:
        if isinstance(upload, SpooledUpload):
            shutil.move(upload.path, staging)
        else:
            digest = _copy_hashed(Path(upload.path), staging, max_bytes(settings), settings)
        size = staging.stat().st_size
        if not digest:
            digest = _copy_hashed(staging, None, size, settings)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return StoredFile(staging, size, digest, mimetype_for(upload.filename))


def publish(settings: Settings, staged: StoredFile, resource_id: str) -> Path:
    final = resource_path(settings, resource_id)
    os.replace(staged.path, final)
    return final


def discard(staged: StoredFile) -> None:
    staged.path.unlink(missing_ok=True)


def _copy_hashed(source: Path, target: Path | None, limit: int, settings: Settings) -> str:
    digest = hashlib.sha256()
    seen = 0
    with open(source, "rb") as src, (open(target, "wb") if target else open(os.devnull, "wb")) as dst:
        while chunk := src.read(CHUNK):
            seen += len(chunk)
            if seen > limit:
                raise too_large(settings)
            digest.update(chunk)
            dst.write(chunk)
    return digest.hexdigest()


def remove(settings: Settings, resource_id: str) -> None:
    try:
        resource_path(settings, resource_id).unlink(missing_ok=True)
    except ValueError:
        pass


# ---------------------------------------------------------------- multipart bodies, streamed


class MultipartBody:
    """The fields and files of a ``multipart/form-data`` body, files spooled to disk under the size limit."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.limit = max_bytes(settings)
        self.fields: dict[str, str] = {}
        self.uploads: dict[str, SpooledUpload] = {}
        self._spool = Path(settings.opendata_dir) / "tmp"
        self._parts = 0
        self._name = ""
        self._filename: str | None = None
        self._content_type = ""
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._data = bytearray()
        self._file: Any = None
        self._path = ""
        self._size = 0
        self._hash: Any = None

    async def read(self, request: Request) -> MultipartBody:
        _, options = parse_options_header(request.headers.get("content-type", ""))
        boundary = options.get(b"boundary")
        if not boundary:
            raise ValidationError({"upload": ["multipart/form-data needs a boundary"]})
        parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._begin, "on_part_data": self._chunk, "on_part_end": self._end,
            "on_header_field": self._hfield, "on_header_value": self._hvalue, "on_header_end": self._hend,
            "on_headers_finished": self._headers_done,
        })
        try:
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
        except ValidationError:
            self.discard()
            raise
        except Exception as err:  # the parser's own errors: a broken body
            self.discard()
            raise ValidationError({"upload": [f"malformed multipart body: {err}"]}) from err
        if self._file is not None:
            self.discard()
            raise ValidationError({"upload": ["the multipart body ended inside a part"]})
        return self

    def discard(self) -> None:
        """Delete every spooled file (the request failed, or the action is done with them)."""
        if self._file is not None:
            self._file.close()
            self._file = None
            Path(self._path).unlink(missing_ok=True)
        for upload in self.uploads.values():
            Path(upload.path).unlink(missing_ok=True)

    def _begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise ValidationError({"upload": [f"too many form fields (at most {MAX_PARTS})"]})
        self._headers = {}
        self._data = bytearray()

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _hvalue(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _hend(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        raw = options.get(b"filename")
        self._filename = raw.decode("utf-8", "replace") if raw is not None else None
        self._content_type = self._headers.get(b"content-type", b"").decode("latin-1")
        if self._filename is not None:
            self._spool.mkdir(parents=True, exist_ok=True)
            handle, self._path = tempfile.mkstemp(prefix="upload-", dir=self._spool)
            self._file = os.fdopen(handle, "wb")
            self._size = 0
            self._hash = hashlib.sha256()

    def _chunk(self, data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        if self._file is None:
            if len(self._data) + len(piece) > MAX_FIELD_BYTES:
                raise ValidationError({self._name or "form": ["form field too large (at most 1 MB)"]})
            self._data.extend(piece)
            return
        self._size += len(piece)
        if self._size > self.limit:
            raise too_large(self.settings)
        self._hash.update(piece)
        self._file.write(piece)

    def _end(self) -> None:
        if self._file is None:
            self.fields[self._name] = self._data.decode("utf-8", "replace")
            return
        self._file.close()
        self._file = None
        previous = self.uploads.pop(self._name, None)
        if previous is not None:
            Path(previous.path).unlink(missing_ok=True)
        self.uploads[self._name] = SpooledUpload(
            filename=self._filename or "file", path=self._path, size=self._size,
            content_type=self._content_type, sha256=self._hash.hexdigest())


# ---------------------------------------------------------------- downloads


def download_response(settings: Settings, resource: dict[str, Any]) -> FileResponse:
    """The stored file of an uploaded resource (the caller checked the dataset may be read)."""
    path = resource_path(settings, resource["id"])
    name = str(resource.get("url") or "file")
    if not path.is_file():
        from society5.opendata.actions import NotFoundError

        raise NotFoundError("Resource file not found (ファイルが見つかりません)")
    return FileResponse(
        path, media_type=resource.get("mimetype") or mimetype_for(name),
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"},
    )
