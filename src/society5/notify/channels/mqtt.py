"""MQTT: publish the message as JSON (QoS 1) to the recipient's ``mqtt(s)://host:port/topic`` URI."""

from __future__ import annotations

from society5.core import mqtt_publish
from society5.notify.channels.base import Outgoing
from society5.notify.channels.webhook import payload


def check_address(address: str) -> str:
    mqtt_publish.parse_target(address)  # its ValueError says what is wrong
    return address


class MqttChannel:
    name = "mqtt"

    def __init__(self, timeout_s: float = 5.0):
        self.timeout_s = timeout_s

    def send(self, out: Outgoing) -> None:
        # ConnectionError/TimeoutError propagate: a broker that is down is retried.
        mqtt_publish.publish(out.address, payload(out), qos=1, timeout_s=self.timeout_s)
