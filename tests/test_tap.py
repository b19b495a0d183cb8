"""TAP 1.8 paging: the codec and both state machines (alerting.tap), the asyncio
transport (alerting.tap_link) and the simulated paging terminal
(firmware_sim.tap_terminal).

The codec is checked against every checksum vector and the §1.14 transcript of the
fact sheet (shared/protocols/pagers.md) byte for byte, then against arbitrary text
(escape and blocks must round-trip through the terminal's parser) and arbitrary bytes
(neither state machine may raise on what the far end sends). The client's timers and
retry counts are checked in simulated time against the terminal's state machine. The
transport is checked end to end on a real TCP socket on 127.0.0.1 and on a real socat
pseudo-terminal pair, against the simulator with its fault switches: accepted, NAKed
and resent, hung up and retried, refused with RS, and silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerting.channel import Delivery
from alerting.page import Page
from alerting.tap import (
    CODES,
    ETB,
    ETX,
    US,
    ClientState,
    TapClient,
    TapFaults,
    TapTerminal,
    TapTimers,
    TermState,
    ascii7,
    blocks,
    checksum,
    code_limit,
    decode_block,
    escape,
    page_text,
    parse_block,
    unescape,
)
from alerting.tap_link import TapTarget, send_tap, send_tap_batch, target_from
from firmware_sim.lab import PtyPair, free_port
from firmware_sim.tap_terminal import TapSerialTerminal, TapSimulator, TapTcpServer

REPO = Path(__file__).resolve().parent.parent

# --- the fact sheet's vectors (pagers.md §1.8 and §1.14) ----------------------------------

H = bytes.fromhex
VECTORS: list[tuple[str, bytes, bytes]] = [
    # (name, full block, checksum)
    ("1 spec 123/ABC", H("02 31 32 33 0d 41 42 43 0d 03 31 37 3b 0d"), b"17;"),
    ("2 Hello World", H("02 31 32 33 34 35 36 37 0d 48 65 6c 6c 6f 20 57 6f 72 6c 64 0d 03"
                        " 35 3a 37 0d"), b"5:7"),
    ("3 LF escaped", H("02 35 35 35 31 32 33 34 0d 4c 69 6e 65 31 1a 4a 4c 69 6e 65 32 0d 03"
                       " 35 35 3f 0d"), b"55?"),
    ("4A US split", H("02 34 32 0d 50 61 72 74 20 6f 6e 65 20 6f 66 20 61 20 6c 6f 6e 67 20"
                      " 1f 36 3f 33 0d"), b"6?3"),
    ("4B US continued", H("02 6d 65 73 73 61 67 65 0d 03 32 3f 37 0d"), b"2?7"),
]
VECTOR_5 = [  # ETB split (no full hex in the sheet): (block up to the terminator, checksum)
    (b"\x0242\rFirst field done\r\x17", b"68;"),
    (b"\x02Second message field\r\x03", b"797"),
]
VECTOR_6_SUM = b">;<"  # ID "1234567" + 241 x 'A': exactly 256 bytes

HELLO_BLOCK = VECTORS[1][1]
TRANSCRIPT: list[tuple[str, bytes]] = [  # §1.14, in order
    ("C", H("0d")),
    ("T", H("49 44 3d 0d")),
    ("C", H("1b 50 47 31 0d")),
    ("T", H("31 31 30 20 31 2e 38 0d 06 0d")),
    ("T", H("1b 5b 70 0d")),
    ("C", HELLO_BLOCK),
    ("T", b"211 Page(s) Sent Successfully" + H("0d 06 0d")),
    ("C", H("04 0d")),
    ("T", b"115 Goodbye" + H("0d 1b 04 0d")),
]


@pytest.mark.parametrize(("name", "block", "expected"), VECTORS, ids=[v[0] for v in VECTORS])
def test_checksum_vectors(name: str, block: bytes, expected: bytes) -> None:
    end = max(block.rfind(bytes((t,))) for t in (ETX, ETB, US))
    assert checksum(block[:end + 1]) == expected
    assert block[end + 1:end + 4] == expected
    assert parse_block(block)[1] is True


@pytest.mark.parametrize(("pre", "expected"), VECTOR_5, ids=["5A ETB", "5B ETX"])
def test_checksum_vector_5_etb(pre: bytes, expected: bytes) -> None:
    assert checksum(pre) == expected


def test_checksum_vector_6_maximum_block() -> None:
    (block,) = blocks("1234567", "A" * 241)
    assert len(block) == 256
    assert block[-4:-1] == VECTOR_6_SUM
    assert block[-5] == ETX


def test_checksum_masks_to_7_bits_and_keeps_12_bits() -> None:
    # a parity bit must not count (7E1 sender, 8N1 reader), and the sum wraps at 0xFFF
    assert checksum(bytes(b | 0x80 for b in VECTOR_5[0][0])) == b"68;"
    assert checksum(b"\x7f" * 40) == b"3=8"  # 40 * 127 = 5080 = 0x13D8 -> 0x3D8
    assert set(checksum(bytes(range(128)))) <= set(b"0123456789:;<=>?")


def test_blocks_reproduce_the_sheets_blocks_byte_for_byte() -> None:
    assert blocks("1234567", "Hello World") == [HELLO_BLOCK]
    assert blocks("5551234", "Line1\nLine2") == [VECTORS[2][1]]
    assert blocks("123", "ABC") == [VECTORS[0][1]]
    # the US split of vector 4 is what blocks() makes at 22 information characters
    assert blocks("42", "Part one of a long message", max_chars=22) == [VECTORS[3][1],
                                                                         VECTORS[4][1]]


def test_vector_4_and_5_join_into_one_transaction_at_the_terminal() -> None:
    term = logged_in_terminal()
    assert term.receive(VECTORS[3][1], 1) == b"\r\x06\r"  # intermediate block: ACK
    assert term.receive(VECTORS[4][1], 1).startswith(b"211 ")
    assert term.pages == [("42", "Part one of a long message")]
    etb = [pre + ck + b"\r" for pre, ck in VECTOR_5]
    assert term.receive(etb[0], 2) == b"\r\x06\r"
    assert term.receive(etb[1], 2).endswith(b"\x06\r")
    assert term.transactions[-1] == ["42", "First field done", "Second message field"]


def test_transcript_1_14_client_side() -> None:
    client = TapClient("", [("1234567", "Hello World")])
    sent = [client.start(0.0)]
    for who, data in TRANSCRIPT[1:]:
        if who == "T":
            sent.append(client.receive(data, 0.1))
    sent = [s for s in sent if s]
    assert sent == [data for who, data in TRANSCRIPT if who == "C"]
    assert client.done and client.error is None and client.logout_clean
    (result,) = client.results
    assert result.accepted and result.attempts == 1 and result.code == "211"
    assert result.detail == "211 Page(s) Sent Successfully"


def test_transcript_1_14_terminal_side() -> None:
    term = TapTerminal(banner=None)
    replies = b""
    for who, data in TRANSCRIPT:
        if who == "C":
            replies += term.receive(data, 0.0)
    assert replies == b"".join(data for who, data in TRANSCRIPT if who == "T")
    assert term.pages == [("1234567", "Hello World")]
    assert term.closed


def test_transcript_negative_checksum_is_naked_and_resent_unchanged() -> None:
    bad = HELLO_BLOCK[:-2] + b"8\r"  # 5:7 -> 5:8
    term = logged_in_terminal()
    reply = term.receive(bad, 1)
    assert reply.startswith(b"514 ") and reply.endswith(b"\r\x15\r")
    assert term.pages == []
    client = client_in_sending("1234567", "Hello World")
    assert client.receive(reply, 1) == HELLO_BLOCK  # the same block again, unchanged
    assert client.receive(b"211 Page(s) Sent Successfully\r\x06\r", 1) == b"\x04\r"
    assert client.results[0].attempts == 2 and client.results[0].accepted


# --- escape, blocks, parse ---------------------------------------------------------------


def test_escape_uses_sub_transparency_for_control_characters() -> None:
    assert escape("a\nb") == b"a\x1aJb"
    assert escape("\r") == b"\x1aM"
    for c in (0x0D, 0x0A, 0x1B, 0x02, 0x03, 0x1F, 0x17, 0x04, 0x1A):  # the sheet's "must"
        assert escape(chr(c)) == bytes((0x1A, c + 0x40))
    assert escape("a\nb", transparency=False) == b"a b"  # terminals older than 1.6
    assert unescape(b"a\x1aJb\x1aM") == "a\nb\r"


def test_escape_is_seven_bit_and_replaces_what_a_pager_cannot_show() -> None:
    assert escape("Café Müller") == b"Cafe Muller"
    assert escape("火警 4号楼") == b"?? 4??"
    assert ascii7("\x7f") == "?"
    assert ascii7("ﬁre\u00a0alarm") == "fire alarm"
    assert all(b < 0x80 for b in escape("½ — “quoted” 😀 Ω"))


def test_blocks_split_long_messages_with_us_and_etb() -> None:
    text = "Fire alarm " * 60  # 660 characters
    out = blocks("1234567", text)
    assert len(out) == 3
    assert [b[-5] for b in out] == [US, US, ETX]
    assert all(len(b) <= 256 for b in out)
    assert all(parse_block(b)[1] for b in out)
    # a field ending exactly at the end of a block, with a field after it: ETB
    out = blocks("12345", "x" * 10, max_chars=6)
    assert out[0] == b"\x0212345\r\x17" + checksum(b"\x0212345\r\x17") + b"\r"
    term = logged_in_terminal()
    for block in out:
        term.receive(block, 1)
    assert term.pages == [("12345", "x" * 10)]


def test_blocks_never_cut_a_sub_pair_and_strip_trailing_spaces() -> None:
    out = blocks("1", "ab\ncd   ", max_chars=4)  # "1\r" + "ab" | SUB J ...
    assert all(not b[1:-5].endswith(b"\x1a") for b in out)
    term = logged_in_terminal()
    for block in out:
        term.receive(block, 1)
    assert term.pages == [("1", "ab\ncd")]
    with pytest.raises(ValueError):
        blocks("1", "x", max_chars=1)


def test_parse_block_reports_fields_and_bad_checksums() -> None:
    assert parse_block(HELLO_BLOCK) == (["1234567", "Hello World"], True)
    assert parse_block(HELLO_BLOCK[:-2] + b"8\r") == (["1234567", "Hello World"], False)
    assert parse_block(VECTORS[3][1]) == (["42", "Part one of a long "], True)
    assert parse_block(b"junk") == ([], False)
    block = decode_block(HELLO_BLOCK[:-2] + b"8\r")
    assert block is not None and (block.expected, block.got) == (b"5:7", b"5:8")


def test_code_limit_and_code_table() -> None:
    assert code_limit("80 character maximum, message has been truncated and sent") == 80
    assert code_limit("240,rejected") == 240
    assert code_limit("no digits") is None
    assert "215" not in CODES and set(CODES) >= {"110", "211", "214", "514", "517"}


@settings(max_examples=200, deadline=None)
@given(pager_id=st.text(max_size=20), text=st.text(max_size=700),
       max_chars=st.integers(2, 250))
def test_escape_and_blocks_round_trip_through_the_terminal(
        pager_id: str, text: str, max_chars: int) -> None:
    out = blocks(pager_id, text, max_chars)
    assert all(len(b) <= max_chars + 6 and all(c < 0x80 for c in b) for b in out)
    assert all(parse_block(b)[1] for b in out)
    assert all(b[-5] in (ETB, US) for b in out[:-1])
    assert out[-1][-5] == ETX
    term = logged_in_terminal()
    for block in out:
        reply = term.receive(block, 1)
        assert b"\x06" in reply
    assert term.pages == [(ascii7(pager_id), page_text(text))]


# --- the client against the terminal, in simulated time ----------------------------------


def logged_in_terminal(**kw: Any) -> TapTerminal:
    term = TapTerminal(**kw)
    term.receive(b"\r", 0)
    term.receive(b"\x1bPG1\r", 0)
    assert term.state is TermState.READY
    return term


def client_in_sending(pager_id: str, text: str, **kw: Any) -> TapClient:
    client = TapClient("", [(pager_id, text)], **kw)
    client.start(0)
    client.receive(b"ID=\r", 0)
    client.receive(b"110 1.8\r\x06\r\x1b[p\r", 0)
    assert client.state is ClientState.SENDING
    return client


def converse(client: TapClient, term: TapTerminal, limit: float = 300.0) -> float:
    """Run a client against a terminal over a perfect line, jumping time to the next
    timer whenever both are quiet; returns the simulated time it took."""
    now = 0.0
    term.start(now)
    out = client.start(now)
    while not client.done and now <= limit:
        if out:
            reply = term.receive(out, now)
            out = client.receive(reply, now) if reply else b""
        else:
            wake = [d for d in (client.next_deadline, term.next_deadline) if d is not None]
            if not wake:
                break
            now = max(now, min(wake))
            reply = term.tick(now)
            out = client.receive(reply, now) if reply else b""
            out += client.tick(now)
        if term.closed and not out and not client.done:
            client.connection_lost(now, "terminal hung up")
    return now


T = TapTimers()  # the spec's defaults: simulated time costs nothing


def test_client_probes_every_t1_up_to_n1_then_gives_up() -> None:
    client = TapClient("", [("1", "x")])
    assert client.start(0) == b"\r"
    assert client.tick(1.9) == b""  # too early
    assert client.tick(2.0) == b"\r"
    assert client.tick(4.0) == b"\r"
    assert client.tick(6.0) == b"" and client.done
    assert client.error == "no ID= after 3 probes"
    assert client.results[0].detail == "not sent: no ID= after 3 probes"


def test_silent_terminal_costs_n1_times_t1() -> None:
    client = TapClient("", [("1", "x")])
    took = converse(client, TapTerminal(faults=TapFaults(silent=True)))
    assert took == pytest.approx(3 * T.t1)
    assert client.error == "no ID= after 3 probes"


def test_wrong_password_is_a_forced_disconnect_with_the_reason() -> None:
    client = TapClient("123456", [("1", "x")])
    converse(client, TapTerminal(password="000000"))
    assert client.error is not None
    assert client.error.startswith("terminal sent ESC EOT: forced disconnect")
    assert "509" in client.error and not client.results[0].accepted


def test_nak_is_resent_and_accepted() -> None:
    client = TapClient("000000", [("1234567", "Fire, block 4")])
    term = TapTerminal(password="000000", faults=TapFaults(nak_next=1))
    converse(client, term)
    assert client.error is None and client.logout_clean
    assert client.results[0].accepted and client.results[0].attempts == 2
    assert term.pages == [("1234567", "Fire, block 4")]


def test_block_naked_more_than_n2_times_ends_the_session() -> None:
    client = TapClient("", [("1", "x"), ("2", "y")], n2=3)
    term = TapTerminal(faults=TapFaults(nak_next=10))
    converse(client, term)
    assert client.error is not None and client.error.startswith("block NAKed 4 times")
    assert "514" in client.error
    assert [r.attempts for r in client.results] == [4, 0]
    assert not any(r.accepted or r.permanent for r in client.results)
    assert client.results[1].detail.startswith("not sent: block NAKed")


def test_real_checksum_errors_make_the_terminal_hang_up_after_n2() -> None:
    term = logged_in_terminal()
    bad = HELLO_BLOCK[:-2] + b"8\r"
    for _ in range(3):
        assert term.receive(bad, 1).endswith(b"\x15\r")
    assert term.receive(bad, 1) == b"503 Too many checksum errors\r\x1b\x04\r"
    assert term.closed


def test_rs_abandons_that_page_and_the_next_one_goes_through() -> None:
    client = TapClient("", [("999", "bad id"), ("1234567", "good")])
    term = TapTerminal(known_ids={"1234567"})
    converse(client, term)
    assert client.error is None
    bad, good = client.results
    assert not bad.accepted and bad.permanent and bad.code == "511"
    assert bad.detail == "RS: abandoned: 511 Invalid pager ID - not in database"
    assert good.accepted and term.pages == [("1234567", "good")]


def test_rs_fault_switch_uses_its_code() -> None:
    client = TapClient("", [("1", "x")])
    converse(client, TapTerminal(faults=TapFaults(rs_next=1, rs_code="512")))
    assert client.results[0].permanent and client.results[0].code == "512"
    assert "Temporarily cannot deliver" in client.results[0].detail


def test_no_response_to_a_block_is_resent_on_t3_then_fails() -> None:
    client = client_in_sending("1", "x", n2=2)
    assert client.tick(T.t3) == client._blocks[0][0]
    assert client.tick(2 * T.t3) == client._blocks[0][0]
    assert client.tick(3 * T.t3) == b""
    assert client.error == "no response to block 1 after 3 sends"


@pytest.mark.parametrize("point", ["probe", "logon", "block"])
def test_hang_up_at_each_point_is_a_forced_disconnect(point: str) -> None:
    client = TapClient("", [("1", "x")])
    term = TapTerminal(faults=TapFaults(hang_up_at=point))
    converse(client, term)
    assert client.error == "terminal sent ESC EOT: forced disconnect"
    assert term.closed and term.pages == []


def test_logon_nak_and_reprompt_are_retried_up_to_n3() -> None:
    client = TapClient("", [("1", "x")], n3=2)
    client.start(0)
    assert client.receive(b"ID=", 0) == b"\x1bPG1\r"  # ID= with no end of line
    assert client.receive(b"507 bad\r\x15\r", 0) == b"\x1bPG1\r"
    assert client.receive(b"ID=\r", 0) == b""
    assert client.error is not None and client.error.startswith("logon failed after 2")


def test_lenient_terminals_crlf_no_codes_early_go_ahead() -> None:
    client = TapClient("", [("1234567", "Hello")])
    converse(client, TapTerminal(eol=b"\r\n", verbose=False))
    assert client.results[0].accepted and client.results[0].detail == "ACK"
    client = TapClient("", [("1", "x")])
    client.start(0)
    client.receive(b"Welcome to paging\r\nID=\r\n", 0)
    block = client.receive(b"\x1b[p\r", 0)  # go-ahead with no ACK before it
    assert block == blocks("1", "x")[0]
    assert client.receive(b"211\r", 0) == b""  # non-verbose: code now, ACK later
    assert client.receive(b"\x06\r", 0) == b"\x04\r"
    assert client.results[0].detail == "211 Page(s) sent successfully"


def test_id_answers_to_several_probes_cost_one_logon() -> None:
    client = TapClient("", [("1", "x")])
    client.start(0)
    assert client.receive(b"ID=\rID=\rID=\r", 0) == b"\x1bPG1\r"
    assert client.state is ClientState.LOGON


def test_long_message_goes_in_several_blocks() -> None:
    text = "Smoke detector 3F corridor east, two detectors, confirmed. " * 10
    client = TapClient("", [("1234567", text)])
    term = TapTerminal()
    converse(client, term)
    assert client.results[0].accepted and client.results[0].attempts == len(term.blocks) == 3
    assert term.pages == [("1234567", page_text(text))]


def test_oversized_block_is_refused_with_515() -> None:
    client = TapClient("", [("1", "y" * 300)], max_chars=300)
    term = TapTerminal()
    converse(client, term)
    assert client.results[0].permanent and client.results[0].code == "515"
    assert term.pages == []


def test_logout_without_esc_eot_and_rs_after_logout() -> None:
    client = client_in_sending("1", "x")
    assert client.receive(b"211 ok\r\x06\r", 0) == b"\x04\r"
    client.connection_lost(1)  # hung up without ESC EOT: the page stands
    assert client.done and client.error is None and client.results[0].accepted
    client = client_in_sending("1", "x")
    client.receive(b"211 ok\r\x06\r", 0)
    client.receive(b"511 late\r\x1e\r\x1b\x04\r", 0)  # sheet §1.11 (10b)
    assert not client.results[0].accepted and client.results[0].permanent
    client = client_in_sending("1", "x")
    client.receive(b"\x06\r", 0)
    assert client.tick(T.t3) == b"" and client.done and client.error is None


def test_terminal_idle_timers_t5_reprompt_and_t4_timeout() -> None:
    term = TapTerminal(n3=2)
    assert term.receive(b"\r", 0) == b"ID=\r"
    assert term.tick(T.t5) == b"ID=\r"
    assert term.tick(2 * T.t5) == b"501 Timeout waiting for user input\r\x1b\x04\r"
    term = logged_in_terminal()
    assert term.tick(T.t4 - 0.1) == b""
    assert term.tick(T.t4).endswith(b"\x1b\x04\r") and term.closed


def test_terminal_answers_junk_with_502_once_and_still_takes_the_block() -> None:
    term = logged_in_terminal()
    assert term.receive(b"hello?", 1).startswith(b"502 ")
    assert term.receive(b"more junk", 1) == b""
    assert term.receive(HELLO_BLOCK, 1).startswith(b"211 ")


def test_implied_login_and_bad_service() -> None:
    term = TapTerminal(implied_login=True)
    term.receive(b"\r", 0)
    assert term.receive(HELLO_BLOCK, 0).startswith(b"211 ")
    term = TapTerminal()
    term.receive(b"\r", 0)
    assert term.receive(b"\x1bXX9\r", 0).startswith(b"508 ") and term.closed


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(st.text(max_size=400), min_size=1, max_size=3),
       nak=st.integers(0, 6), rs=st.integers(0, 2),
       hang_up=st.sampled_from([None, None, "probe", "logon", "block"]),
       silent=st.booleans(), max_chars=st.sampled_from([250, 40]))
def test_any_fault_mix_ends_and_accepted_means_recorded(
        texts: list[str], nak: int, rs: int, hang_up: str | None, silent: bool,
        max_chars: int) -> None:
    pages = [(str(1000 + i), t) for i, t in enumerate(texts)]
    client = TapClient("", pages, max_chars=max_chars)
    term = TapTerminal(faults=TapFaults(nak_next=nak, rs_next=rs, hang_up_at=hang_up,
                                        silent=silent))
    took = converse(client, term)
    assert client.done and took < 300
    accepted = [(r.pager_id, page_text(r.text)) for r in client.results if r.accepted]
    assert accepted == term.pages  # accepted exactly when the terminal recorded it
    if client.error is None:
        assert all(r.accepted or r.permanent for r in client.results)
    else:
        assert not all(r.accepted or r.permanent for r in client.results)


# --- never raising on hostile input --------------------------------------------------------

chunks = st.lists(st.binary(max_size=80), max_size=12)
tap_bytes = st.lists(
    st.sampled_from([b"\r", b"\n", b"ID=", b"\x06", b"\x15", b"\x1e", b"\x1b", b"\x04",
                     b"[p", b"211 ok", b"514 x", b"110 1.8", b"\x02", b"\x03"])
    | st.binary(max_size=20), max_size=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stage=st.integers(0, 3), data=st.one_of(chunks, tap_bytes),
       ticks=st.lists(st.floats(0, 100), max_size=5))
def test_client_never_raises_on_arbitrary_bytes(
        stage: int, data: list[bytes], ticks: list[float]) -> None:
    client = TapClient("pw", [("1", "x" * 300), ("2", "y")], TapTimers(), max_chars=100)
    client.start(0)
    prefix = [b"ID=\r", b"\x06\r", b"\x1b[p\r"][:stage]
    now = 0.0
    for chunk in [*prefix, *data]:
        out = client.receive(chunk, now)
        assert isinstance(out, bytes)
        if ticks:
            now += ticks.pop()
            assert isinstance(client.tick(now), bytes)
    assert len(client.results) == 2
    assert client.done or client.next_deadline is not None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stage=st.integers(0, 2), data=st.one_of(chunks, tap_bytes),
       block_cuts=st.lists(st.integers(0, 30), max_size=4))
def test_terminal_never_raises_on_arbitrary_bytes(
        stage: int, data: list[bytes], block_cuts: list[int]) -> None:
    term = TapTerminal(password=None, known_ids={"1"}, max_block=64)
    prefix = [b"\r", b"\x1bPG1\r"][:stage]
    stream = [*prefix, *data]
    for cut in block_cuts:  # pieces of real blocks among the junk
        stream.insert(min(cut, len(stream)), HELLO_BLOCK[:cut])
    for i, chunk in enumerate(stream):
        assert isinstance(term.receive(chunk, float(i)), bytes)
        assert isinstance(term.tick(float(i) + 5), bytes)
    assert len(term._buf) <= 8192


# --- end to end: TCP on 127.0.0.1 and a socat pty pair ---------------------------------------

FAST = TapTimers(t1=0.1, t3=0.3)  # client: probes 0.1 s apart, 0.3 s for an answer
SIM_TIMERS = TapTimers(t4=2.0, t5=2.0)
PAGE = Page(responder="guard-1", incident="inc-42", tier=1, zone="B4-3F",
            text="FIRE B4 3F east corridor: smoke+heat, confirmed. Go.")
PAGER_ID = "1234567"


@dataclass
class Far:
    """The simulated terminal at the far end of one transport, and how to reach it."""

    transport: str
    sim: TapSimulator
    target: TapTarget

    async def send(self, page: Page = PAGE, **kw: Any) -> tuple[Delivery, float]:
        kw.setdefault("timers", FAST)
        kw.setdefault("retry_pause", 0.05)
        t0 = time.monotonic()
        delivery = await send_tap(self.target.port, self.target.host, self.target.tcp_port,
                                  9600, "000000", PAGER_ID, page, **kw)
        return delivery, time.monotonic() - t0


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def far_end(transport: str, tmp_path: Path, sim: TapSimulator) -> AsyncIterator[Far]:
    if transport == "tcp":
        async with TapTcpServer(sim, "127.0.0.1", free_port()) as server:
            yield Far("tcp", sim, TapTarget(host="127.0.0.1", tcp_port=server.port))
        return
    with PtyPair(tmp_path, "tap") as pair:
        pair.start()
        with TapSerialTerminal(sim, str(pair.device)):
            yield Far("pty", sim, TapTarget(port=str(pair.gateway)))


@pytest.fixture(params=["tcp", "pty"])
async def far(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Far]:
    sim = TapSimulator(password="000000", timers=SIM_TIMERS)
    async with far_end(request.param, tmp_path, sim) as end:
        yield end


async def test_e2e_page_accepted_within_a_second_with_correct_framing(far: Far) -> None:
    delivery, took = await far.send()
    assert delivery.ok, delivery.detail
    assert took < 1.0
    assert (delivery.channel, delivery.responder, delivery.incident) == ("tap", "guard-1",
                                                                         "inc-42")
    assert delivery.detail.startswith("211 Page(s) Sent Successfully")
    assert delivery.attempts == 1
    assert far.sim.pages == [(PAGER_ID, PAGE.text)]
    assert far.sim.blocks == blocks(PAGER_ID, PAGE.text)  # byte for byte as sent
    await until(lambda: far.sim.hangups == ["115 Goodbye"], 2, "the logout")


async def test_e2e_nak_is_resent_and_accepted(far: Far) -> None:
    far.sim.faults.nak_next = 1
    delivery, took = await far.send()
    assert delivery.ok, delivery.detail
    assert "2 block sends" in delivery.detail and delivery.attempts == 1
    assert [code for code, _ in far.sim.refused] == ["514"]
    assert far.sim.pages == [(PAGER_ID, PAGE.text)]
    assert took < 1.0


async def test_e2e_terminal_that_hangs_up_is_retried_then_reported_failed(far: Far) -> None:
    far.sim.faults.hang_up_at = "block"
    delivery, _ = await far.send(connect_retries=2)
    assert not delivery.ok
    assert delivery.attempts == 3
    assert delivery.detail.startswith("terminal sent ESC EOT: forced disconnect")
    await until(lambda: far.sim.hangups.count("hung up (fault)") == 3, 2, "three hang-ups")
    assert far.sim.pages == []


async def test_e2e_rs_fails_the_page_without_retrying(far: Far) -> None:
    far.sim.faults.rs_next = 1
    delivery, _ = await far.send(connect_retries=2)
    assert not delivery.ok
    assert delivery.detail.startswith("RS: abandoned: 511 ")
    assert delivery.attempts == 1  # a refusal is final: no second call
    assert far.sim.pages == [] and far.sim.faults.rs_next == 0
    await until(lambda: len(far.sim.hangups) >= 1, 2, "the logout")
    assert far.sim.hangups[0] == "115 Goodbye"


async def test_e2e_silent_terminal_fails_within_the_deadline(far: Far) -> None:
    far.sim.faults.silent = True
    delivery, took = await far.send(connect_retries=2, deadline=5.0)
    assert not delivery.ok and delivery.attempts == 3
    assert "no ID= after 3 probes" in delivery.detail
    assert took < 2.0  # 3 calls x 3 probes x 0.1 s, and the pauses


async def test_e2e_overall_deadline_bounds_a_slow_exchange(tmp_path: Path) -> None:
    sim = TapSimulator(faults=TapFaults(silent=True))
    async with far_end("tcp", tmp_path, sim) as end:
        delivery, took = await end.send(timers=TapTimers(t1=10.0), deadline=1.0)
    assert not delivery.ok and "deadline passed" in delivery.detail
    assert 0.9 < took < 1.5


async def test_e2e_batch_over_one_call_with_a_refused_page_and_a_long_one(
        tmp_path: Path) -> None:
    sim = TapSimulator(known_ids={"1111111", "3333333"})
    long_text = "Evacuate B4: " + "stairs A and C only, lifts off. " * 20
    pages = [("1111111", PAGE), ("2222222", PAGE),
             ("3333333", Page("vol-2", "inc-42", 2, "B4-3F", long_text))]
    async with far_end("tcp", tmp_path, sim) as end:
        out = await send_tap_batch(end.target, "", pages, timers=FAST)
    assert [d.ok for d in out] == [True, False, True]
    assert out[1].detail.startswith("RS: abandoned: 511")
    assert sim.pages == [("1111111", PAGE.text), ("3333333", page_text(long_text))]
    assert sim.calls == 1 and len(sim.blocks) == 1 + 1 + 3  # one call; the long page: 3 blocks


async def test_e2e_nothing_listening_and_bad_targets_never_raise() -> None:
    port = free_port()  # nobody listens there
    delivery, took = await Far("tcp", TapSimulator(),
                               TapTarget(host="127.0.0.1", tcp_port=port)).send()
    assert not delivery.ok and "cannot open" in delivery.detail and delivery.attempts == 3
    assert took < 1.0
    bad = await send_tap(None, None, None, 9600, "", "1", PAGE)
    assert not bad.ok and bad.detail.startswith("bad TAP target")
    assert target_from(10001, "127.0.0.1") == TapTarget(host="127.0.0.1", tcp_port=10001)
    missing = await send_tap("/dev/does-not-exist", None, None, 9600, "", "1", PAGE,
                             connect_retries=0)
    assert not missing.ok and "cannot open" in missing.detail


async def test_simulator_command_line_over_tcp() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "firmware_sim.tap_terminal", "--tcp", f"127.0.0.1:{port}",
        "--password", "000000", "--nak", "1", cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None and proc.stdout is not None
        line = await asyncio.wait_for(proc.stderr.readline(), 10)
        assert b"listening on 127.0.0.1:" in line
        delivery = await send_tap(port, "127.0.0.1", None, 9600, "000000", PAGER_ID, PAGE,
                                  timers=FAST)
        assert delivery.ok and "2 block sends" in delivery.detail
        printed = json.loads(await asyncio.wait_for(proc.stdout.readline(), 5))
        assert printed == {"pager_id": PAGER_ID, "text": PAGE.text}
    finally:
        if proc.returncode is None:
            proc.terminate()  # our child, by its PID
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0


# ---------------------------------------------- the site file's TAP keys reach the call

TAP_SITE = """
site: tap-keys
zones:
  - {id: z, building: b, floor: 1, polygon: [[0,0],[10,0],[10,10],[0,10]], worker: w-1}
devices:
  - {id: mcp-1, kind: manual, floor: 1, x: 1, y: 1}
responders:
  - {id: w-1, tier: 0}
  - {id: guard-1, tier: 1, pager: {type: tap, host: 127.0.0.1, port: PORT,
     pager_id: "1234567", EXTRA}}
tiers:
  - {tier: 1, ack_timeout_s: 60}
"""


async def _dispatch(port: int, extra: str) -> tuple[Delivery, float]:
    """Page guard-1 through PagerDispatch as the gateway does, with these pager keys."""
    from gateway.config import parse_site
    from gateway.metrics import Metrics
    from gateway.paging import PagerDispatch

    site = parse_site(TAP_SITE.replace("PORT", str(port)).replace("EXTRA", extra))
    got: list[Delivery] = []
    dispatch = PagerDispatch(site, lambda _k, _t, d, _u: got.append(d), Metrics(),
                             lambda _ids: None)
    page = Page(responder="guard-1", incident="inc-7", tier=1, zone="z",
                text="FIRE b z F1 smoke detector in the east stair, call the guard now",
                extra={"channel": "tap", "channel_index": 0})
    t0 = time.monotonic()
    dispatch.send(1, page.to_json())
    await until(lambda: bool(got), 30, "the delivery")
    await dispatch.close()
    return got[0], time.monotonic() - t0


async def test_site_file_max_chars_splits_the_page_into_blocks() -> None:
    sim = TapSimulator(password="000000", timers=SIM_TIMERS)
    async with TapTcpServer(sim, "127.0.0.1", free_port()) as server:
        delivery, _ = await _dispatch(server.port, "max_chars: 20")
    assert delivery.ok, delivery.detail
    text = "FIRE b z F1 smoke detector in the east stair, call the guard now"
    assert sim.pages == [("1234567", text)], "one page, whole, at the terminal"
    assert len(sim.blocks) >= 3 and sim.blocks == blocks("1234567", text, 20)


async def test_site_file_timers_give_up_on_a_silent_terminal_quickly() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # takes every CR probe, answers nothing
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        delivery, took = await _dispatch(port, "probe_s: 0.2, probes: 2, calls: 1")
    finally:
        server.close()
        await server.wait_closed()
    assert not delivery.ok and delivery.attempts == 1, delivery
    assert "after 2 probes" in delivery.detail, delivery.detail
    assert took < 2.0, f"{took:.2f} s: the defaults (3 calls of 3 probes 2 s apart) take ~19 s"
