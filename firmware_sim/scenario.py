"""A scenario: a scripted fire (what detectors do) and the people who answer (what they do).

Scenarios are YAML files validated here with pydantic, unknown keys rejected, so a typo
such as ``ack_afer_s`` fails loudly with its place instead of silently making a responder
mute. The simulator reads nothing else: no site config, no gateway import; a scenario
names zones and devices by the ids the site uses and speaks only MQTT (CONTRACT §3).

All delays are seconds from the moment the simulator receives the request or page that
the rule answers (``after_on_scene_s``: from when it first sees someone on scene).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alerting.causes import CAUSES, FALSE_ALARM_CAUSES
from drivers.signal import STATES
from drivers.textguard import MAX_FLOW_DEPTH, flow_depth, unencodable

ANY_ZONE = "*"

Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Ident = Annotated[str, Field(min_length=1, pattern=r"^[^\s/+#]+$")]  # one MQTT topic level


class _Strict(BaseModel):
    """Unknown keys are errors (the contract's rule for config applies to scripts too)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def zone_matches(rule_zone: str, zone: str | None) -> bool:
    """``*`` matches any zone, even an unknown one; otherwise the ids must be equal."""
    return rule_zone in (ANY_ZONE, zone)


class ConfirmRule(_Strict):
    """A grid worker's answer to a confirm request for incidents in ``zone``."""

    zone: str
    decision: Literal["confirm", "dismiss"]
    after_s: Seconds = 0.0
    # why a dismissal: one of BS 5839-1's categories of false alarm (alerting.causes)
    cause: Literal[FALSE_ALARM_CAUSES] | None = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _cause_with_dismiss(self) -> ConfirmRule:
        if self.cause is not None and self.decision != "dismiss":
            raise ValueError("cause goes with decision: dismiss")
        return self


class PageRule(_Strict):
    """How a pager holder answers a page for ``zone``; ``never`` keeps them silent."""

    zone: str = ANY_ZONE
    ack_after_s: Seconds | None = None
    on_scene_after_s: Seconds | None = None
    decline_after_s: Seconds | None = None
    never: bool = False

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        acts = [self.ack_after_s, self.on_scene_after_s, self.decline_after_s]
        if self.never and any(a is not None for a in acts):
            raise ValueError("'never' cannot be combined with ack/on_scene/decline delays")
        if not self.never and all(a is None for a in acts):
            raise ValueError(
                "give ack_after_s, on_scene_after_s or decline_after_s, or never: true"
            )
        if self.decline_after_s is not None and (
            self.ack_after_s is not None or self.on_scene_after_s is not None
        ):
            raise ValueError("a rule that declines cannot also ack or go on scene")
        if (
            self.ack_after_s is not None
            and self.on_scene_after_s is not None
            and self.on_scene_after_s < self.ack_after_s
        ):
            raise ValueError("on_scene_after_s must not come before ack_after_s")
        return self


class ResponderScript(_Strict):
    """One simulated person; the first rule whose zone matches decides, the rest are skipped."""

    confirm: list[ConfirmRule] = []
    pages: list[PageRule] = []

    def confirm_rule(self, zone: str | None) -> ConfirmRule | None:
        return next((r for r in self.confirm if zone_matches(r.zone, zone)), None)

    def page_rule(self, zone: str | None) -> PageRule | None:
        return next((r for r in self.pages if zone_matches(r.zone, zone)), None)


class DeviceEvent(_Strict):
    """One thing a detector does; ``raw`` replaces the encoded payload for garbage tests."""

    at: Seconds
    device: Ident
    state: str | None = None
    kind: str | None = None
    value: float | None = None
    bearing_deg: float | None = None
    raw: str | None = None  # sent verbatim as its UTF-8 bytes
    topic: str | None = None  # relative to firegrid/<site>/; default signal/<device>

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.raw is not None:
            keys = ("state", "kind", "value", "bearing_deg")
            given = [k for k in keys if getattr(self, k) is not None]
            if given:
                raise ValueError(f"'raw' replaces the payload; drop {', '.join(given)}")
        elif self.state not in STATES:
            raise ValueError(
                f"'state' must be one of {', '.join(STATES)} (use 'raw' for a bad one);"
                f" got {self.state!r}"
            )
        if self.topic is not None and (
            not self.topic or self.topic.startswith("/") or any(c in self.topic for c in "+#")
        ):
            raise ValueError("'topic' must be a relative topic without wildcards")
        return self


class CloseRule(_Strict):
    """A person closes an incident in ``zone`` this long after someone is on scene."""

    zone: str
    by: Ident
    after_on_scene_s: Seconds = 0.0
    reason: str = "closed by simulated responder"
    cause: Literal[CAUSES] | None = None  # type: ignore[valid-type]  # fire, or a false alarm


class Scenario(_Strict):
    """A whole script: the site it talks to, its people, its detector events, its end."""

    name: str
    site: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")]
    description: str | None = None
    responders: dict[Ident, ResponderScript] = {}
    events: list[DeviceEvent] = []
    close: list[CloseRule] = []
    duration_s: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    until_closed: bool = False

    @model_validator(mode="after")
    def _events_in_time(self) -> Self:
        late = [i for i, e in enumerate(self.events) if e.at > self.duration_s]
        if late:
            raise ValueError(f"events {late} come after duration_s={self.duration_s}")
        return self

    @property
    def prefix(self) -> str:
        """Topic prefix of the site, with its trailing slash."""
        return f"firegrid/{self.site}/"

    def close_rule(self, zone: str | None) -> CloseRule | None:
        return next((r for r in self.close if zone_matches(r.zone, zone)), None)


class ScenarioError(ValueError):
    """A scenario file that cannot be used; ``problems`` are ``place: message`` lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _place(loc: tuple[int | str, ...]) -> str:
    """``('events', 3, 'x')`` → ``events[3].x``, the style of ``firegrid check-config``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Validate YAML text; raise ScenarioError listing every problem with its place."""
    if flow_depth(text) > MAX_FLOW_DEPTH:
        raise ScenarioError(source, [f"not valid YAML: nested over {MAX_FLOW_DEPTH} deep"])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(source, [f"not valid YAML: {exc}"]) from None
    except (RecursionError, MemoryError):
        raise ScenarioError(source, ["not valid YAML: nested too deeply"]) from None
    except Exception as exc:  # PyYAML's constructors raise more than YAMLError on bad tags
        raise ScenarioError(source, [f"not valid YAML: {type(exc).__name__}: "
                                     f"{str(exc)[:120]}"]) from None
    if not isinstance(data, dict):
        raise ScenarioError(source, ["expected a mapping at the top level"])
    bad = list(unencodable(data))
    if bad:
        raise ScenarioError(source, [f"{p}: text that is not valid Unicode (a lone surrogate)"
                                     for p in bad])
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_place(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ScenarioError(source, problems) from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file (see ``parse_scenario``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(p), [f"cannot read: {exc.strerror or exc}"]) from None
    return parse_scenario(text, str(p))


def bundled_scenario(name: str) -> Path:
    """Path of a scenario shipped in ``firmware_sim/scenarios`` (e.g. ``"demo"``)."""
    path = Path(str(resources.files("firmware_sim") / "scenarios" / f"{name}.yaml"))
    if not path.is_file():
        raise ScenarioError(str(path), ["no such bundled scenario"])
    return path
