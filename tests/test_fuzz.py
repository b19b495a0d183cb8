"""Fuzzing in the normal suite: a quick property per decoder, and ``bench/fuzz.py`` itself.

Every decoder of untrusted input may only fail with its own error (PayloadError, AckError,
ConfigError, ScenarioError, Refused), never with anything else, whatever it is fed. The
long runs (a million inputs and more) are ``python bench/fuzz.py``; see docs/fuzzing.md.

``KNOWN_BUGS`` lists what the fuzzer found that is not fixed yet. A property below
tolerates exactly those; each also has a strict-xfail regression test with its minimal
reproducer, which starts to XPASS (and so fails) the moment the bug is fixed: then delete
that test's marker and its ``KNOWN_BUGS`` line.
"""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerting.page import AckError, decode_mqtt_ack
from drivers.native import decode
from drivers.signal import PayloadError
from firmware_sim.scenario import ScenarioError, parse_scenario
from gateway.config import ConfigError, parse_site
from gateway.metrics import Metrics
from gateway.runtime import Gateway

ROOT = Path(__file__).resolve().parents[1]
FUZZ_PY = ROOT / "bench" / "fuzz.py"


def _load_bench() -> Any:
    spec = importlib.util.spec_from_file_location("firegrid_bench_fuzz", FUZZ_PY)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


fuzz = _load_bench()

QUICK = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.large_base_example])
SLOW = settings(QUICK, max_examples=40)

# (target or "*", kind, exception or None for any, file, function or None for any): open
# bugs the fuzzer found, described in docs/fuzzing.md. Delete a line when its bug is fixed.
KNOWN_BUGS: list[tuple[str, str, str | None, str, str | None]] = []  # all fixed so far


def is_known(target: str, kind: str, exc_name: str, where: str) -> bool:
    file, _, rest = where.partition(":")
    func = rest[rest.find("(") + 1:-1] if "(" in rest else None
    return any(t in (target, "*") and k == kind and (e is None or e == exc_name) and f == file
               and (fn is None or fn == func) for t, k, e, f, fn in KNOWN_BUGS)


def only(target: str, allowed: tuple[type[BaseException], ...], call: Callable[[], Any]) -> Any:
    """Run ``call``: fine if it returns or raises ``allowed`` (or a known, reported bug)."""
    try:
        return call()
    except allowed:
        return None
    except Exception as exc:
        name, where, _ = fuzz.signature(exc)
        if not is_known(target, "crash", name, where):
            raise
        return None


# ------------------------------------------------------------------ strategies

SCALARS = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.text(max_size=20) | st.sampled_from(["alarm", "clear", "fault", "test", "ack",
                                                    "on_scene", "decline", "smoke", ""]))
KEYS = st.sampled_from(["state", "kind", "value", "ts", "bearing_deg", "incident", "status",
                        "decision", "by", "reason"]) | st.text(max_size=8)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(KEYS, inner, max_size=4), max_leaves=12)
JSON_OBJECTS = st.dictionaries(KEYS, JSON_VALUES, max_size=6)
EMIT = fuzz.Emitter(1 << 20)


def as_json(obj: Any, ascii_only: bool) -> bytes:
    """NaN and Infinity come out as the literals, which JSON does not allow."""
    return EMIT.json(fuzz.to_tree(obj), ascii_only)


# deep nesting in a value: one deeper than orjson's limit, at it, and below Python's
JSON_DEEP = st.sampled_from([64, 500, 999, 1023, 1024, 1025]).flatmap(
    lambda d: st.sampled_from([b"[" * d + b"]" * d, b'{"a":' * d + b"1" + b"}" * d]))

TOPIC_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                            blacklist_characters="\x00"), max_size=30)
TOPICS = st.one_of(
    st.sampled_from(["signal/smk-301", "confirm/inc-1/reply", "page/guard-1/ack",
                     "incident/inc-1/close", "signal", "signal/a/b", "page//ack", "/", ""]),
    st.tuples(st.sampled_from(["signal", "confirm", "page", "incident"]), TOPIC_TEXT,
              st.sampled_from(["", "reply", "ack", "close"])).map(
        lambda t: "/".join(p for p in t if p) if not t[2] else "/".join(t)),
    TOPIC_TEXT,
)

YAML_PIECES = [t.decode("utf-8", "replace") for t in fuzz.YAML_TOKENS]
YAML_KEYS = ["site", "zones", "devices", "responders", "tiers", "feeds", "sla", "id", "kind",
             "floor", "x", "y", "polygon", "tier", "pager", "type", "name", "events", "at",
             "device", "state", "duration_s", "confirm", "pages", "close", "zone"]
YAMLISH = st.lists(
    st.one_of(st.sampled_from(YAML_PIECES), st.sampled_from(YAML_KEYS).map(lambda k: k + ": "),
              st.sampled_from(fuzz.YAML_SCALARS), st.text(max_size=8),
              st.sampled_from(["\n", "\n  ", "\n  - ", "- ", "{", "}", "[", "]", ", "])),
    max_size=40).map("".join)


def mutate_with_bench(name: str, rng: random.Random, n: int = 3) -> list[Any]:
    """Inputs as bench/fuzz.py makes them (mutated seeds, random bytes, token soup)."""
    h = HARNESS[name]
    return [h.generate(rng) for _ in range(n)]


HARNESS: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _harnesses() -> None:
    for t in fuzz.TARGETS:
        if t.harness is not None and t.name not in HARNESS:
            HARNESS[t.name] = t.harness()


def run_harness(name: str, inp: Any) -> None:
    h = HARNESS[name]
    only(name, h.allowed, lambda: h.run(inp))


# ------------------------------------------------------------------ native signals


@QUICK
@given(st.binary(max_size=5000))
def test_native_arbitrary_bytes(payload: bytes) -> None:
    only("native", (PayloadError,), lambda: decode("d", payload))


@QUICK
@given(JSON_OBJECTS, st.booleans())
def test_native_arbitrary_json_objects(obj: dict, ascii_only: bool) -> None:
    run_harness("native", as_json(obj, ascii_only))  # accepted: the invariants hold too


@QUICK
@given(st.sampled_from(["state", "kind", "value", "ts", "extra"]), JSON_DEEP)
def test_native_deep_nesting_in_a_value(key: str, deep: bytes) -> None:
    only("native", (PayloadError,), lambda: decode("d", b'{"state":"alarm","' + key.encode()
                                                    + b'":' + deep + b"}"))


@QUICK
@given(st.randoms(use_true_random=True))
def test_native_bench_mutations(rng: random.Random) -> None:
    for inp in mutate_with_bench("native", rng):
        run_harness("native", inp)


# ------------------------------------------------------------------ pager acks


@QUICK
@given(st.binary(max_size=2000))
def test_ack_arbitrary_bytes(payload: bytes) -> None:
    only("mqtt-ack", (AckError,), lambda: decode_mqtt_ack("guard-1", payload))


@QUICK
@given(JSON_OBJECTS, st.booleans())
def test_ack_arbitrary_json_objects(obj: dict, ascii_only: bool) -> None:
    run_harness("mqtt-ack", as_json(obj, ascii_only))


@QUICK
@given(st.randoms(use_true_random=True))
def test_ack_bench_mutations(rng: random.Random) -> None:
    for inp in mutate_with_bench("mqtt-ack", rng):
        run_harness("mqtt-ack", inp)


# ------------------------------------------------------------------ runtime parser


@QUICK
@given(TOPICS, st.one_of(st.binary(max_size=300), JSON_OBJECTS.map(
    lambda o: as_json(o, True))))
def test_runtime_parse_arbitrary_topic_and_payload(topic: str, payload: bytes) -> None:
    fake = type("FakeGateway", (), {"metrics": Metrics()})()
    item = only("runtime-parse", (PayloadError, AckError),
                lambda: Gateway._parse(fake, topic, payload, 1))
    assert item is None or item.kind in ("signal", "reply", "ack", "close")


@QUICK
@given(st.randoms(use_true_random=True))
def test_runtime_parse_bench_mutations(rng: random.Random) -> None:
    for inp in mutate_with_bench("runtime-parse", rng):
        run_harness("runtime-parse", inp)


# ------------------------------------------------------------------ YAML files


@SLOW
@given(YAMLISH)
def test_config_yamlish_text(text: str) -> None:
    only("config", (ConfigError,), lambda: parse_site(text, "t.yaml"))


@SLOW
@given(st.text(max_size=300))
def test_config_arbitrary_text(text: str) -> None:
    only("config", (ConfigError,), lambda: parse_site(text, "t.yaml"))


@SLOW
@given(st.randoms(use_true_random=True))
def test_config_bench_mutations(rng: random.Random) -> None:
    for inp in mutate_with_bench("config", rng, 2):  # accepted sites also run the engine
        run_harness("config", inp)


@SLOW
@given(YAMLISH)
def test_scenario_yamlish_text(text: str) -> None:
    only("scenario", (ScenarioError,), lambda: parse_scenario(text, "t.yaml"))


@SLOW
@given(st.text(max_size=300))
def test_scenario_arbitrary_text(text: str) -> None:
    only("scenario", (ScenarioError,), lambda: parse_scenario(text, "t.yaml"))


@SLOW
@given(st.randoms(use_true_random=True))
def test_scenario_bench_mutations(rng: random.Random) -> None:
    for inp in mutate_with_bench("scenario", rng, 2):
        run_harness("scenario", inp)


# ------------------------------------------------------------------ the engine

OPS = st.tuples(
    st.sampled_from(["signal", "reply", "ack", "close", "junk"]),
    st.integers(0, 50),  # which device / incident / responder
    st.sampled_from(["alarm", "alarm", "clear", "fault", "test"]),
    st.sampled_from(["ack", "on_scene", "decline", "confirm", "dismiss"]),
    st.sampled_from([0, 1, 10**6, 10**9, 5 * 10**9, 16 * 10**9, 31 * 10**9, 61 * 10**9,
                     -2 * 10**9, "deadline"]),
    st.booleans(),
)


@QUICK
@given(st.sampled_from(["taibai-demo", "feeds", "minimal", "no-tiers"]),
       st.lists(OPS, min_size=1, max_size=40))
def test_engine_fed_decoded_inputs_only_refuses(site_name: str, ops: list[tuple]) -> None:
    """Whatever arrives, in whatever order and at whatever time: decisions or Refused.

    The harness also checks every step survives the journal and the InfluxDB line format,
    every page fits a pager screen, and the journal replays into the same open incidents.
    """
    h = HARNESS["engine"]
    site = h.sites[site_name]
    devices = [d.id for d in site.devices] or ["d"]
    people = [r.id for r in site.responders] or ["nobody"]
    now = 1_700_000_000 * 10**9
    for n, (kind, k, state, answer, dt, tick) in enumerate(ops):
        incidents = [*h.engine.incidents, *h.engine.finished] if n else []
        inc = incidents[k % len(incidents)] if incidents else f"inc-{k}"
        who = people[k % len(people)]
        if kind == "signal":
            topic, body = f"signal/{devices[k % len(devices)]}", {"state": state}
        elif kind == "reply":
            topic = f"confirm/{inc}/reply"
            body = {"decision": answer if answer in ("confirm", "dismiss") else "confirm",
                    "by": who}
        elif kind == "ack":
            topic = f"page/{who}/ack"
            body = {"incident": inc, "status": answer if answer in ("ack", "on_scene",
                                                                     "decline") else "ack"}
        elif kind == "close":
            topic, body = f"incident/{inc}/close", {"by": who, "reason": "out"}
        else:
            topic, body = f"signal/{devices[0]}", {"state": [state] * k}
        deadline = h.engine.next_deadline_ns() if n else None
        now = (deadline if deadline is not None else now + 1) if dt == "deadline" else now + dt
        inp: dict[str, Any] = {"topic": topic, "payload": orjson.dumps(body).decode("latin-1"),
                               "now": now, "received": now, "tick": tick}
        if n == 0:
            inp["site"] = site_name
        if n == len(ops) - 1:
            inp["replay"] = True
        h.run(inp)  # any exception at all fails the test: Refused is handled inside


@QUICK
@given(st.randoms(use_true_random=True))
def test_engine_bench_episodes(rng: random.Random) -> None:
    HARNESS["engine"].reset()
    for _ in range(30):  # mostly well-formed, 8 % mangled payloads
        run_harness("engine", HARNESS["engine"].generate(rng))


# ------------------------------------ regressions: the fuzzer's findings, minimal, all fixed


def test_bug_native_deep_value_is_a_payload_error() -> None:
    with pytest.raises(PayloadError):
        decode("d", b'{"state":"alarm","kind":' + b"[" * 1000 + b"]" * 1000 + b"}")


def test_bug_config_deep_nesting_is_a_config_error() -> None:
    d = 2 * sys.getrecursionlimit()
    with pytest.raises(ConfigError):
        parse_site("site: " + "[" * d + "]" * d, "t.yaml")


@pytest.mark.parametrize("text", ["a: !!int \n", "a: !!timestamp \n"])
def test_bug_config_bad_tagged_scalar_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_site(text, "t.yaml")


@pytest.mark.parametrize("text", ["a: " + "[" * 2 * sys.getrecursionlimit(), "a: !!int \n",
                                  "a: !!timestamp \n"])
def test_bug_scenario_yaml_errors_are_scenario_errors(text: str) -> None:
    with pytest.raises(ScenarioError):
        parse_scenario(text, "t.yaml")


@pytest.mark.parametrize("edit", [("ack_timeout_s: 15", "ack_timeout_s: .inf"),
                                  ("ack_timeout_s: 15", "ack_timeout_s: 1e300"),
                                  ("confirm_s: 30", "confirm_s: .inf")])
def test_bug_config_infinite_durations_are_rejected(edit: tuple[str, str]) -> None:
    text = (ROOT / "configs" / "taibai-demo.yaml").read_text().replace(*edit, 1)
    with pytest.raises(ConfigError):
        parse_site(text, "t.yaml")
        raise AssertionError(f"accepted {edit[1]}")


def test_bug_config_surrogate_escape_is_rejected() -> None:
    text = (ROOT / "configs" / "taibai-demo.yaml").read_text()
    text = text.replace('name: "Bldg 3 shops"', 'name: "\\ud800"', 1)
    assert "\\ud800" in text
    with pytest.raises(ConfigError):
        parse_site(text, "t.yaml")
        raise AssertionError("accepted a zone name the engine cannot publish")


def test_bug_scenario_surrogate_escape_is_rejected() -> None:
    with pytest.raises(ScenarioError):
        parse_scenario('name: t\nsite: s\nduration_s: 1\nevents: [{at: 0, device: d, '
                       'raw: "\\udfff"}]\n', "t.yaml")
        raise AssertionError("accepted a payload the simulator cannot encode")


def test_bug_config_alias_bomb_is_cheap() -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        only("config", (ConfigError,), lambda: parse_site(fuzz.alias_bomb(5), "t.yaml"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 9**4 = 6,561 paths to one small list now take ~9 MiB (8 levels: ~10 GiB, minutes);
    # walking each node once takes a few hundred KiB
    assert peak < 4 * 1024 * 1024, f"{peak / 1048576:.0f} MiB for a 250-byte file"


# ------------------------------------------------------------------ bench/fuzz.py itself


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, dict]:
    out = tmp_path_factory.mktemp("fuzz")
    report = out / "report.json"
    proc = subprocess.run(
        [sys.executable, str(FUZZ_PY), "--inputs", "20000", "--seed", "1", "--minimize", "0",
         "--out", str(out), "--json", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert report.exists(), proc.stdout + proc.stderr
    return proc.returncode, proc.stdout, json.loads(report.read_text())


def test_bench_fuzz_names_every_target_and_counts_its_inputs(bench_run) -> None:
    rc, stdout, report = bench_run
    assert rc in (0, 1), stdout
    for t in fuzz.TARGETS:
        assert t.name in stdout, f"{t.name} missing from the table"
    rows = {r["target"]: r for r in report["rows"]}
    for t in fuzz.TARGETS:
        if t.harness is None:
            assert rows[t.name]["status"] == "not built yet"
            continue
        r = rows[t.name]
        assert r["inputs"] > 0
        bad = r["crashes"] + r["hangs"] + r["memory"]
        assert r["accepted"] + r["rejected"] + bad == r["inputs"], r
        assert r["accepted"] > 0, f"{t.name}: nothing accepted, the seeds are not exercised"
    assert sum(r["inputs"] for r in rows.values() if r["status"] == "ran") >= 20000
    assert "platform" in stdout and "python" in stdout


def test_bench_fuzz_finds_nothing_but_the_known_bugs(bench_run) -> None:
    """Exit 0 with no finding; until the KNOWN_BUGS are fixed, exit 1 with only those."""
    rc, stdout, report = bench_run
    found = [f for r in report["rows"] for f in r.get("findings", [])]
    unknown = [f for f in found if not is_known(f["target"], f["kind"], f["exc"], f["where"])]
    assert not unknown, json.dumps(unknown, indent=1)
    assert rc == (1 if found else 0), stdout


@pytest.mark.parametrize("prefix", ["", "description: the grid worker's story\n",
                                    'name: "a [ in quotes"\n'])
def test_deep_flow_nesting_is_refused_before_parsing(prefix: str) -> None:
    """A plain apostrophe or a quoted bracket must not hide 2,000 brackets from the guard."""
    import time

    text = prefix + "deep: " + "[" * 2000 + "]" * 2000 + "\n"
    t0 = time.perf_counter()
    with pytest.raises(ScenarioError, match="nested over 64 deep"):
        parse_scenario(text, "t.yaml")
    with pytest.raises(ConfigError, match="nested over 64 deep"):
        parse_site(text, "t.yaml")
    assert time.perf_counter() - t0 < 0.1
