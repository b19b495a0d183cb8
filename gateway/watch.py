"""``firegrid watch``: the duty room's live board, read from the broker's retained topics.

It needs no database and no journal: everything a duty room must see now is retained on
the broker by the gateway (docs/mqtt.md), so a read-only login (the ``dutyroom`` user of
``firegrid broker-config``) is enough. ``--once`` prints the board as it stands and exits
(0 when the gateway says ``online``, 1 when it is offline or has never said, 3 when the
broker cannot be reached), for a check from cron or a monitoring system; without it the
board redraws every second until Ctrl-C and reconnects by itself if the broker goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from datetime import datetime

import aiomqtt
import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gateway.board import Board
from gateway.mqtt_link import MqttTarget, Unreachable, describe_connect_error

SETTLE_S = 0.5  # --once: the retained burst is over when nothing came for this long
MAX_WAIT_S = 5.0  # --once: print what has come by then, however busy the broker is
RECONNECT_S = 2.0
STATE_STYLE = {"confirming": "bold yellow", "confirmed": "bold red", "closed": "dim",
               "dismissed": "dim cyan"}


def age(seconds: float) -> str:
    """12 s, 4 min, 3 h: how long ago, as a person on duty reads it."""
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.0f} h"


def render(board: Board, now: float, finished: int = 5) -> Group:
    """The board as rich renderables: a headline, the incidents, what is in trouble."""
    status = board.status or "not seen"
    head = Text.assemble(
        (f"firegrid {board.site}", "bold"), "  gateway ",
        (status, "green" if status == "online" else "bold red"),
        f"  {board.open_count()} open incident{'s' if board.open_count() != 1 else ''}"
        f"  {len(board.trouble_rows())} in trouble"
        f"  {datetime.fromtimestamp(now).strftime('%H:%M:%S')}")
    incidents = Table(title="Incidents", title_justify="left", expand=False)
    for col in ("incident", "state", "where", "also in alarm", "since T0", "confirm",
                "responders", "breaches"):
        incidents.add_column(col, overflow="fold")
    for r in board.rows(now, finished):
        state = r.state + (" (unverified)" if r.unverified else "")
        # Text, never markup: a cell name like "Store [B]" must show as it is
        incidents.add_row(Text(r.incident), Text(state, STATE_STYLE.get(r.state, "")),
                          Text(r.where), Text(", ".join(r.cells)), age(now - r.t0),
                          Text(r.confirm), Text(r.responders),
                          Text(", ".join(r.breaches), "bold red"))
    parts: list = [head, incidents]
    trouble = board.trouble_rows()
    if trouble:
        t = Table(title="In trouble", title_justify="left", expand=False)
        for col in ("device", "trouble", "since", "detail"):
            t.add_column(col, overflow="fold")
        for dev, what, since, detail in trouble:
            t.add_row(Text(dev), Text(what, "yellow"), age(now - since), Text(detail))
        parts.append(t)
    if board.bad_count:
        parts.append(Text(f"{board.bad_count} unreadable message(s); latest: {board.bad[-1]}",
                          "red"))
    return Group(*parts)


def as_json(board: Board, now: float, finished: int = 5) -> bytes:
    """The same board for a script: incidents and troubles as plain objects."""
    return orjson.dumps({
        "site": board.site, "gateway": board.status, "at": now,
        "open": board.open_count(),
        "incidents": [{"incident": r.incident, "state": r.state, "where": r.where,
                       "also_in_alarm": r.cells, "t0": r.t0, "confirm": r.confirm,
                       "responders": r.responders, "breaches": r.breaches,
                       "unverified": r.unverified} for r in board.rows(now, finished)],
        "trouble": [{"device": d, "trouble": w, "since": s, "detail": x}
                    for d, w, s, x in board.trouble_rows()],
        "unreadable": board.bad_count,
    }, option=orjson.OPT_INDENT_2)


def _client(target: MqttTarget) -> aiomqtt.Client:
    # a clean, throw-away session: the board is rebuilt from retained messages each time
    return aiomqtt.Client(**target.client_kwargs(), clean_session=True, timeout=5,
                          identifier=f"firegrid-watch-{os.getpid()}-{time.monotonic_ns()}")


async def _pump(client: aiomqtt.Client, board: Board, seen: list[float]) -> None:
    async for msg in client.messages:
        payload = msg.payload if isinstance(msg.payload, bytes) else b""
        board.apply(str(msg.topic), payload)
        seen[0] = time.monotonic()


async def snapshot(target: MqttTarget, board: Board) -> None:
    """Fill ``board`` from the retained messages; Unreachable when the broker is not there."""
    try:
        async with _client(target) as client:
            await client.subscribe(board.prefix + "#", qos=1)
            seen = [time.monotonic()]
            reader = asyncio.create_task(_pump(client, board, seen))
            start = time.monotonic()
            while time.monotonic() - start < MAX_WAIT_S and not reader.done():
                await asyncio.sleep(0.05)
                if time.monotonic() - seen[0] >= SETTLE_S:
                    break
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader
    except aiomqtt.MqttError as exc:
        raise Unreachable(describe_connect_error(target, exc)) from None


async def live(target: MqttTarget, board: Board, console: Console, finished: int = 5,
               refresh_s: float = 1.0) -> None:
    """Redraw every ``refresh_s`` until cancelled; reconnect when the broker goes away."""
    with Live(render(board, time.time(), finished), console=console,
              auto_refresh=False) as view:
        first = True
        while True:
            try:
                async with _client(target) as client:
                    board.reset()  # rebuilt from the retained messages that follow
                    await client.subscribe(board.prefix + "#", qos=1)
                    first = False
                    reader = asyncio.create_task(_pump(client, board, [0.0]))
                    try:
                        while not reader.done():
                            view.update(render(board, time.time(), finished), refresh=True)
                            await asyncio.sleep(refresh_s)
                    finally:  # Ctrl-C: stop reading before the client closes under it
                        reader.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await asyncio.gather(reader, return_exceptions=True)
                    reader.result()  # raises the disconnect
            except aiomqtt.MqttError as exc:
                if first:  # never connected: say why, as run and sim do
                    raise Unreachable(describe_connect_error(target, exc)) from None
                board.status = f"broker lost, retrying ({exc})"[:60]
                view.update(render(board, time.time(), finished), refresh=True)
                await asyncio.sleep(RECONNECT_S)
