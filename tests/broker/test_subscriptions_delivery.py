"""Delivery to real receivers: HTTP with retries, MQTT, throttling, periodic, in-process (both DBs)."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from society5.broker.notifier import Notifier
from society5.core.platform import Platform
from society5.core.tables import outbox
from tests.conftest import make_settings

CTX = "https://forge.etsi.org/rep/cim/ngsi-ld-test-suite/-/raw/develop/resources/jsonld-contexts/ngsi-ld-test-suite-compound.jsonld"
H = {"Content-Type": "application/json", "Link": f'<{CTX}>; rel="http://www.w3.org/ns/json-ld#context"'}
S = "/ngsi-ld/v1/subscriptions"
E = "/ngsi-ld/v1/entities"


class Receiver:
    """A tiny threaded HTTP notification receiver answering with the given statuses, then 200."""

    def __init__(self, statuses: tuple[int, ...] = ()):
        self.statuses = list(statuses)
        self.received: list[tuple[dict[str, str], Any, float]] = []
        self.arrived = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = owner.statuses.pop(0) if owner.statuses else 200
                if status == 200:
                    with owner.arrived:
                        owner.received.append((dict(self.headers), json.loads(body), time.monotonic()))
                        owner.arrived.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"

    def wait(self, count: int, timeout: float = 10.0) -> list[tuple[dict[str, str], Any, float]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.received) >= count, timeout)
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fast(db_url: str) -> Iterator[Platform]:
    """A platform whose outbox retries within a fraction of a second."""
    plat = Platform.open(make_settings(db_url, outbox_retry_base_s=0.05, outbox_retry_max_s=0.2))
    if plat.engine.dialect.name == "postgresql":
        from tests.conftest import _truncate_pg

        _truncate_pg(plat)
        plat.tenants._known = {"default"}
    yield plat
    plat.close()


def _app(plat: Platform) -> Any:
    from society5.broker.service import service as broker_service
    from society5.web.app import create_app

    return create_app(plat.settings, services=[broker_service], platform=plat)


@pytest.fixture
def running(fast: Platform) -> Iterator[TestClient]:
    """The app with its outbox dispatcher and jobs running, as under ``society5 serve``."""
    with TestClient(_app(fast)) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


def sub(uri: str, sid: str = "urn:ngsi-ld:Subscription:1", **extra: Any) -> dict[str, Any]:
    note = extra.pop("notification", {})
    return {"id": sid, "type": "Subscription", "entities": [{"type": "Building"}],
            "notification": {**note, "endpoint": {"uri": uri, **note.pop("endpoint", {})}}, **extra}


def building(level: int = 4) -> dict[str, Any]:
    return {"id": "urn:ngsi-ld:Building:1", "type": "Building",
            "airQualityLevel": {"type": "Property", "value": level}}


def poll(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


def status(client: TestClient, tenant: str | None = None) -> dict[str, Any]:
    headers = {"NGSILD-Tenant": tenant} if tenant else {}
    got: dict[str, Any] = client.get(f"{S}/urn:ngsi-ld:Subscription:1", headers=headers).json()
    note: dict[str, Any] = got["notification"]
    return note


def test_http_delivery_with_headers_and_status(running: TestClient, receiver: Receiver) -> None:
    tenant = {**H, "NGSILD-Tenant": "011002"}
    token = [{"key": "X-Token", "value": "abc"}]
    body = sub(receiver.url, notification={"endpoint": {"receiverInfo": token}})
    assert running.post(S, json=body, headers=tenant).status_code == 201
    assert running.post(E, json=building(), headers=tenant).status_code == 201
    headers, note, _ = receiver.wait(1)[0]
    assert headers["X-Token"] == "abc" and headers["NGSILD-Tenant"] == "011002"
    assert headers["Content-Type"] == "application/json" and CTX in headers["Link"]
    assert note["type"] == "Notification" and note["subscriptionId"] == "urn:ngsi-ld:Subscription:1"
    assert note["data"] == [{"id": "urn:ngsi-ld:Building:1", "type": "Building",
                             "airQualityLevel": {"type": "Property", "value": 4}}]
    counters = poll(lambda: (s := status(running, "011002")).get("status") and s)
    assert counters["status"] == "ok" and counters["timesSent"] == 1 and counters["timesFailed"] == 0
    assert counters["lastSuccess"] == counters["lastNotification"]


def test_jsonld_receivers_get_the_context_in_the_body(running: TestClient, receiver: Receiver) -> None:
    body = sub(receiver.url, notification={"endpoint": {"accept": "application/ld+json"}})
    running.post(S, json=body, headers=H)
    running.post(E, json=building(), headers=H)
    headers, note, _ = receiver.wait(1)[0]
    assert headers["Content-Type"] == "application/ld+json" and "Link" not in headers
    assert note["data"][0]["@context"] == CTX


def test_a_failing_receiver_is_retried_until_it_accepts(running: TestClient) -> None:
    rec = Receiver(statuses=(500, 503))
    try:
        running.post(S, json=sub(rec.url), headers=H)
        running.post(E, json=building(), headers=H)
        assert len(rec.wait(1)) == 1
        counters = poll(lambda: (s := status(running)).get("timesSent") == 3 and s)
        assert counters["timesFailed"] == 2 and counters["status"] == "ok"
        assert counters["lastFailure"] < counters["lastSuccess"]
    finally:
        rec.close()


def test_a_refusing_receiver_is_given_up_and_reported(running: TestClient, fast: Platform) -> None:
    rec = Receiver(statuses=(404,))
    try:
        running.post(S, json=sub(rec.url), headers=H)
        running.post(E, json=building(), headers=H)
        counters = poll(lambda: (s := status(running)).get("status") and s)
        assert counters["status"] == "failed" and counters["timesFailed"] == 1 and "lastFailure" in counters
        # The handler reports the failure before it gives up; the outbox records "dead" just after.
        assert poll(lambda: fast.outbox.counts()["ngsi-ld.notification"] == {"dead": 1})
    finally:
        rec.close()


def test_a_receiver_that_is_down_gets_it_when_it_comes_up(running: TestClient) -> None:
    probe = Receiver()
    url = probe.url
    probe.close()  # nothing listens on this port now
    running.post(S, json=sub(url), headers=H)
    running.post(E, json=building(), headers=H)
    assert poll(lambda: status(running).get("status") == "failed")
    port = int(url.split(":")[2].split("/")[0])
    rec = Receiver()
    rec.server.server_close()
    rec.server = ThreadingHTTPServer(("127.0.0.1", port), rec.server.RequestHandlerClass)
    threading.Thread(target=rec.server.serve_forever, daemon=True).start()
    try:
        assert rec.wait(1)[0][1]["data"][0]["id"] == "urn:ngsi-ld:Building:1"
    finally:
        rec.close()


def drive_clock(monkeypatch: pytest.MonkeyPatch, *modules: Any) -> list[float]:
    """Make ``time.time()`` in ``modules`` read the returned one-element list (set to now), so that a test
    decides when time passes instead of the machine's load."""
    clock = [time.time()]
    fake = SimpleNamespace(time=lambda: clock[0], monotonic=time.monotonic)
    for module in modules:
        monkeypatch.setattr(module, "time", fake)
    return clock


def test_throttling_delays_and_merges_instead_of_dropping(running: TestClient, receiver: Receiver,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from society5.broker import notifier as notifier_module

    # The three writes fall within one throttling gap however slowly this machine runs them; the outbox
    # still waits real time before it sends the delayed message.
    drive_clock(monkeypatch, notifier_module)
    running.post(S, json=sub(receiver.url, throttling=1, notification={"format": "keyValues"}), headers=H)
    started = time.monotonic()
    running.post(E, json=building(1), headers=H)
    receiver.wait(1)
    for level in (2, 3):
        running.patch(f"{E}/urn:ngsi-ld:Building:1/attrs", json={"airQualityLevel": level}, headers=H)
    got = receiver.wait(2)
    assert [n["data"] for _, n, _ in got] == [[{"id": "urn:ngsi-ld:Building:1", "type": "Building",
                                                "airQualityLevel": level}] for level in (1, 3)]
    assert got[1][2] - started >= 0.95  # the gap runs from when the first notification was queued
    time.sleep(0.3)
    assert len(receiver.received) == 2


def test_time_interval_sends_the_current_state_periodically(running: TestClient, receiver: Receiver) -> None:
    running.post(E, json=building(7), headers=H)
    running.post(S, json=sub(receiver.url, timeInterval=1, notification={"format": "keyValues"}), headers=H)
    got = receiver.wait(2)
    assert [n["data"][0]["airQualityLevel"] for _, n, _ in got[:2]] == [7, 7]


def test_time_interval_runs_once_per_interval_and_skips_missed_runs(fast: Platform, receiver: Receiver,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The schedule on a clock the test drives: arrival times would measure the machine's load instead."""
    from society5.broker import notifier as notifier_module
    from society5.broker import subscriptions_store

    clock = drive_clock(monkeypatch, notifier_module, subscriptions_store)
    client = TestClient(_app(fast))  # no lifespan: the test calls the periodic job itself
    client.post(E, json=building(7), headers=H)
    assert client.post(S, json=sub(receiver.url, timeInterval=60), headers=H).status_code == 201
    notifier: Notifier = fast.parts["subscriptions"]

    def queued() -> int:
        with fast.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one())

    start = clock[0]
    queued_at = []
    for offset in (0, 59, 60.5, 61, 119, 120.5, 1000, 1001, 1059, 1060.5):
        clock[0] = start + offset
        notifier.periodic()
        queued_at.append(queued())
    # Due at 60 and 120; the run due at 180 is missed while "down" and made once at 1000, then at 1060.
    assert queued_at == [0, 0, 1, 1, 1, 2, 3, 3, 3, 4]


def test_mqtt_endpoint_gets_metadata_and_body(running: TestClient) -> None:
    topic = f"society5-test/{uuid.uuid4().hex}"
    messages: queue.Queue[bytes] = queue.Queue()
    listener = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    listener.on_message = lambda _c, _u, msg: messages.put(bytes(msg.payload))
    subscribed = threading.Event()
    listener.on_subscribe = lambda *_: subscribed.set()
    listener.connect("127.0.0.1", 1883)
    listener.subscribe(topic, qos=1)
    listener.loop_start()
    try:
        assert subscribed.wait(30)  # the SUBACK: anything published from now on reaches the listener
        endpoint = {"notifierInfo": [{"key": "MQTT-QoS", "value": "1"}],
                    "receiverInfo": [{"key": "test-receiver-key", "value": "info"}]}
        body = sub(f"mqtt://127.0.0.1:1883/{topic}", notification={"endpoint": endpoint})
        assert running.post(S, json=body, headers=H).status_code == 201
        running.post(E, json=building(), headers=H)
        message = json.loads(messages.get(timeout=10))
    finally:
        listener.loop_stop()
        listener.disconnect()
    assert message["metadata"]["test-receiver-key"] == "info"
    assert message["metadata"]["Content-Type"] == "application/json" and CTX in message["metadata"]["Link"]
    assert message["body"]["type"] == "Notification"
    assert message["body"]["data"][0]["id"] == "urn:ngsi-ld:Building:1"


def test_a_rolled_back_change_notifies_nobody(fast: Platform, receiver: Receiver) -> None:
    client = TestClient(_app(fast))  # no lifespan: this test drives the outbox itself
    client.post(S, json=sub(receiver.url), headers=H)
    calls: list[Any] = []
    notifier: Notifier = fast.parts["subscriptions"]
    notifier.subscribe("test.rollback", calls.append, type="Building", context=CTX)

    def fail(*_args: Any) -> None:
        raise RuntimeError("the disk is full")

    broker = fast.parts["broker"]
    broker.listeners.append(fail)
    with pytest.raises(RuntimeError):
        broker.create_entity(None, building(), broker.context(CTX))
    broker.listeners.remove(fail)
    with fast.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one() == 0
    assert fast.outbox.deliver_due() == 0
    assert receiver.received == [] and calls == []


def test_in_process_subscribers_run_after_commit_with_retries(fast: Platform) -> None:
    client = TestClient(_app(fast))
    notifier: Notifier = fast.parts["subscriptions"]
    seen: list[dict[str, Any]] = []

    def callback(note: dict[str, Any]) -> None:
        if not seen:
            seen.append({})  # the first call fails, as a busy service might
            raise ConnectionError("try again")
        seen.append(note)

    handle = notifier.subscribe("test.air", callback, type="Building", watched=["airQualityLevel"],
                                q="airQualityLevel>5", fmt="keyValues", context=CTX)
    client.post(E, json=building(4), headers=H)
    client.patch(f"{E}/urn:ngsi-ld:Building:1/attrs", json={"airQualityLevel": 9}, headers=H)
    assert seen == []  # committed, but not yet delivered: callbacks never run inside the write
    poll(lambda: fast.outbox.deliver_due() and len(seen) == 2, timeout=5)
    assert seen[1]["data"] == [{"id": "urn:ngsi-ld:Building:1", "type": "Building", "airQualityLevel": 9}]
    handle.cancel()
    client.patch(f"{E}/urn:ngsi-ld:Building:1/attrs", json={"airQualityLevel": 10}, headers=H)
    with fast.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(outbox)
                            .where(outbox.c.status == "pending")).scalar_one() == 0


def test_notifications_of_a_deleted_subscription_are_dropped(fast: Platform, receiver: Receiver) -> None:
    client = TestClient(_app(fast))
    client.post(S, json=sub(receiver.url), headers=H)
    client.post(E, json=building(), headers=H)
    assert client.delete(f"{S}/urn:ngsi-ld:Subscription:1").status_code == 204
    assert fast.outbox.deliver_due() == 1
    assert receiver.received == []
