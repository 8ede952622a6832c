"""The web adapter: the FastAPI app factory, page shell, templates, static files, i18n."""
