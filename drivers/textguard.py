"""Cheap checks on untrusted text before a parser that recurses sees it.

PyYAML builds nested flow collections (``[[[...]]]``) by recursion: a few kilobytes of
brackets cost it a third of a second and end in RecursionError. Counting the depth
first is linear and lets a site or scenario file be refused at once.
"""

from __future__ import annotations

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
