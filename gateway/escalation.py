"""Who a tier pages right now: rosters by time of day and day of week, with a fallback.

Pure functions of the site file and the time passed in, so the engine stays testable in
simulated time. A roster may never leave a confirmed fire unpaged: when nobody in a tier
is on duty, the tier's ``fallback`` responders are paged, and without a fallback every
member is, with a note in the step saying so.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from gateway.config import DAYS, Responder, Site

NS = 1_000_000_000


def site_zone(site: Site) -> timezone:
    sign = -1 if site.utc_offset.startswith("-") else 1
    hours, minutes = (int(p) for p in site.utc_offset[1:].split(":"))
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def on_duty(responder: Responder, now_ns: int, tz: timezone) -> bool:
    """Is ``responder`` on duty at ``now_ns``? No roster means always."""
    if responder.on_duty is None:
        return True
    local = datetime.fromtimestamp(now_ns / NS, UTC).astimezone(tz)
    minute = local.hour * 60 + local.minute
    today = DAYS[local.weekday()]
    yesterday = DAYS[(local.weekday() - 1) % 7]
    for shift in responder.on_duty:
        start, until = shift.minutes()
        if start < until:
            if today in shift.days and start <= minute < until:
                return True
        else:  # runs past midnight: the evening of a listed day, or the next morning
            if (today in shift.days and minute >= start) or (
                    yesterday in shift.days and minute < until):
                return True
    return False


def tier_roster(site: Site, tier: int, now_ns: int) -> tuple[list[Responder], str]:
    """The members of ``tier`` to page now, and a note when the roster left nobody."""
    members = site.tier_members(tier)
    tz = site_zone(site)
    on = [r for r in members if on_duty(r, now_ns, tz)]
    if on:
        return on, ""
    t = site.tier(tier)
    fallback = [r for rid in (t.fallback if t else []) if (r := site.responder(rid))]
    if fallback:
        return fallback, "nobody on duty: fallback"
    return members, "nobody on duty: paging every member"
