"""Pytest fixtures that start real local servers (see firmware_sim.lab).

Re-exported by tests/conftest.py. ``influxdb`` is session-scoped because a database
server is shared cheaply (tests use their own database names); ``mosquitto`` is
function-scoped so every test gets a fresh broker with no retained messages or
sessions left over from another test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from firmware_sim.lab import InfluxDB, Mosquitto


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB]:
    """A running influxd on 127.0.0.1 for the whole test session."""
    server = InfluxDB()
    server.start(tmp_path_factory.mktemp("influxdb"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A fresh, persistent Mosquitto broker on 127.0.0.1 for one test."""
    server = Mosquitto()
    server.start(tmp_path_factory.mktemp("mosquitto"))
    try:
        yield server
    finally:
        server.stop()
