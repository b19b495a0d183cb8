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
    for ch in text:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif ch in "]}" and depth:
            depth -= 1
        elif ch == "\n":
            quote = ""  # a stray quote does not swallow the rest of the file
    return deepest
