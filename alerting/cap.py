"""An incident as an OASIS CAP 1.2 alert (``firegrid/<site>/cap/<incident>``), and a checker.

CAP is what outside alerting systems (public warning platforms, building management,
municipal dashboards) already read, so the gateway speaks it next to its own JSON. This
module is pure: it turns the dict the gateway publishes on ``incident/<id>``
(``gateway.engine.Incident.public``) into bytes and checks such bytes; the gateway decides
when to publish, and keeps the references between messages of one incident.

Decisions (docs/cap.md explains them to operators):

* ``identifier`` is ``<site>.<incident>.<n>`` where ``n`` is 1 for the first message of
  an incident and grows by one with each later message, by default ``len(references) + 1``
  because every later message references all earlier ones. So a message's identifier
  follows from what it references, and a gateway that lost its memory can rebuild the
  chain from the retained message with :func:`next_references`.
* ``sent``, ``onset`` and ``expires`` are written ``YYYY-MM-DDThh:mm:ss±hh:mm``: no
  fractional seconds (truncated), never ``Z``, and UTC as ``-00:00`` as CAP 1.2 demands.
* ``certainty`` says who saw the fire: ``Observed`` when a person confirmed it or a manual
  call point was pressed, ``Likely`` when a detection rule confirmed it or the confirm
  deadline passed unanswered (escalation: nobody looked), ``Possible`` while the grid
  worker is still being asked. A Cancel after a dismissal says ``Unlikely``.
* Cancel messages keep an ``info`` block (``responseType`` AllClear, ``urgency`` Past,
  ``severity`` Minor) so a reader that shows texts, not message types, still says why.
* Every text is built as an element's text by ElementTree, which escapes it; characters
  XML 1.0 cannot carry at all (NUL, most C0 controls, lone surrogates) become U+FFFD first,
  because ElementTree would otherwise write them and produce a document nobody can parse.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "CAP_NS",
    "MAX_CAP_BYTES",
    "CapError",
    "SiteFrame",
    "cap_alert",
    "cap_datetime",
    "cap_identifier",
    "next_references",
    "validate_cap",
]

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"  # an alert may end with XML signatures
MAX_CAP_BYTES = 1 << 20  # ours are ~3 kB; a resource-laden third-party alert stays well below

STATUS = ("Actual", "Exercise", "System", "Test", "Draft")
MSG_TYPE = ("Alert", "Update", "Cancel", "Ack", "Error")
SCOPE = ("Public", "Restricted", "Private")
CATEGORY = ("Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env",
            "Transport", "Infra", "CBRNE", "Other")
RESPONSE_TYPE = ("Shelter", "Evacuate", "Prepare", "Execute", "Avoid", "Monitor", "Assess",
                 "AllClear", "None")
URGENCY = ("Immediate", "Expected", "Future", "Past", "Unknown")
SEVERITY = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
CERTAINTY = ("Observed", "Likely", "Possible", "Unlikely", "Unknown")

MIN_RADIUS_M = 5.0  # a locate error below this is false precision for where people should look
MAX_SITE_M = 50_000.0  # farther from the frame's origin a site position is a data error, and
# the tangent-plane mapping is no longer good to a metre: such a position gets no circle
HEADLINE_MAX = 140  # what pagers, sirens' displays and phone banners show without cutting
TEXT_MAX = 200  # a zone name or responder id longer than this is not one

# Incident states as gateway.engine names them (kept literal: this module imports nothing
# from the gateway so it can be used, and tested, on its own).
CONFIRMING, CONFIRMED, DISMISSED, CLOSED = "confirming", "confirmed", "dismissed", "closed"

_WGS84_A = 6_378_137.0
_WGS84_F = 1 / 298.257223563
_WGS84_E2 = _WGS84_F * (2 - _WGS84_F)

# XML 1.0 Char production; everything else is replaced before it reaches ElementTree.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_FORBIDDEN_IN_ID = re.compile(r"[\s,<&]")  # CAP 1.2 identifier and sender rule
_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[-+]\d\d:\d\d")
_LANGUAGE = re.compile(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*")  # xs:language
_DECIMAL = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_POINT = re.compile(rf"({_DECIMAL}),({_DECIMAL})")
_ID_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~:")


class CapError(ValueError):
    """Arguments that cannot make a valid CAP message (a configuration or caller error)."""


# ------------------------------------------------------------------------- geometry


@dataclass(frozen=True, slots=True)
class SiteFrame:
    """Where the site plan sits on the earth: its origin in WGS84 and the turn of its +x axis.

    ``rotation_deg`` is the angle of the site's +x axis counter-clockwise from east (the same
    sense as the site file's ``azimuth_deg``); +y is 90° counter-clockwise from +x. Site
    metres are mapped on the plane tangent to the WGS84 ellipsoid at the origin, using the
    ellipsoid's meridian and prime-vertical radii there. The neglected curvature term is
    about d² / (2R): under 0.1 m at 1 km from the origin, far below any locate error, so a
    full geodesic solution would add a dependency and nothing a responder could see.
    """

    lat0: float
    lon0: float
    rotation_deg: float = 0.0

    def __post_init__(self) -> None:
        for name in ("lat0", "lon0", "rotation_deg"):
            if not math.isfinite(getattr(self, name)):
                raise CapError(f"cap frame: {name} must be a finite number")
        if not -89.0 <= self.lat0 <= 89.0:
            raise CapError(f"cap frame: lat must be within ±89°, got {self.lat0}")
        if not -180.0 <= self.lon0 <= 180.0:
            raise CapError(f"cap frame: lon must be within ±180°, got {self.lon0}")

    def to_wgs84(self, x: float, y: float) -> tuple[float, float]:
        """(latitude, longitude) in degrees of the point at site metres (x, y)."""
        turn = math.radians(self.rotation_deg)
        east = x * math.cos(turn) - y * math.sin(turn)
        north = x * math.sin(turn) + y * math.cos(turn)
        phi = math.radians(self.lat0)
        w = math.sqrt(1 - _WGS84_E2 * math.sin(phi) ** 2)
        meridian = _WGS84_A * (1 - _WGS84_E2) / w**3  # metres per radian of latitude
        normal = _WGS84_A / w  # prime vertical radius; times cos(phi): per radian of longitude
        lat = self.lat0 + math.degrees(north / meridian)
        lon = self.lon0 + math.degrees(east / (normal * math.cos(phi)))
        lon = (lon + 180.0) % 360.0 - 180.0
        return lat, lon


# -------------------------------------------------------------------- small formats


def cap_datetime(dt: datetime) -> str:
    """A CAP 1.2 dateTime: whole seconds (truncated), numeric offset, UTC as ``-00:00``.

    A naive datetime is refused: a CAP time without an offset is ambiguous to every
    reader. An offset that is not whole minutes (only historical zones have one) is
    written in UTC, since CAP's pattern has no room for seconds in the offset.
    """
    offset = dt.utcoffset()
    if offset is None:
        raise CapError("CAP times need a timezone: pass an aware datetime")
    if offset % timedelta(minutes=1):
        dt, offset = dt.astimezone(UTC), timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes > 0 else "-"  # zero is "-00:00" (CAP 1.2, alert/sent)
    hh, mm = divmod(abs(minutes), 60)
    return f"{dt.replace(tzinfo=None, microsecond=0).isoformat()}{sign}{hh:02d}:{mm:02d}"


def _id_part(text: str) -> str:
    """Percent-encode everything but a few ASCII characters: injective, and free of CAP's
    forbidden characters, of whitespace and of the ``.`` that joins the parts."""
    out = []
    for ch in text:
        if ch in _ID_SAFE:
            out.append(ch)
        else:  # surrogatepass: a lone surrogate still gets its own distinct bytes
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    return "".join(out)


def cap_identifier(site: str, incident_id: str, seq: int) -> str:
    """``<site>.<incident>.<seq>``: the identifier of the seq-th message about an incident."""
    if seq < 1:
        raise CapError(f"message sequence numbers start at 1, got {seq}")
    return f"{_id_part(site)}.{_id_part(incident_id)}.{seq}"


def _check_token(what: str, value: str) -> None:
    if not value or _FORBIDDEN_IN_ID.search(value) or _NOT_XML_CHAR.search(value):
        raise CapError(f"CAP {what} must be non-empty, without spaces, commas, '<' or '&': "
                       f"{value[:TEXT_MAX]!r}")


def _clean(value: object, limit: int = TEXT_MAX) -> str:
    """Text safe to hand to ElementTree: only XML characters, and not unbounded."""
    text = _NOT_XML_CHAR.sub("\ufffd", str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: object) -> float | None:
    """A finite float from an int or float; anything else (bool, str, NaN, 10**400): None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _fmt(value: float, places: int) -> str:
    """Fixed-point with trailing zeros dropped: 12.30 -> "12.3", 5.000 -> "5", -0.0 -> "0"."""
    text = f"{value:.{places}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# ---------------------------------------------------------------------------- texts


@dataclass(frozen=True, slots=True)
class _Texts:
    """One language's wording. Format strings are ours; untrusted values only fill them."""

    alarm: str
    confirmed_fire: str
    sender_name: str
    place_zone: str  # zone name and id
    place_building: str
    place_floor: str
    place_site: str
    joiner: str  # between the parts of a place
    sentences: str  # between the sentences of the description
    headline: str
    headline_closed: str
    headline_dismissed: str
    headline_withdrawn: str
    position: str
    elapsed: str
    how: dict[str, str]
    what: str
    instruction: dict[str, str]
    note: dict[str, str]


_EN = _Texts(
    alarm="Fire alarm",
    confirmed_fire="Confirmed fire",
    sender_name="firegrid gateway, site {site}",
    place_zone="{name} (zone {zone})",
    place_building="building {building}",
    place_floor="floor {floor}",
    place_site="site {site}",
    joiner=", ",
    sentences=" ",
    headline="{event}: {place}",
    headline_closed="All clear: {place}",
    headline_dismissed="False alarm: {place}",
    headline_withdrawn="Withdrawn: {place}",
    position="Estimated position x {x} m, y {y} m on the site plan (within {err} m).",
    elapsed="The first signal was received {s} s before this message.",
    how={
        "queued": "A grid worker is being asked to check it.",
        "person": "Confirmed on site by {by}.",
        "manual": "Confirmed by a manual call point.",
        "rule": "Confirmed automatically by the detectors ({rule}).",
        "escalated": "Not checked by anyone: the confirmation deadline passed, so it is "
                     "treated as a fire.",
        "closed": "The incident has been closed on site.",
        "dismissed": "The alarm was checked and dismissed as false.",
        "withdrawn": "This alert is withdrawn.",
    },
    what="{event} at {place}.",
    instruction={
        "evacuate": "Leave the building now by the nearest stairs; do not use lifts. Close "
                    "doors behind you and do not go back in. Keep access routes clear for "
                    "responders.",
        "prepare": "A fire alarm is being checked. Be ready to leave the building and follow "
                   "instructions from staff.",
        "closed": "The incident is over. Follow instructions from staff on site before going "
                  "back in.",
        "dismissed": "No action is needed.",
        "withdrawn": "Disregard the earlier alert and follow instructions from staff on site.",
    },
    note={
        "closed": "Incident {id} closed.",
        "dismissed": "Incident {id} dismissed as a false alarm.",
        "withdrawn": "Incident {id}: alert withdrawn.",
    },
)

_ZH = _Texts(
    alarm="火灾报警",
    confirmed_fire="确认火灾",
    sender_name="firegrid 网关（{site}）",
    place_zone="{name}（网格 {zone}）",
    place_building="{building} 楼",
    place_floor="{floor} 层",
    place_site="场地 {site}",
    joiner="，",
    sentences="",
    headline="{event}：{place}",
    headline_closed="警报解除：{place}",
    headline_dismissed="误报：{place}",
    headline_withdrawn="警报撤销：{place}",
    position="估计位置：场地平面图 x {x} 米，y {y} 米（误差 {err} 米以内）。",
    elapsed="首个信号在本消息发出前 {s} 秒收到。",
    how={
        "queued": "正在请网格员现场核实。",
        "person": "已由 {by} 现场确认。",
        "manual": "已由手动报警按钮确认。",
        "rule": "已由探测器自动确认（{rule}）。",
        "escalated": "无人核实：确认时限已过，按火灾处理。",
        "closed": "事件已在现场处置完毕并关闭。",
        "dismissed": "报警经核实为误报，已排除。",
        "withdrawn": "本警报已撤销。",
    },
    what="{place}：{event}。",
    instruction={
        "evacuate": "请立即经最近的楼梯撤离，不要乘坐电梯；随手关门，不要返回。"
                    "如尚未报警，请拨打 119。保持通道畅通，便于救援人员到达。",
        "prepare": "火灾报警正在核实中。请做好撤离准备，听从工作人员指挥。",
        "closed": "事件已处置完毕。返回楼内前请听从现场工作人员指挥。",
        "dismissed": "无需采取任何行动。",
        "withdrawn": "请忽略此前的警报，听从现场工作人员指挥。",
    },
    note={
        "closed": "事件 {id} 已关闭。",
        "dismissed": "事件 {id} 已作为误报排除。",
        "withdrawn": "事件 {id}：警报已撤销。",
    },
)

_TEXTS = {"en": _EN, "zh": _ZH}  # by primary language subtag; zh is written in Simplified


def _texts(language: str) -> _Texts:
    if not _LANGUAGE.fullmatch(language):
        raise CapError(f"CAP language must be a language tag like en-US or zh-CN: {language!r}")
    texts = _TEXTS.get(language.split("-", 1)[0].lower())
    if texts is None:
        raise CapError(f"no CAP wording for language {language!r}; have: "
                       + ", ".join(sorted(_TEXTS)))
    return texts


# ---------------------------------------------------------------------- the message


def _certainty(inc: Mapping[str, Any], state: str) -> tuple[str, str]:
    """(CAP certainty, how it was confirmed): who saw the fire decides how sure we are."""
    by = inc.get("confirmed_by")
    rule = inc.get("confirm_rule")  # not in Incident.public() yet; the gateway may add it
    if inc.get("unverified") or by == "escalation":
        return "Likely", "escalated"
    if by == "auto":
        if rule == "manual_call_point":
            return "Observed", "manual"
        return "Likely", "rule"
    if by:
        return "Observed", "person"
    if state == CONFIRMED:  # confirmed, but by nobody we know of: a rule, to be safe
        return "Likely", "rule"
    return "Possible", "queued"


def cap_alert(
    incident: Mapping[str, Any],
    *,
    sender: str,
    frame: SiteFrame | None,
    msg_type: str,
    sent: datetime,
    references: Sequence[tuple[str, str, datetime]] = (),
    status: str = "Actual",
    scope: str = "Public",
    zone_name: str | None = None,
    web: str | None = None,
    language: str = "en-US",
    restriction: str | None = None,
    addresses: str | None = None,
    note: str | None = None,
    expires: datetime | None = None,
    seq: int | None = None,
    also: Sequence[tuple[str, Sequence[tuple[float, float]]]] = (),
) -> bytes:
    """One incident as a UTF-8 CAP 1.2 document, elements in the schema's order.

    ``incident`` is ``Incident.public()`` (``id`` and ``site`` required, the rest used when
    present and sane; an optional ``confirm_rule`` tells a manual call point from other
    rules). ``msg_type`` is Alert for the first message about an incident, Update for later
    ones and Cancel on close or dismissal; Update and Cancel need ``references``: the
    (sender, identifier, sent) of every earlier message about it, oldest first (see
    :func:`next_references`). ``seq`` overrides the message number in the identifier.
    ``frame`` adds a circle around the position; without it the area is described in words
    only, which CAP allows. ``also``: the incident's other cells in alarm, each (what to
    call it, its outline in site metres): one more ``area`` each, with its polygon when
    there is a frame, so a map shows every room the smoke (or a second fire) is in.
    Raises :class:`CapError` for arguments no valid alert can have.
    """
    if msg_type not in ("Alert", "Update", "Cancel"):
        raise CapError(f"firegrid sends Alert, Update or Cancel, not {msg_type!r}")
    if status not in STATUS:
        raise CapError(f"CAP status must be one of {', '.join(STATUS)}: {status!r}")
    if scope not in SCOPE:
        raise CapError(f"CAP scope must be one of {', '.join(SCOPE)}: {scope!r}")
    if scope == "Restricted" and not (restriction or "").strip():
        raise CapError("CAP scope Restricted needs a restriction text")
    if scope == "Private" and not (addresses or "").strip():
        raise CapError("CAP scope Private needs addresses")
    if msg_type != "Alert" and not references:
        raise CapError(f"a CAP {msg_type} must reference the messages it replaces")
    _check_token("sender", sender)
    sent_text = cap_datetime(sent)  # refuses a naive time before anything uses it
    texts = _texts(language)
    try:
        site, inc_id = str(incident["site"]), str(incident["id"])
    except KeyError as e:
        raise CapError(f"incident has no {e.args[0]!r}") from None
    refs = []
    for r_sender, r_ident, r_sent in references:
        _check_token("reference sender", r_sender)
        _check_token("reference identifier", r_ident)
        refs.append(f"{r_sender},{r_ident},{cap_datetime(r_sent)}")
    n = len(references) + 1 if seq is None else seq

    state = str(incident.get("state") or "")
    certainty, how = _certainty(incident, state)
    confirmed = how in ("person", "manual", "rule")
    event = texts.confirmed_fire if confirmed else texts.alarm
    if msg_type == "Cancel":
        ending = state if state in (CLOSED, DISMISSED) else "withdrawn"
        urgency, severity, response = "Past", "Minor", "AllClear"
        if ending == DISMISSED:
            certainty = "Unlikely"
    else:
        ending = ""
        urgency, severity = "Immediate", "Severe"
        response = "Prepare" if how == "queued" else "Evacuate"

    zone = incident.get("zone")
    building = incident.get("building")
    floor = incident.get("floor")
    where = []
    if zone is not None:
        where.append(texts.place_zone.format(name=_clean(zone_name or zone), zone=_clean(zone)))
    if building is not None:
        where.append(texts.place_building.format(building=_clean(building)))
    if isinstance(floor, int) and not isinstance(floor, bool):
        where.append(texts.place_floor.format(floor=floor))
    place = texts.joiner.join(where) or texts.place_site.format(site=_clean(site))

    x, y = _number(incident.get("x")), _number(incident.get("y"))
    err = _number(incident.get("error_m"))
    err = max(err, 0.0) if err is not None else None
    t0 = _number(incident.get("t0"))
    onset: datetime | None = None
    elapsed_s = 0
    if t0 is not None:
        try:
            onset = datetime.fromtimestamp(t0, sent.tzinfo)
            elapsed_s = max(0, int(sent.timestamp() - t0))
        except (OverflowError, OSError, ValueError):
            onset = None

    alert = ET.Element(f"{{{CAP_NS}}}alert")

    def add(parent: ET.Element, name: str, text: str | None = None) -> ET.Element:
        el = ET.SubElement(parent, f"{{{CAP_NS}}}{name}")
        if text is not None:
            el.text = text
        return el

    add(alert, "identifier", cap_identifier(site, inc_id, n))
    add(alert, "sender", sender)
    add(alert, "sent", sent_text)
    add(alert, "status", status)
    add(alert, "msgType", msg_type)
    add(alert, "scope", scope)
    if scope == "Restricted":
        add(alert, "restriction", _clean(restriction, 1000))
    if addresses and addresses.strip():
        add(alert, "addresses", _clean(addresses, 4000))
    if note is None and ending:
        note = texts.note[ending].format(id=_clean(inc_id))
    if note and note.strip():
        add(alert, "note", _clean(note, 1000))
    if refs:
        add(alert, "references", " ".join(refs))
    if inc_id:
        add(alert, "incidents", _id_part(inc_id))

    info = add(alert, "info")
    add(info, "language", language)
    add(info, "category", "Fire")
    add(info, "event", event)
    add(info, "responseType", response)
    add(info, "urgency", urgency)
    add(info, "severity", severity)
    add(info, "certainty", certainty)
    if onset is not None:
        add(info, "onset", cap_datetime(onset))
    if expires is not None:
        add(info, "expires", cap_datetime(expires))
    add(info, "senderName", texts.sender_name.format(site=_clean(site)))
    headline = {CLOSED: texts.headline_closed, DISMISSED: texts.headline_dismissed,
                "withdrawn": texts.headline_withdrawn}.get(ending, texts.headline)
    add(info, "headline", _clean(headline.format(event=event, place=place), HEADLINE_MAX))

    lines = [texts.what.format(event=event, place=place)]
    if x is not None and y is not None:
        lines.append(texts.position.format(x=_fmt(x, 1), y=_fmt(y, 1),
                                           err=_fmt(max(err or 0.0, 0.0), 1)))
    if onset is not None:
        lines.append(texts.elapsed.format(s=elapsed_s))
    if not (ending and how == "queued"):  # a Cancel does not say someone is being asked
        lines.append(texts.how[how].format(by=_clean(incident.get("confirmed_by") or ""),
                                           rule=_clean(incident.get("confirm_rule") or "")))
    if ending:
        lines.append(texts.how[ending])
    add(info, "description", _clean(texts.sentences.join(lines), 4000))
    add(info, "instruction", texts.instruction[ending or (
        "prepare" if response == "Prepare" else "evacuate")])
    if web and web.strip():
        add(info, "web", _clean(web, 1000))

    params: list[tuple[str, str]] = [("incident", _clean(inc_id)), ("state", _clean(state))]
    if zone is not None:
        params.append(("zone", _clean(zone)))
    if building is not None:
        params.append(("building", _clean(building)))
    if isinstance(floor, int) and not isinstance(floor, bool):
        params.append(("floor", str(floor)))
    if x is not None and y is not None:
        params += [("x", _fmt(x, 2)), ("y", _fmt(y, 2))]
    if err is not None:
        params.append(("error_m", _fmt(err, 2)))
    if incident.get("confirmed_by"):
        params.append(("confirmed_by", _clean(incident["confirmed_by"])))
    for name, value in params:
        if not value.strip():
            continue  # CAP needs a value; an empty zone id says nothing anyway
        p = add(info, "parameter")
        add(p, "valueName", f"firegrid.{name}")
        add(p, "value", value)

    area = add(info, "area")
    add(area, "areaDesc", _clean(place, 1000))
    if frame is not None and x is not None and y is not None and math.hypot(x, y) <= MAX_SITE_M:
        lat, lon = frame.to_wgs84(x, y)
        # whole metres, rounded up: the circle must not be smaller than the locate error
        radius_m = math.ceil(round(max(err or 0.0, MIN_RADIUS_M), 6))
        add(area, "circle", f"{lat:.6f},{lon:.6f} {_fmt(radius_m / 1000.0, 3)}")
    for desc, outline in also:
        more = add(info, "area")
        add(more, "areaDesc", _clean(f"also in alarm: {desc}", 1000))
        ring = [(x, y) for x, y in outline if math.hypot(x, y) <= MAX_SITE_M]
        if frame is not None and len(ring) == len(outline) and len(ring) >= 3:
            pts = [frame.to_wgs84(x, y) for x, y in [*ring, ring[0]]]  # CAP rings close
            add(more, "polygon", " ".join(f"{lat:.6f},{lon:.6f}" for lat, lon in pts))

    ET.indent(alert)
    return ET.tostring(alert, encoding="utf-8", xml_declaration=True, default_namespace=CAP_NS)


# ---------------------------------------------------------------------- the checker


Check = Callable[[str, str, list[str]], None]


@dataclass(frozen=True, slots=True)
class _Slot:
    """One element of a CAP sequence: name, cardinality, and a text check or children."""

    name: str
    min: int
    max: int | None
    check: Check | None = None
    children: tuple[_Slot, ...] = ()


def _enum(values: tuple[str, ...]) -> Check:
    def check(path: str, text: str, problems: list[str]) -> None:
        if text not in values:
            problems.append(f"{path}: {text!r} is not one of {', '.join(values)}")
    return check


def _check_id(path: str, text: str, problems: list[str]) -> None:
    if _FORBIDDEN_IN_ID.search(text):
        problems.append(f"{path}: {text[:80]!r} contains a space, comma, '<' or '&'")


def _datetime_problem(text: str) -> str | None:
    if not _DATETIME.fullmatch(text):
        return (f"{text[:40]!r} is not YYYY-MM-DDThh:mm:ss±hh:mm (no 'Z', no fractional "
                "seconds)")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return f"{text!r} is not a real date and time"
    if abs(parsed.utcoffset() or timedelta(0)) > timedelta(hours=14):
        return f"{text!r} has an offset beyond ±14:00"
    if text.endswith("+00:00"):
        return f"{text!r}: CAP 1.2 writes UTC as -00:00"
    return None


def _check_datetime(path: str, text: str, problems: list[str]) -> None:
    problem = _datetime_problem(text)
    if problem:
        problems.append(f"{path}: {problem}")


def _check_references(path: str, text: str, problems: list[str]) -> None:
    for token in text.split():
        parts = token.split(",")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            problems.append(f"{path}: {token[:80]!r} is not sender,identifier,sent")
            continue
        problem = _datetime_problem(parts[2])
        if problem:
            problems.append(f"{path}: reference {token[:80]!r}: {problem}")


def _check_language(path: str, text: str, problems: list[str]) -> None:
    if not _LANGUAGE.fullmatch(text):
        problems.append(f"{path}: {text[:40]!r} is not a language tag (RFC 3066)")


def _coordinates(path: str, pair: str, problems: list[str]) -> None:
    """A CAP point is "latitude,longitude" in WGS84 decimal degrees, latitude first."""
    m = _POINT.fullmatch(pair)
    if not m:
        problems.append(f"{path}: {pair[:60]!r} is not a latitude,longitude pair")
        return
    lat, lon = float(m.group(1)), float(m.group(2))
    if not -90.0 <= lat <= 90.0:
        problems.append(f"{path}: latitude {lat} is outside -90..90 (WGS84)")
    if not -180.0 <= lon <= 180.0:
        problems.append(f"{path}: longitude {lon} is outside -180..180 (WGS84)")


def _check_circle(path: str, text: str, problems: list[str]) -> None:
    parts = text.split()
    if len(parts) != 2:
        problems.append(f"{path}: {text[:60]!r} is not 'latitude,longitude radius_km'")
        return
    _coordinates(path, parts[0], problems)
    if not re.fullmatch(_DECIMAL, parts[1]) or float(parts[1]) < 0:
        problems.append(f"{path}: radius {parts[1][:20]!r} is not a kilometre value >= 0")


def _check_polygon(path: str, text: str, problems: list[str]) -> None:
    pairs = text.split()
    if len(pairs) < 4:
        problems.append(f"{path}: a polygon needs at least 4 coordinate pairs")
    for pair in pairs:
        _coordinates(path, pair, problems)
    if pairs and pairs[0] != pairs[-1]:
        problems.append(f"{path}: the first and last coordinate pairs must be the same")


def _check_decimal(path: str, text: str, problems: list[str]) -> None:
    if not re.fullmatch(_DECIMAL, text.strip()):
        problems.append(f"{path}: {text[:20]!r} is not a decimal number")


def _check_integer(path: str, text: str, problems: list[str]) -> None:
    if not re.fullmatch(r"[-+]?\d+", text.strip()):
        problems.append(f"{path}: {text[:20]!r} is not an integer")


_PAIR = (_Slot("valueName", 1, 1), _Slot("value", 1, 1))
_AREA = (
    _Slot("areaDesc", 1, 1),
    _Slot("polygon", 0, None, _check_polygon),
    _Slot("circle", 0, None, _check_circle),
    _Slot("geocode", 0, None, children=_PAIR),
    _Slot("altitude", 0, 1, _check_decimal),
    _Slot("ceiling", 0, 1, _check_decimal),
)
_RESOURCE = (
    _Slot("resourceDesc", 1, 1),
    _Slot("mimeType", 1, 1),
    _Slot("size", 0, 1, _check_integer),
    _Slot("uri", 0, 1),
    _Slot("derefUri", 0, 1),
    _Slot("digest", 0, 1),
)
_INFO = (
    _Slot("language", 0, 1, _check_language),
    _Slot("category", 1, None, _enum(CATEGORY)),
    _Slot("event", 1, 1),
    _Slot("responseType", 0, None, _enum(RESPONSE_TYPE)),
    _Slot("urgency", 1, 1, _enum(URGENCY)),
    _Slot("severity", 1, 1, _enum(SEVERITY)),
    _Slot("certainty", 1, 1, _enum(CERTAINTY)),
    _Slot("audience", 0, 1),
    _Slot("eventCode", 0, None, children=_PAIR),
    _Slot("effective", 0, 1, _check_datetime),
    _Slot("onset", 0, 1, _check_datetime),
    _Slot("expires", 0, 1, _check_datetime),
    _Slot("senderName", 0, 1),
    _Slot("headline", 0, 1),
    _Slot("description", 0, 1),
    _Slot("instruction", 0, 1),
    _Slot("web", 0, 1),
    _Slot("contact", 0, 1),
    _Slot("parameter", 0, None, children=_PAIR),
    _Slot("resource", 0, None, children=_RESOURCE),
    _Slot("area", 0, None, children=_AREA),
)
_ALERT = (
    _Slot("identifier", 1, 1, _check_id),
    _Slot("sender", 1, 1, _check_id),
    _Slot("sent", 1, 1, _check_datetime),
    _Slot("status", 1, 1, _enum(STATUS)),
    _Slot("msgType", 1, 1, _enum(MSG_TYPE)),
    _Slot("source", 0, 1),
    _Slot("scope", 1, 1, _enum(SCOPE)),
    _Slot("restriction", 0, 1),
    _Slot("addresses", 0, 1),
    _Slot("code", 0, None),
    _Slot("note", 0, 1),
    _Slot("references", 0, 1, _check_references),
    _Slot("incidents", 0, 1),
    _Slot("info", 0, None, children=_INFO),
)


def _walk(el: ET.Element, path: str, seq: tuple[_Slot, ...], problems: list[str],
          *, signature_ok: bool = False) -> None:
    """Check one container's children against its sequence: order, cardinality, content."""
    index = {slot.name: i for i, slot in enumerate(seq)}
    counts: Counter[str] = Counter()
    pos, signed = 0, False
    if (el.text or "").strip():
        problems.append(f"{path}: text {el.text.strip()[:40]!r} where only elements belong")
    for child in el:
        ns, _, local = child.tag.rpartition("}")
        ns = ns.lstrip("{")
        if signature_ok and ns == DSIG_NS:
            signed = True
            continue
        i = index.get(local) if ns == CAP_NS else None
        if i is None:
            problems.append(f"{path}: unexpected element {child.tag!r}")
            continue
        slot = seq[i]
        counts[local] += 1
        where = f"{path}/{local}" + (f"[{counts[local]}]" if slot.max != 1 else "")
        if signed:
            problems.append(f"{where}: out of order (after the signature)")
        if i < pos:
            problems.append(f"{where}: out of order (CAP puts it before {seq[pos].name})")
        else:
            pos = i
        if slot.max is not None and counts[local] == slot.max + 1:
            problems.append(f"{path}/{local}: appears more than {slot.max} time(s)")
        if (child.tail or "").strip():
            problems.append(f"{path}: text {child.tail.strip()[:40]!r} where only elements "
                            "belong")
        if slot.children:
            _walk(child, where, slot.children, problems)
            continue
        if len(child):
            problems.append(f"{where}: must hold text, not elements")
        text = child.text or ""
        if slot.min and not text.strip():
            problems.append(f"{where}: required element is empty")
        elif slot.check is not None and text:
            slot.check(where, text, problems)
    for slot in seq:
        if counts[slot.name] < slot.min:
            problems.append(f"{path}: missing required element {slot.name}")


def _prepare(xml: bytes) -> tuple[ET.Element | None, list[str]]:
    """Size cap, UTF-8 only, no DTD (so no entities), then parse; the root or why not."""
    if len(xml) > MAX_CAP_BYTES:
        return None, [f"document is {len(xml)} bytes; the checker reads at most {MAX_CAP_BYTES}"]
    try:
        text = xml.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return None, [f"not UTF-8: {e.reason} at byte {e.start}"]
    if "\x00" in text:
        return None, ["document holds NUL characters (UTF-16 or binary?): not UTF-8 XML"]
    head = re.match(r"\s*<\?xml[^>]*?encoding\s*=\s*[\"']([^\"']*)[\"']", text)
    if head and head.group(1).lower().replace("_", "-") not in ("utf-8", "utf8"):
        return None, [f"declared encoding {head.group(1)!r}: CAP here must be UTF-8"]
    upper = text.upper()
    if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
        return None, ["document has a DTD or entity declaration: refused (entity expansion "
                      "and external resources are an attack surface CAP never needs)"]
    try:
        return ET.fromstring(xml), []
    except ET.ParseError as e:
        return None, [f"not well-formed XML: {e}"]


def validate_cap(xml: bytes) -> list[str]:
    """Every problem found in a CAP 1.2 document, one line each; empty when it is valid.

    Checks what the CAP 1.2 schema and text require and a reader would trip on: the
    namespace; each element's place in its sequence and how often it occurs; required
    elements present and non-empty; enumerations; dateTime format (UTC as ``-00:00``);
    identifier and sender characters; the ``references`` triples; ``restriction`` with scope
    Restricted, ``addresses`` with Private, ``references`` with Update, Cancel, Ack and
    Error; circles and polygons in WGS84 ranges. It refuses documents with a DTD and
    documents over :data:`MAX_CAP_BYTES` before parsing: it is meant for untrusted input too.
    """
    root, problems = _prepare(xml)
    if root is None:
        return problems
    if root.tag != f"{{{CAP_NS}}}alert":
        return [f"root element is {root.tag!r}, not alert in namespace {CAP_NS}"]
    _walk(root, "alert", _ALERT, problems, signature_ok=True)

    def value(name: str) -> str | None:
        el = root.find(f"{{{CAP_NS}}}{name}")
        return None if el is None else (el.text or "")

    scope, msg_type = value("scope"), value("msgType")
    if scope == "Restricted" and not (value("restriction") or "").strip():
        problems.append("alert: scope Restricted needs a restriction")
    if scope == "Private" and not (value("addresses") or "").strip():
        problems.append("alert: scope Private needs addresses")
    if msg_type in ("Update", "Cancel", "Ack", "Error") and not (value("references")
                                                                  or "").strip():
        problems.append(f"alert: msgType {msg_type} needs references to earlier messages")
    return problems


def next_references(xml: bytes) -> list[tuple[str, str, datetime]]:
    """What the next message about the same incident references: this one's references
    and this one, oldest first. Lets the gateway rebuild the chain from the retained
    ``cap/<incident>`` message instead of keeping it elsewhere."""
    root, problems = _prepare(xml)
    if root is None:
        raise CapError("; ".join(problems))

    def text(el: ET.Element, name: str) -> str:
        found = el.find(f"{{{CAP_NS}}}{name}")
        if found is None or not (found.text or "").strip():
            raise CapError(f"not a CAP alert with {name}")
        return found.text.strip()

    def when(value: str) -> datetime:
        try:
            if _DATETIME.fullmatch(value):
                return datetime.fromisoformat(value)
        except ValueError:
            pass
        raise CapError(f"not a CAP dateTime: {value[:40]!r}")

    out = []
    refs = root.find(f"{{{CAP_NS}}}references")
    for token in (refs.text or "").split() if refs is not None else ():
        parts = token.split(",")
        if len(parts) != 3:
            raise CapError(f"reference {token[:80]!r} is not sender,identifier,sent")
        out.append((parts[0], parts[1], when(parts[2])))
    out.append((text(root, "sender"), text(root, "identifier"), when(text(root, "sent"))))
    return out
