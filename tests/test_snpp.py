"""SNPP pager channel: the sans-IO codec (alerting.snpp), its asyncio transport
(alerting.snpp_link), the simulated carrier (firmware_sim.snpp_server), and a
third-party server, Net::SNPP::Server from Debian's libnet-snpp-perl.

The transcripts are the fact sheet's (protocols/pagers.md §2.4): the minimal level-1
session and RFC 1861's two-way example, replayed byte for byte through the client
machine. Hypothesis feeds arbitrary bytes to the reply parser and the machines, which
may raise only SnppError. The end-to-end tests use real TCP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerting.page import Page
from alerting.snpp import (
    ACK,
    DECLINE,
    DELIVERED,
    EXPIRED,
    FAILED,
    KILLED,
    MAX_LINE,
    MESS_MAX,
    NO_TEXT,
    ON_SCENE,
    READ,
    UNKNOWN,
    UNKNOWN_TAG,
    WAITING,
    KtagKill,
    LineReader,
    MstaPoll,
    Plan,
    Reply,
    ReplyParser,
    SnppClient,
    SnppError,
    clean_text,
    encode_command,
    encode_data,
    encode_reply,
    parse_command,
    parse_msta,
    parse_reply,
    unstuff_line,
)
from alerting.snpp_link import kill_snpp, poll_snpp, send_snpp
from firmware_sim.lab import free_port
from firmware_sim.snpp_server import Session, SnppServer

HERE = Path(__file__).resolve().parent
PAGER = "5550003"


def page(text: str = "FIRE B2-3F smoke, confirm") -> Page:
    return Page(responder="squad-3", incident="inc-0001", tier=2, zone="B2-3F", text=text)


def transcript(machine: SnppClient | MstaPoll, replies: list[str]) -> list[bytes]:
    """Feed the server's reply lines one at a time; collect what the client sends."""
    return [machine.receive(line.encode() + b"\r\n") for line in replies]


# ---------------------------------------------------------------------------- reply parser


def test_reply_parser_handles_continuation_bare_lf_and_any_chunking() -> None:
    stream = b"220-SNPP Gateway\r\n220 Ready\n250 OK\r\n214\r\n"
    expected = [Reply(220, "SNPP Gateway", True), Reply(220, "Ready"), Reply(250, "OK"),
                Reply(214, "")]
    assert ReplyParser().feed(stream) == expected
    parser = ReplyParser()
    got = [r for b in stream for r in parser.feed(bytes([b]))]  # one byte at a time
    assert got == expected


def test_reply_line_limit_is_1_kib_and_named_in_the_error() -> None:
    ok = b"250 " + b"x" * (MAX_LINE - 4)
    assert ReplyParser().feed(ok + b"\r\n")[0].code == 250
    with pytest.raises(SnppError, match="1024-byte"):
        ReplyParser().feed(ok + b"x\r\n")
    reader = LineReader()  # refused before the terminator arrives: memory stays bounded
    with pytest.raises(SnppError, match="line length limit"):
        reader.feed(b"2" * 2000)
    with pytest.raises(SnppError):  # and stays refused: framing is lost
        reader.feed(b"250 OK\r\n")


@pytest.mark.parametrize("line", [b"", b"25", b"2x0 OK", b"250:OK", b"OK 250", b"\xff\xfe0 a"])
def test_parse_reply_rejects_what_is_not_a_reply(line: bytes) -> None:
    with pytest.raises(SnppError, match="not an SNPP reply"):
        parse_reply(line)


def test_encoders_refuse_what_cannot_be_one_line() -> None:
    assert encode_command("PAGE", "5551212") == b"PAGE 5551212\r\n"
    with pytest.raises(SnppError, match="line break"):
        encode_command("MESS", "two\r\nSEND")
    with pytest.raises(SnppError, match="1024"):
        encode_command("MESS", "x" * MAX_LINE)
    assert encode_reply(250, "Message OK") == b"250 Message OK\r\n"
    assert encode_reply(214, "more", more=True) == b"214-more\r\n"
    with pytest.raises(SnppError):
        encode_reply(1000, "x")
    with pytest.raises(SnppError, match="pager id"):
        Plan(pager_id="555 1212", text="x")


def test_text_is_cleaned_and_dot_stuffed() -> None:
    assert clean_text("\r\n  a\tb\x07c  \r\n\r\nd\r\n\n") == ["  a b c", "", "d"]
    assert clean_text(" \n\n") == [NO_TEXT]
    body = encode_data(["line1", ".hidden", ".", "", "end"])
    assert body == b"line1\r\n..hidden\r\n..\r\n\r\nend\r\n.\r\n"
    assert unstuff_line(b"..hidden") == b".hidden"
    long = encode_data(["y" * 2500])  # wrapped under the line limit, nothing lost
    assert all(len(line) <= 1000 for line in long.split(b"\r\n"))
    assert long.replace(b"\r\n", b"").rstrip(b".") == b"y" * 2500


# ---------------------------------------------------------------------------- client vectors


def test_minimal_session_vector() -> None:
    """Fact sheet §2.4 / RFC 1861 §4.1.1, byte for byte."""
    client = SnppClient(Plan(pager_id="5551212", text="Your network is hosed", two_way=False))
    sent = transcript(client, ["220 SNPP Gateway Ready", "250 Pager ID Accepted",
                               "250 Message OK", "250 Message Sent OK", "221 OK, Goodbye"])
    assert sent == [b"PAGE 5551212\r\n", b"MESS Your network is hosed\r\n", b"SEND\r\n",
                    b"QUIT\r\n", b""]
    assert client.finished and client.outcome is not None
    assert client.outcome.accepted and client.outcome.detail == "250 Message Sent OK"
    assert client.outcome.codes == (220, 250, 250, 250)
    assert client.codes == (220, 250, 250, 250, 221)
    assert client.outcome.tag is None and not client.outcome.two_way


def test_data_variant_for_multi_line_text() -> None:
    client = SnppClient(Plan(pager_id="5551212", text="line1\n.line2", two_way=False))
    sent = transcript(client, ["220 Ready", "250 Pager ID Accepted",
                               "354 Begin Input; End with <CRLF>'.'<CRLF>", "250 Message OK",
                               "250 Message Sent OK", "221 Bye"])
    assert sent == [b"PAGE 5551212\r\n", b"DATA\r\n", b"line1\r\n..line2\r\n.\r\n",
                    b"SEND\r\n", b"QUIT\r\n", b""]
    assert client.outcome is not None and client.outcome.accepted


def test_long_single_line_goes_by_data() -> None:
    client = SnppClient(Plan(pager_id="1", text="z" * (MESS_MAX + 1), two_way=False))
    assert transcript(client, ["220 Ready", "250 OK"])[1] == b"DATA\r\n"


def test_two_way_example_vector() -> None:
    """RFC 1861 §4.1.3, as firegrid runs it (queueing allowed, so no NOQU)."""
    client = SnppClient(Plan(pager_id=PAGER, text="FIRE B2-3F"))
    sent = transcript(client, [
        "220 SNPP Gateway Ready", "250 OK, Beginning 2-Way Transaction",
        "850 5550003 Online and Accepted", "250 Read Ack Accepted", "250 Reply Type OK",
        "250 Response Added", "250 Response Added", "250 Response Added", "250 Message OK",
        "860 00321 1234 Delivered, Awaiting Read Confirmation", "221 OK, Goodbye"])
    assert sent == [b"2WAY\r\n", b"PAGE 5550003\r\n", b"ACKR 1\r\n", b"RTYP MULTICHOICE\r\n",
                    b"MCRE 01 Ack\r\n", b"MCRE 02 Decline\r\n", b"MCRE 03 On scene\r\n",
                    b"MESS FIRE B2-3F\r\n", b"SEND\r\n", b"QUIT\r\n", b""]
    out = client.outcome
    assert out is not None and out.accepted and out.two_way and not out.fallback
    assert out.tag == ("00321", "1234")
    assert out.detail.startswith("860 00321 1234")


@pytest.mark.parametrize("send_reply, tag", [
    ("960 77 5 OK, Message QUEUED for Delivery", ("77", "5")),
    ("880 Delivered", None),  # accepted, but nothing to poll with
    ("250 Message Sent", None),  # the server ignored the two-way request
])
def test_two_way_send_replies(send_reply: str, tag: tuple[str, str] | None) -> None:
    client = SnppClient(Plan(pager_id=PAGER, text="x"))
    sent = transcript(client, ["220 Ready", *["250 OK"] * 8, send_reply])
    assert sent[-1] == b"QUIT\r\n"
    assert client.outcome is not None and client.outcome.accepted
    assert client.outcome.tag == tag


def test_level2_server_500_to_2way_falls_back_without_reset() -> None:
    client = SnppClient(Plan(pager_id=PAGER, text="x"))
    sent = transcript(client, ["220 Ready", "500 Command Not Implemented", "250 Pager ID Accepted",
                               "250 Message OK", "250 Message Sent OK"])
    assert sent == [b"2WAY\r\n", b"PAGE 5550003\r\n", b"MESS x\r\n", b"SEND\r\n", b"QUIT\r\n"]
    out = client.outcome
    assert out is not None and out.accepted and out.tag is None and not out.two_way
    assert out.fallback == "500 Command Not Implemented (to 2WAY)"


@pytest.mark.parametrize("refused_at", range(1, 7))
def test_refused_two_way_step_resets_and_pages_one_way(refused_at: int) -> None:
    """Any refusal in the preamble (PAGE 550: not two-way capable, ACKR 500…)."""
    client = SnppClient(Plan(pager_id=PAGER, text="x"))
    replies = ["220 Ready", *["250 OK"] * refused_at, "550 Not 2-way capable"]
    sent = transcript(client, replies)
    assert sent[-1] == b"RESE\r\n"
    sent = transcript(client, ["250 RESET OK", "250 OK", "250 OK", "250 Sent"])
    assert sent == [b"PAGE 5550003\r\n", b"MESS x\r\n", b"SEND\r\n", b"QUIT\r\n"]
    assert client.outcome is not None and client.outcome.accepted
    assert "550 Not 2-way capable" in client.outcome.fallback


def test_level1_server_without_data_gets_the_text_on_one_line() -> None:
    client = SnppClient(Plan(pager_id="1", text="FIRE\nB2-3F", two_way=False))
    sent = transcript(client, ["220 Ready", "250 OK", "500 Command Not Implemented", "250 OK",
                               "250 Sent"])
    assert sent == [b"PAGE 1\r\n", b"DATA\r\n", b"MESS FIRE / B2-3F\r\n", b"SEND\r\n",
                    b"QUIT\r\n"]


def test_refusals_fail_the_page_and_name_the_reply() -> None:
    client = SnppClient(Plan(pager_id="1", text="x", two_way=False))
    sent = transcript(client, ["220 Ready", "550 Error, Invalid Pager ID", "221 Bye"])
    assert sent == [b"PAGE 1\r\n", b"QUIT\r\n", b""]
    assert client.outcome is not None and not client.outcome.accepted
    assert client.outcome.detail == "550 Error, Invalid Pager ID (to PAGE)"

    client = SnppClient(Plan(pager_id="1", text="x", two_way=False))  # 421: server closes
    sent = transcript(client, ["220 Ready", "250 OK", "421 Too Many Errors, Goodbye"])
    assert sent == [b"PAGE 1\r\n", b"MESS x\r\n", b""] and client.finished
    assert client.outcome is not None and client.outcome.detail.startswith("421")

    client = SnppClient(Plan(pager_id="1", text="x", two_way=False))
    assert transcript(client, ["500 who are you"]) == [b"QUIT\r\n"]
    assert client.outcome is not None and "expected 220" in client.outcome.detail

    client = SnppClient(Plan(pager_id="1", text="x", two_way=False))  # hang-up mid-session
    transcript(client, ["220 Ready"])
    assert client.receive(b"") == b"" and client.finished
    assert client.outcome is not None and not client.outcome.accepted
    assert "reply to PAGE" in client.outcome.detail


def test_client_protocol_error_is_recorded_then_raised() -> None:
    client = SnppClient(Plan(pager_id="1", text="x"))
    with pytest.raises(SnppError):
        client.receive(b"HTTP/1.1 400 Bad Request\r\n")
    assert client.finished and client.outcome is not None and not client.outcome.accepted
    assert client.receive(b"250 OK\r\n") == b""


# ---------------------------------------------------------------------------- MSTA


@pytest.mark.parametrize("line, status", [
    ("860 00001 260115093000+8 Delivered, Awaiting Read Confirmation", WAITING),
    ("861 00001 260115093000 Awaiting Reply", WAITING),
    ("960 00001 260115093000+0 Queued", WAITING),
    ("870 00001 260115093000 Read, Awaiting Reply", READ),
    ("880 00001 260115093000 Delivered", DELIVERED),
    ("881 00001 260115093000 Delivered and Read", ACK),
    ("888 00001 260115093000+8 01 Ack", ACK),
    ("888 00001 260115093000 +8 02 Decline", DECLINE),
    ("888 00001 20260115093000-5 03 On scene", ON_SCENE),
    ("888 03", ON_SCENE),
    ("888 00001 260115093000 09 Other", UNKNOWN),
    ("888", UNKNOWN),
    ("889 00001 260115093000 OK!", ACK),
    ("889 00001 260115093000 yes", ACK),
    ("889 00001 260115093000 No", DECLINE),
    ("889 00001 260115093000 On  Scene", ON_SCENE),
    ("889 00001 260115093000 on-scene", ON_SCENE),
    ("889 00001 260115093000 call me", UNKNOWN),
    ("780 00001 260115093000 Expired", EXPIRED),
    ("550 Error, Invalid Message Tag or Pass Code", UNKNOWN_TAG),
    ("500 Command Not Implemented", FAILED),
    ("554 Technical failure", FAILED),
])
def test_parse_msta(line: str, status: str) -> None:
    assert parse_msta(parse_reply(line.encode())) == status


def test_msta_poll_vector() -> None:
    poll = MstaPoll("00321", "1234")
    sent = transcript(poll, ["220 SNPP Gateway Ready", "888 00001 260115093000+8 01 Ack",
                             "221 OK, Goodbye"])
    assert sent == [b"MSTA 00321 1234\r\n", b"QUIT\r\n", b""]
    assert poll.status == ACK and poll.finished and poll.codes == (220, 888, 221)

    poll = MstaPoll("1", "2")
    assert transcript(poll, ["421 Service not available"]) == [b""]
    assert poll.status == FAILED and poll.finished
    with pytest.raises(SnppError, match="message tag"):
        MstaPoll("a b", "1")


def test_ktag_kill_vector() -> None:
    kill = KtagKill("00321", "1234")
    sent = transcript(kill, ["220 SNPP Gateway Ready", "250 Message Tag Killed",
                             "221 OK, Goodbye"])
    assert sent == [b"KTAG 00321 1234\r\n", b"QUIT\r\n", b""]
    assert kill.status == KILLED and kill.finished
    kill = KtagKill("1", "2")
    transcript(kill, ["220 SNPP Gateway Ready", "550 Error, Invalid Message Tag",
                      "221 OK, Goodbye"])
    assert kill.status == UNKNOWN_TAG
    kill = KtagKill("1", "2")
    transcript(kill, ["220 SNPP Gateway Ready", "500 Command Not Implemented",
                      "221 OK, Goodbye"])
    assert kill.status == FAILED


# ---------------------------------------------------------------------------- server session


def session_run(session: Session, lines: list[bytes]) -> list[str]:
    out = session.receive(b"".join(line + b"\r\n" for line in lines)).decode()
    return [line for line in out.split("\r\n") if line]


def test_simulator_session_rules() -> None:
    server = SnppServer()
    s = Session(server)
    assert s.greeting().startswith(b"220 ")
    replies = session_run(s, [b"page 5551212", b"DATA", b"line1", b"..dot", b".",
                              b"MESS again", b"SEND"])
    assert [r[:3] for r in replies] == ["250", "354", "250", "503", "250"]
    assert server.pages[0].text == "line1\n.dot" and server.pages[0].pager_id == "5551212"
    replies = session_run(s, [b"PAGE 1", b"2WAY", b"RESE", b"MCRE 01 Ack", b"2WAY",
                              b"MCRE 01 Ack", b"MCRE 01 Again", b"RTYP BOGUS", b"SEND",
                              b"MSTA 1 2", b"KTAG", b"XYZZY", b"", b"HELP", b"QUIT"])
    assert [r[:3] for r in replies] == ["250", "550", "250", "550", "250", "250", "502", "550",
                                        "503", "550", "550", "500", "500", "214", "214",
                                        "214", "250", "221"]
    assert s.closing


def test_simulator_session_two_way_and_line_limit() -> None:
    server = SnppServer()
    s = Session(server)
    replies = session_run(s, [b"2WAY", b"PAGE 5550003", b"ACKR 1", b"RTYP MULTICHOICE",
                              b"MCRE 01 Ack", b"MESS fire", b"SEND"])
    assert replies[1].startswith("850") and replies[-1].startswith("860 ")
    tag, pass_code = replies[-1].split()[1:3]
    assert server.pages[0].tag == (tag, pass_code) and server.pages[0].responses == {"01": "Ack"}
    server.reply(tag, "02")
    msta = session_run(s, [f"MSTA {tag} {pass_code}".encode()])[0]
    assert msta.startswith("888 ") and parse_msta(parse_reply(msta.encode())) == DECLINE
    assert session_run(s, [f"MSTA {tag} 9999x".encode()])[0].startswith("550")
    assert session_run(s, [b"x" * 1100])[0].startswith("421") and s.closing


# ---------------------------------------------------------------------------- hypothesis

_CODES = [214, 220, 221, 250, 354, 421, 500, 502, 503, 550, 554, 750, 780, 850, 860, 861,
          870, 880, 881, 888, 889, 950, 960, 0, 999]
_plausible_line = st.builds(
    lambda code, sep, words: f"{code:03d}{sep}{' '.join(words)}\r\n".encode(),
    st.sampled_from(_CODES), st.sampled_from([" ", "-", "\t", ""]),
    st.lists(st.text(alphabet="0123456789 abAck+-\x00é.", max_size=14), max_size=4))
_chunks = st.lists(st.one_of(st.binary(max_size=300), _plausible_line), max_size=25)
_fuzz = settings(max_examples=300, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


@_fuzz
@given(st.binary(max_size=3000))
def test_reply_parser_fuzz_raises_only_snpp_error(data: bytes) -> None:
    try:
        for reply in ReplyParser().feed(data):
            assert 0 <= reply.code <= 999 and "\n" not in reply.text
    except SnppError:
        pass


@_fuzz
@given(_chunks, st.booleans(), st.sampled_from(["x", "a\nb", "." * 300]))
def test_client_machines_fuzz_raise_only_snpp_error(chunks: list[bytes], two_way: bool,
                                                    text: str) -> None:
    client = SnppClient(Plan(pager_id=PAGER, text=text, two_way=two_way))
    poll = MstaPoll("00321", "1234")
    for machine in (client, poll):
        try:
            for chunk in [*chunks, b""]:
                out = machine.receive(chunk)
                assert isinstance(out, bytes)
        except SnppError:
            assert machine.finished
        if machine.finished:
            assert machine.decided
    if client.outcome is not None and client.outcome.tag is not None:
        assert all(" " not in t for t in client.outcome.tag)


@_fuzz
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40),
                min_size=1, max_size=8))
def test_data_round_trip_through_simulator_session(lines: list[str]) -> None:
    """What encode_data sends, the simulator's session reads back as the cleaned text."""
    wanted = clean_text("\n".join(lines))
    server = SnppServer()
    s = Session(server)
    s.receive(b"PAGE 1\r\nDATA\r\n" + encode_data(wanted) + b"SEND\r\n")
    if "\n".join(wanted).strip():
        assert server.pages[0].text == "\n".join(wanted).strip("\n")


@_fuzz
@given(st.binary(max_size=2000))
def test_simulator_session_fuzz_never_raises(data: bytes) -> None:
    s = Session(SnppServer())
    s.receive(data)
    s.receive(b"\r\nQUIT\r\n")


def test_parse_command_is_lenient() -> None:
    assert parse_command(b"pager 5551212 extra") == parse_command(b"PAGE\t5551212 extra")
    assert parse_command(b"MESSage  two  spaces").arg == "two  spaces"
    assert parse_command(b"   ").verb == ""


# ---------------------------------------------------------------------------- end to end


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[SnppServer]:
    async with SnppServer(port=free_port()) as server:
        yield server


async def test_one_way_page_accepted_within_a_second(sim: SnppServer) -> None:
    started = time.monotonic()
    d = await send_snpp("127.0.0.1", sim.port, PAGER, page(), two_way=False)
    assert time.monotonic() - started < 1.0
    assert d.ok and d.channel == "snpp" and d.detail.startswith("250")
    assert (d.responder, d.incident, d.tag) == ("squad-3", "inc-0001", None)
    assert [(p.pager_id, p.text, p.two_way) for p in sim.pages] == [
        (PAGER, "FIRE B2-3F smoke, confirm", False)]


async def test_multi_line_page_goes_by_data(sim: SnppServer) -> None:
    text = "FIRE B2-3F\n.smoke and heat\n火警 二号楼"
    d = await send_snpp("127.0.0.1", sim.port, PAGER, page(text))
    assert d.ok and d.tag is not None
    assert sim.pages[0].text == text


@pytest.mark.parametrize("code, status", [("01", "ack"), ("02", "decline"),
                                          ("03", "on_scene")])
async def test_two_way_page_reply_is_polled(sim: SnppServer, code: str, status: str) -> None:
    d = await send_snpp("127.0.0.1", sim.port, PAGER, page())
    assert d.ok and d.tag is not None and d.detail.startswith("860")
    p = sim.pages[0]
    assert p.two_way and p.ack_read and p.reply_type == "MULTICHOICE"
    assert p.responses == {"01": "Ack", "02": "Decline", "03": "On scene"}
    assert await poll_snpp("127.0.0.1", sim.port, d.tag) is None  # nothing yet
    sim.reply(d.tag, code)
    assert await poll_snpp("127.0.0.1", sim.port, d.tag) == status


async def test_poll_text_reply_read_receipt_and_expiry(sim: SnppServer) -> None:
    tags = [(await send_snpp("127.0.0.1", sim.port, PAGER, page())).tag for _ in range(4)]
    assert all(t is not None for t in tags) and len({t for t in tags}) == 4
    a, b, c, d = (t for t in tags if t is not None)
    sim.reply_text(a, "On scene")
    sim.read(b)
    sim.expire(c)
    sim.tags.pop(d[0])  # as after KTAG: the server no longer knows it
    assert [await poll_snpp("127.0.0.1", sim.port, t) for t in (a, b, c, d)] == [
        "on_scene", "ack", "expired", "expired"]
    assert await poll_snpp("127.0.0.1", sim.port, (a[0], "0000")) == "expired"  # wrong pass


async def test_ktag_makes_the_server_forget_the_page(sim: SnppServer) -> None:
    sim.offline.add(PAGER)  # queued for a pager out of range: the carrier would retry it
    d = await send_snpp("127.0.0.1", sim.port, PAGER, page())
    assert d.tag is not None and d.tag[0] in sim.tags
    assert await kill_snpp("127.0.0.1", sim.port, d.tag) == "killed"
    assert d.tag[0] not in sim.tags
    assert await poll_snpp("127.0.0.1", sim.port, d.tag) == "expired"
    assert await kill_snpp("127.0.0.1", sim.port, d.tag) == "unknown_tag"


async def test_offline_pager_is_queued_and_polls_as_waiting(sim: SnppServer) -> None:
    sim.offline.add(PAGER)
    d = await send_snpp("127.0.0.1", sim.port, PAGER, page())
    assert d.ok and d.tag is not None and d.detail.startswith("960")
    assert await poll_snpp("127.0.0.1", sim.port, d.tag) is None


async def test_server_550_fails_the_page_naming_550(sim: SnppServer) -> None:
    sim.mode = "reject"
    d = await send_snpp("127.0.0.1", sim.port, PAGER, page())
    assert not d.ok and d.detail.startswith("550") and "Invalid Pager ID" in d.detail
    assert sim.pages == []


async def test_server_554_on_send_fails_the_page(sim: SnppServer) -> None:
    sim.mode = "fail"
    d = await send_snpp("127.0.0.1", sim.port, PAGER, page(), two_way=False)
    assert not d.ok and d.detail.startswith("554") and "(to SEND)" in d.detail


async def test_421_hang_up_fails_the_page(sim: SnppServer) -> None:
    sim.mode = "hangup"
    d = await send_snpp("127.0.0.1", sim.port, PAGER, page())
    assert not d.ok and d.detail.startswith("421")


async def test_silent_server_fails_within_the_deadline(sim: SnppServer) -> None:
    sim.mode = "silent"
    started = time.monotonic()
    d = await send_snpp("127.0.0.1", sim.port, PAGER, page(), deadline_s=0.5)
    assert time.monotonic() - started < 1.0
    assert not d.ok and "0.5 s" in d.detail and "220 greeting" in d.detail
    started = time.monotonic()
    assert await poll_snpp("127.0.0.1", sim.port, ("1", "2"), deadline_s=0.3) is None
    assert time.monotonic() - started < 0.8


async def test_level2_server_gets_a_one_way_page(sim: SnppServer) -> None:
    sim.mode = "level2"
    d = await send_snpp("127.0.0.1", sim.port, PAGER, page())
    assert d.ok and d.tag is None and "one-way after 500" in d.detail
    assert [(p.pager_id, p.two_way) for p in sim.pages] == [(PAGER, False)]


async def test_level1_server_gets_multi_line_text_on_one_line(sim: SnppServer) -> None:
    sim.mode = "level1"
    d = await send_snpp("127.0.0.1", sim.port, PAGER, page("FIRE\nB2-3F"))
    assert d.ok and sim.pages[0].text == "FIRE / B2-3F"


async def test_no_server_and_bad_pager_id_fail_without_raising() -> None:
    port = free_port()
    d = await send_snpp("127.0.0.1", port, PAGER, page(), deadline_s=2)
    assert not d.ok and "cannot connect" in d.detail
    d = await send_snpp("127.0.0.1", port, "", page())
    assert not d.ok and "pager id" in d.detail
    assert await poll_snpp("127.0.0.1", port, ("1", "2"), deadline_s=2) is None


async def test_simulator_command_line_with_auto_reply() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "firmware_sim.snpp_server", "--listen", f"127.0.0.1:{port}",
        "--auto-reply", "03", "--after", "0", cwd=HERE.parent,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = await asyncio.wait_for(proc.stderr.readline(), 10)
        assert b"SNPP simulator on" in line
        d = await send_snpp("127.0.0.1", port, PAGER, page())
        assert d.ok and d.tag is not None
        assert await poll_snpp("127.0.0.1", port, d.tag) == "on_scene"
        printed = json.loads(await asyncio.wait_for(proc.stdout.readline(), 5))
        assert printed["pager_id"] == PAGER and printed["tag"] == list(d.tag)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 5)


# ---------------------------------------------------------------------------- Net::SNPP::Server


def _have_net_snpp() -> bool:
    return shutil.which("perl") is not None and subprocess.run(
        ["perl", "-MNet::SNPP::Server", "-MJSON::PP", "-e", "1"],
        capture_output=True, check=False).returncode == 0


class PerlServer:
    """tests/snpp_server.pl in a child process; reads the pages it prints."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc, self.port = proc, port

    async def next_page(self, timeout_s: float = 5.0) -> dict[str, object]:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
            assert line, "snpp_server.pl exited"
            event = json.loads(line)
            if event["event"] == "page":
                return dict(event)


@pytest_asyncio.fixture
async def net_snpp() -> AsyncIterator[PerlServer]:
    # setup.sh installs it; a missing module is a failed set-up, not a test to skip
    assert _have_net_snpp(), "Net::SNPP::Server missing: apt-get install -y libnet-snpp-perl"
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "perl", str(HERE / "snpp_server.pl"), str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
        assert ready == {"event": "ready", "port": port}
        yield PerlServer(proc, port)
    finally:
        if proc.returncode is None:
            proc.terminate()  # by PID: this is the child we started
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_net_snpp_server_two_way_request_falls_back_to_one_way(
        net_snpp: PerlServer) -> None:
    """Net::SNPP::Server takes 2WAY but answers ACKR with 500 (and has no MSTA), so the
    page goes one-way, and arrives."""
    d = await send_snpp("127.0.0.1", net_snpp.port, PAGER, page("FIRE B2-3F 火警 confirm"))
    assert d.ok and d.tag is None
    assert d.detail.startswith("250") and "500" in d.detail and "ACKR" in d.detail
    got = await net_snpp.next_page()
    assert (got["pager"], got["message"], got["two_way"]) == (PAGER, "FIRE B2-3F 火警 confirm", 0)


async def test_net_snpp_server_one_way_data_is_unstuffed(net_snpp: PerlServer) -> None:
    d = await send_snpp("127.0.0.1", net_snpp.port, PAGER, page("FIRE\n.B2-3F\nsmoke"),
                        two_way=False)
    assert d.ok and d.detail.startswith("250")
    got = await net_snpp.next_page()
    assert got["pager"] == PAGER
    assert str(got["message"]).rstrip("\n") == "FIRE\n.B2-3F\nsmoke"


async def test_net_snpp_server_rejects_short_pager_id(net_snpp: PerlServer) -> None:
    """Its default validation wants 7+ digits: the 550 reaches the Delivery."""
    d = await send_snpp("127.0.0.1", net_snpp.port, "555", page(), two_way=False)
    assert not d.ok and d.detail.startswith("550")
