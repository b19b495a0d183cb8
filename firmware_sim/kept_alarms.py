"""Native detectors that keep each alarm until the gateway's receipt names it.

The far end of the alarm receipt (docs/mqtt.md, "Alarm receipts"): each device sends its
alarm with its own ``ts`` and watches its retained ``device/<id>``; until ``alarm_ts``
there is at least that ``ts``, the alarm goes out again on every reconnect and every
``resend_s``. A broker that crashes after acknowledging an alarm (Mosquitto saves to
disk only every ``autosave_interval``) then loses nothing: the devices' connections
drop with it, and they send again when it is back.

The decisions are ``drivers.native.KeptAlarm``'s, so the simulator and a real firmware
built on the same rules behave alike. One paho client stands for all the devices (the
bench's broker has no ACL); it runs in paho's own thread, so the caller stays
synchronous.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import paho.mqtt.client as paho

from drivers.native import RESEND_S, KeptAlarm, encode
from drivers.signal import Signal


class KeepingDetectors:
    """Devices ``ids`` of kind ``kind``, on one persistent MQTT session at ``host:port``."""

    def __init__(self, host: str, port: int, prefix: str, ids: Iterable[str], kind: str,
                 client_id: str, resend_s: float = RESEND_S) -> None:
        self.prefix, self.kind = prefix, kind
        self.kept = {d: KeptAlarm(resend_s) for d in ids}
        self.sent: dict[str, int] = dict.fromkeys(self.kept, 0)  # alarm payloads published
        self.connects = 0
        self._lock = threading.Lock()
        self._reconnected: set[str] = set()
        self._stop = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False)
        self.client.reconnect_delay_set(0.1, 1.0)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect_async(host, port, keepalive=10)
        self.client.loop_start()
        self._ticker = threading.Thread(target=self._tick_loop, name="kept-alarms", daemon=True)
        self._ticker.start()

    def alarm(self, device: str) -> float:
        """``device`` alarms now: send it and keep it until its receipt. Returns its ts."""
        ts = time.time()
        with self._lock:
            self.kept[device].raised(ts, time.monotonic())
        self._send(device, ts)
        return ts

    def unconfirmed(self) -> list[str]:
        """Devices whose alarm no receipt has named yet."""
        with self._lock:
            return sorted(d for d, k in self.kept.items() if k.ts is not None)

    def close(self) -> None:
        self._stop.set()
        self._ticker.join(5)
        self.client.loop_stop()
        self.client.disconnect()

    # ---------------------------------------------------------------- paho's thread

    def _send(self, device: str, ts: float) -> None:
        payload = encode(Signal(device, "alarm", self.kind, ts=ts))
        self.client.publish(f"{self.prefix}signal/{device}", payload, qos=1)
        with self._lock:
            self.sent[device] += 1

    def _on_connect(self, client: paho.Client, _u: object, _f: object, rc: object,
                    _p: object = None) -> None:
        if getattr(rc, "is_failure", False):
            return
        # the broker may have lost the session with everything else: subscribe every time
        client.subscribe([(f"{self.prefix}device/{d}", 1) for d in self.kept])
        with self._lock:
            self.connects += 1
            self._reconnected = set(self.kept)

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        device = msg.topic.rsplit("/", 1)[-1]
        with self._lock:
            kept = self.kept.get(device)
            if kept is not None:
                kept.heard(msg.payload)

    def _tick_loop(self) -> None:
        while not self._stop.wait(0.2):
            if not self.client.is_connected():
                continue
            now = time.monotonic()
            with self._lock:
                again = [(d, ts) for d, k in self.kept.items()
                         if (ts := k.due(now, d in self._reconnected)) is not None]
                self._reconnected.clear()
            for device, ts in again:
                self._send(device, ts)
