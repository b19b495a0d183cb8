"""Clustering: which open incident an alarm belongs to, or whether it starts a new one.

One fire setting off eight detectors is one incident; fires in two buildings are two;
a second fire later in the same building is told apart from the first one's spreading
smoke where the evidence allows (docs/locating.md, "Clustering", which numbers the
rules these methods carry out). Mixed into ``gateway.engine.Engine``: the rules read the
engine's open incidents, device states, floor plans and solver, and decide nothing
else, so they live here to be read together.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gateway import locate
from gateway.config import Device, Site, Zone
from gateway.geometry import building_of
from gateway.model import NS, DeviceState

if TYPE_CHECKING:  # the engine mixes this in; its types are for the reader only
    from gateway.engine import Incident

CLUSTER_M = 20.0  # an alarm this close to an open incident, same building, may join it
VERTICAL_MIN_S = 30.0  # smoke takes at least this long to reach the floor above (docs)
SPLIT_COST = 12.0  # -2 log L two fires must gain over one before an alarm is a new fire
FRONT_MIN_ALARMS = 2  # fire-floor smoke alarms before t_ign and K say where the front is
NEIGHBOUR_M = 8.0  # a smoke alarm this near an alarmed one is spread (detector spacing)
RISE_MARGIN_M = 3.0  # smoke from below reaches the detectors over the fire first (docs)


def _ns(seconds: float) -> int:
    return round(seconds * NS)


class Clustering:
    """The clustering rules, as methods of the engine (see the module's docstring)."""

    # what the rules read of the engine
    site: Site
    incidents: dict[str, Incident]
    device_states: dict[str, DeviceState]
    _floor_devices: dict[tuple[str, int], list[Device]]

    if TYPE_CHECKING:
        def _solve(self, inc: Incident, t_ns: int, extra: tuple[Device, int] | None = None,
                   exclude: str | None = None, fine: bool = True) -> locate.Estimate | None: ...

        def _evidence(self, inc: Incident, t_ns: int, extra: tuple[Device, int] | None = None,
                      exclude: str | None = None
                      ) -> tuple[locate.FloorPlan, locate.Evidence] | None: ...

        def _disabled(self, device: Device, t_ns: int) -> bool: ...

    def _cluster(self, device: Device, zone: Zone, bearing: float | None, t_ns: int
                 ) -> tuple[Incident | None, locate.Estimate | None]:
        """The open incident this alarm belongs to, if any, and the refined estimate with it.

        Never across buildings; never to a floor below the fire (smoke does not sink); to the
        floor above only ``VERTICAL_MIN_S`` after that floor's first alarm, and not before
        the front below could have sent smoke up (``_ahead_of_front``); within
        ``CLUSTER_M``. A smoke alarm on the fire floor must also be explained by one fire:
        if adding it to the incident costs more than ``SPLIT_COST`` over the best single
        origin (it came too early for the front, or beyond detectors that stayed silent),
        it is a second fire. Nearest incident wins, and one spreading on this floor wins
        over one whose smoke would have had to come up from the floor below.
        """
        building = building_of(zone)
        best: tuple[float, Incident, locate.Estimate | None] | None = None
        for inc in self.incidents.values():
            if not inc.active or inc.building != building:
                continue
            if device.kind == "camera":
                miss = self._camera_miss(device, bearing, inc)
                if miss is not None and (best is None or miss < best[0]):
                    best = (miss, inc, None)
                continue
            fit = self._fits(inc, device, t_ns)
            if fit is not None and (best is None or fit[0] < best[0]):
                best = (fit[0], inc, fit[1])
        return (best[1], best[2]) if best else (None, None)

    def _fits(self, inc: Incident, device: Device, t_ns: int
              ) -> tuple[float, locate.Estimate | None] | None:
        """(score, estimate with the device) if ``device`` may be spread of ``inc``.

        The score is the distance, plus ``CLUSTER_M`` when the smoke had to rise a floor.
        """
        members = [(d, t) for d, t in ((self.site.device(i), t) for i, t in inc.devices.items())
                   if d is not None and d.kind != "camera"]
        fire_floor = inc.floor
        if device.floor < fire_floor:
            return None
        anchors = [(d.x, d.y) for d, _ in members if d.floor == device.floor]
        rise = 0.0
        if device.floor == fire_floor:
            anchors.append((inc.x, inc.y))
        elif not anchors:  # first alarm on this floor: smoke came up from the one below
            below = [(d, t) for d, t in members if d.floor == device.floor - 1]
            if not below or t_ns - min(t for _, t in below) < _ns(VERTICAL_MIN_S):
                return None
            anchors = [(inc.x, inc.y), *((d.x, d.y) for d, _ in below)]
            rise = CLUSTER_M
        dist = min(math.hypot(device.x - x, device.y - y) for x, y in anchors)
        if dist > CLUSTER_M:
            return None
        if rise and device.kind == "smoke" and (
                self._ahead_of_front(inc, device, t_ns)
                or self._off_the_rise(inc, device, t_ns)):
            return None
        est = None
        smoke = [d for d, _ in members if d.kind == "smoke" and d.floor == fire_floor]
        # next to an alarmed detector nothing lies between them: spread, no test needed
        if (device.kind == "smoke" and device.floor == fire_floor and smoke
                and min(math.hypot(device.x - d.x, device.y - d.y) for d in smoke)
                > NEIGHBOUR_M):
            without = self._solve(inc, t_ns, exclude=device.id, fine=False)
            with_ = self._solve(inc, t_ns, extra=(device, t_ns), fine=False)
            if (without is not None and with_ is not None
                    and with_.cost - without.cost > SPLIT_COST):
                return None
        return dist + rise, est

    def _ahead_of_front(self, inc: Incident, device: Device, t_ns: int) -> bool:
        """A smoke alarm on the floor above that came before this fire's smoke could be there.

        Smoke up a stair or a shaft is delayed and weakened, never early: it reaches the
        floor above no sooner than ``VERTICAL_MIN_S`` after the fire floor's front reached
        the point below the detector, t_ign + K sqrt(r). Only once two or more smoke alarms
        on the fire floor have fitted t_ign and K; r is measured from the nearest point of
        the estimate's error radius, so an uncertain origin makes the rule weaker.
        """
        got = self._evidence(inc, t_ns)
        if got is None or len(got[1].alarm_xy) < FRONT_MIN_ALARMS:
            return False
        est = locate.solve(got[0], got[1], fine=False)
        if est is None or est.t_ignition is None or est.k is None:
            return False
        r = max(math.hypot(device.x - est.x, device.y - est.y) - est.error_m, locate.R0_M)
        front = est.t_ignition + est.k * math.sqrt(r)
        return (t_ns - inc.t0_ns) / NS < front + VERTICAL_MIN_S

    def _off_the_rise(self, inc: Incident, device: Device, t_ns: int) -> bool:
        """The first smoke alarm on the floor above, where smoke from below would not come first.

        Smoke that rises from the fire (out of a window and up the facade, up a shaft
        stacked over the room) comes in over the fire and spreads from there, so the
        detectors nearest the point above it alarm first. If a working detector on this
        floor stays silent although it is nearer that point, by more than
        ``RISE_MARGIN_M`` or the estimate's error radius, this alarm has a source of its
        own: a fire on this floor. Smoke up a stair far from the fire breaks the rule;
        then the floor above is an incident of its own (docs/locating.md).
        """
        margin = max(RISE_MARGIN_M, inc.error_m)
        reach = math.hypot(device.x - inc.x, device.y - inc.y) - margin
        if reach <= 0:
            return False
        taken = {i for other in self.incidents.values() if other.active for i in other.devices}
        for d in self._floor_devices.get((inc.building, device.floor), ()):
            if d.kind != "smoke" or d.id == device.id or d.id in taken or self._disabled(d, t_ns):
                continue
            state = self.device_states.get(d.id)
            if ((state is None or state.state in ("normal", "trouble"))
                    and math.hypot(d.x - inc.x, d.y - inc.y) < reach):
                return True
        return False

    def _camera_miss(self, cam: Device, bearing: float | None, inc: Incident) -> float | None:
        """How far the camera's line of sight passes from the incident; None: not seen."""
        if cam.floor != inc.floor:
            return None
        dx, dy = inc.x - cam.x, inc.y - cam.y
        dist = math.hypot(dx, dy)
        if dist > locate.CAMERA_RANGE_M + inc.error_m:
            return None
        if dist <= inc.error_m:
            return 0.0
        look = bearing if bearing is not None else cam.azimuth_deg
        if look is None:
            return dist if dist <= cam.radius + inc.error_m else None
        diff = math.radians((math.degrees(math.atan2(dy, dx)) - look + 180.0) % 360.0 - 180.0)
        if bearing is None:  # no bearing: anywhere in the field of view
            half = math.radians((cam.fov_deg or 90.0) / 2)
            return dist * abs(math.sin(max(0.0, abs(diff) - half))) if abs(diff) <= math.pi / 2 \
                + half else None
        if abs(diff) > math.pi / 2:
            return None
        miss = dist * abs(math.sin(diff))
        allowed = inc.error_m + 2.0 + dist * math.tan(math.radians(3 * locate.BEARING_SIGMA_DEG))
        return miss if miss <= allowed else None
