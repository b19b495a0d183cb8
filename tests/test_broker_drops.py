"""A broker that drops messages (a client's queue full) is a trouble, not a silent loss.

Mosquitto acknowledges a QoS 1 publish to its sender and then, when the queue of a
subscriber is full (``max_queued_messages``), drops it for that subscriber and only
counts it in ``$SYS/broker/publish/messages/dropped``. The gateway reads that count and
raises ``trouble/broker``, and counts the drops as ``dropped.broker``.
"""

from __future__ import annotations

import time
from pathlib import Path

import paho.mqtt.client as mqtt

from firmware_sim.lab import InfluxDB, Mosquitto
from tests.harness import GatewayProc, Probe, write_site


def test_messages_the_broker_drops_raise_a_trouble(tmp_path: Path, influxdb: InfluxDB) -> None:
    broker = Mosquitto()
    broker.start(tmp_path / "mosquitto",
                 extra=["max_queued_messages 5", "sys_interval 1"])
    gw = GatewayProc(write_site(tmp_path), broker.url, influxdb.url("broker_drops"),
                     tmp_path / "journal.sqlite3", tmp_path / "gateway.log")
    probe = None
    try:
        gw.start()
        probe = Probe(broker.port)
        # a subscriber with a persistent session goes away; its queue holds 5 at most
        sleeper = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sleeper",
                              clean_session=False)
        sleeper.connect("127.0.0.1", broker.port)
        sleeper.subscribe("chatter/#", qos=1)
        sleeper.loop_start()
        time.sleep(0.3)
        sleeper.loop_stop()
        sleeper.disconnect()
        sent = time.time()
        for i in range(30):
            probe.client.publish("chatter/x", str(i).encode(), qos=1).wait_for_publish(5)
        msg = probe.wait(lambda m: m.t >= sent and m.topic == "trouble/broker"
                         and bool(m.payload), timeout=10)
        body = msg.json()
        assert body["trouble"] == "dropping" and body["dropped"] >= 25, body
        assert msg.t - sent < 5.0, "within a few $SYS intervals"
        # and the gateway still handles an alarm meanwhile
        probe.signal("mcp-a")
        probe.first_incident("mcp-a", timeout=5)
    finally:
        code = gw.stop()
        if probe is not None:
            probe.close()
        broker.stop()
    assert code == 0
    assert "the broker dropped messages" in gw.log_text()
    assert "dropped.broker=" in gw.log_text()  # the counter in the stop line
