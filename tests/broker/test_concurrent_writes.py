"""Two writers of one entity at once: neither change is lost (SQLite write lock, PostgreSQL row lock)."""

from __future__ import annotations

import threading
import time
from typing import Any

from society5.broker.service import start
from society5.core.platform import Platform


def test_concurrent_appends_to_one_entity_keep_both(platform: Platform) -> None:
    broker = start(platform)
    broker.create_entity(None, {"id": "urn:ngsi-ld:Tank:c", "type": "Tank",
                                "level": {"type": "Property", "value": 1}})
    first_inside = threading.Event()

    def slow_first_writer(conn: Any, tenant: str, old: Any, new: Any) -> None:
        # The first writer pauses inside its transaction, after reading and writing the entity.
        if new and any(k.endswith("/pressure") for k in new["attrs"]) and not first_inside.is_set():
            first_inside.set()
            time.sleep(0.5)

    broker.listeners.append(slow_first_writer)

    def append(name: str) -> None:
        broker.append_attrs(None, "urn:ngsi-ld:Tank:c", {name: {"type": "Property", "value": 2}})

    a = threading.Thread(target=append, args=("pressure",))
    a.start()
    assert first_inside.wait(10)
    b = threading.Thread(target=append, args=("temperature",))
    b.start()
    a.join(30)
    b.join(30)
    doc = broker.get(None, "urn:ngsi-ld:Tank:c")
    assert {"level", "pressure", "temperature"} <= set(doc), f"a concurrent change was lost: {sorted(doc)}"
