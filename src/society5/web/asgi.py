"""Entry for uvicorn: ``society5.web.asgi:build`` (a factory, so nothing is built at import time)."""

from fastapi import FastAPI

from society5.web.app import create_app


def build() -> FastAPI:
    from society5.core.logs import configure
    from society5.core.settings import Settings

    settings = Settings()
    configure(settings.log_level)
    return create_app(settings)
