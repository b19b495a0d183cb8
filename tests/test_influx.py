"""gateway.influx against a real influxd, plus the lab servers themselves.

Line-protocol escaping is checked twice: as text (fast, exact expectations) and by a
round trip through the real server, because InfluxDB's escaping rules are irregular
(a backslash before a delimiter, a trailing backslash, newlines) and only the server
can say what it stores.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiomqtt
import pytest

from firmware_sim.lab import InfluxDB, Mosquitto, free_port
from gateway.influx import (
    InfluxClient,
    InfluxQueryError,
    InfluxTarget,
    InfluxUnreachable,
    InfluxWriteError,
    escape_field_str,
    escape_tag,
    format_point,
)

T0 = 1_700_000_000_000_000_000  # a fixed instant, in ns


# --- line protocol as text -----------------------------------------------------------


def test_escape_tag_delimiters() -> None:
    assert escape_tag("plain-id_1") == "plain-id_1"
    assert escape_tag("a b,c=d") == r"a\ b\,c\=d"
    assert escape_tag("line1\nline2") == r"line1\nline2"  # never a raw newline


def test_escape_field_str_quotes_and_backslashes() -> None:
    assert escape_field_str('say "hi"') == r"say \"hi\""
    assert escape_field_str("C:\\fire\\") == r"C:\\fire\\"


def test_format_point_shape() -> None:
    line = format_point(
        "incident_step",
        {"stage": "located", "site": "taibai a", "zone": "", "incident": "i,1"},
        {"elapsed_s": 1.5, "floor": 3, "ok": True, "by": 'w "7"', "skip": None},
        T0,
    )
    # tags sorted by key, empty tag omitted, None field skipped, ints with i
    assert line == (
        r"incident_step,incident=i\,1,site=taibai\ a,stage=located "
        r'elapsed_s=1.5,floor=3i,ok=true,by="w \"7\"" 1700000000000000000'
    )


def test_format_point_measurement_and_field_key_escaping() -> None:
    line = format_point("m x,y", {"k=1": "v"}, {"f k": 1.0}, 1)
    assert line == r"m\ x\,y,k\=1=v f\ k=1.0 1"


@pytest.mark.parametrize(
    "value", [0.1, 1 / 3, -0.0, 1e16, 1e-300, 5e-324, 123456789.12345679, 2.5e-7]
)
def test_format_point_float_round_trip(value: float) -> None:
    line = format_point("m", {}, {"v": value}, 1)
    text = line.split(" ")[1].removeprefix("v=")
    assert float(text) == value
    assert str(float(text)) == str(value)  # keeps the sign of -0.0 too


def test_format_point_rejects_unstorable_values() -> None:
    with pytest.raises(ValueError, match="no fields"):
        format_point("m", {"a": "b"}, {"x": None}, 1)
    with pytest.raises(ValueError, match="NaN"):
        format_point("m", {}, {"x": float("nan")}, 1)
    with pytest.raises(ValueError, match="64-bit"):
        format_point("m", {}, {"x": 2**63}, 1)


# --- target URLs ---------------------------------------------------------------------


def test_parse_target_with_credentials_and_token() -> None:
    t = InfluxTarget.parse("http://alice:s3cr%40t@127.0.0.1:8086/firegrid")
    assert (t.base_url, t.database, t.username, t.password, t.token) == (
        "http://127.0.0.1:8086",
        "firegrid",
        "alice",
        "s3cr@t",
        None,
    )
    assert "s3cr" not in t.redacted() and "s3cr" not in repr(t)
    t2 = InfluxTarget.parse("https://influx.example:8443/fire_grid-2?token=abc")
    assert t2.base_url == "https://influx.example:8443"
    assert t2.database == "fire_grid-2" and t2.token == "abc"
    assert "abc" not in t2.redacted()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://alice:hunter2@127.0.0.1:8086", "database is missing"),
        ("http://alice:hunter2@127.0.0.1:8086/", "database is missing"),
        ("mqtt://alice:hunter2@127.0.0.1:8086/db", "scheme must be http or https"),
        ("127.0.0.1:8086/db", "scheme must be http or https"),
        ("http://alice:hunter2@127.0.0.1:80x6/db", "host/port"),
        ("http://alice:hunter2@127.0.0.1:8086/a/b", "must match"),
        ("http://alice:hunter2@127.0.0.1:8086/fire grid", "must match"),
        ("http://alice:hunter2@127.0.0.1:8086/db?tokn=hunter2", "unknown query parameter"),
        ("http://alice:hunter2/x@127.0.0.1:8086/db", "host/port"),  # unencoded "/"
    ],
)
def test_parse_target_errors_name_the_problem_not_the_password(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        InfluxTarget.parse(url)
    assert "hunter2" not in str(info.value)
    assert info.value.__cause__ is None  # no chained error quoting part of the URL
    assert info.value.__context__ is None or info.value.__suppress_context__


# --- against the real influxd --------------------------------------------------------


@pytest.fixture
async def client(influxdb: InfluxDB) -> AsyncIterator[InfluxClient]:
    """A client on a fresh database of the shared server."""
    target = InfluxTarget.parse(influxdb.url(f"t_{uuid.uuid4().hex[:12]}"))
    async with InfluxClient(target, timeout_s=5) as c:
        await c.ping()
        await c.ensure_database()
        await c.ensure_database()  # idempotent
        yield c


async def test_write_and_query_exact_points(client: InfluxClient) -> None:
    lines = [
        format_point("step", {"site": "s1", "stage": "detected"}, {"elapsed_s": 0.1}, T0 + 1),
        format_point(
            "step",
            {"site": "s1", "stage": "located"},
            {"elapsed_s": 1 / 3, "floor": 3, "by": 'he said "ok"'},
            T0 + 2,
        ),
        format_point("step", {"site": "s1", "stage": "paged"}, {"elapsed_s": 12.0}, T0 + 999),
    ]
    await client.write_lines(lines)
    series = await client.query(
        'SELECT "elapsed_s", "floor", "by", "stage" FROM "step" ORDER BY time', epoch="ns"
    )
    assert len(series) == 1 and series[0]["name"] == "step"
    assert series[0]["tags"] == {}
    assert series[0]["columns"] == ["time", "elapsed_s", "floor", "by", "stage"]
    assert series[0]["values"] == [
        [T0 + 1, 0.1, None, None, "detected"],
        [T0 + 2, 1 / 3, 3, 'he said "ok"', "located"],
        [T0 + 999, 12.0, None, None, "paged"],
    ]
    grouped = await client.query('SELECT count("elapsed_s") FROM "step" GROUP BY "stage"')
    assert {s["tags"]["stage"]: s["values"][0][1] for s in grouped} == {
        "detected": 1,
        "located": 1,
        "paged": 1,
    }
    assert await client.query('SELECT * FROM "nothing_here"') == []


async def test_nasty_strings_round_trip_through_the_server(client: InfluxClient) -> None:
    zone = "B2 3F, east=wing"
    device = r"dev\01 a"  # backslash followed by an escaped delimiter
    text = 'quote " backslash \\ newline \n end\\'
    lines = [
        format_point("m", {"k": "before"}, {"v": 1}, T0),
        format_point("m", {"k": "nasty", "zone": zone, "device": device}, {"s": text}, T0 + 1),
        format_point("m", {"k": "after"}, {"v": 2}, T0 + 2),
    ]
    await client.write_lines(lines)
    series = await client.query(
        'SELECT "k", "zone", "device", "s", "v" FROM "m" ORDER BY time', epoch="ns"
    )
    assert series[0]["values"] == [
        [T0, "before", None, None, None, 1],
        [T0 + 1, "nasty", zone, device, text, None],
        [T0 + 2, "after", None, None, None, 2],
    ]


async def test_same_series_and_timestamp_is_stored_once(client: InfluxClient) -> None:
    line = format_point("step", {"incident": "i1", "stage": "acked"}, {"elapsed_s": 4.0}, T0)
    await client.write_lines([line])
    await client.write_lines([line, line])
    series = await client.query('SELECT count("elapsed_s") FROM "step"')
    assert series[0]["values"][0][1] == 1


async def test_bad_line_is_a_permanent_write_error(client: InfluxClient) -> None:
    with pytest.raises(InfluxWriteError) as info:
        await client.write_lines(["this is not line protocol"])
    assert info.value.status == 400 and info.value.permanent
    assert "unable to parse" in info.value.message


async def test_field_type_conflict_is_permanent_partial_write(client: InfluxClient) -> None:
    await client.write_lines([format_point("m", {}, {"v": 1.0}, T0)])
    with pytest.raises(InfluxWriteError) as info:
        await client.write_lines(
            [
                format_point("m", {}, {"v": "text"}, T0 + 1),  # v was a float: conflict
                format_point("m", {}, {"v": 2.0}, T0 + 2),
            ]
        )
    assert info.value.permanent and "partial write" in info.value.message
    assert info.value.dropped == 1
    series = await client.query('SELECT count("v") FROM "m"')
    assert series[0]["values"][0][1] == 2  # the good point of the batch was kept


async def test_unknown_database_is_not_permanent(influxdb: InfluxDB) -> None:
    target = InfluxTarget.parse(influxdb.url("never_created"))
    async with InfluxClient(target) as c:
        with pytest.raises(InfluxWriteError) as info:
            await c.write_lines([format_point("m", {}, {"v": 1}, T0)])
    assert info.value.status == 404 and not info.value.permanent


async def test_query_error_carries_server_message(client: InfluxClient) -> None:
    with pytest.raises(InfluxQueryError, match="error parsing query"):
        await client.query("SELEKT nothing")


async def test_unreachable_server() -> None:
    target = InfluxTarget.parse(f"http://bob:topsecret@127.0.0.1:{free_port()}/firegrid")
    async with InfluxClient(target, timeout_s=2) as c:
        with pytest.raises(InfluxUnreachable) as info:
            await c.ping()
        assert f"127.0.0.1:{target.base_url.rsplit(':', 1)[1]}" in str(info.value)
        assert "topsecret" not in str(info.value)
        with pytest.raises(InfluxUnreachable):
            await c.write_lines([format_point("m", {}, {"v": 1}, T0)])
        with pytest.raises(InfluxUnreachable):
            await c.query("SHOW DATABASES")


async def test_restart_keeps_data(influxdb: InfluxDB, client: InfluxClient) -> None:
    await client.write_lines([format_point("m", {"k": "a"}, {"v": 7.25}, T0)])
    port = influxdb.port
    try:
        influxdb.stop()
        with pytest.raises(InfluxUnreachable):
            await client.ping()
    finally:
        influxdb.start()  # same dirs and port; must run even if the test fails
    assert influxdb.port == port
    await client.ping()
    series = await client.query('SELECT "v" FROM "m"', epoch="ns")
    assert series[0]["values"] == [[T0, 7.25]]


# --- the broker ----------------------------------------------------------------------


async def test_mosquitto_keeps_retained_messages_across_restart(mosquitto: Mosquitto) -> None:
    topic = "firegrid/lab/retained"

    async def read_retained() -> bytes:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="lab-reader") as c:
            await c.subscribe(topic, qos=1)
            async with asyncio.timeout(5):
                async for message in c.messages:
                    assert message.retain
                    return bytes(message.payload)  # type: ignore[arg-type]
        raise AssertionError("no retained message")

    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="lab-writer") as c:
        await c.publish(topic, b"armed", qos=1, retain=True)
    assert await read_retained() == b"armed"

    pid = mosquitto.pid
    mosquitto.stop()
    mosquitto.stop()  # idempotent
    assert mosquitto.pid is None
    mosquitto.start()
    assert mosquitto.pid not in (None, pid)
    assert await read_retained() == b"armed"


def test_lab_refuses_a_busy_port(
    mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = Mosquitto()
    with pytest.raises(RuntimeError, match="already in use"):
        other.start(tmp_path_factory.mktemp("busy"), mosquitto.port)
    assert other.pid is None
