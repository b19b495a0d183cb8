"""drivers.analog.Threshold: scaling, alarm/clear edges, hysteresis, bad input."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.analog import Threshold

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


def feed(t: Threshold, raws: list[float]) -> list[str | None]:
    return [t.update(r)[1] for r in raws]


# --- examples ----------------------------------------------------------------------------


def test_gas_detector_in_percent_lel() -> None:
    # raw 0..1000 = 0..100.0 %LEL; alarm at 25 %LEL, clear at 10 %LEL (docs/feed-modbus.md)
    t = Threshold(scale=0.1, alarm_at=25, clear_at=10)
    assert t.state == "normal"
    assert t.update(0) == (0.0, None)
    assert t.update(249) == pytest.approx((24.9, None))
    value, edge = t.update(250)
    assert value == pytest.approx(25.0) and edge == "alarm" and t.state == "alarm"
    assert t.update(900)[1] is None  # still in alarm: no second edge
    assert t.update(150)[1] is None  # 15 %LEL: inside the band, alarm holds
    assert t.update(101)[1] is None
    value, edge = t.update(100)
    assert value == pytest.approx(10.0) and edge == "clear" and t.state == "normal"
    assert t.update(150)[1] is None  # 15 %LEL again, now from normal: nothing
    assert t.update(250)[1] == "alarm"


def test_scale_default_and_returned_value() -> None:
    t = Threshold()
    assert t.update(1234) == (1234.0, None)
    assert t.state == "normal"
    assert t.scale == 1.0 and t.alarm_at is None and t.clear_at is None


def test_no_alarm_at_only_measures() -> None:
    t = Threshold(scale=2.0)
    assert feed(t, [0, 1e5, -1e5, 3]) == [None] * 4
    assert t.state == "normal"


def test_clear_at_defaults_to_alarm_at() -> None:
    t = Threshold(alarm_at=60)
    assert t.clear_at == 60
    assert feed(t, [59, 60, 61, 60, 59.9, 60]) == [None, "alarm", None, None, "clear", "alarm"]


def test_value_on_shared_threshold_does_not_chatter() -> None:
    # value == alarm_at == clear_at satisfies both rules; the alarm wins and holds.
    t = Threshold(alarm_at=5, clear_at=5)
    assert feed(t, [5, 5, 5, 5]) == ["alarm", None, None, None]
    assert t.state == "alarm"


def test_alarm_exactly_at_threshold_and_clear_exactly_at_clear_at() -> None:
    t = Threshold(alarm_at=50, clear_at=45)
    assert feed(t, [49.999, 50, 45.001, 45]) == [None, "alarm", None, "clear"]


def test_negative_scale_and_negative_thresholds() -> None:
    # e.g. a sensor wired so that a rising raw count means a falling value
    t = Threshold(scale=-0.5, alarm_at=-10, clear_at=-30)
    assert t.update(10) == (-5.0, "alarm")
    assert t.update(60) == (-30.0, "clear")


def test_numbers_that_are_not_floats() -> None:
    t = Threshold(scale=Fraction(1, 10), alarm_at=25, clear_at=10)
    assert t.update(Fraction(500)) == (50.0, "alarm")


def test_repr_shows_state() -> None:
    t = Threshold(alarm_at=1)
    t.update(2)
    assert "state='alarm'" in repr(t)


# --- rejected input ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_readings_are_rejected_by_name(bad: float) -> None:
    t = Threshold(alarm_at=10)
    t.update(20)
    with pytest.raises(ValueError, match=r"raw reading is (nan|inf|-inf)"):
        t.update(bad)
    assert t.state == "alarm"  # a rejected reading changes nothing


def test_overflowing_product_is_rejected() -> None:
    t = Threshold(scale=1e300)
    with pytest.raises(ValueError, match="overflows"):
        t.update(1e300)


@pytest.mark.parametrize("bad", ["12", None, True, b"1"])
def test_non_numbers_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="must be a number"):
        Threshold().update(bad)  # type: ignore[arg-type]


def test_huge_int_is_rejected() -> None:
    with pytest.raises(ValueError, match="too large"):
        Threshold().update(10**400)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": math.nan}, "scale is nan"),
        ({"scale": math.inf}, "scale is inf"),
        ({"scale": 0}, "scale must not be 0"),
        ({"alarm_at": math.nan}, "alarm_at is nan"),
        ({"alarm_at": 10, "clear_at": -math.inf}, "clear_at is -inf"),
        ({"clear_at": 5}, "clear_at needs alarm_at"),
        ({"alarm_at": 10, "clear_at": 11}, r"clear_at \(11\) must not be above alarm_at \(10\)"),
        ({"alarm_at": "10"}, "alarm_at must be a number"),
    ],
)
def test_bad_configuration(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Threshold(**kwargs)  # type: ignore[arg-type]


# --- properties --------------------------------------------------------------------------


@st.composite
def band(draw: st.DrawFn) -> tuple[float, float]:
    """(clear_at, alarm_at) with clear_at <= alarm_at."""
    a, b = draw(finite), draw(finite)
    return min(a, b), max(a, b)


@given(band(), st.lists(finite, max_size=30), st.lists(st.floats(0, 1), min_size=1, max_size=60))
def test_no_chattering_inside_the_band(
    levels: tuple[float, float], history: list[float], fractions: list[float]
) -> None:
    """Whatever came before, values strictly between clear_at and alarm_at never flip it."""
    clear_at, alarm_at = levels
    t = Threshold(alarm_at=alarm_at, clear_at=clear_at)
    feed(t, history)
    before = t.state
    inside = [clear_at + f * (alarm_at - clear_at) for f in fractions]
    inside = [v for v in inside if clear_at < v < alarm_at]
    assert feed(t, inside) == [None] * len(inside)
    assert t.state == before


@given(band(), st.lists(finite, max_size=60))
def test_matches_the_contract_rule(levels: tuple[float, float], values: list[float]) -> None:
    """Edges alternate, start with an alarm, and follow the contract thresholds exactly."""
    clear_at, alarm_at = levels
    t = Threshold(alarm_at=alarm_at, clear_at=clear_at)
    expected_state = "normal"
    edges: list[str] = []
    for v in values:
        value, edge = t.update(v)
        assert value == v
        if expected_state == "normal" and v >= alarm_at:
            expected_state, want = "alarm", "alarm"
        elif expected_state == "alarm" and v <= clear_at and v < alarm_at:
            expected_state, want = "normal", "clear"
        else:
            want = None
        assert edge == want
        assert t.state == expected_state
        if edge:
            edges.append(edge)
    assert edges == ["alarm", "clear"] * (len(edges) // 2) + ["alarm"] * (len(edges) % 2)


@given(
    st.floats(min_value=1e-3, max_value=1e3),
    st.lists(st.integers(min_value=0, max_value=65535), max_size=40),
)
def test_scaled_value_is_raw_times_scale(scale: float, raws: list[int]) -> None:
    t = Threshold(scale=scale, alarm_at=100, clear_at=50)
    for raw in raws:
        assert t.update(raw)[0] == raw * scale
