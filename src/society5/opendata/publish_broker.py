"""The broker as a publisher reads it: reached at run time through ``platform.parts``, never imported.

``society5.opendata`` may import only ``society5.core`` (DESIGN.md layering), so the broker's objects are
taken from the platform the server started (``parts["broker"]``, ``parts["temporal"]``), and the request
types of the temporal store are taken from the module of the store object itself. Entities are read as an
anonymous caller when the binding publishes public entities only, so the broker's own visibility rule (scope
``/public``) decides what can appear, not a filter of ours.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from society5.core.auth import ANONYMOUS, SUPERUSER, Principal
from society5.core.errors import ApiError, NotFound
from society5.opendata.actions import ValidationError
from society5.opendata.publish_shapes import SiteSeries, direction_label, lat_lon, utc_text
from society5.opendata.publish_spec import MAX_ENTITIES, PublisherSpec


class BrokerMissing(RuntimeError):
    """The platform runs without the broker (an app built with the opendata service alone)."""


def broker_of(platform: Any) -> Any:
    broker = platform.parts.get("broker")
    if broker is None:
        raise BrokerMissing("the broker is not started on this platform (publishers need it)")
    return broker


def principal_for(spec: PublisherSpec) -> Principal:
    return ANONYMOUS if spec.public_only else SUPERUSER


def entities(platform: Any, spec: PublisherSpec) -> list[dict[str, Any]]:
    """The current state of the bound entities (normalized, compacted with the core context)."""
    broker = broker_of(platform)
    try:
        found: list[dict[str, Any]] = broker.find(spec.tenant, type=spec.entity_type, q=spec.q,
                                                  limit=MAX_ENTITIES, principal=principal_for(spec))
    except NotFound:  # the tenant holds no entities yet
        return []
    except (ApiError, ValueError) as err:  # a q or type the broker cannot run (q syntax errors: ValueError)
        raise ValidationError({"q" if spec.q else "entity_type": [str(err)]}) from err
    return found


def _temporal_types(temporal: Any) -> Any:
    module = sys.modules.get(type(temporal).__module__)
    if module is None or not hasattr(module, "TemporalRequest"):
        raise BrokerMissing("the broker's temporal store is not the one this module knows")
    return module


def site_series(platform: Any, spec: PublisherSpec, start: datetime, end: datetime) -> list[SiteSeries]:
    """Each bound entity's ``count_attr`` history in [start, end), aggregated per bin by the database."""
    temporal = platform.parts.get("temporal")
    if temporal is None:
        raise BrokerMissing("the broker's temporal store is not started on this platform")
    types = _temporal_types(temporal)
    broker = broker_of(platform)
    iri = broker.context().expand(spec.count_attr)
    request = types.TemporalRequest(
        temporal=types.parse_temporal_query("between", utc_text(start), utc_text(end)),
        fmt="aggregatedValues",
        aggregation=types.parse_aggregation(spec.aggregate, f"PT{spec.bin_minutes}M"),
        attrs={iri})
    out: list[SiteSeries] = []
    for ent in entities(platform, spec):
        lat, lon = lat_lon(_value(ent.get(spec.location_attr)), spec.coordinate_digits)
        name = _value(ent.get(spec.site_attr))
        default_direction = direction_label(_value(ent.get(spec.direction_attr)))
        try:
            result = temporal.retrieve(spec.tenant, ent["id"], request, principal_for(spec))
        except NotFound:  # deleted, or no longer public, since it was listed
            continue
        for history in result.entities:
            for series in history.series:
                points = (series.aggregates or {}).get(spec.aggregate) or []
                values = {_epoch(p[1]): float(p[0]) for p in points if isinstance(p[0], int | float)}
                if not values:
                    continue
                direction = (direction_label(series.dataset_id.rsplit(":", 1)[-1]) if series.dataset_id
                             else default_direction)
                out.append(SiteSeries(ent["id"], str(name) if name is not None else ent["id"], direction,
                                      lat, lon, values))
    return out


def _value(attr: Any) -> Any:
    if isinstance(attr, list):
        attr = attr[0] if attr else None
    if isinstance(attr, dict):
        return attr.get("value", attr.get("object"))
    return attr


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
