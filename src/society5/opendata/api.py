"""The open-data HTTP surface: one router made of the CKAN Action API, downloads, DCAT export and pages.

Importing this module fills the action registry (``actions.ACTIONS``) with the catalog's and the
datastore's actions.
"""

from __future__ import annotations

from fastapi import APIRouter

from society5.opendata import (  # noqa: F401  (catalog_actions, datastore_actions: register actions)
    catalog_actions,
    ckan_http,
    datastore_actions,
    dcat_api,
)

router = APIRouter()
router.include_router(ckan_http.router)
router.include_router(dcat_api.router)
