"""Reporting to a monitoring centre over GB/T 26875.3, as a UITD does (sans-IO).

``drivers.gb26875`` is the centre's end of the protocol: firegrid reads the transmission
devices (用户信息传输装置) of a site. This is the other end, for the gateway itself: it
reports the site's confirmed fires upward to a district monitoring centre (监控中心),
which forwards them to 119. Same codec, opposite role.

The standard's send/confirm mode (clause 6.5, fact sheet §1.3): each report is a
发送数据 (command 2) frame with a new serial; the centre answers 确认 (3) with that
serial, or 否认 (6). Without a 确认 within ``timeout_s`` (the standard: at most 10 s),
or on a 否认, the same frame is sent again with the same serial, at most ``retries``
(3) times; then the exchange has failed. An empty command 2 is the vendors' heartbeat
(fact sheet §1.1) and is confirmed like any report.

What the centre may send the other way: a control command (1) is confirmed (firegrid
carries none out, but a centre that sends time sync or 查岗 expects its 确认); a
request (4) is denied (firegrid answers no queries); a frame that fails its checksum or
framing is denied, as clause 6.5 says. None of this ever raises: a centre's bytes are
input like any other.

No I/O and no clock here: the caller passes the time in, sends the bytes returned, and
calls ``tick`` by ``next_deadline()``. ``alerting.centre_link`` is the TCP transport.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from drivers.gb26875 import (
    CMD_CONFIRM,
    CMD_CONTROL,
    CMD_DENY,
    CMD_RESPONSE,
    CMD_SEND,
    MAX_ADDRESS,
    MAX_UTC_OFFSET_S,
    BadFrame,
    ComponentStatus,
    Deframer,
    Frame,
    InfoObject,
    build_adu,
    encode_frame,
    time_label,
)

FIRE = 0x0003  # component status: bit 1 fire, bit 0 normal operation (not test)
NORMAL = 0x0001  # bit 0 alone: operating, no fire, no fault

# 部件类型 (fact sheet §1.8.2) for the kinds of device a site file names
PART_TYPES = {"smoke": 40, "heat": 30, "temperature": 30, "manual": 23, "flame": 69,
              "co": 74, "gas": 10, "camera": 78}
GENERIC = 0  # 通用


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one exchange ended: ``ok`` (the centre confirmed) or not, after how many
    sends, and why, in words for the audit trail."""

    serial: int
    ok: bool
    attempts: int
    detail: str


@dataclass(slots=True)
class _Pending:
    frame: bytes
    attempts: int
    due_s: float
    denied: int = 0
    heartbeat: bool = False


@dataclass(slots=True)
class UplinkSession:
    """One connection to the centre, seen from the reporting device.

    ``address`` is this gateway's own 6-byte address (源地址), ``centre_address`` the
    centre's (目的地址); both as the centre's configuration has them.
    """

    address: int
    centre_address: int = 0
    utc_offset_s: int = 0
    timeout_s: float = 10.0
    retries: int = 3
    _serial: int = 0
    _pending: dict[int, _Pending] = field(default_factory=dict)
    _deframer: Deframer = field(default_factory=Deframer)

    def __post_init__(self) -> None:
        for what, value in (("address", self.address), ("centre address", self.centre_address)):
            if isinstance(value, bool) or not isinstance(value, int) \
                    or not 0 <= value <= MAX_ADDRESS:
                raise ValueError(f"{what} must be an integer in 0..{MAX_ADDRESS}, got {value!r}")
        if abs(self.utc_offset_s) > MAX_UTC_OFFSET_S:
            raise ValueError(f"utc_offset_s must be within ±{MAX_UTC_OFFSET_S}")
        if not 0 < self.timeout_s <= 60 or not 0 <= self.retries <= 10:
            raise ValueError("timeout_s must be in (0, 60] and retries in 0..10")

    # -- what the gateway sends

    def report(self, objects: Sequence[InfoObject], now_s: float) -> tuple[int, bytes]:
        """A new 发送数据 frame carrying ``objects`` (one type, at most its maximum count):
        its serial, and the bytes to send now."""
        return self._send(build_adu(objects), now_s, heartbeat=False)

    def heartbeat(self, now_s: float) -> tuple[int, bytes]:
        """An empty 发送数据: the vendors' heartbeat, confirmed like a report."""
        return self._send(b"", now_s, heartbeat=True)

    def _send(self, adu: bytes, now_s: float, *, heartbeat: bool) -> tuple[int, bytes]:
        self._serial = self._serial % 0xFFFF + 1  # 1..65535, then round again
        serial = self._serial
        frame = encode_frame(Frame(serial=serial, time=time_label(now_s, self.utc_offset_s),
                                   src=self.address, dst=self.centre_address,
                                   command=CMD_SEND, adu=adu))
        self._pending[serial] = _Pending(frame, 1, now_s + self.timeout_s, heartbeat=heartbeat)
        return serial, frame

    @property
    def waiting(self) -> int:
        """Exchanges sent and not yet confirmed or given up."""
        return len(self._pending)

    def next_deadline(self) -> float | None:
        return min((p.due_s for p in self._pending.values()), default=None)

    # -- what comes back

    def receive(self, data: bytes, now_s: float) -> tuple[list[Outcome], bytes]:
        """Outcomes settled by ``data``, and the bytes to send back (replies, resends)."""
        outcomes: list[Outcome] = []
        out: list[bytes] = []
        for item in self._deframer.feed(data):
            if isinstance(item, BadFrame):
                if item.header is not None:  # readable enough to answer: 否认 (clause 6.5)
                    out.append(self._reply(CMD_DENY, item.header.serial, now_s))
                continue
            self._frame(item, now_s, outcomes, out)
        return outcomes, b"".join(out)

    def tick(self, now_s: float) -> tuple[list[Outcome], bytes]:
        """Resend what waited ``timeout_s`` without a 确认; give up after ``retries``."""
        outcomes: list[Outcome] = []
        out: list[bytes] = []
        for serial, p in list(self._pending.items()):
            if p.due_s <= now_s:
                self._again(serial, p, now_s, "no 确认 within "
                            f"{self.timeout_s:g} s", outcomes, out)
        return outcomes, b"".join(out)

    def lost(self) -> list[Outcome]:
        """The connection ended: every exchange still open has failed."""
        outcomes = [Outcome(s, False, p.attempts, "connection lost before 确认")
                    for s, p in self._pending.items()]
        self._pending.clear()
        self._deframer = Deframer()
        return outcomes

    # -- internals

    def _frame(self, f: Frame, now_s: float, outcomes: list[Outcome], out: list[bytes]) -> None:
        if f.command == CMD_CONFIRM:
            p = self._pending.pop(f.serial, None)
            if p is not None:
                outcomes.append(Outcome(f.serial, True, p.attempts,
                                        f"确认 after {p.attempts} send(s)"))
        elif f.command == CMD_DENY:
            p = self._pending.get(f.serial)
            if p is not None:
                p.denied += 1
                self._again(f.serial, p, now_s, "否认", outcomes, out)
        elif f.command == CMD_CONTROL:
            out.append(self._reply(CMD_CONFIRM, f.serial, now_s))
        elif f.command != CMD_RESPONSE:
            # a query firegrid does not answer (4), a centre sending data (2), or a command
            # byte the standard does not define: 否认. An 应答 (5) expects nothing back.
            out.append(self._reply(CMD_DENY, f.serial, now_s))

    def _again(self, serial: int, p: _Pending, now_s: float, why: str,
               outcomes: list[Outcome], out: list[bytes]) -> None:
        if p.attempts > self.retries:
            del self._pending[serial]
            outcomes.append(Outcome(serial, False, p.attempts,
                                    f"{why}, given up after {p.attempts} send(s)"))
            return
        p.attempts += 1
        p.due_s = now_s + self.timeout_s
        out.append(p.frame)

    def _reply(self, command: int, serial: int, now_s: float) -> bytes:
        return encode_frame(Frame(serial=serial, time=time_label(now_s, self.utc_offset_s),
                                  src=self.address, dst=self.centre_address, command=command))


def fire_report(*, sys_addr: int, part_type: int, part_addr: int, description: str,
                at_s: float, utc_offset_s: int, status: int = FIRE) -> ComponentStatus:
    """The type-2 object (建筑消防设施部件运行状态) saying this component is in fire alarm
    (or, with ``status=NORMAL``, back to normal), with the time of the change on the
    centre's clock. System type 1: 火灾报警系统."""
    return ComponentStatus(sys_type=1, sys_addr=sys_addr, part_type=part_type,
                           part_addr=part_addr, status=status, description=description,
                           time=time_label(at_s, utc_offset_s))
