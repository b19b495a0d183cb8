"""The gateway's MQTT link: one persistent QoS 1 session that survives broker restarts.

A stable client id with ``clean_session=False`` makes the broker keep our
subscriptions and queue alarms while the gateway is down or reconnecting; the
retained ``status`` with a last will tells everyone whether the gateway is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiomqtt
import structlog

log = structlog.get_logger("firegrid.mqtt")

# signal/# rather than signal/+ so a malformed topic is seen, counted and dropped
SUBSCRIPTIONS = ("signal/#", "confirm/+/reply", "page/+/ack", "incident/+/close")


class Unreachable(Exception):
    """A server that cannot be reached at start: exit code 3, one line."""


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> MqttTarget:
        """``mqtt://user:pass@127.0.0.1:1883``; the password never appears in an error."""
        try:
            parts = urlsplit(url)
            port = parts.port or 1883
        except ValueError as exc:
            raise ValueError(f"MQTT URL {_redact(url)}: {exc}") from None
        if parts.scheme != "mqtt":
            raise ValueError(f"MQTT URL {_redact(url)}: scheme must be mqtt://")
        if not parts.hostname:
            raise ValueError(f"MQTT URL {_redact(url)}: no host")
        return cls(parts.hostname, port,
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None)

    def redacted(self) -> str:
        user = f"{self.username}:***@" if self.username else ""
        return f"mqtt://{user}{self.host}:{self.port}"


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


# topic suffix, payload, receive time ns, and the token to acknowledge it with (or None)
Handler = Callable[[str, bytes, int, "AckToken | None"], None]


@dataclass(frozen=True, slots=True)
class AckToken:
    """Which QoS 1 message to PUBACK, on which connection: a stale one is never acked."""

    generation: int
    mid: int
    qos: int


class MqttLink:
    """Connects, subscribes, hands every message to ``handler``, reconnects with backoff."""

    def __init__(self, target: MqttTarget, site: str, handler: Handler,
                 on_connect: Callable[[], Awaitable[None]], clock: Callable[[], int],
                 client_id: str | None = None):
        self.target = target
        self.prefix = f"firegrid/{site}/"
        self.handler = handler
        self.on_connect = on_connect
        self.clock = clock
        self.client_id = client_id or f"firegrid-gateway-{site}"
        self.client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.generation = 0

    def _client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.target.host, self.target.port,
            username=self.target.username, password=self.target.password,
            identifier=self.client_id, clean_session=False, keepalive=10, timeout=5,
            will=aiomqtt.Will(self.prefix + "status", b"offline", qos=1, retain=True),
            # small alarm packets must not wait for Nagle + delayed ACK (~40 ms on Linux)
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def check(self) -> None:
        """Connect once at start so an unreachable broker is reported, not retried forever."""
        try:
            async with aiomqtt.Client(self.target.host, self.target.port,
                                      username=self.target.username,
                                      password=self.target.password, timeout=5):
                pass
        except aiomqtt.MqttError as exc:
            raise Unreachable(f"MQTT broker {self.target.redacted()} unreachable: {exc}") from None

    async def run(self) -> None:
        """Stay connected until cancelled; each connection resubscribes and republishes."""
        backoff = 0.2
        while True:
            try:
                client = self._client()
                # PUBACK only once the message is journaled (see ack()); aiomqtt does not
                # expose paho's manual_ack, so it is set on the paho client it wraps
                client._client.manual_ack_set(True)
                async with client:
                    self.generation += 1
                    self.client = client
                    for sub in SUBSCRIPTIONS:
                        await client.subscribe(self.prefix + sub, qos=1)
                    await client.publish(self.prefix + "status", b"online", qos=1, retain=True)
                    self.connected.set()
                    log.info("mqtt connected", broker=self.target.redacted(),
                             reconnects=self.reconnects)
                    backoff = 0.2
                    on_connect = asyncio.create_task(self.on_connect())
                    try:
                        async for msg in client.messages:
                            topic = str(msg.topic)
                            if topic.startswith(self.prefix):
                                payload = msg.payload if isinstance(msg.payload, bytes) else (
                                    str(msg.payload).encode() if msg.payload is not None else b"")
                                token = AckToken(self.generation, msg.mid, msg.qos) \
                                    if msg.qos > 0 else None
                                self.handler(topic[len(self.prefix):], payload, self.clock(),
                                             token)
                            elif msg.qos > 0:
                                self.ack(AckToken(self.generation, msg.mid, msg.qos))
                    finally:
                        on_connect.cancel()
            except aiomqtt.MqttError as exc:
                log.warning("mqtt link down", broker=self.target.redacted(), error=str(exc),
                            retry_in_s=backoff)
            finally:
                self.connected.clear()
                self.client = None
            self.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def ack(self, token: AckToken | None) -> None:
        """Acknowledge a message to the broker; until then the broker keeps it for us.

        A token from an earlier connection is skipped: the broker will deliver that
        message again on this session, and the engine treats the repeat as a no-op.
        """
        client = self.client
        if token is None or client is None or token.generation != self.generation:
            return
        client._client.ack(token.mid, token.qos)

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False,
                      qos: int = 1) -> bool:
        """Publish under the site prefix; False when the link is down (caller keeps it)."""
        client = self.client
        if client is None:
            return False
        try:
            await client.publish(self.prefix + topic, payload, qos=qos, retain=retain, timeout=5)
        except aiomqtt.MqttError as exc:
            log.warning("mqtt publish failed", topic=topic, error=str(exc))
            return False
        return True

    async def say_offline(self) -> None:
        """Clean stop: the last will only fires on an unclean one."""
        if self.client is not None:
            with contextlib.suppress(aiomqtt.MqttError, asyncio.TimeoutError):
                await self.client.publish(self.prefix + "status", b"offline", qos=1, retain=True,
                                          timeout=2)
