"""What every HTML page of the platform shares, whichever layer renders it: the GSI base map (地理院タイル)
and the security headers (no inline scripts; map tiles from GSI only)."""

from __future__ import annotations

GSI_TILES = "https://cyberjapandata.gsi.go.jp/xyz/std/{z}/{x}/{y}.png"
GSI_ATTRIBUTION = '<a href="https://maps.gsi.go.jp/development/ichiran.html">地理院タイル</a>'


def security_headers(*, extra_img_src: str = "", no_store: bool = False) -> dict[str, str]:
    """``extra_img_src``: more image sources (``blob:`` for a photo previewed before upload); ``no_store``
    for pages that show data changing by the minute or belonging to one person."""
    img_src = " ".join(filter(None, ("'self' data:", extra_img_src, "https://cyberjapandata.gsi.go.jp")))
    headers = {
        "Content-Security-Policy": (
            f"default-src 'self'; img-src {img_src}; script-src 'self'; "
            "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'self'; form-action 'self'; "
            "frame-ancestors 'none'"),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }
    if no_store:
        headers["Cache-Control"] = "no-store"
    return headers
