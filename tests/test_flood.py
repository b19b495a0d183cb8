"""firmware_sim.flood: the benchmarks' load generator offers what it is asked, all acked."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest

from firmware_sim.flood import PubFlood
from firmware_sim.lab import Mosquitto


def test_a_paced_flood_arrives_whole_and_acknowledged(mosquitto: Mosquitto) -> None:
    got: list[str] = []
    lock = threading.Lock()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flood-sub")

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            got.append(msg.topic)

    sub.on_message = on_message
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("flood/#", qos=1)
    sub.loop_start()
    time.sleep(0.2)
    msgs = [(f"flood/dev-{i % 4}", b'{"state":"clear","value":%d}' % i) for i in range(40)]
    flood = PubFlood("127.0.0.1", mosquitto.port, msgs, rate=2000, seconds=1.0, tag="t")
    try:
        flood.start()
        result = flood.result(timeout=20)
    finally:
        flood.stop()
    assert result["sent"] == result["acked"] == 2000, result
    assert result["devices"] == 4
    assert 0.9 <= result["send_s"] < 2.0, result  # paced, not dumped at once
    deadline = time.time() + 5
    while len(got) < 2000 and time.time() < deadline:
        time.sleep(0.05)
    sub.loop_stop()
    sub.disconnect()
    assert len(got) == 2000 and set(got) == {f"flood/dev-{k}" for k in range(4)}


def test_a_payload_with_a_newline_is_refused() -> None:
    with pytest.raises(ValueError, match="newline"):
        PubFlood("127.0.0.1", 1, [("t", b"a\nb")], 1, 1, "x")


def test_more_topics_than_processes_is_refused() -> None:
    """Each process publishes one topic: a seventeenth would never be sent."""
    with pytest.raises(ValueError, match="17 topics for 16"):
        PubFlood("127.0.0.1", 1, [(f"t/{i}", b"x") for i in range(17)], 1, 1, "x")
