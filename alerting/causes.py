"""Why an alarm was or was not a fire: what a person may say when dismissing or closing.

``fire``, and BS 5839-1's categories of false alarm: ``unwanted`` (the system did what
it should, at toast, steam, dust or a contractor's work), ``equipment`` (a fault),
``malicious``, ``good_intent`` (someone believed there was a fire) and ``unknown``.
Shared by the gateway, which records them and counts false alarms by them
(gateway/false_alarms.py), and the simulated people in ``firmware_sim``.
"""

from __future__ import annotations

CAUSES = ("fire", "unwanted", "equipment", "malicious", "good_intent", "unknown")
FALSE_ALARM_CAUSES = CAUSES[1:]  # what a dismissal may give: it was not a fire
