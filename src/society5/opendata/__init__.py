"""Open data: a CKAN-compatible catalog, its datastore, DCAT-AP export and Japanese standard layouts.

Layout (each module small and named for what it does):

* ``actions``: the CKAN action registry, the context an action runs in and CKAN's error types;
* ``tables``, ``catalog``, ``search``, ``catalog_actions``: organizations, groups, datasets, resources, tags;
* ``datastore``, ``datastore_actions``: tabular resources queryable through ``datastore_search``;
* ``csvio``, ``layouts``, ``validate``: Japanese CSV reality (UTF-8/BOM/Shift_JIS, formula injection) and
  the recommended standard dataset layouts (推奨データセット);
* ``dcat``: DCAT-AP 3 export; ``publishers``: datasets regenerated from broker entities;
* ``api``: the HTTP surface (``/api/3/action/{name}``, downloads, ``/catalog.ttl`` …); ``pages``: the portal.

Only ``society5.core`` is imported from outside this package (DESIGN.md layering).
"""
