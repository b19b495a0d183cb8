"""Shared fixtures: real local servers from tests/lab_fixtures.py."""

from tests.lab_fixtures import influxdb, mosquitto

__all__ = ["influxdb", "mosquitto"]
