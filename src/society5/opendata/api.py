"""The open-data HTTP surface: one router made of the CKAN Action API, downloads, DCAT export and pages.

Importing this module fills the action registry (``actions.ACTIONS``) with the catalog's and the
datastore's and the publishers' actions.
"""

from __future__ import annotations

from fastapi import APIRouter

from society5.opendata import (  # noqa: F401  (catalog_actions, datastore_actions, publishers: register actions)
    catalog_actions,
    ckan_http,
    datastore_actions,
    dcat_api,
    publishers,
)

router = APIRouter()
router.include_router(ckan_http.router)
router.include_router(dcat_api.router)
