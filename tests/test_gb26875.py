"""GB/T 26875.3 feed: the sans-IO codec (drivers.gb26875), its asyncio server
(drivers.gb26875_server) and the device twin (firmware_sim.uitd).

The test vectors are the fact sheet's (protocols/gb26875-and-facp-serial.md §1.9),
written out byte for byte: every one is decoded and encoded again, and the centre's
replies to the vendor examples must come out exactly as the vendor's. The end-to-end
tests use real TCP on 127.0.0.1 with the server on a kernel-picked port.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import itertools
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.feed import FeedEvent, Garbage, Reading, Reset, Seen, Trouble
from drivers.gb26875 import (
    ANALOG_TYPES,
    CMD_CONFIRM,
    CMD_CONTROL,
    CMD_DENY,
    CMD_REQUEST,
    CMD_RESPONSE,
    CMD_SEND,
    MAX_ADU,
    MAX_FRAME,
    AnalogValue,
    BadFrame,
    CentreSession,
    ComponentStatus,
    Deframer,
    Frame,
    FrameError,
    Operation,
    RawAdu,
    SystemStatus,
    UitdOperation,
    UitdStatus,
    UitdVersion,
    build_adu,
    decode_frame,
    encode_frame,
    fit_description,
    label_text,
    label_to_unix,
    parse_address,
    parse_adu,
    parse_ref,
    parse_utc_offset,
    read_description,
    time_label,
)
from drivers.gb26875_server import Gb26875Server, split_listen
from drivers.signal import Signal
from firmware_sim import uitd as uitd_module
from firmware_sim.lab import free_port
from firmware_sim.uitd import CENTRE_ADDRESS as CENTRE  # 38 5B 01 00 00 00
from firmware_sim.uitd import UITD_ADDRESS as DEVICE  # 79 03 00 00 00 00
from firmware_sim.uitd import Uitd

FAST = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

T_SEND = (32, 58, 9, 26, 9, 12)  # 2012-09-26 09:58:32, the vectors' send time
T_EVENT = (2, 58, 9, 26, 9, 12)  # 09:58:02, the objects' time
T_REPLY = (35, 58, 9, 26, 9, 12)  # 09:58:35, the replies' time
NOW_REPLY = datetime(2012, 9, 26, 9, 58, 35, tzinfo=UTC).timestamp()
SMOKE_REF = "1/1/131082"


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace("|", " "))


UP = "40 40 01 00 01 01 20 3A 09 1A 09 0C 79 03 00 00 00 00 38 5B 01 00 00 00"
DOWN = "40 40 01 00 01 01 20 3A 09 1A 09 0C 38 5B 01 00 00 00 79 03 00 00 00 00"

# §1.9, from S1: (bytes, checksum, command, direction up?, ADU)
SMOKE = h(UP + " 30 00 02 | 02 01 01 01 28 0A 00 02 00 02 00" + " 20" * 30
          + " 00 02 3A 09 1A 09 0C | 46 23 23")
ACK = h("40 40 01 00 01 01 23 3A 09 1A 09 0C 38 5B 01 00 00 00 79 03 00 00 00 00 00 00 03"
        " AB 23 23")
NAK = h("40 40 01 00 01 01 23 3A 09 1A 09 0C 38 5B 01 00 00 00 79 03 00 00 00 00 00 00 06"
        " AE 23 23")
MAINS = h(UP + " 09 00 02 | 15 01 08 02 3A 09 1A 09 0C | 42 23 23")
DUTY_ANSWER = h(UP + " 0A 00 02 | 18 01 20 01 02 3A 09 1A 09 0C | 5F 23 23")
VERSION = h(UP + " 04 00 02 | 19 01 01 01 | C7 23 23")
READ_STATUS = h(DOWN + " 03 00 04 | 51 01 00 | FE 23 23")
STATUS_REPLY = h(UP + " 09 00 05 | 15 01 08 02 3A 09 1A 09 0C | 45 23 23")
INIT = h(DOWN + " 03 00 01 | 59 01 00 | 03 23 23")
TIME_SYNC = h(DOWN + " 08 00 01 | 5A 01 02 3A 09 1A 09 0C | 7D 23 23")
DUTY_CHECK = h(DOWN + " 03 00 01 | 5B 01 0A | 0F 23 23")
# S3, dgiot: serial 0, sent 2020-10-22 17:13:24, from address 0 to 01 02 03 04 05 06
DGIOT = h(
    "40 40 00 00 01 01 18 0D 11 16 0A 14 00 00 00 00 00 00 06 05 04 03 02 01 30 00 02"
    "| 02 01 01 03 00 D9 00 06 00 02 00"
    "  A3 C1 C7 F8 A3 B1 B2 E3 DF C8 B2 B8 D7 DF C0 C8" + " 00" * 15
    + "| 30 12 13 01 08 14 | 68 23 23"
)

VECTORS = {
    # name: (bytes, checksum, command, serial, src, dst, time, ADU objects)
    "smoke fire": (SMOKE, 0x46, CMD_SEND, 1, DEVICE, CENTRE, T_SEND,
                   [ComponentStatus(1, 1, 40, 0x0002000A, 0x0002, "", T_EVENT)]),
    "centre 确认": (ACK, 0xAB, CMD_CONFIRM, 1, CENTRE, DEVICE, T_REPLY, []),
    "centre 否认": (NAK, 0xAE, CMD_DENY, 1, CENTRE, DEVICE, T_REPLY, []),
    "type 21 mains fault": (MAINS, 0x42, CMD_SEND, 1, DEVICE, CENTRE, T_SEND,
                            [UitdStatus(0x08, T_EVENT)]),
    "type 24 查岗应答": (DUTY_ANSWER, 0x5F, CMD_SEND, 1, DEVICE, CENTRE, T_SEND,
                       [UitdOperation(0x20, 1, T_EVENT)]),
    "type 25 version 1.1": (VERSION, 0xC7, CMD_SEND, 1, DEVICE, CENTRE, T_SEND,
                            [UitdVersion(1, 1)]),
    "read UITD status": (READ_STATUS, 0xFE, CMD_REQUEST, 1, CENTRE, DEVICE, T_SEND,
                         [RawAdu(81, 1, b"\x00")]),
    "status reply": (STATUS_REPLY, 0x45, CMD_RESPONSE, 1, DEVICE, CENTRE, T_SEND,
                     [UitdStatus(0x08, T_EVENT)]),
    "init": (INIT, 0x03, CMD_CONTROL, 1, CENTRE, DEVICE, T_SEND, [RawAdu(89, 1, b"\x00")]),
    "time sync": (TIME_SYNC, 0x7D, CMD_CONTROL, 1, CENTRE, DEVICE, T_SEND,
                  [RawAdu(90, 1, bytes(T_EVENT))]),
    "查岗": (DUTY_CHECK, 0x0F, CMD_CONTROL, 1, CENTRE, DEVICE, T_SEND,
            [RawAdu(91, 1, b"\x0a")]),
    "dgiot S3": (DGIOT, 0x68, CMD_SEND, 0, 0, 0x010203040506, (24, 13, 17, 22, 10, 20),
                 [ComponentStatus(1, 3, 0, 0x000600D9, 0x0002, "Ａ区１层呷哺走廊",
                                  (48, 18, 19, 1, 8, 20))]),
}


# ------------------------------------------------------------------ test vectors


@pytest.mark.parametrize("name", list(VECTORS))
def test_vector_decodes_and_encodes(name: str) -> None:
    data, cs, command, serial, src, dst, t, objects = VECTORS[name]
    assert data[-3] == cs and data[:2] == b"@@" and data[-2:] == b"##"
    frame = decode_frame(data)
    assert (frame.serial, frame.version, frame.time) == (serial, (1, 1), t)
    assert (frame.src, frame.dst, frame.command) == (src, dst, command)
    assert len(data) == 30 + len(frame.adu)
    assert parse_adu(frame.adu) == objects
    rebuilt = Frame(serial=serial, time=t, src=src, dst=dst, command=command, adu=frame.adu)
    assert encode_frame(rebuilt) == data
    if objects and not isinstance(objects[0], RawAdu) and name != "smoke fire":
        assert build_adu(objects) == frame.adu  # the builders make the same bytes


def test_smoke_vector_details() -> None:
    assert len(SMOKE) == 78
    (obj,) = parse_adu(decode_frame(SMOKE).adu)
    assert isinstance(obj, ComponentStatus)
    assert obj.ref == SMOKE_REF and obj.part_type == 40
    assert label_to_unix(obj.time) == datetime(2012, 9, 26, 9, 58, 2, tzinfo=UTC).timestamp()
    # S1 pads the description with 30 spaces and a NUL; the builder pads with NULs
    spaced = ComponentStatus(1, 1, 40, 131082, 0x0002, " " * 30, T_EVENT)
    assert build_adu([spaced]) == decode_frame(SMOKE).adu


def test_dgiot_vector_gb18030_description() -> None:
    assert len(DGIOT) == 78
    (obj,) = parse_adu(decode_frame(DGIOT).adu)
    assert isinstance(obj, ComponentStatus)
    assert obj.description == "Ａ区１层呷哺走廊" and obj.ref == "1/3/393433"
    assert fit_description("Ａ区１层呷哺走廊") == DGIOT[38:69]


def test_centre_answers_smoke_fire_with_the_vendors_确认() -> None:
    events, reply = CentreSession(CENTRE).receive(SMOKE, NOW_REPLY)
    assert reply == ACK
    ts = datetime(2012, 9, 26, 9, 58, 2, tzinfo=UTC).timestamp()
    assert events == [Signal(SMOKE_REF, "alarm", ts=ts,
                             meta=(("device_time", "2012-09-26T09:58:02+00:00"),)),
                      Seen(None)]


def test_centre_answers_a_bad_checksum_with_the_vendors_否认() -> None:
    bad = SMOKE[:-3] + b"\x47" + SMOKE[-2:]
    events, reply = CentreSession(CENTRE).receive(bad, NOW_REPLY)
    assert reply == NAK
    assert not any(isinstance(e, Signal) for e in events)
    (g,) = events
    assert isinstance(g, Garbage) and "checksum 0x47" in g.reason and "serial 1" in g.where
    assert g.nbytes == 78


@pytest.mark.parametrize("data", [MAINS, DUTY_ANSWER, VERSION])
def test_centre_confirms_other_uploads_with_the_vendors_确认(data: bytes) -> None:
    _, reply = CentreSession(CENTRE).receive(data, NOW_REPLY)
    assert reply == ACK


def test_uitd_mains_fault_is_a_trouble() -> None:
    events, _ = CentreSession(CENTRE).receive(MAINS, NOW_REPLY)
    assert events == [Trouble("uitd", "fault", True, "mains fault"), Seen(None)]


def test_operation_and_version_give_only_seen() -> None:
    for data in (DUTY_ANSWER, VERSION):
        events, _ = CentreSession(CENTRE).receive(data, NOW_REPLY)
        assert events == [Seen(None)]


def test_response_gives_events_and_no_reply() -> None:
    events, reply = CentreSession(CENTRE).receive(STATUS_REPLY, NOW_REPLY)
    assert reply == b""
    assert Trouble("uitd", "fault", True, "mains fault") in events


@pytest.mark.parametrize("data", [READ_STATUS, INIT, TIME_SYNC, DUTY_CHECK])
def test_centre_commands_from_a_device_are_denied(data: bytes) -> None:
    # these frames go centre → device; turn them round as if a device had sent them
    f = decode_frame(data)
    sent = encode_frame(Frame(serial=f.serial, time=f.time, src=DEVICE, dst=CENTRE,
                              command=f.command, adu=f.adu))
    events, reply = CentreSession(CENTRE).receive(sent, NOW_REPLY)
    assert reply == NAK
    assert isinstance(events[0], Garbage) and "not a centre" in events[0].reason
    assert events[-1] == Seen(None)


def test_answers_from_the_device_need_no_reply() -> None:
    for cmd in (CMD_CONFIRM, CMD_DENY):
        f = encode_frame(Frame(serial=9, time=T_SEND, src=DEVICE, dst=CENTRE, command=cmd))
        assert CentreSession(CENTRE).receive(f, NOW_REPLY) == ([Seen(None)], b"")


# ------------------------------------------------------------------ frames


def frame(adu: bytes = b"", serial: int = 7, command: int = CMD_SEND) -> bytes:
    return encode_frame(Frame(serial=serial, time=T_SEND, src=DEVICE, dst=CENTRE,
                              command=command, adu=adu))


def fire_adu(part: int = 0x0002000A, status: int = 0x0003, text: str = "") -> bytes:
    return build_adu([ComponentStatus(1, 1, 42, part, status, text, T_EVENT)])


def test_encode_rejects_fields_that_do_not_fit() -> None:
    good = dict(serial=1, time=T_SEND, src=1, dst=2, command=2)
    with pytest.raises(FrameError, match="serial"):
        encode_frame(Frame(**{**good, "serial": 70000}))  # type: ignore[arg-type]
    with pytest.raises(FrameError, match="ADU of 1025 bytes"):
        encode_frame(Frame(**good, adu=bytes(1025)))  # type: ignore[arg-type]
    with pytest.raises(FrameError, match="source address"):
        encode_frame(Frame(**{**good, "src": 1 << 48}))  # type: ignore[arg-type]
    with pytest.raises(FrameError, match="time label"):
        encode_frame(Frame(**{**good, "time": (1, 2, 3)}))  # type: ignore[arg-type]


def test_decode_errors_name_what_and_where() -> None:
    with pytest.raises(FrameError, match=r"checksum 0x47, computed 0x46 \(at offset 75, serial 1"):
        decode_frame(SMOKE[:-3] + b"\x47" + SMOKE[-2:])
    with pytest.raises(FrameError, match=r"end marker.*at offset 76, serial 1"):
        decode_frame(SMOKE[:-1] + b"$")
    with pytest.raises(FrameError, match="length field makes it 78"):
        decode_frame(SMOKE + b"x")
    over = bytearray(ACK)
    over[24:26] = struct.pack("<H", 1025)
    with pytest.raises(FrameError, match="over 1024"):
        decode_frame(bytes(over))
    with pytest.raises(FrameError, match="start marker"):
        decode_frame(b"xx" + ACK[2:])


def test_deframer_splits_on_length_not_on_markers() -> None:
    adu = fire_adu(part=0x23234040, text="@@##@@##")  # markers inside the payload
    data = frame(adu) + ACK + frame(b"", 8)
    out = Deframer().feed(data)
    assert [type(x) for x in out] == [Frame, Frame, Frame]
    assert isinstance(out[0], Frame) and out[0].adu == adu
    (obj,) = parse_adu(out[0].adu)
    assert isinstance(obj, ComponentStatus) and obj.description == "@@##@@##"


def test_deframer_byte_by_byte() -> None:
    d = Deframer()
    got: list[Frame | BadFrame] = []
    for b in SMOKE + MAINS:
        got += d.feed(bytes([b]))
    assert got == [decode_frame(SMOKE), decode_frame(MAINS)]
    assert d.buffered == 0


def test_deframer_reports_garbage_and_keeps_a_trailing_at() -> None:
    d = Deframer()
    (g,) = d.feed(b"junk!@")
    assert isinstance(g, BadFrame) and g.garbage and g.nbytes == 5 and g.offset == 0
    assert d.buffered == 1
    assert d.feed(SMOKE[1:]) == [decode_frame(SMOKE)]


def test_deframer_over_long_length_resyncs_at_next_start() -> None:
    over = bytearray(frame(fire_adu()))
    over[24:26] = struct.pack("<H", 2000)
    out = Deframer().feed(bytes(over) + SMOKE)
    assert isinstance(out[0], BadFrame) and "2000 is over 1024" in out[0].reason
    assert out[0].serial == 7
    assert out[-1] == decode_frame(SMOKE)


def test_deframer_bad_tail_resyncs_inside_the_bad_frame() -> None:
    # a header whose length claims 10 bytes too many: the tail check fails and the
    # good frame that began inside the claimed span is still found
    bad = bytearray(frame(b"", 3))
    bad[24:26] = struct.pack("<H", 10)
    out = Deframer().feed(bytes(bad[:27]) + SMOKE)
    assert isinstance(out[0], BadFrame) and "end marker" in out[0].reason
    assert out[-1] == decode_frame(SMOKE)


def test_deframer_buffer_is_bounded() -> None:
    d = Deframer()
    rng = random.Random(1)
    for _ in range(50):
        d.feed(rng.randbytes(rng.randrange(1, 5000)))
        assert d.buffered < MAX_FRAME
    header = bytearray(frame(b""))[:27]
    header[24:26] = struct.pack("<H", MAX_ADU)
    d.feed(bytes(header) + b"\x00" * 1000)  # a maximal frame still arriving
    assert d.buffered == 1027
    d.feed(b"@" * 100_000)
    assert d.buffered < MAX_FRAME


def stuck_header(serial: int = 4, length: int = 900) -> bytes:
    """A header whose (corrupt) length field makes the deframer wait for more."""
    head = bytearray(frame(b"", serial))[:27]
    head[24:26] = struct.pack("<H", length)
    return bytes(head)


def test_deframer_gives_up_a_frame_that_holds_a_complete_one() -> None:
    d = Deframer()
    assert d.feed(stuck_header() + SMOKE[:40]) == []
    out = d.feed(SMOKE[40:])
    assert isinstance(out[0], BadFrame) and "cut short by a complete frame at offset 27" \
        in out[0].reason and out[0].serial == 4 and out[0].nbytes == 27
    assert out[1:] == [decode_frame(SMOKE)] and d.buffered == 0


def test_deframer_abandon_looks_at_what_followed() -> None:
    d = Deframer()
    assert d.feed(stuck_header() + SMOKE[:40]) == []
    out = d.abandon()
    assert len(out) == 1 and isinstance(out[0], BadFrame)
    assert "incomplete frame abandoned: 67 of 930 bytes" in out[0].reason
    assert out[0].serial == 4 and d.buffered == 40
    assert d.feed(SMOKE[40:]) == [decode_frame(SMOKE)]
    assert d.abandon() == []


# ------------------------------------------------------------------ ADU


def test_adu_objects_round_trip() -> None:
    groups: list[list] = [
        [SystemStatus(1, 2, 0x2105, T_EVENT), SystemStatus(13, 3, 0x0105, T_SEND)],
        [ComponentStatus(1, 2, 121, 0x04030201, 0x0204, "7楼02室会议室烟感", T_EVENT)],
        [AnalogValue(1, 2, 40, 0x04030201, 3, -320, T_EVENT)],
        [Operation(1, 2, 0x84, 0xFA, T_EVENT)],
        [UitdStatus(0x08, T_EVENT)],
        [UitdOperation(0x31, 0xFA, T_EVENT)] * 3,
        [UitdVersion(2, 7)],
    ]
    for objs in groups:
        assert parse_adu(build_adu(objs)) == objs
    assert parse_adu(b"") == [] and build_adu([]) == b""
    assert parse_adu(b"\x05\x01\x01\x02\x03\x04") == [RawAdu(5, 1, b"\x01\x02\x03\x04")]


def test_adu_count_errors_name_type_and_object() -> None:
    one = fire_adu()
    with pytest.raises(FrameError, match=r"type 2: object 2 of 2 truncated"):
        parse_adu(b"\x02\x02" + one[2:])
    with pytest.raises(FrameError, match=r"type 2: 3 bytes after object 1 of 1"):
        parse_adu(one + b"abc")
    with pytest.raises(FrameError, match=r"type 21: count 2 is over the maximum 1"):
        parse_adu(b"\x15\x02" + bytes(14))
    with pytest.raises(FrameError, match="1 byte"):
        parse_adu(b"\x02")
    with pytest.raises(FrameError, match="type 1: object 1 of 1 truncated"):
        parse_adu(b"\x01\x01\x01")


def test_builders_reject_what_does_not_fit() -> None:
    with pytest.raises(FrameError, match="one type"):
        build_adu([UitdStatus(1), UitdVersion(1, 1)])  # type: ignore[list-item]
    with pytest.raises(FrameError, match="at most 1"):
        build_adu([UitdStatus(1), UitdStatus(2)])
    with pytest.raises(FrameError, match="int16"):
        AnalogValue(1, 1, 1, 1, 3, 40000).encode()
    with pytest.raises(FrameError, match="component address"):
        ComponentStatus(1, 1, 1, 1 << 32, 0).encode()


def test_descriptions() -> None:
    assert read_description(b" " * 30 + b"\x00") == ""
    assert read_description("烟感".encode("gb18030") + b"\x00junk\xff") == "烟感"
    assert read_description(b"\xff\xfe" + b"\x00" * 29) == "\ufffd\ufffd"
    long = fit_description("感" * 20)  # 2 bytes each: 15 fit, never half a character
    assert len(long) == 31 and read_description(long) == "感" * 15


def test_time_labels() -> None:
    assert time_label(NOW_REPLY) == T_REPLY
    assert label_to_unix(T_REPLY) == NOW_REPLY
    assert label_to_unix((0, 0, 0, 31, 2, 12)) is None
    assert label_to_unix((60, 0, 0, 1, 1, 12)) is None
    assert time_label(float("nan")) == time_label(0.0) == (0, 0, 0, 1, 1, 0)


BEIJING = 8 * 3600


def test_centre_address_and_beijing_time_keep_the_vendors_确认_byte_exact() -> None:
    """The vendor's 确认 carries its centre's address (38 5B 01 00 00 00) and 09:58:35 on
    its Beijing clock: a centre configured so, at 01:58:35 UTC, answers byte for byte."""
    session = CentreSession(parse_address("38 5B 01 00 00 00"), utc_offset_s=BEIJING)
    events, reply = session.receive(SMOKE, NOW_REPLY - BEIJING)
    assert reply == ACK
    utc = datetime(2012, 9, 26, 1, 58, 2, tzinfo=UTC).timestamp()  # 09:58:02 Beijing
    assert events == [Signal(SMOKE_REF, "alarm", ts=utc,
                             meta=(("device_time", "2012-09-26T09:58:02+08:00"),)),
                      Seen(None)]
    bad = SMOKE[:-3] + b"\x47" + SMOKE[-2:]
    assert session.receive(bad, NOW_REPLY - BEIJING)[1] == NAK


@pytest.mark.parametrize("centre", [0, 1, 0x0A0B0C0D0E0F, (1 << 48) - 1])
def test_replies_come_from_the_configured_centre_address(centre: int) -> None:
    _, reply = CentreSession(centre).receive(SMOKE, NOW_REPLY)
    assert reply[12:18] == centre.to_bytes(6, "little")  # source: the centre
    assert reply[18:24] == SMOKE[12:18]  # destination: the device that sent it
    assert reply[27] == sum(reply[2:27]) & 0xFF
    # the same bytes as the vendor's 确认 but for the address and the checksum
    assert reply[:12] + reply[18:27] == ACK[:12] + ACK[18:27]
    assert decode_frame(reply).src == centre


def test_addresses_as_numbers_or_wire_bytes() -> None:
    assert parse_address("38 5B 01 00 00 00") == 0x015B38 == parse_address(88888)
    assert parse_address("79 03 00 00 00 00") == 0x0379
    assert parse_address("01 02 03 04 05 06") == 0x060504030201
    assert parse_address(0) == 0 and parse_address((1 << 48) - 1) == (1 << 48) - 1
    for bad in (-1, 1 << 48, True, "385B01000000", "38 5B 01 00 00", "38-5B-01-00-00-00",
                "0x15B38", "88888", 1.5):
        with pytest.raises(ValueError):
            parse_address(bad)  # type: ignore[arg-type]


def test_utc_offsets() -> None:
    assert parse_utc_offset("+08:00") == BEIJING
    assert parse_utc_offset("-03:30") == -12600
    assert parse_utc_offset("+00:00") == 0 == parse_utc_offset("-00:00")
    for bad in ("8", "+8:00", "08:00", "+24:00", "+08:60", "UTC+8", 8):
        with pytest.raises(ValueError):
            parse_utc_offset(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="utc_offset_s"):
        CentreSession(0, utc_offset_s=90_000)


def test_time_labels_in_a_zone() -> None:
    assert time_label(NOW_REPLY - BEIJING, BEIJING) == T_REPLY
    assert label_to_unix(T_REPLY, BEIJING) == NOW_REPLY - BEIJING
    assert label_text(T_EVENT, BEIJING) == "2012-09-26T09:58:02+08:00"
    assert label_text(T_EVENT) == "2012-09-26T09:58:02+00:00"
    assert label_text((0, 0, 0, 31, 2, 12)) == "invalid 00 00 00 1F 02 0C"
    # a clock ahead of UTC still gives the 2000 label for a time it cannot write
    assert time_label(0.0, -3600) == (0, 0, 0, 1, 1, 0)


@given(st.integers(946_684_800 + 86_400, 4_102_444_800 - 2 * 86_400),
       st.integers(-(24 * 3600 - 60), 24 * 3600 - 60).map(lambda s: s - s % 60))
def test_time_label_round_trip_in_any_zone(unix_s: int, offset_s: int) -> None:
    label = time_label(unix_s, offset_s)
    assert label_to_unix(label, offset_s) == unix_s
    assert label_to_unix(label, 0) == unix_s + offset_s  # the same fields read as UTC


def test_refs() -> None:
    assert parse_ref(SMOKE_REF) == (1, 1, 131082)
    assert parse_ref("23/4") == (23, 4, None)
    for bad in ("1", "1/2/3/4", "a/b", "256/1", "1/1/4294967296", "1/-1"):
        with pytest.raises(ValueError):
            parse_ref(bad)


# ------------------------------------------------------------------ session mapping


def upload(objs: list, serial: int = 7) -> bytes:
    return frame(build_adu(objs), serial)


def stamped(ref: str, state: str, label: tuple[int, ...] = T_EVENT, offset_s: int = 0
            ) -> Signal:
    """The Signal a time-stamped object gives: ``ts`` and the label as audit text."""
    return Signal(ref, state, ts=label_to_unix(label, offset_s),
                  meta=(("device_time", label_text(label, offset_s)),))


def session_events(data: bytes) -> list[FeedEvent]:
    events, _ = CentreSession(CENTRE).receive(data, NOW_REPLY)
    return events


@pytest.mark.parametrize(("status", "state"), [
    (0x0002, "alarm"), (0x0003, "alarm"), (0x0006, "alarm"), (0x0004, "fault"),
    (0x0100, "fault"), (0x0001, "clear"), (0x0000, "clear"), (0x0008, "clear"),
])
def test_component_status_to_signal(status: int, state: str) -> None:
    events = session_events(upload([ComponentStatus(1, 1, 42, 10, status, "x", T_EVENT)]))
    assert events == [stamped("1/1/10", state), Seen(None)]


def test_component_with_bad_time_has_no_ts() -> None:
    events = session_events(upload([ComponentStatus(1, 1, 42, 10, 2, "", (0,) * 6)]))
    assert events[0] == Signal("1/1/10", "alarm",
                               meta=(("device_time", "invalid 00 00 00 00 00 00"),))


def test_system_status_mapping() -> None:
    events = session_events(upload([SystemStatus(1, 2, 0x2302, T_EVENT),
                                    SystemStatus(1, 3, 0x0001, T_EVENT),
                                    SystemStatus(1, 4, 0x0404, T_EVENT)]))
    assert events == [
        Reset("1/2"), stamped("1/2", "alarm"),
        Trouble("1/2", "fault", True, "mains fault, backup power fault"),
        Trouble("1/3", "fault", False),
        Trouble("1/4", "fault", True, "fault, bus fault"),
        Seen(None),
    ]


def test_uitd_status_mapping() -> None:
    events = session_events(upload([UitdStatus(0x03, T_EVENT)]))
    assert events[:2] == [stamped("uitd", "alarm"), Trouble("uitd", "fault", False)]
    events = session_events(upload([UitdStatus(0x71, T_EVENT)]))
    assert events[0] == Trouble("uitd", "fault", True, "backup power fault, channel to "
                                "centre fault, monitoring line fault")


def test_analog_reading() -> None:
    events = session_events(upload([AnalogValue(1, 1, 31, 5, 3, -253, T_EVENT),
                                    AnalogValue(1, 1, 11, 6, 6, 150, T_EVENT),
                                    AnalogValue(1, 1, 11, 7, 200, 1, T_EVENT)]))
    assert events[:3] == [Reading("1/1/5", -253, "°C"), Reading("1/1/6", 150, "%LEL"),
                          Reading("1/1/7", 1, "")]
    assert ANALOG_TYPES[3] == ("temperature", "°C", 0.1)


def test_heartbeat_is_seen_and_confirmed() -> None:
    events, reply = CentreSession(CENTRE).receive(frame(b"", 0), NOW_REPLY)
    assert events == [Seen(None)]
    assert decode_frame(reply) == Frame(serial=0, time=T_REPLY, src=CENTRE, dst=DEVICE,
                                        command=CMD_CONFIRM)


def test_unknown_command_and_over_long_length_are_denied() -> None:
    s = CentreSession(CENTRE)
    events, reply = s.receive(frame(b"", 12, command=0x80), NOW_REPLY)
    assert decode_frame(reply).command == CMD_DENY and decode_frame(reply).serial == 12
    assert "unrecognised command 128" in events[0].reason  # type: ignore[union-attr]
    over = bytearray(frame(b"", 13))
    over[24:26] = struct.pack("<H", 1025)
    events, reply = s.receive(bytes(over) + SMOKE, NOW_REPLY)
    nak, ack = reply[:30], reply[30:]
    assert (decode_frame(nak).command, decode_frame(nak).serial) == (CMD_DENY, 13)
    assert ack == ACK
    assert stamped(SMOKE_REF, "alarm") in events


def test_bad_tail_is_denied() -> None:
    events, reply = CentreSession(CENTRE).receive(SMOKE[:-1] + b"!", NOW_REPLY)
    assert reply == NAK and isinstance(events[0], Garbage)


def test_garbage_is_reported_not_answered() -> None:
    events, reply = CentreSession(CENTRE).receive(b"GET / HTTP/1.0\r\n\r\n", NOW_REPLY)
    assert reply == b"" and events == [Garbage("18 bytes outside any frame", "offset 0", 18)]


def test_a_flood_of_false_starts_gets_one_否认() -> None:
    s = CentreSession(CENTRE)
    events, reply = s.receive(b"@" * 50_000 + b"@@x" * 10_000 + stuck_header()[:26], 1.0)
    assert len(reply) == 30 and decode_frame(reply).command == CMD_DENY
    assert len(events) <= 4 and sum(e.nbytes for e in events) > 70_000  # type: ignore[union-attr]
    events, reply = s.receive(b"x" + SMOKE, NOW_REPLY)
    assert reply == ACK and Seen(None) in events
    _, reply = s.receive(b"@" * 100, NOW_REPLY)  # framing was back: a new bad start
    assert len(reply) == 30


def test_a_resend_is_confirmed_but_not_repeated() -> None:
    s = CentreSession(CENTRE)
    first, r1 = s.receive(SMOKE, NOW_REPLY)
    again, r2 = s.receive(SMOKE, NOW_REPLY)
    assert r1 == r2 == ACK
    assert any(isinstance(e, Signal) for e in first) and again == [Seen(None)]


def test_malformed_adu_keeps_the_alarm_and_denies() -> None:
    adu = fire_adu()
    events, reply = CentreSession(CENTRE).receive(frame(b"\x02\x02" + adu[2:], 5), NOW_REPLY)
    assert decode_frame(reply).command == CMD_DENY
    assert isinstance(events[0], Signal) and events[0].state == "alarm"
    assert isinstance(events[1], Garbage) and "object 2 of 2" in events[1].reason


def test_stalled_partial_frame_is_abandoned() -> None:
    s = CentreSession(CENTRE, stall_s=5.0)
    assert s.receive(stuck_header(), 100.0) == ([], b"")
    assert s.tick(104.0) == ([], b"")
    events, reply = s.tick(105.5)
    assert isinstance(events[0], Garbage) and "incomplete frame" in events[0].reason
    assert decode_frame(reply).command == CMD_DENY and decode_frame(reply).serial == 4
    events, reply = s.receive(SMOKE, 106.0)  # the resend now parses at once
    assert (decode_frame(reply).command, decode_frame(reply).serial) == (CMD_CONFIRM, 1)
    assert any(isinstance(e, Signal) for e in events)


def test_close_reports_a_partial_frame() -> None:
    s = CentreSession(CENTRE)
    s.receive(SMOKE[:40], 0.0)
    assert s.close() == [Garbage("connection closed inside a frame", "end of stream", 40)]
    assert s.close() == []


# ------------------------------------------------------------------ properties

times = st.tuples(*[st.integers(0, 255)] * 6)
frames = st.builds(
    lambda serial, version, t, src, dst, command, adu: Frame(
        serial=serial, version=version, time=t, src=src, dst=dst, command=command, adu=adu),
    st.integers(0, 0xFFFF), st.tuples(st.integers(0, 255), st.integers(0, 255)), times,
    st.integers(0, (1 << 48) - 1), st.integers(0, (1 << 48) - 1), st.integers(0, 255),
    st.binary(max_size=MAX_ADU),
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def run_deframer(chunks: list[bytes]) -> tuple[list[Frame | BadFrame], Deframer]:
    d = Deframer()
    out: list[Frame | BadFrame] = []
    for c in chunks:
        out += d.feed(c)
        assert d.buffered < 2 * MAX_FRAME
    return out, d


@FAST
@given(st.lists(frames, min_size=1, max_size=4), st.lists(st.integers(0, 5000), max_size=8))
def test_round_trip_in_any_chunking(fs: list[Frame], cuts: list[int]) -> None:
    for f in fs:
        assert decode_frame(encode_frame(f)) == f
    data = b"".join(encode_frame(f) for f in fs)
    out, d = run_deframer(chunked(data, cuts))
    assert out == fs and d.buffered == 0


segments = st.lists(st.one_of(st.binary(max_size=600), frames.map(encode_frame),
                              st.just(SMOKE), st.sampled_from([b"@", b"@@", b"##"])),
                    max_size=8).map(b"".join)


def accounted(out: list[Frame | BadFrame], d: Deframer) -> int:
    """Every byte fed is in a frame, in a bad frame, or still buffered."""
    return d.buffered + sum(len(encode_frame(x)) if isinstance(x, Frame) else x.nbytes
                            for x in out)


@FAST
@given(st.one_of(st.binary(max_size=3000), segments),
       st.lists(st.integers(0, 5000), max_size=10))
def test_any_bytes_any_chunking_never_raise(data: bytes, cuts: list[int]) -> None:
    whole, d1 = run_deframer([data])
    parts, d2 = run_deframer(chunked(data, cuts))
    assert accounted(whole, d1) == accounted(parts, d2) == len(data)
    # the good frames found do not depend on how the bytes were cut
    assert [x for x in whole if isinstance(x, Frame)] == \
        [x for x in parts if isinstance(x, Frame)]
    tail = d1.abandon()
    assert accounted(whole + tail, d1) == len(data)


@FAST
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=6),
       st.floats(allow_nan=True, allow_infinity=True))
def test_session_never_raises_and_replies_are_frames(data: bytes, cuts: list[int],
                                                     now: float) -> None:
    s = CentreSession(CENTRE)
    replies = b""
    for c in chunked(data, cuts):
        _, r = s.receive(c, now)
        replies += r
    _, r = s.tick(now + 10 if now == now else now)
    replies += r
    s.close()
    out = Deframer().feed(replies)
    assert all(isinstance(f, Frame) and f.command in (CMD_CONFIRM, CMD_DENY) for f in out)


@FAST
@given(st.binary(max_size=1500), st.lists(st.integers(0, 1500), max_size=4))
def test_a_good_frame_after_garbage_is_found(junk: bytes, cuts: list[int]) -> None:
    out, _ = run_deframer(chunked(junk + SMOKE, cuts))
    assert decode_frame(SMOKE) in out


@FAST
@given(st.binary(max_size=300))
def test_parse_adu_raises_only_frame_error(adu: bytes) -> None:
    with contextlib.suppress(FrameError):
        parse_adu(adu)


# ------------------------------------------------------------------ over TCP

Events = list[FeedEvent]


class Running:
    def __init__(self, server: Gb26875Server, events: Events,
                 links: list[tuple[bool, str]]) -> None:
        self.server, self.events, self.links = server, events, links

    @property
    def port(self) -> int:
        return self.server.port

    async def wait_for(self, pred: Callable[[Events], bool], timeout: float = 2.0) -> bool:
        deadline = time.monotonic() + timeout
        while not pred(self.events):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True


@pytest_asyncio.fixture
async def centre() -> AsyncIterator[Running]:
    events: Events = []
    links: list[tuple[bool, str]] = []
    server = Gb26875Server("127.0.0.1:0", events.extend, lambda up, why: links.append(
        (up, why)), address=CENTRE)
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.started.wait(), 5)
    try:
        yield Running(server, events, links)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def exchange(port: int, data: bytes, want: int, timeout: float = 1.0) -> bytes:
    """A plain blocking socket: send ``data``, read until ``want`` bytes or timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        deadline = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < deadline:
            try:
                chunk = s.recv(4096)
            except TimeoutError:
                break
            if not chunk:
                break
            got += chunk
        return got


def alarm(events: Events) -> bool:
    return any(isinstance(e, Signal) and e.device == SMOKE_REF and e.state == "alarm"
               for e in events)


async def test_tcp_smoke_fire_gets_确认_and_an_alarm(centre: Running) -> None:
    t0 = time.monotonic()
    reply = await asyncio.to_thread(exchange, centre.port, SMOKE, 30)
    assert time.monotonic() - t0 < 1.0
    f = decode_frame(reply)
    assert (f.command, f.serial, f.src, f.dst, f.adu) == (CMD_CONFIRM, 1, CENTRE, DEVICE, b"")
    assert await centre.wait_for(alarm)
    assert await centre.wait_for(lambda _: bool(centre.links) and not centre.links[-1][0])
    assert centre.links[0][0] is True and centre.links[0][1].startswith("127.0.0.1:")


async def test_tcp_bad_checksum_gets_否认_and_no_alarm(centre: Running) -> None:
    bad = SMOKE[:-3] + bytes([SMOKE[-3] ^ 0xFF]) + SMOKE[-2:]
    reply = await asyncio.to_thread(exchange, centre.port, bad, 30)
    f = decode_frame(reply)
    assert (f.command, f.serial) == (CMD_DENY, 1)
    assert await centre.wait_for(lambda ev: any(isinstance(e, Garbage) for e in ev))
    assert not alarm(centre.events)


async def test_tcp_garbage_then_a_good_frame(centre: Running) -> None:
    reply = await asyncio.to_thread(exchange, centre.port, b"\x00\xffnoise##\r\n" + SMOKE, 30)
    f = decode_frame(reply)  # exactly one frame: the garbage is not answered
    assert (f.command, f.serial) == (CMD_CONFIRM, 1)
    assert await centre.wait_for(alarm)
    assert any(isinstance(e, Garbage) and e.nbytes == 11 for e in centre.events)


async def test_tcp_twin_fire_clear_reset_heartbeat(centre: Running) -> None:
    async with Uitd("127.0.0.1", centre.port, timeout_s=2) as dev:
        assert await dev.fire(SMOKE_REF, "Ａ区１层走廊")
        assert await dev.clear(SMOKE_REF)
        assert await dev.reset("1/1")
        assert await dev.heartbeat()
        assert await dev.analog("1/1/7", 3, 655)
        assert await dev.uitd_status(0x09)
        assert dev.confirmed == [0, 1, 2, 3, 4, 5] and dev.denied == []
    kinds = [(type(e).__name__, getattr(e, "state", None)) for e in centre.events
             if not isinstance(e, Seen | Trouble)]
    assert kinds == [("Signal", "alarm"), ("Signal", "clear"), ("Reset", None),
                     ("Reading", None)]
    assert sum(isinstance(e, Seen) for e in centre.events) == 6
    assert Trouble("uitd", "fault", True, "mains fault") in centre.events


async def test_tcp_twin_in_beijing_time_to_a_centre_in_beijing_time() -> None:
    """Device and centre both on Beijing time (the field's and firegrid's default): the
    alarm's device time is the real instant, and the 确认 comes from the centre's address
    with a Beijing-time label."""
    events: Events = []
    server = Gb26875Server("127.0.0.1:0", events.extend, lambda up, why: None,
                           address=0x0A0B0C, utc_offset_s=BEIJING)
    task = asyncio.create_task(server.run())
    try:
        await asyncio.wait_for(server.started.wait(), 5)
        async with Uitd("127.0.0.1", server.port, centre=0x0A0B0C, timeout_s=2) as dev:
            assert dev.utc_offset_s == BEIJING  # the simulator's default
            sent = time.time()
            assert await dev.fire(SMOKE_REF)
            [ack] = [r for r in dev.received if r.command == CMD_CONFIRM]
            assert ack.src == 0x0A0B0C
            at = label_to_unix(ack.time, BEIJING)
            assert at is not None and abs(at - sent) < 3
        [sig] = [e for e in events if isinstance(e, Signal)]
        assert sig.ts is not None and abs(sig.ts - sent) < 3
        assert dict(sig.meta)["device_time"].endswith("+08:00")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_tcp_twin_fault_injection(centre: Running) -> None:
    async with Uitd("127.0.0.1", centre.port, timeout_s=2) as dev:
        await dev.send_garbage(b"\x00garbage\x00")
        assert await dev.send_bad_checksum([UitdStatus(1)]) == CMD_DENY
        fire = [ComponentStatus(1, 1, 42, 131082, 0x0003, "", time_label(time.time()))]
        assert await dev.send_split(fire, cut=(1, 13, 27, 50), pause_s=0.02)
        assert await centre.wait_for(alarm)
        await dev.reconnect(abort=True)
        assert await dev.fault(SMOKE_REF)
        assert dev.confirmed[-1] == 0  # serials restart on a new connection
        dev.go_silent()
        assert not await dev.heartbeat()
    assert any(isinstance(e, Signal) and e.state == "fault" for e in centre.events)
    assert sum(isinstance(e, Garbage) for e in centre.events) == 2


async def test_tcp_two_connections_one_bad(centre: Running) -> None:
    dev = Uitd("127.0.0.1", centre.port, timeout_s=2)
    await dev.connect()
    try:
        bad = socket.create_connection(("127.0.0.1", centre.port))
        bad.sendall(b"\xff" * 5000 + SMOKE[:50])
        bad.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        bad.close()  # reset, mid-frame
        await asyncio.sleep(0.05)
        assert await dev.fire(SMOKE_REF)
        assert await centre.wait_for(alarm)
        assert centre.server.connections == 1
        assert all(up for up, _ in centre.links)  # the device stayed connected
    finally:
        await dev.close()
    assert await centre.wait_for(lambda _: not centre.links[-1][0])


async def test_connections_over_the_limit_are_refused() -> None:
    events: Events = []
    server = Gb26875Server("127.0.0.1:0", events.extend, lambda up, why: None,
                           address=CENTRE, max_connections=1)
    task = asyncio.create_task(server.run())
    try:
        await asyncio.wait_for(server.started.wait(), 5)
        async with Uitd("127.0.0.1", server.port, timeout_s=2) as first:
            assert await first.heartbeat()
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                got = await asyncio.wait_for(reader.read(100), 2)
            except ConnectionResetError:
                got = b""
            assert got == b""  # closed at once
            writer.close()
            assert await first.fire(SMOKE_REF)
        assert any(isinstance(e, Garbage) and "refused" in e.reason for e in events)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_twin_resends_on_否认_and_timeout() -> None:
    answers = [None, CMD_DENY, CMD_CONFIRM]  # ignore, deny, confirm
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        d = Deframer()
        while data := await reader.read(4096):
            for f in d.feed(data):
                assert isinstance(f, Frame)
                seen.append(f.serial)
                cmd = answers.pop(0) if answers else None
                if cmd is not None:
                    writer.write(encode_frame(Frame(serial=f.serial, time=T_REPLY,
                                                    src=CENTRE, dst=f.src, command=cmd)))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with Uitd("127.0.0.1", port, timeout_s=0.2, retries=3) as dev:
            assert await dev.heartbeat()
            assert seen == [0, 0, 0] and dev.denied == [0] and dev.confirmed == [0]
            t0 = time.monotonic()
            assert not await dev.heartbeat()  # never answered: 1 + 3 tries, then failed
            assert seen[3:] == [1, 1, 1, 1] and time.monotonic() - t0 >= 0.75
    finally:
        server.close()
        await server.wait_closed()


async def test_twin_answers_the_centres_commands() -> None:
    got: list[Frame] = []
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        read_version = h(DOWN + " 03 00 04 | 55 01 00 | 02 23 23")
        for i, raw in enumerate((INIT, READ_STATUS, read_version)):
            f = decode_frame(raw)
            writer.write(encode_frame(Frame(serial=i, time=f.time, src=f.src, dst=f.dst,
                                            command=f.command, adu=f.adu)))
        d = Deframer()
        while len(got) < 3 and (data := await reader.read(4096)):
            got.extend(x for x in d.feed(data) if isinstance(x, Frame))
        done.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        async with Uitd("127.0.0.1", server.sockets[0].getsockname()[1]):
            await asyncio.wait_for(done.wait(), 2)
    finally:
        server.close()
        await server.wait_closed()
    assert [(f.command, f.serial) for f in got] == [(CMD_CONFIRM, 0), (CMD_RESPONSE, 1),
                                                    (CMD_DENY, 2)]
    (status,) = parse_adu(got[1].adu)
    assert isinstance(status, UitdStatus) and status.status == 0x01
    assert all(f.src == DEVICE and f.dst == CENTRE for f in got)


async def test_command_line_twin(centre: Running) -> None:
    rc = await asyncio.to_thread(uitd_module.main, [
        "--connect", f"127.0.0.1:{centre.port}", "--fire", SMOKE_REF, "--reset", "1/1",
        "--timeout", "2"])
    assert rc == 0
    assert await centre.wait_for(alarm)
    assert any(isinstance(e, Reset) for e in centre.events)


async def test_listen_on_a_given_port() -> None:
    port = free_port()
    server = Gb26875Server(f"127.0.0.1:{port}", lambda ev: None, lambda up, why: None)
    task = asyncio.create_task(server.run())
    try:
        await asyncio.wait_for(server.started.wait(), 5)
        assert server.port == port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert split_listen(":9000") == ("127.0.0.1", 9000)
    assert split_listen("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ValueError):
        split_listen("localhost")


def test_firmware_sim_uitd_does_not_import_gateway() -> None:
    tree = ast.parse(Path(uitd_module.__file__).read_text(encoding="utf-8"))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n == "gateway" or n.startswith("gateway.")]
