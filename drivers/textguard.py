"""Cheap checks on untrusted text: before a parser that recurses sees it, and after.

PyYAML builds nested flow collections (``[[[...]]]``) by recursion: a few kilobytes of
brackets cost it a third of a second and end in RecursionError. Counting the depth
first is linear and lets a site or scenario file be refused at once.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_FLOW_DEPTH = 64  # no site or scenario file nests anywhere near this


def flow_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` outside quoted strings (an upper bound is enough)."""
    depth = deepest = 0
    quote = ""
    escaped = False
    prev = "\n"  # last character that was not a space, outside quotes
    for ch in text:
        if ch == "\n":
            quote = ""  # a quoted scalar is read line by line here: never hides the rest
            escaped = False
        elif quote:
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote:
                quote = ""
            continue
        elif ch in "\"'" and prev in "\n:-[{,?":
            quote = ch  # a quote opens a scalar only where one can start ("worker's" is text)
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif ch in "]}" and depth:
            depth -= 1
        if ch not in " \t":
            prev = ch
    return deepest


def unencodable(data: object, place: str = "", seen: set[int] | None = None) -> Iterable[str]:
    """Places of strings (keys or values) that cannot be written as UTF-8.

    A YAML alias makes one object appear in many places; each is checked once.
    """
    seen = set() if seen is None else seen
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            yield place or "(top)"
        return
    if not isinstance(data, dict | list) or id(data) in seen:
        return
    seen.add(id(data))
    if isinstance(data, dict):
        for k, v in data.items():
            key_place = f"{place}.{k}" if place else str(k)
            yield from unencodable(k, key_place, seen)
            yield from unencodable(v, key_place, seen)
    else:
        for i, v in enumerate(data):
            yield from unencodable(v, f"{place}[{i}]", seen)
