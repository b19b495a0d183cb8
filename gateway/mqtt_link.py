"""The gateway's MQTT link: a persistent QoS 1 session that survives broker restarts.

A stable client id with ``clean_session=False`` makes the broker keep our
subscriptions and queue alarms while the gateway is down or reconnecting; the
retained ``status`` with a last will tells everyone whether the gateway is alive.
The gateway runs two of these (docs/mqtt.md, two sessions): the alarm lane, which also
publishes, and a bulk lane for telemetry, so that an alarm never waits in the broker's
queue behind a flood of telemetry; each acknowledges its own messages (``AckToken.lane``).

``mqtts://`` connects over TLS (site CA from FIREGRID_MQTT_CA, optional client
certificate), and the password may come from FIREGRID_MQTT_PASSWORD or
FIREGRID_MQTT_PASSWORD_FILE so it is never on the command line; it is never logged
(docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import select
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import aiomqtt
import structlog

log = structlog.get_logger("firegrid.mqtt")

# signal/# rather than signal/+ so a malformed topic is seen, counted and dropped
SUBSCRIPTIONS = ("signal/#", "confirm/+/reply", "page/+/ack", "incident/+/close")
PEOPLE = SUBSCRIPTIONS[1:]  # what people send: replies, acks, closes
BULK_SUFFIX = "-bulk"  # the bulk lane's client id and username: the gateway's, plus this

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
# URL query keys for mqtts:// and the environment variables they override
TLS_OPTIONS = {"ca": "FIREGRID_MQTT_CA", "cert": "FIREGRID_MQTT_CERT", "key": "FIREGRID_MQTT_KEY"}
ENV_PASSWORD = "FIREGRID_MQTT_PASSWORD"
ENV_PASSWORD_FILE = "FIREGRID_MQTT_PASSWORD_FILE"
# CONNACK refusals that mean "these credentials are not accepted": MQTT 3.1.1 return
# codes 4 (bad username or password) and 5 (not authorised), as paho reports them
# (as MQTT 5 reason codes 134 and 135) or as plain integers
_AUTH_REFUSED = {4, 5, 134, 135}


class Unreachable(Exception):
    """A server that cannot be reached at start: exit code 3, one line."""


@dataclass(frozen=True)
class MqttTarget:
    """Where the broker is and how to log in; ``repr`` and ``redacted()`` hide the password."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None  # None with tls: the system's trusted CAs
    cert_file: str | None = None  # client certificate (PEM), optional
    key_file: str | None = None  # its key, when not in cert_file

    @classmethod
    def parse(cls, url: str, env: Mapping[str, str] | None = None) -> MqttTarget:
        """``mqtt://user:pass@127.0.0.1:1883`` or ``mqtts://user@host:8883``.

        With a username and no password in the URL, the password comes from
        FIREGRID_MQTT_PASSWORD, else from the file named by FIREGRID_MQTT_PASSWORD_FILE,
        so it never needs to be on a command line. ``mqtts://`` is TLS (port 8883 by
        default), with the CA, client certificate and key from the URL query
        (``?ca=/etc/firegrid/ca.crt&cert=...&key=...``) or else from FIREGRID_MQTT_CA,
        FIREGRID_MQTT_CERT, FIREGRID_MQTT_KEY. The password never appears in an error.
        """
        env = os.environ if env is None else env
        where = f"MQTT URL {_redact(url)}"
        try:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            port = parts.port or DEFAULT_PORTS.get(scheme, 1883)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"{where}: scheme must be mqtt:// or mqtts:// (TLS)")
        if not parts.hostname:
            raise ValueError(f"{where}: no host")
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if username and password is None:
            password = _env_password(env)
        tls = scheme == "mqtts"
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(query) - set(TLS_OPTIONS))
        if unknown:
            raise ValueError(f"{where}: unknown option {unknown[0]!r} "
                             f"(known: {', '.join(TLS_OPTIONS)})")
        if query and not tls:
            raise ValueError(f"{where}: {', '.join(query)} only with mqtts:// (TLS)")
        files: dict[str, str | None] = {}
        for key, var in TLS_OPTIONS.items():
            # TLS settings from the environment apply to mqtts:// only
            files[key] = (query.get(key) or env.get(var) or None) if tls else None
        if files["key"] and not files["cert"]:
            raise ValueError(f"{where}: a client key needs a client certificate "
                             f"(cert= or {TLS_OPTIONS['cert']})")
        target = cls(parts.hostname, port, username, password, tls,
                     files["ca"], files["cert"], files["key"])
        target.ssl_context()  # unreadable CA or certificate: a config error now, not later
        return target

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``mqtts://`` (None for ``mqtt://``); ValueError on bad files.

        Verifies the broker's certificate against ``ca_file`` (or the system CAs) and
        its name against ``host``; TLS 1.2 at least. Built anew for each connection,
        so a renewed CA or client certificate is picked up on the next reconnect.
        """
        if not self.tls:
            return None
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"MQTT CA file {self.ca_file}: {_ssl_reason(exc)}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file:
            try:
                ctx.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                names = self.cert_file + (f", {self.key_file}" if self.key_file else "")
                raise ValueError(f"MQTT client certificate {names}: {_ssl_reason(exc)}") from None
        return ctx

    def bulk(self) -> MqttTarget:
        """The same broker for the bulk lane: its own login (``<username>-bulk``, same
        password), since a broker that ties client ids to usernames would otherwise
        make the two sessions throw each other off."""
        return replace(self, username=self.username + BULK_SUFFIX) if self.username else self

    def redacted(self) -> str:
        user = f"{self.username}:***@" if self.username else ""
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{user}{self.host}:{self.port}"

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``aiomqtt.Client``: address, login and TLS."""
        return {"hostname": self.host, "port": self.port, "username": self.username,
                "password": self.password, "tls_context": self.ssl_context()}


def _env_password(env: Mapping[str, str]) -> str | None:
    """FIREGRID_MQTT_PASSWORD, else the first line of FIREGRID_MQTT_PASSWORD_FILE."""
    if env.get(ENV_PASSWORD):
        return env[ENV_PASSWORD]
    path = env.get(ENV_PASSWORD_FILE)
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"{ENV_PASSWORD_FILE} {path}: cannot read: {reason}") from None
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise ValueError(f"{ENV_PASSWORD_FILE} {path}: empty")
    return lines[0]


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def connect_problem(target: MqttTarget, exc: aiomqtt.MqttError) -> str:
    """What went wrong, for an operator: a refused login, a failed TLS handshake, or ``exc``."""
    rc = getattr(exc, "rc", None)
    code = getattr(rc, "value", rc)
    if isinstance(exc, aiomqtt.MqttCodeError) and code in _AUTH_REFUSED:
        who = f"user {target.username}" if target.username else "no username (anonymous)"
        return f"not authorised: the broker refused the login ({who}): {exc}"
    cause = exc.__context__  # aiomqtt raises MqttError(str(ssl_error)) from None
    if isinstance(cause, ssl.SSLCertVerificationError):
        why = cause.verify_message or cause.reason or str(cause)
        hint = ("connect with a name or address the broker's certificate lists"
                if "hostname" in why.lower() or "ip address" in why.lower()
                else "is FIREGRID_MQTT_CA (or ca=) the site's ca.crt?")
        return f"TLS handshake failed: certificate verify failed: {why} ({hint})"
    if isinstance(cause, ssl.SSLError):
        return f"TLS handshake failed: {cause.reason or cause}"
    if target.tls and (isinstance(cause, ConnectionResetError | BrokenPipeError)
                       or "handshake" in str(exc).lower()):
        return f"TLS handshake failed: {exc} (is {target.port} the broker's TLS port?)"
    return str(exc)


def describe_connect_error(target: MqttTarget, exc: aiomqtt.MqttError) -> str:
    """One line naming the broker and the problem: the CLI prints it and exits 3."""
    problem = connect_problem(target, exc)
    if problem == str(exc):
        return f"MQTT broker {target.redacted()} unreachable: {problem}"
    return f"MQTT broker {target.redacted()}: {problem}"


# topic suffix, payload, receive time ns, and the token to acknowledge it with (or None)
Handler = Callable[[str, bytes, int, "AckToken | None"], None]


@dataclass(frozen=True, slots=True)
class AckToken:
    """Which QoS 1 message to PUBACK, on which connection: a stale one is never acked."""

    generation: int
    mid: int
    qos: int
    lane: int = 0  # which session it came on: 0 the gateway's own, 1 the bulk lane


BROKER_DROPPED = "$SYS/broker/publish/messages/dropped"
SUBSCRIBE_BATCH = 200  # topics per SUBSCRIBE packet: a site of many devices, few round trips
MAX_BURST = 64  # packets read per wake-up: about 1 ms, so the engine is never kept waiting


class _BurstClient(aiomqtt.Client):
    """aiomqtt's client, reading every packet the socket holds when it wakes (up to MAX_BURST).

    aiomqtt reads one packet per readable event (paho's ``loop_read`` reads one), so each
    message costs a turn of the event loop, and under a flood the gateway reads no faster
    than it processes: alarms then wait in the broker's queue behind telemetry it could
    have read and shed. Reading in bursts lets the gateway take messages off the socket
    four to five times faster than it can fully process them (docs/benchmarks.md), so the
    alarm-first queue and shedding work where they should: in the gateway. This overrides
    aiomqtt's private ``_on_socket_open`` (same body, a loop around the read), which is
    why aiomqtt is pinned; tests/test_mqtt_burst.py fails if an upgrade changes it.
    """

    # the bulk lane's client: the alarm lane's socket, whose data ends a burst early
    yield_to: Callable[[], Any] | None = None
    # either lane: True when urgent input waits to be processed, which ends a burst
    stop_when: Callable[[], bool] | None = None

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        def callback() -> None:
            try:
                for _ in range(MAX_BURST):
                    client.loop_read()
                    if self.stop_when is not None and self.stop_when():
                        break
                    if not _more(client.socket(), self.yield_to() if self.yield_to else None):
                        break
            except Exception as exc:  # aiomqtt's own handling: the connection is gone
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def create_misc_task() -> None:
            self._misc_task = self._loop.create_task(self._misc_loop())

        self._loop.call_soon_threadsafe(self._loop.add_reader, sock.fileno(), callback)
        self._loop.call_soon_threadsafe(create_misc_task)


def _more(sock: Any, before: Any = None) -> bool:
    """Is there more to read now: bytes TLS has decrypted, or bytes in the socket?

    Not if ``before`` (the alarm lane's socket, when this is the bulk lane) has bytes
    waiting: the burst ends, and the event loop turns to the alarm lane next. Under a
    flood a bulk burst of 64 takes 5-26 ms; an alarm need not wait for all of it
    (docs/faults.md, overload). One ``select`` asks both, so this costs nothing more.
    """
    if sock is None:
        return False
    pending = getattr(sock, "pending", None)
    if pending is not None and pending() > 0:
        if before is None:
            return True
        return not select.select([before], [], [], 0)[0]
    watch = [sock] if before is None else [sock, before]
    ready = select.select(watch, [], [], 0)[0]
    return bool(ready) and (before is None or before not in ready)


class MqttLink:
    """Connects, subscribes, hands every message to ``handler``, reconnects with backoff."""

    def __init__(self, target: MqttTarget, site: str, handler: Handler,
                 on_connect: Callable[[], Awaitable[None]], clock: Callable[[], int],
                 client_id: str | None = None, extra: list[str] | None = None,
                 external: Handler | None = None, *,
                 subscriptions: Sequence[str] = SUBSCRIPTIONS, unsubscribe: Sequence[str] = (),
                 lane: int = 0, announce: bool = True, broker_drops: bool = True,
                 peer: MqttLink | None = None):
        self.target = target
        self.prefix = f"firegrid/{site}/"
        self.handler = handler
        self.on_connect = on_connect
        self.clock = clock
        self.client_id = client_id or f"firegrid-gateway-{site}"
        self.extra = list(extra or [])  # feeds' own topics (zigbee2mqtt/+, frigate/events)
        self.external = external
        self.subscriptions = list(subscriptions)  # under the prefix
        self.unsubscribe = list(unsubscribe)  # under the prefix: left over from an older setup
        self.lane = lane
        self.announce = announce  # the retained status and its last will (the gateway's own)
        self.broker_drops = broker_drops  # read the broker's dropped-message count
        self.peer = peer  # the other lane, which acknowledges its own tokens
        # set by the runtime: urgent input is waiting, so a read burst ends at once
        self.burst_stop: Callable[[], bool] | None = None
        self.name = "mqtt" if lane == 0 else "mqtt bulk"  # in log lines: "mqtt bulk connected"
        self.client: aiomqtt.Client | None = None  # connected: publish on it
        self._reading: aiomqtt.Client | None = None  # connecting or connected: ack on it
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.generation = 0
        self.connected_ns: int | None = None  # when the current connection came up
        self._forgetting: set[asyncio.Task[None]] = set()

    def _client(self) -> aiomqtt.Client:
        link = self

        class Direct(asyncio.Queue):  # type: ignore[type-arg]
            """aiomqtt's incoming queue, except that each message is handled on arrival.

            aiomqtt's ``messages`` iterator starts a task and an ``asyncio.wait`` for every
            message: three turns of the event loop each, which halved the messages per
            second the gateway could read (bench/ingest.py, docs/benchmarks.md). Handing
            the message to the handler where aiomqtt would queue it (``queue_type`` is
            aiomqtt's own hook) keeps the order and the acknowledgement after the journal.
            """

            def put_nowait(self, item: aiomqtt.Message) -> None:
                link._deliver(item)

        will = (aiomqtt.Will(self.prefix + "status", b"offline", qos=1, retain=True)
                if self.announce else None)
        client = _BurstClient(
            **self.target.client_kwargs(),
            identifier=self.client_id, clean_session=False, keepalive=10, timeout=5,
            will=will,
            # small alarm packets must not wait for Nagle + delayed ACK (~40 ms on Linux)
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            queue_type=Direct,
        )
        # after a reconnect every retained state is republished at once; aiomqtt would
        # log a raw "There are N pending publish calls" line for each beyond 10
        client.pending_calls_threshold = 100_000
        if self.lane == 1:  # the bulk lane gives way to the alarm lane between packets
            client.yield_to = self._peer_socket
        client.stop_when = self.burst_stop
        return client

    def _peer_socket(self) -> Any:
        """The other lane's socket while it is connected, else None."""
        peer = self.peer.client if self.peer is not None else None
        return peer._client.socket() if peer is not None else None

    async def check(self) -> None:
        """Connect once at start so an unreachable broker is reported, not retried forever.

        It logs in as the gateway's own persistent session (same client id, no clean
        start, nothing acknowledged): a broker with ``use_username_as_clientid`` gives
        every login by our username that session anyway, and a clean start would throw
        away the alarms queued for us while we were down. Whatever the broker hands
        this short connection stays unacknowledged and is delivered again to run().
        """
        try:
            client = aiomqtt.Client(**self.target.client_kwargs(), identifier=self.client_id,
                                    clean_session=False, timeout=5)
        except ValueError as exc:  # CA or certificate became unreadable since parse()
            raise Unreachable(str(exc)) from None
        client._client.manual_ack_set(True)
        try:
            async with client:
                pass
        except aiomqtt.MqttError as exc:
            raise Unreachable(describe_connect_error(self.target, exc)) from None

    async def run(self) -> None:
        """Stay connected until cancelled; each connection resubscribes and republishes."""
        backoff = 0.2
        while True:
            try:
                client = self._client()
                # PUBACK only once the message is journaled (see ack()); aiomqtt does not
                # expose paho's manual_ack, so it is set on the paho client it wraps
                client._client.manual_ack_set(True)
                # messages may arrive right behind the CONNACK, before `async with` has
                # returned: they must already carry this connection's generation
                self.generation += 1
                self._reading = client
                async with client:
                    self.client = client
                    if self.unsubscribe:
                        await client.unsubscribe([self.prefix + t for t in self.unsubscribe])
                    topics = [self.prefix + t for t in self.subscriptions] + self.extra
                    for i in range(0, len(topics), SUBSCRIBE_BATCH):
                        await client.subscribe([(t, 1) for t in topics[i:i + SUBSCRIBE_BATCH]])
                    if self.broker_drops:
                        # the broker's own count of messages it dropped (a full queue): a
                        # trouble, since an alarm may be among them (runtime._broker_dropped)
                        await client.subscribe(BROKER_DROPPED, qos=0)
                    if self.announce:
                        await client.publish(self.prefix + "status", b"online", qos=1,
                                             retain=True)
                    self.connected.set()
                    self.connected_ns = self.clock()
                    log.info(f"{self.name} connected", broker=self.target.redacted(),
                             reconnects=self.reconnects)
                    backoff = 0.2
                    on_connect = asyncio.create_task(self.on_connect())
                    try:
                        # messages go to _deliver as they arrive (Direct, above): this
                        # only waits for the connection to end, which raises MqttError
                        async for _ in client.messages:
                            pass
                    finally:
                        on_connect.cancel()
            except aiomqtt.MqttError as exc:
                log.warning(f"{self.name} link down", broker=self.target.redacted(),
                            error=connect_problem(self.target, exc), retry_in_s=backoff)
            except ValueError as exc:  # CA or client certificate unreadable: keep trying
                log.warning(f"{self.name} link down", broker=self.target.redacted(), error=str(exc),
                            retry_in_s=backoff)
            finally:
                self.connected.clear()
                self.client = None
                self._reading = None
            self.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def forget(self, topic: str) -> None:
        """Unsubscribe ``topic`` (under the prefix) now and at every later connect.

        MQTT cannot list a session's subscriptions: one left over from an older setup is
        found when a message arrives on it. Called from the message handler, so the
        UNSUBSCRIBE goes out from a task of its own.
        """
        if topic in self.unsubscribe:
            return
        self.unsubscribe.append(topic)
        if self.client is not None:
            task = asyncio.ensure_future(self._unsubscribe(self.client, topic))
            self._forgetting.add(task)
            task.add_done_callback(self._forgetting.discard)

    async def _unsubscribe(self, client: aiomqtt.Client, topic: str) -> None:
        try:
            await client.unsubscribe(self.prefix + topic)
        except aiomqtt.MqttError as exc:  # the link is going down: the next connect does it
            log.warning(f"{self.name} could not unsubscribe", topic=topic, error=str(exc)[:200])
            return
        log.info(f"{self.name} unsubscribed a topic left from an older setup", topic=topic)

    def _deliver(self, msg: aiomqtt.Message) -> None:
        """One message from the broker, in arrival order, inside paho's read callback.

        Never raises: an exception here would reach paho and aiomqtt and drop the
        connection. Until the first SUBACK, anything the broker sends (an earlier
        session's queue) is handled as well; the broker only sends what we subscribed.
        """
        try:
            topic = str(msg.topic)
            payload = msg.payload if isinstance(msg.payload, bytes) else (
                str(msg.payload).encode() if msg.payload is not None else b"")
            token = (AckToken(self.generation, msg.mid, msg.qos, self.lane) if msg.qos > 0
                     else None)
            if topic.startswith(self.prefix):
                self.handler(topic[len(self.prefix):], payload, self.clock(), token)
            elif self.external is not None:
                self.external(topic, payload, self.clock(), token)
            else:
                self.ack(token)
        except Exception:
            log.exception("message handler failed", topic=str(msg.topic)[:200])

    def ack(self, token: AckToken | None) -> None:
        """Acknowledge a message to the broker; until then the broker keeps it for us.

        A token from an earlier connection is skipped: the broker will deliver that
        message again on this session, and the engine treats the repeat as a no-op.
        """
        if token is not None and token.lane != self.lane:
            if self.peer is not None:
                self.peer.ack(token)
            return
        client = self._reading
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

    def start_publish(self, topic: str, payload: bytes, *, retain: bool = False
                      ) -> asyncio.Task[None] | None:
        """Publish under the site prefix (QoS 1) as a task that ends with the PUBACK, however
        late; None when the link is down. For the outbox: a publish that outlasts its
        caller's patience is still in paho's hands, and must not be sent a second time
        while this connection lasts (runtime._flush_outbox)."""
        client = self.client
        if client is None:
            return None
        return asyncio.get_running_loop().create_task(
            client.publish(self.prefix + topic, payload, qos=1, retain=retain,
                           timeout=math.inf))

    async def say_offline(self) -> None:
        """Clean stop: the last will only fires on an unclean one."""
        if self.client is not None:
            with contextlib.suppress(aiomqtt.MqttError, asyncio.TimeoutError):
                await self.client.publish(self.prefix + "status", b"offline", qos=1, retain=True,
                                          timeout=2)
