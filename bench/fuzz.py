"""Fuzzing: every decoder fed mutated and generated inputs; crashes, hangs and memory counted.

Run from the repository root (the project installed, e.g. editable)::

    python bench/fuzz.py [--inputs 1000000] [--seconds N] [--target NAME ...] [--seed S]

Each target is one decoder of untrusted input (a registry, ``TARGETS``, so the feeds still
to be built slot in). For each, a worker process generates inputs by

* mutating a seed corpus of valid payloads or files: byte flips, insertions of random
  bytes and of format tokens, deletions, repeats, splices, truncation; and, on the
  parsed structure, values replaced by extreme numbers, NaN/Infinity literals, huge
  strings, wrong types, odd unicode and deep nesting, keys added, dropped, misspelt and
  duplicated (YAML targets also get anchors and aliases, tags, merge keys, alias bombs);
* generating them outright: random bytes, and "token soup" of the format's pieces;

and runs each through the decoder. An input is *accepted* (a value came out), *rejected*
(the decoder's own error, the one the code promises callers), a *crash* (any other
exception, or a broken invariant: an accepted value that its consumer cannot use), a
*hang* (it took more than ``HANG_S``; interrupted at ``ABORT_S``) or a *memory* finding
(it hit the worker's address-space limit, ``MEM_LIMIT_MB`` over its start, or raised the
worker's peak RSS by more than ``MEM_JUMP_MB`` on its own; or the worker's RSS grew by
more than ``RSS_GROWTH_MB`` after warm-up: a leak). Per target the table also shows peak
RSS, RSS growth after warm-up and the largest Python allocation of one input
(tracemalloc, on a sample of inputs).

The first reproducers of each distinct crash (exception type and place) are written
under ``--out`` (minimised where the input is bytes or text), with the traceback beside
them; ``--replay FILE --target NAME`` runs one again. Targets are split over ``--jobs``
processes (default: every core). Exit status: 0 clean, 1 any crash, hang or memory
finding, 2 bad arguments.

``--inputs`` is shared out by each target's weight (the YAML parsers are pure Python and
get few); ``--per-target N`` gives every selected target N instead. ``--atheris`` adds a
coverage-guided pass (libFuzzer via atheris, if installed: ``pip install atheris``; it is
not a dependency of firegrid) over each target that takes raw bytes; ``--only-atheris``
runs that pass alone. See docs/fuzzing.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from resource import RLIMIT_AS, RUSAGE_SELF, getrlimit, getrusage, setrlimit
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parent.parent
NS = 1_000_000_000

HANG_S = 1.0  # an input slower than this is a hang
ABORT_S = 2.0  # ... and is interrupted (SIGALRM) once it has run this long
KILL_S = 60.0  # a worker stuck this long on one input (in C, deaf to signals) is killed
SAMPLE_EVERY = 997  # one input in this many runs under tracemalloc (and gets 4x the time)
SAMPLED_SLOWDOWN = 4.0
MEM_LIMIT_MB = 2048  # address space a worker may add before MemoryError marks an input
MEM_JUMP_MB = 100  # ... and one input that raises the worker's peak RSS by more than this
RSS_GROWTH_MB = 256  # RSS growth after warm-up beyond this is a finding (a leak)
KEEP_PER_SIGNATURE = 3  # reproducers saved per distinct crash, per worker
MAX_SIGNATURES = 12  # distinct crashes saved per worker (all are counted)
MINIMIZE_S = 3.0  # default time spent shrinking the first reproducer of each crash

# --------------------------------------------------------------------------- JSON trees


class Raw(str):
    """Text emitted verbatim: ``NaN``, ``1e999``, a lone surrogate escape, 10,000 brackets."""

    __slots__ = ()


class Pairs(list):
    """A JSON/YAML mapping as (key, value) pairs, so that a key can appear twice."""

    __slots__ = ()


class _TooBig(Exception):
    pass


def to_tree(v: Any) -> Any:
    if isinstance(v, dict):
        return Pairs((k, to_tree(x)) for k, x in v.items())
    if isinstance(v, list):
        return [to_tree(x) for x in v]
    return v


class Emitter:
    """Trees to text, with a size budget (repeated subtrees could otherwise explode)."""

    def __init__(self, limit: int):
        self.limit = limit

    def json(self, tree: Any, ascii_only: bool = True) -> bytes:
        out: list[str] = []
        self._size = 0
        with contextlib.suppress(_TooBig):
            self._emit(tree, out, ascii_only, False)
        return "".join(out).encode("utf-8", "surrogatepass")

    def yaml(self, tree: Any) -> str:
        """A top-level mapping in block style (one key a line), nested values in flow style."""
        self._size = 0
        out: list[str] = []
        try:
            if isinstance(tree, Pairs):
                for k, v in tree:
                    self._emit(k, out, False, True)
                    if isinstance(v, list) and not isinstance(v, Pairs) and v:
                        out.append(":\n")
                        for item in v:
                            out.append("  - ")
                            self._emit(item, out, False, True)
                            out.append("\n")
                    else:
                        out.append(": ")
                        self._emit(v, out, False, True)
                        out.append("\n")
            else:
                self._emit(tree, out, False, True)
        except _TooBig:
            pass
        return "".join(out)

    def _emit(self, v: Any, out: list[str], ascii_only: bool, yaml: bool) -> None:
        if isinstance(v, Raw):
            s = str(v)
        elif isinstance(v, str):
            s = json.dumps(v, ensure_ascii=ascii_only)
        elif v is None:
            s = "null"
        elif v is True:
            s = "true"
        elif v is False:
            s = "false"
        elif isinstance(v, int):
            s = str(v) if abs(v) < 10**300 else "1" + "0" * 300
        elif isinstance(v, float):
            if math.isfinite(v):
                s = repr(v)
            elif yaml:
                s = ".nan" if v != v else (".inf" if v > 0 else "-.inf")
            else:
                s = "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
        elif isinstance(v, Pairs):
            out.append("{")
            for i, (k, x) in enumerate(v):
                if i:
                    out.append(", " if yaml else ",")
                if yaml or isinstance(k, Raw):
                    self._emit(k, out, ascii_only, yaml)
                else:
                    out.append(json.dumps(str(k), ensure_ascii=ascii_only))
                out.append(": " if yaml else ":")
                self._emit(x, out, ascii_only, yaml)
            out.append("}")
            return
        elif isinstance(v, list | tuple):
            out.append("[")
            for i, x in enumerate(v):
                if i:
                    out.append(", " if yaml else ",")
                self._emit(x, out, ascii_only, yaml)
            out.append("]")
            return
        else:  # dates, bytes and sets from YAML
            s = json.dumps(str(v))
        self._size += len(s)
        if self._size > self.limit:
            raise _TooBig
        out.append(s)


# ------------------------------------------------------------------------ mutation

INTERESTING_BYTES = b'\x00\x01\x7f\x80\xff\xc0\xed\xef"\'\\{}[]:,.-+eE0179 \t\r\n#&*!|>?%@`~/'

JSON_TOKENS = [
    b"{", b"}", b"[", b"]", b'"', b":", b",", b"null", b"true", b"false", b"NaN",
    b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"-0", b"1e-400", b"0.0000001",
    b"18446744073709551616", b"-9223372036854775809", b"1" + b"0" * 400, b"\\u0000",
    b"\\ud800", b"\\udfff", b"\\ud83d\\udd25", b"\\", b"\\x00", b"\xef\xbb\xbf",
    b"\xed\xa0\x80", b"\xc0\x80", b"\xf4\x90\x80\x80", b"\xff", b"\x00", b"/*", b"//",
    b"\t", b"\r\n", b" " * 64, b'"state"', b'"alarm"', b'"kind"', b'"value"', b'"ts"',
    b'"bearing_deg"', b'"incident"', b'"status"', b'"ack"', b'"on_scene"', b'"decline"',
    b'"decision"', b'"confirm"', b'"dismiss"', b'"by"', b'"reason"', b'"\xe7\x81\xab"',
]

YAML_TOKENS = [
    b"&a ", b"*a", b"&b ", b"*b", b"*nope", b"<<: ", b"<<: *a\n", b"!!binary ", b"!!str ",
    b"!!int ", b"!!float ", b"!!bool ", b"!!null ", b"!!set ", b"!!omap ", b"!!timestamp ",
    b"!!python/object/apply:os.system ['true']", b"!!python/name:os.system ", b"!local ",
    b"!<tag:yaml.org,2002:str> ", b"---\n", b"...\n", b"%YAML 1.1\n", b"%TAG ! tag:x,2000:\n",
    b"? ", b"- ", b": ", b"|\n", b">-\n", b"|+2\n", b"\t", b"  ", b"    ", b"\n", b"\r\n",
    b"\r", b"\xc2\x85", b"\xe2\x80\xa8", b"#", b"~", b".nan", b".inf", b"-.inf", b"1e400",
    b"0x1F", b"0o17", b"0b101", b"1_000", b"1:20:30", b"2001-12-14t21:59:43.10-05:00",
    b"yes", b"off", b"'", b'"', b'"\\u0000"', b'"\\x00"', b'"\\ud800"', b"{", b"}", b"[",
    b"]", b",", b"\xef\xbb\xbf", b"\x00", b"\x1b", b"=", b"!", b"%", b"@", b"`", b"null",
    b"true", b"-1", b"0", b"1e12", b"9" * 40,
]

HUGE_INTS = ["9223372036854775807", "9223372036854775808", "18446744073709551616",
             "-9223372036854775809", "1" + "0" * 400]
JSON_NUMBERS = [
    "0", "-0", "-0.0", "1", "-1", "0.5", "1e12", "1000000000000.0001", "-1e12",
    "-1000000000001", "4102444800", "4102444800.000001", "-0.000001", "360", "360.0000001",
    "-360", "-360.0000001", "1.7976931348623157e308", "5e-324", "1e-400", "1e309",
    "-1e309", "1e999", "NaN", "-NaN", "Infinity", "-Infinity", "nan", "inf", "0x10", "01",
    "1.", ".5", "+1", "1e", "--1", "1_000", "1E+2", "2e-1", *HUGE_INTS,
]
YAML_SCALARS = [
    ".nan", ".NaN", ".inf", "-.inf", "+.inf", "1e400", "-1e400", "1.0e+400", "1e300",
    "0x7fffffffffffffff", "0o777", "0b1010", "1_000_000", "1:20", "190:20:30", "~", "null",
    "Null", "yes", "no", "on", "off", "y", "n", "2001-12-14", "2001-12-14t21:59:43.10-05:00",
    "!!binary aGVsbG8=", "!!str 12", "!!int '12'", "!!float '1'", "!!null ''", "!!bool yes",
    "!!set {a, b}", "!!omap [{a: 1}]", "!!python/object/apply:os.system ['true']",
    "!!python/name:os.system", "!<tag:yaml.org,2002:str> x", "!local x", "&a 1", "*a",
    "*undefined", "'single'", '"\\x00"', '"\\u0000"', '"\\U0001F525"', '"\\ud800"', "-",
    "?", "''", "[]", "{}", "[1, [2, [3]]]", "{? a: b}", "-0", "+1", "0.", ".5", "1e3",
    "1.0e+3", "360.0000001", "-360.0000001", "1e12", "4102444801", "1.5", "-1", "0",
    *HUGE_INTS,
]
STRINGS: list[Any] = [
    "", " ", "alarm ", "ALARM", "Alarm", "alarm\u0000", "\u0000", "火警", "🔥", "\u202eevil",
    "e\u0301", "\u2028", "\ufeffalarm", "😀", "a/b", "+", "#", "$SYS",
    "../../etc/passwd", "%s%n", "${jndi:x}", "'; DROP TABLE steps; --", "\\", '"', "\n",
    "\t", "null", "true", "1", "1e999", "NaN",
    Raw('"\\ud800"'), Raw('"\\udfff"'), Raw('"\\ud83d\\udd25"'), Raw('"\\u0000"'),
    Raw('"\\x41"'), Raw('"\\\''), Raw('"unterminated'), Raw("'single'"),
]
DEPTHS = (16, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1023, 1024, 1025,
          3000, 20000)
# PyYAML recurses per level and scans deep flow nesting in quadratic time: the deep ones
# are rare so that they do not eat the run
YAML_DEPTHS = (16, 16, 32, 64, 64, 100, 128, 150, 200, 250, 300, 500, 1000, 2000)
HUGE_LENGTHS = (81, 500, 1024, 1025, 4096, 4097, 10000, 70000)


class Mutator:
    """Byte-level and structure-aware mutation, driven by one seeded ``random.Random``."""

    def __init__(self, rng: random.Random, tokens: list[bytes], vocab: list[Any],
                 keys: list[Any], max_len: int, yaml: bool = False):
        self.rng = rng
        self.tokens = tokens
        self.vocab = vocab
        self.keys = keys
        self.max_len = max_len
        self.yaml = yaml
        self.emitter = Emitter(max_len)

    # ---- bytes

    def bytes(self, data: bytes, pool: list[bytes]) -> bytes:
        rng = self.rng
        buf = bytearray(data)
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 6, 8))):
            op = rng.randrange(12)
            n = len(buf)
            if op == 0 and n:
                i = rng.randrange(n)
                buf[i] ^= 1 << rng.randrange(8)
            elif op == 1 and n:
                buf[rng.randrange(n)] = rng.choice(INTERESTING_BYTES)
            elif op == 2:
                i = rng.randint(0, n)
                buf[i:i] = rng.randbytes(rng.randint(1, 8))
            elif op in (3, 4):
                i = rng.randint(0, n)
                buf[i:i] = rng.choice(self.tokens)
            elif op == 5 and n:
                i = rng.randrange(n)
                del buf[i:i + rng.randint(1, 16)]
            elif op == 6 and n:
                i = rng.randrange(n)
                chunk = buf[i:i + rng.randint(1, 32)]
                buf[i:i] = chunk * rng.choice((1, 2, 3, 10, 100))
            elif op == 7 and pool:
                other = rng.choice(pool)
                buf = buf[:rng.randint(0, n)] + other[rng.randint(0, len(other)):]
            elif op == 8 and n:
                del buf[rng.randrange(n):]
            elif op == 9 and n:
                i = rng.randrange(n)
                k = min(n - i, rng.randint(1, 8))
                buf[i:i + k] = rng.randbytes(k)
            elif op == 10 and n > 2:  # swap two chunks
                i, j = sorted(rng.sample(range(n), 2))
                k = rng.randint(1, min(8, j - i))
                buf[i:i + k], buf[j:j + k] = buf[j:j + k], buf[i:i + k]
            elif n:  # replace a token with another
                tok = rng.choice(self.tokens)
                at = buf.find(tok)
                if at >= 0:
                    buf[at:at + len(tok)] = rng.choice(self.tokens)
        if len(buf) > self.max_len:
            del buf[self.max_len:]
        return bytes(buf)

    def random_bytes(self) -> bytes:
        rng = self.rng
        r = rng.random()
        n = rng.randint(0, 16) if r < 0.5 else rng.randint(0, 300) if r < 0.95 else \
            rng.randint(0, min(self.max_len, 20000))
        return rng.randbytes(n)

    def soup(self) -> bytes:
        """Generated: the format's own tokens, vocabulary and noise, in random order."""
        rng = self.rng
        parts: list[bytes] = []
        for _ in range(rng.randint(1, 40)):
            r = rng.random()
            if r < 0.55:
                parts.append(rng.choice(self.tokens))
            elif r < 0.85:
                w = rng.choice(self.vocab) if rng.random() < 0.5 else rng.choice(self.keys)
                parts.append(str(w).encode("utf-8", "surrogatepass"))
            else:
                parts.append(rng.randbytes(rng.randint(1, 4)))
        return b"".join(parts)[: self.max_len]

    # ---- trees

    def nested(self) -> Raw:
        rng = self.rng
        d = rng.choice(YAML_DEPTHS if self.yaml else DEPTHS)
        if self.yaml and d >= 300 and rng.random() < 0.7:
            d //= 4
        r = rng.random()
        if r < 0.4:
            return Raw("[" * d + "]" * d)
        if r < 0.7:
            key = "a: " if self.yaml else '"a":'
            return Raw(("{" + key) * d + "1" + "}" * d)
        if r < 0.85:
            return Raw("[" * d)
        return Raw("[{" * (d // 2) + ("a: 1" if self.yaml else '"a":1') + "}]" * (d // 2))

    def interesting(self) -> Any:
        rng = self.rng
        r = rng.random()
        if r < 0.25:
            return Raw(rng.choice(YAML_SCALARS if self.yaml else JSON_NUMBERS))
        if r < 0.45:
            return rng.choice(self.vocab)
        if r < 0.55:
            return rng.choice(STRINGS)
        if r < 0.60:
            n = rng.choice(HUGE_LENGTHS[:5] if self.yaml else HUGE_LENGTHS)
            return rng.choice(("A", "火", "\\", "é", "a b")) * (n // 3 + 1)
        if r < 0.72:
            return rng.choice((None, True, False, [], Pairs(), [1, "a"], "1", "", 0, 1.5,
                               Pairs([(rng.choice(self.keys), rng.choice(self.vocab))]),
                               [rng.choice(self.vocab)]))
        if r < 0.78:
            return self.nested()
        if r < 0.93:
            k = rng.randrange(5)
            if k == 0:
                return rng.uniform(-1e13, 1e13)
            if k == 1:
                return rng.randint(-(2**70), 2**70)
            if k == 2:
                return rng.uniform(-400, 400)
            if k == 3:
                return rng.randint(-3, 1000)
            return rng.random()
        return Raw(self.soup().decode("utf-8", "replace"))

    def mangle_key(self, k: Any) -> Any:
        rng = self.rng
        s = str(k)
        r = rng.randrange(6)
        if r == 0:
            return s.upper()
        if r == 1:
            return s + rng.choice((" ", "_", "s", "\u200b", "\u0000"))
        if r == 2:
            return s[:-1] if len(s) > 1 else s * 2
        if r == 3:
            return rng.choice(self.keys)
        if r == 4:
            return rng.choice((1, None, True, 1.5)) if self.yaml else ""
        return "".join(rng.sample(s, len(s)))

    def tree(self, tree: Any) -> Any:
        """Mutate a (freshly copied) tree in place a few times; returns the new root."""
        rng = self.rng
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 5))):
            nodes = _containers(tree)
            op = rng.random()
            if not nodes or op < 0.03:
                tree = rng.choice((self.interesting(), [tree],
                                   Pairs([(rng.choice(self.keys), tree)])))
                continue
            node = rng.choice(nodes)
            if isinstance(node, Pairs):
                if not node or op < 0.45:
                    if node:
                        i = rng.randrange(len(node))
                        node[i] = (node[i][0], self.interesting())
                    else:
                        node.append((rng.choice(self.keys), self.interesting()))
                elif op < 0.57:
                    node.append((rng.choice(self.keys), self.interesting()))
                elif op < 0.67:
                    del node[rng.randrange(len(node))]
                elif op < 0.77:  # the same key twice, the second with another value
                    k = node[rng.randrange(len(node))][0]
                    node.insert(rng.randint(0, len(node)), (k, self.interesting()))
                elif op < 0.87:
                    i = rng.randrange(len(node))
                    node[i] = (self.mangle_key(node[i][0]), node[i][1])
                else:  # a valid leaf from elsewhere in the tree, in the wrong place
                    leaves = _leaves(tree)
                    if leaves:
                        i = rng.randrange(len(node))
                        node[i] = (node[i][0], rng.choice(leaves))
            else:
                if not node or op < 0.45:
                    if node:
                        node[rng.randrange(len(node))] = self.interesting()
                    else:
                        node.append(self.interesting())
                elif op < 0.6:
                    i = rng.randrange(len(node))
                    node.insert(rng.randint(0, len(node)), node[i])
                elif op < 0.72:
                    del node[rng.randrange(len(node))]
                elif op < 0.8:  # many copies: duplicate ids, long lists
                    many = (10, 100) if self.yaml else (10, 100, 1000)
                    node.extend([node[rng.randrange(len(node))]] * rng.choice(many))
                else:
                    rng.shuffle(node)
        return tree


def _containers(tree: Any) -> list[Any]:
    out: list[Any] = []
    stack = [tree]
    while stack and len(out) < 400:
        v = stack.pop()
        if isinstance(v, Pairs):
            out.append(v)
            stack.extend(x for _, x in v if isinstance(x, list))
        elif isinstance(v, list):
            out.append(v)
            stack.extend(x for x in v if isinstance(x, list))
    return out


def _leaves(tree: Any) -> list[Any]:
    out: list[Any] = []
    for node in _containers(tree):
        for x in (node if not isinstance(node, Pairs) else (v for _, v in node)):
            if not isinstance(x, list):
                out.append(x)
    return out


def alias_bomb(levels: int, width: int = 9) -> str:
    """The YAML billion-laughs: ``levels`` anchors, each ``width`` aliases of the one before."""
    lines = [f"lol0: &lol0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ harnesses


class Harness:
    """A decoder under test, as a worker sees it: make an input, run it, save it, load it."""

    allowed: tuple[type[BaseException], ...] = ()
    shrinkable = True  # inputs are bytes or text, so a reproducer can be minimised

    def generate(self, rng: random.Random) -> Any:
        raise NotImplementedError

    def run(self, inp: Any) -> bool:
        """True: accepted; False: dropped without an exception; raises ``allowed``: rejected."""
        raise NotImplementedError

    def remember(self, inp: Any, rng: random.Random) -> None:
        """An accepted input may seed later mutations (a small, bounded corpus)."""

    def dump(self, inp: Any) -> bytes:
        raise NotImplementedError

    def load(self, data: bytes) -> list[Any]:
        raise NotImplementedError

    def reset(self) -> None:
        """After an interrupted or crashed input: drop any state it may have left half-done."""

    def from_fuzz_bytes(self, data: bytes) -> Any:  # atheris
        return data

    def shrink_views(self, inp: Any) -> tuple[bytes, Callable[[bytes], Any]] | None:
        """The bytes to minimise and how to turn them back into an input (None: cannot)."""
        return None


def _pool_add(pool: list[Any], item: Any, rng: random.Random, limit: int = 400) -> None:
    if len(pool) < limit:
        pool.append(item)
    else:
        pool[rng.randrange(limit)] = item


class JsonHarness(Harness):
    """A bytes-in decoder of JSON objects (native signals, MQTT pager acks)."""

    def __init__(self, call: Callable[[bytes], Any], allowed: tuple[type[BaseException], ...],
                 seeds: list[Any], vocab: list[Any], keys: list[str], max_len: int,
                 check: Callable[[Any, bytes], None] | None = None):
        self.call = call
        self.allowed = allowed
        self.objs = seeds
        self.pool = [orjson_dumps(s) for s in seeds]
        self.vocab, self.keys, self.max_len, self.check = vocab, keys, max_len, check
        self.mut: Mutator | None = None

    def payload(self, rng: random.Random) -> bytes:
        if self.mut is None or self.mut.rng is not rng:
            self.mut = Mutator(rng, JSON_TOKENS, self.vocab, self.keys, self.max_len)
        m = self.mut
        r = rng.random()
        if r < 0.45:
            return m.emitter.json(m.tree(to_tree(rng.choice(self.objs))), rng.random() < 0.8)
        if r < 0.8:
            base = rng.choice(self.pool)
            if r < 0.55:
                base = m.emitter.json(m.tree(to_tree(rng.choice(self.objs))))
            return m.bytes(base, self.pool)
        if r < 0.9:
            return m.random_bytes()
        return m.soup()

    def generate(self, rng: random.Random) -> bytes:
        return self.payload(rng)

    def run(self, inp: bytes) -> bool:
        value = self.call(inp)
        if self.check is not None:
            self.check(value, inp)
        return True

    def remember(self, inp: bytes, rng: random.Random) -> None:
        _pool_add(self.pool, inp, rng)

    def dump(self, inp: bytes) -> bytes:
        return inp

    def load(self, data: bytes) -> list[Any]:
        return [data]

    def shrink_views(self, inp: bytes) -> tuple[bytes, Callable[[bytes], Any]]:
        return inp, lambda b: b


def orjson_dumps(v: Any) -> bytes:
    import orjson

    return orjson.dumps(v)


def _native() -> Harness:
    from drivers.native import MAX_PAYLOAD, decode, encode
    from drivers.signal import STATES, PayloadError

    def check(sig: Any, data: bytes) -> None:
        assert sig.state in STATES, sig
        for v, lo, hi in ((sig.value, -1e12, 1e12), (sig.ts, 0, 4102444800),
                          (sig.bearing_deg, -360, 360)):
            assert v is None or (type(v) is float and math.isfinite(v) and lo <= v <= hi), sig
        assert sig.kind is None or type(sig.kind) is str, sig
        assert decode(sig.device, encode(sig)) == sig, f"round trip changed {sig}"

    seeds: list[Any] = [{"state": s} for s in STATES]
    seeds += [
        {"kind": "smoke", "state": "alarm"},
        {"kind": "camera", "state": "alarm", "value": 0.93, "ts": 1700000000.25,
         "bearing_deg": -30.5},
        {"kind": "temperature", "state": "clear", "value": 21.5, "ts": 1700000000},
        {"state": "fault", "kind": "gas", "value": None, "ts": None, "bearing_deg": None},
        {"state": "test", "value": -1e12, "ts": 4102444800, "bearing_deg": 360},
    ]
    vocab = [*STATES, "smoke", "heat", "camera", "manual", "temperature", 0, 1.5, -360, 360,
             1e12, 4102444800, 1700000000.5]
    keys = ["state", "kind", "value", "ts", "bearing_deg", "device", "State", "extra"]
    return JsonHarness(lambda b: decode("smk-301", b), (PayloadError,), seeds, vocab, keys,
                       MAX_PAYLOAD * 2, check)


def _mqtt_ack() -> Harness:
    from alerting.page import ACK_STATUSES, MAX_ACK, AckError, decode_mqtt_ack, encode_mqtt_ack

    def check(ack: Any, data: bytes) -> None:
        assert ack.status in ACK_STATUSES and type(ack.incident) is str and ack.incident, ack
        assert decode_mqtt_ack(ack.responder, encode_mqtt_ack(ack)) == ack, ack

    seeds = [{"incident": "inc-231114-221320-1", "status": s} for s in ACK_STATUSES]
    seeds.append({"incident": "x", "status": "ack", "note": "extra keys are allowed"})
    vocab = [*ACK_STATUSES, "inc-231114-221320-1", "inc-1", "guard-1"]
    keys = ["incident", "status", "responder", "note"]
    return JsonHarness(lambda b: decode_mqtt_ack("guard-1", b), (AckError,), seeds, vocab,
                       keys, MAX_ACK * 2, check)


# --- the runtime's topic + payload parser


def _quiet_logs() -> None:
    """Drop the gateway's log lines (global: only in a worker or a child of this script)."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
                        logger_factory=structlog.ReturnLoggerFactory())


class ParseHarness(Harness):
    """``Gateway._parse(topic, payload, received_ns)``: the topic under ``firegrid/<site>/``."""

    def __init__(self) -> None:
        from alerting.page import ACK_STATUSES, AckError
        from drivers.signal import STATES, PayloadError
        from gateway.metrics import Metrics
        from gateway.runtime import Gateway, Inbound

        self.parse = Gateway._parse
        self.inbound = Inbound
        self.fake = SimpleNamespace(metrics=Metrics())
        self.allowed = (PayloadError, AckError)
        inc = "inc-231114-221320-1"
        self.seeds: list[tuple[str, Any]] = [
            ("signal/smk-301", {"state": "alarm", "kind": "smoke"}),
            ("signal/tmp-1204", {"state": "clear", "kind": "temperature", "value": 21.5}),
            ("signal/cam-01", {"state": "alarm", "kind": "camera", "value": 0.9,
                               "bearing_deg": 45, "ts": 1700000000}),
            (f"confirm/{inc}/reply", {"decision": "confirm", "by": "w-07"}),
            (f"confirm/{inc}/reply", {"decision": "dismiss", "by": "w-03"}),
            ("page/guard-1/ack", {"incident": inc, "status": "ack"}),
            ("page/squad-3/ack", {"incident": inc, "status": "on_scene"}),
            (f"incident/{inc}/close", {"by": "w-07", "reason": "fire out"}),
            (f"incident/{inc}/close", {"by": "w-07"}),
            ("device/smk-301", {"state": "alarm"}),
            ("status", {"online": True}),
        ]
        self.vocab: list[Any] = [*STATES, *ACK_STATUSES, "confirm", "dismiss", "w-07",
                                 "guard-1", inc, "smoke", "fire out", 1.5]
        self.keys = ["state", "kind", "value", "ts", "bearing_deg", "decision", "by",
                     "reason", "incident", "status"]
        self.levels = ["signal", "confirm", "reply", "page", "ack", "incident", "close",
                       "device", "trouble", "smk-301", "w-07", inc, "", "+", "#", " ", "火",
                       "$SYS", "x" * 300, "..", "\u200b"]
        self.json = JsonHarness(lambda b: b, (), [s[1] for s in self.seeds], self.vocab,
                                self.keys, 8192)
        self.received = 1_700_000_000 * NS

    def topic(self, rng: random.Random, topic: str) -> str:
        parts = topic.split("/")
        for _ in range(rng.choice((1, 1, 2, 3))):
            op = rng.randrange(8)
            i = rng.randrange(len(parts))
            if op == 0:
                parts[i] = rng.choice(self.levels)
            elif op == 1:
                parts.insert(rng.randint(0, len(parts)), rng.choice(self.levels))
            elif op == 2 and len(parts) > 1:
                del parts[i]
            elif op == 3:
                raw = parts[i].encode()
                m = Mutator(rng, JSON_TOKENS, self.vocab, self.keys, 400)
                parts[i] = m.bytes(raw, [raw]).decode("utf-8", "replace")
            elif op == 4:
                parts[i] = parts[i].upper()
            elif op == 5:
                parts[i] = parts[i] + rng.choice(("/", "//", " ", "\t", "\n"))
            elif op == 6:
                rng.shuffle(parts)
            else:
                parts[i] = "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 6)))
        # MQTT topics are UTF-8 without U+0000; surrogates cannot come out of a broker
        return "/".join(parts).replace("\x00", "")

    def generate(self, rng: random.Random) -> tuple[str, bytes]:
        topic, body = rng.choice(self.seeds)
        if rng.random() < 0.25:
            topic = self.topic(rng, topic)
        if rng.random() < 0.15:  # a good payload: the topic alone is what is wrong, if anything
            return topic, orjson_dumps(body)
        return topic, self.json.payload(rng)

    def run(self, inp: tuple[str, bytes]) -> bool:
        item = self.parse(self.fake, inp[0], inp[1], self.received)
        if item is None:
            return False
        assert isinstance(item, self.inbound) and item.kind in ("signal", "reply", "ack",
                                                                 "close"), item
        if item.kind == "reply":
            assert item.data[1] in ("confirm", "dismiss") and type(item.data[2]) is str
        return True

    def remember(self, inp: tuple[str, bytes], rng: random.Random) -> None:
        _pool_add(self.json.pool, inp[1], rng)

    def dump(self, inp: tuple[str, bytes]) -> bytes:
        return json.dumps({"topic": inp[0], "payload": inp[1].decode("latin-1")}).encode()

    def load(self, data: bytes) -> list[Any]:
        obj = json.loads(data)
        return [(obj["topic"], obj["payload"].encode("latin-1"))]

    def from_fuzz_bytes(self, data: bytes) -> tuple[str, bytes]:
        topic, _, payload = data.partition(b"\n")
        return topic.decode("utf-8", "replace").replace("\x00", ""), payload

    def shrink_views(self, inp: tuple[str, bytes]) -> tuple[bytes, Callable[[bytes], Any]]:
        topic = inp[0]
        return inp[1], lambda b: (topic, b)


# --- YAML files: site config and scenarios

DEMO_CONFIG = REPO / "configs" / "taibai-demo.yaml"
SCENARIO_DIR = REPO / "firmware_sim" / "scenarios"

MINIMAL_SITE = """\
site: s
zones:
  - {id: z1, floor: 1, polygon: [[0,0],[10,0],[10,10],[0,10]], worker: w}
devices:
  - {id: d1, kind: smoke, floor: 1, x: 5, y: 5}
  - {id: d2, kind: manual, floor: 1, x: 1, y: 1}
responders:
  - {id: w, tier: 0}
  - {id: g, tier: 1}
tiers:
  - {tier: 1, ack_timeout_s: 15}
"""

FEEDS_SITE = """\
site: feeds-and-pagers
sla: {locate_s: 10, confirm_s: 30, in_place_s: 60}
journal_max_mb: 64
journal_keep_days: 7
zones:
  - {id: b3-2f, name: "Bldg 3 2F", building: b3, floor: 2, polygon: [[0,0],[20,0],[20,12],[0,12]],
     worker: w-07, ask_human: true}
  - {id: b3-1f, floor: 1, polygon: [[0,0],[26,0],[26,12],[0,12]]}
devices:
  - {id: smk-101, kind: smoke, floor: 1, x: 2.0, y: 3.0, feed: z2m, ref: kitchen_smoke}
  - {id: cam-03, kind: camera, floor: 1, x: 0.0, y: 12.0, feed: nvr, ref: front_door,
     azimuth_deg: 45, fov_deg: 90}
  - {id: zone-004, kind: smoke, floor: 1, x: 4.0, y: 4.0, feed: panel-a, ref: "004-004"}
  - {id: uitd-1, kind: heat, floor: 1, x: 5.0, y: 5.0, feed: uitd, ref: "1/1/131082"}
  - {id: gas-1, kind: gas, floor: 1, x: 6.0, y: 6.0, feed: rs485, ref: "1:0",
     scale: 0.1, alarm_at: 25, clear_at: 10, radius_m: 3}
  - {id: mcp-2, kind: manual, floor: 2, x: 18.0, y: 1.0}
  - {id: flame-2, kind: flame, floor: 2, x: 9.0, y: 6.0}
feeds:
  - {name: z2m, type: zigbee2mqtt, base_topic: zigbee2mqtt}
  - {name: nvr, type: frigate, base_topic: frigate}
  - {name: panel-a, type: panel-printer, port: /dev/ttyUSB0, baud: 9600, dialect: gst}
  - {name: uitd, type: gb26875, listen: "127.0.0.1:9000"}
  - {name: rs485, type: modbus, port: /dev/ttyUSB1, baud: 9600, poll_s: 1, registers: input}
responders:
  - {id: w-07, name: "Grid worker 7", tier: 0}
  - {id: guard-1, tier: 1, pager: {type: tap, port: /dev/ttyUSB2, baud: 9600,
     password: "000000", pager_id: "1234567"}}
  - {id: guard-2, tier: 1, pager: {type: tap, host: 127.0.0.1, port: 10001, pager_id: "12"}}
  - {id: squad-3, tier: 2, pager: {type: snpp, host: 127.0.0.1, port: 444, pager_id: "555"}}
  - {id: station-1, tier: 3, pager: {type: mqtt}}
tiers:
  - {tier: 1, ack_timeout_s: 15}
  - {tier: 2, ack_timeout_s: 20}
  - {tier: 3, ack_timeout_s: 30}
"""

BARE_SITE = """\
site: bare
zones:
  - {id: z1, floor: 1, polygon: [[0,0],[10,0],[10,10],[0,10]]}
  - {id: z2, floor: 2, polygon: [[0,0],[10,0],[10,10],[0,10]], ask_human: true}
devices:
  - {id: d1, kind: smoke, floor: 1, x: 5, y: 5}
  - {id: d2, kind: smoke, floor: 1, x: 6, y: 5}
  - {id: d3, kind: heat, floor: 2, x: 5, y: 5}
"""

MINIMAL_SCENARIO = """\
name: t
site: s
duration_s: 10
responders:
  w: {confirm: [{zone: z1, decision: confirm, after_s: 1}]}
  g: {pages: [{zone: "*", ack_after_s: 1, on_scene_after_s: 2}, {zone: z2, never: true}]}
events:
  - {at: 0, device: d1, state: alarm, kind: smoke, value: 1.5, bearing_deg: 10}
  - {at: 1, device: d2, raw: "not json", topic: signal/d2}
close: [{zone: z1, by: w, after_on_scene_s: 1, reason: out}]
"""


def _read(path: Path, fallback: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return fallback


def _model_keys(module: Any) -> list[str]:
    from pydantic import BaseModel

    keys: set[str] = set()
    for obj in vars(module).values():
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj is not BaseModel:
            keys.update(obj.model_fields)
    return sorted(keys)


class YamlHarness(Harness):
    """A YAML text parser (``parse_site``, ``parse_scenario``)."""

    def __init__(self, call: Callable[[str], Any], allowed: tuple[type[BaseException], ...],
                 texts: list[str], keys: list[str], vocab: list[Any],
                 check: Callable[[Any], None] | None = None):
        import yaml

        self.call, self.allowed, self.check = call, allowed, check
        self.texts = texts
        self.pool = [t.encode() for t in texts]
        self.objs = [yaml.safe_load(t) for t in texts]
        self.keys, self.vocab = keys, vocab
        # the YAML parser is pure Python, so the time goes by size: favour the small seeds
        self.weights = [1 / max(1.0, len(t) / 800) for t in texts]
        self.mut: Mutator | None = None

    def seed(self, rng: random.Random) -> int:
        return rng.choices(range(len(self.texts)), self.weights)[0]

    def text(self, rng: random.Random) -> str:
        if self.mut is None or self.mut.rng is not rng:
            self.mut = Mutator(rng, YAML_TOKENS, self.vocab, self.keys, 65536, yaml=True)
        m = self.mut
        r = rng.random()
        if r < 0.40:
            return m.emitter.yaml(m.tree(to_tree(self.objs[self.seed(rng)])))
        if r < 0.78:
            base = self.pool[self.seed(rng)] if r < 0.6 else rng.choice(self.pool)
            if r < 0.48:
                base = m.emitter.yaml(m.tree(to_tree(self.objs[self.seed(rng)]))).encode()
            return m.bytes(base, self.pool).decode("utf-8", "replace")
        if r < 0.82:
            return self.structural(rng, self.texts[self.seed(rng)])
        if r < 0.90:
            data = m.random_bytes()
            return data.decode("latin-1") if rng.random() < 0.3 else data.decode("utf-8",
                                                                                 "replace")
        return self.yamlish(rng)

    def structural(self, rng: random.Random, text: str) -> str:
        """YAML-only shapes: anchors and aliases, merge keys, streams, bombs, deep nesting."""
        lines = text.splitlines()
        i = rng.randrange(len(lines) + 1)
        op = rng.randrange(7)
        if op == 0:  # anchor the first flow mapping, alias it again further down
            at = text.find("{")
            if at >= 0:
                return text[:at] + "&a " + text[at:] + "\nextra: *a\n"
        elif op == 1:
            lines.insert(i, "<<: *a" if rng.random() < 0.5 else "<<: {site: x}")
        elif op == 2:
            return "---\n" + text + "\n---\n" + text
        elif op == 3:  # a small alias bomb (levels of 9 aliases); large ones are rare
            levels = rng.choice((4, 5, 6, 6, 7, 7, 8)) if rng.random() < 0.15 else 3
            return alias_bomb(levels) + text
        elif op == 4:
            d = rng.choice(YAML_DEPTHS)
            lines.insert(i, "deep: " + "[" * d + "]" * d)
        elif op == 5:
            lines.insert(i, "  " * rng.randint(1, 40) + "- x")
        else:
            lines = [ln.replace("  ", "\t") for ln in lines]
        return "\n".join(lines) + "\n"

    def yamlish(self, rng: random.Random) -> str:
        """Generated text that looks like YAML: keys, values, indentation, tokens."""
        out: list[str] = []
        for _ in range(rng.randint(1, 30)):
            indent = "  " * rng.choice((0, 0, 0, 1, 1, 2, 3))
            r = rng.random()
            key = str(rng.choice(self.keys))
            if r < 0.4:
                val = rng.choice(self.vocab)
                out.append(f"{indent}{key}: {val}")
            elif r < 0.6:
                out.append(f"{indent}- {rng.choice(YAML_SCALARS)}")
            elif r < 0.8:
                out.append(f"{indent}{key}:")
            else:
                out.append(indent + rng.choice(YAML_TOKENS).decode("utf-8", "replace"))
        return "\n".join(out) + "\n"

    def generate(self, rng: random.Random) -> str:
        return self.text(rng)

    def run(self, inp: str) -> bool:
        value = self.call(inp)
        if self.check is not None:
            self.check(value)
        return True

    def remember(self, inp: str, rng: random.Random) -> None:
        _pool_add(self.pool, inp.encode("utf-8", "surrogatepass"), rng, 200)

    def dump(self, inp: str) -> bytes:
        return inp.encode("utf-8", "surrogatepass")

    def load(self, data: bytes) -> list[Any]:
        return [data.decode("utf-8", "surrogatepass")]

    def from_fuzz_bytes(self, data: bytes) -> str:
        return data.decode("utf-8", "replace")

    def shrink_views(self, inp: str) -> tuple[bytes, Callable[[bytes], Any]]:
        return inp.encode("utf-8", "surrogatepass"), lambda b: b.decode("utf-8", "replace")


def site_smoke(site: Any) -> None:
    """An accepted site must run: alarms, deadlines, pages, answers, journal and InfluxDB.

    Anything but ``Refused`` here is a config the parser should have rejected.
    """
    from drivers.signal import Signal
    from gateway.engine import Engine
    from gateway.model import Refused

    eng = Engine(site)
    check = DecisionCheck(site.site)
    t = 1_700_000_000 * NS
    for i, dev in enumerate(site.devices[:4]):
        with contextlib.suppress(Refused):
            check(eng.signal(Signal(dev.id, "alarm", kind=dev.kind), t + i * NS, t + i * NS))
    for s in (5, 11, 31, 61, 200, 1000, 5000):
        now = t + s * NS
        check(eng.tick(now))
        eng.next_deadline_ns()
        for inc in list(eng.incidents.values())[:2]:
            for r in site.responders[:3]:
                for answer in ("reply", "ack"):
                    try:
                        if answer == "reply":
                            check(eng.reply(inc.id, "confirm", r.id, now))
                        else:
                            check(eng.ack(r.id, inc.id, "on_scene", now))
                    except Refused as exc:
                        if exc.decisions is not None:
                            check(exc.decisions)
    eng.retained()
    for inc in list(eng.incidents.values()):
        for r in site.responders[:1]:
            with contextlib.suppress(Refused):
                check(eng.close(inc.id, r.id, "out", t + 6000 * NS))


class DecisionCheck:
    """What the runtime does with a Decisions, minus the I/O: journal, InfluxDB, MQTT."""

    def __init__(self, site: str):
        from alerting.page import SCREEN
        from gateway.forwarder import step_line
        from gateway.model import STAGES, Step

        self.site, self.screen, self.stages = site, SCREEN, STAGES
        self.step_cls, self.step_line = Step, step_line
        self.last: dict[str, int] = {}
        self.steps: list[Any] = []

    def __call__(self, d: Any) -> None:
        for step in d.steps:
            assert step.stage in self.stages, step
            prev = self.last.get(step.incident)
            assert prev is None or step.t_ns > prev, f"step time not increasing: {step}"
            self.last[step.incident] = step.t_ns
            stored = self.step_cls.from_json(step.to_json(), seq=1)  # journal round trip
            self.step_line(self.site, stored)  # what the forwarder sends to InfluxDB
            self.steps.append(step)
        for page in d.pages:
            page.to_json()
            assert len(page.text) <= self.screen, page.text
        for p in d.publishes:
            assert type(p.payload) is bytes and p.topic, p
        for ds in d.devices:
            ds.payload()


def _config() -> Harness:
    from gateway import config
    from gateway.config import DEVICE_KINDS, ConfigError, parse_site

    texts = [_read(DEMO_CONFIG, MINIMAL_SITE), MINIMAL_SITE, FEEDS_SITE]
    vocab: list[Any] = [*DEVICE_KINDS, "zigbee2mqtt", "frigate", "panel-printer", "gb26875",
                        "modbus", "tap", "snpp", "mqtt", "w-07", "z1", "b3", 0, 1, 2, 3, 15,
                        -1, 0.5, 1e9, "[[0,0],[1,0],[1,1]]", "[[0,0],[0,0],[0,0]]", "gst",
                        "127.0.0.1:9000", "/dev/ttyUSB0", "holding", "input", "true"]
    return YamlHarness(lambda t: parse_site(t, "fuzz.yaml"), (ConfigError,), texts,
                       _model_keys(config), vocab, check=site_smoke)


def scenario_smoke(sc: Any) -> None:
    """An accepted scenario must play: every event's topic and payload can be sent."""
    from firmware_sim.devices import event_payload, event_topic

    for e in sc.events:
        event_topic(sc.prefix, e).encode("utf-8")  # MQTT topics are UTF-8
        event_payload(e)
    for name, script in sc.responders.items():
        f"{sc.prefix}page/{name}/ack".encode()
        script.page_rule("z")
        script.confirm_rule("z")
    for rule in sc.close:
        orjson_dumps({"by": rule.by, "reason": rule.reason})


def _scenario() -> Harness:
    from firmware_sim import scenario
    from firmware_sim.scenario import ScenarioError, parse_scenario

    texts = [_read(p, MINIMAL_SCENARIO) for p in sorted(SCENARIO_DIR.glob("*.yaml"))]
    texts.append(MINIMAL_SCENARIO)
    vocab: list[Any] = ["alarm", "clear", "fault", "test", "confirm", "dismiss", "*", "z1",
                        "smk-301", "w-07", "true", 0, 1, 2.5, -1, 60, "signal/x", "b3-2f-east"]
    return YamlHarness(lambda t: parse_scenario(t, "fuzz.yaml"), (ScenarioError,), texts,
                       _model_keys(scenario), vocab, check=scenario_smoke)


# --- the whole engine, fed what the runtime parser decodes


class EngineHarness(Harness):
    """``Engine(site)`` fed decoded inputs in episodes, as ``Gateway._handle`` feeds it.

    One input is one MQTT message (through ``Gateway._parse``) at a gateway time, then
    usually a ``tick``. An episode of up to 300 runs against one engine, then a fresh
    engine; at its end the journal is replayed into a new engine (``restore``), which must
    hold the same open incidents. Accepted: the engine acted; rejected: the parser's error,
    or ``Refused``. The reproducer of a crash is its episode, as JSON lines.
    """

    shrinkable = False

    def __init__(self) -> None:
        from alerting.page import ACK_STATUSES, AckError
        from drivers.signal import STATES, PayloadError
        from gateway.config import parse_site
        from gateway.engine import Engine
        from gateway.metrics import Metrics
        from gateway.model import Refused
        from gateway.runtime import Gateway

        self.sites = {"taibai-demo": parse_site(_read(DEMO_CONFIG, MINIMAL_SITE), "demo"),
                      "feeds": parse_site(FEEDS_SITE, "feeds"),
                      "minimal": parse_site(MINIMAL_SITE, "minimal"),
                      "no-tiers": parse_site(BARE_SITE, "bare")}
        self.engine_cls, self.parse, self.refused = Engine, Gateway._parse, Refused
        self.fake = SimpleNamespace(metrics=Metrics())
        self.bad = (PayloadError, AckError)
        self.states, self.statuses = STATES, ACK_STATUSES
        self.json = JsonHarness(lambda b: b, (), [{"state": "alarm"}], [*STATES, *ACK_STATUSES,
                                "confirm", "dismiss", "w-07", "smoke"],
                                ["state", "kind", "value", "decision", "by", "incident",
                                 "status", "reason"], 4096)
        self.engine: Any = None
        self.episode: list[dict[str, Any]] = []
        self.left = 0
        self.now = 0

    # generation: mostly well-formed messages about the site's real devices, people and
    # open incidents (so the deep paths run), some mangled, at times that hit deadlines

    def generate(self, rng: random.Random) -> dict[str, Any]:
        inp: dict[str, Any] = {}
        if self.left <= 0 or self.engine is None:
            inp["site"] = rng.choice(sorted(self.sites))
            self.left = rng.randint(1, 300)
            self.now = (1_700_000_000 + rng.randint(0, 10**8)) * NS
            site = self.sites[inp["site"]]
            incidents: list[str] = []
        else:
            site = self.engine.site
            incidents = [*self.engine.incidents, *list(self.engine.finished)[-4:]]
        self.left -= 1
        if self.left == 0:
            inp["replay"] = True
        devices = [d for d in site.devices]
        people = [r.id for r in site.responders] or ["nobody"]

        def pick_inc() -> str:
            if incidents and rng.random() < 0.9:
                return rng.choice(incidents)
            return rng.choice(("inc-1", "", "inc-231114-221320-1", "x" * 200))

        def who() -> str:
            if rng.random() < 0.92:
                return rng.choice(people)
            return rng.choice(("stranger", "", "w-07 ", "GUARD-1"))

        r = rng.random()
        if r < 0.5 and devices:
            dev = rng.choice(devices)
            dev_id = dev.id if rng.random() < 0.95 else rng.choice(("nope", "", dev.id + "x"))
            body: dict[str, Any] = {"state": rng.choice(("alarm", "alarm", *self.states))}
            k = rng.random()
            if k < 0.7:
                body["kind"] = dev.kind
            elif k < 0.8:
                body["kind"] = rng.choice(("smoke", "heat", "manual", "camera", "co"))
            if rng.random() < 0.3:
                body["value"] = rng.choice((0, 21.5, 68, -40, 1e12, 0.93))
            if rng.random() < 0.2:
                body["bearing_deg"] = rng.uniform(-360, 360)
            if rng.random() < 0.1:
                body["ts"] = rng.choice((0, 1_700_000_000, 4102444800))
            topic = f"signal/{dev_id}"
        elif r < 0.65:
            topic = f"confirm/{pick_inc()}/reply"
            body = {"decision": rng.choice(("confirm", "confirm", "dismiss")), "by": who()}
        elif r < 0.85:
            topic = f"page/{who()}/ack"
            body = {"incident": pick_inc(),
                    "status": rng.choice(("ack", "on_scene", "on_scene", "decline"))}
        else:
            topic = f"incident/{pick_inc()}/close"
            body = {"by": who(), "reason": rng.choice(("out", "", "x" * 600, "火 🔥"))}
        payload = orjson_dumps(body)
        if rng.random() < 0.08:
            payload = self.json.payload(rng)
        # the gateway's clock: mostly forward, onto deadlines, now and then stepped back
        t = rng.random()
        deadline = self.engine.next_deadline_ns() if self.engine is not None else None
        if t < 0.3:
            dt = rng.randint(0, 50_000_000)
        elif t < 0.55:
            dt = rng.randint(0, 5 * NS)
        elif t < 0.8 and deadline is not None:
            dt = deadline - self.now + rng.choice((-1, 0, 0, 1, 1000))
        elif t < 0.97:
            dt = rng.randint(0, 120 * NS)
        else:
            dt = -rng.randint(0, 5 * NS)  # NTP stepped the wall clock back
        self.now += dt
        inp.update(topic=topic, payload=payload.decode("latin-1"), now=self.now,
                   received=self.now - rng.choice((0, 0, rng.randint(0, 2 * NS))),
                   tick=rng.random() < 0.8)
        return inp

    def _new(self, name: str) -> None:
        self.engine = self.engine_cls(self.sites[name])
        self.check = DecisionCheck(self.engine.site.site)
        self.episode = []

    def run(self, inp: dict[str, Any]) -> bool:
        if "site" in inp:
            self._new(inp["site"])
        self.episode.append(inp)
        eng, now = self.engine, inp["now"]
        accepted = False
        try:
            item = self.parse(self.fake, inp["topic"], inp["payload"].encode("latin-1"),
                              inp["received"])
        except self.bad:
            item = None
        if item is not None:
            try:
                if item.kind == "signal":
                    d = eng.signal(item.data, now, item.received_ns)
                elif item.kind == "reply":
                    d = eng.reply(*item.data, now)
                elif item.kind == "ack":
                    d = eng.ack(item.data.responder, item.data.incident, item.data.status, now)
                else:
                    d = eng.close(*item.data, now)
                accepted = True
            except self.refused as exc:
                d = exc.decisions
            if d is not None:
                self.check(d)
        if inp["tick"]:
            self.check(eng.tick(now))
        nd = eng.next_deadline_ns()
        assert nd is None or type(nd) is int, nd
        if inp.get("replay"):
            self.replay()
        return accepted

    def replay(self) -> None:
        """The engine rebuilt from its journal must be the engine that ran (CONTRACT §4)."""
        eng = self.engine
        again = self.engine_cls(eng.site)
        again.restore(list(self.check.steps), list(eng.device_states.values()), eng.counter)
        site = eng.site.site
        live = {i.id: i.public(site) for i in eng.open_incidents()}
        back = {i.id: i.public(site) for i in again.open_incidents()}
        assert live == back, f"replayed engine differs: {live} != {back}"
        assert again.next_deadline_ns() == eng.next_deadline_ns(), "replayed deadlines differ"
        eng.retained()

    def reset(self) -> None:
        self.engine = None
        self.left = 0

    def dump(self, inp: dict[str, Any]) -> bytes:
        return b"".join(json.dumps(e).encode() + b"\n" for e in self.episode)

    def load(self, data: bytes) -> list[Any]:
        return [json.loads(line) for line in data.splitlines() if line.strip()]


# ------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class Target:
    name: str
    decoder: str  # what it calls
    share: float  # of --inputs (the YAML parsers are pure Python and ~100x slower)
    harness: Callable[[], Harness] | None  # None: the decoder is not built yet
    note: str = ""


TARGETS: list[Target] = [
    Target("native", "drivers.native.decode", 0.28, _native),
    Target("mqtt-ack", "alerting.page.decode_mqtt_ack", 0.18, _mqtt_ack),
    Target("runtime-parse", "gateway.runtime.Gateway._parse", 0.28, lambda: ParseHarness()),
    Target("engine", "gateway.engine.Engine via Gateway._parse", 0.18, lambda: EngineHarness(),
           "1 input = 1 message (through Gateway._parse) + usually a tick, in episodes"),
    Target("config", "gateway.config.parse_site", 0.04, _config,
           "pure-Python YAML: ~100x slower, so fewer inputs; accepted sites also run the engine"),
    Target("scenario", "firmware_sim.scenario.parse_scenario", 0.04, _scenario,
           "pure-Python YAML: ~100x slower, so fewer inputs; accepted ones must encode"),
    Target("zigbee2mqtt", "Zigbee2MQTT feed", 0, None),
    Target("frigate", "Frigate feed", 0, None),
    Target("panel-printer", "fire panel printer feed", 0, None),
    Target("gb26875", "GB/T 26875.3 feed", 0, None),
    Target("modbus", "Modbus replies", 0, None),
    Target("tap", "TAP pager responses", 0, None),
    Target("snpp", "SNPP pager responses", 0, None),
]
BY_NAME = {t.name: t for t in TARGETS}


# ------------------------------------------------------------------------ worker


class Hang(BaseException):  # a BaseException, so that no decoder's handler swallows it
    """Raised by the watchdog in a worker when one input has run ABORT_S."""


_abort_at = 0.0  # perf_counter deadline of the input now running, 0 when none


def _watchdog(signum: int, frame: Any) -> None:
    if _abort_at and time.perf_counter() > _abort_at:
        raise Hang


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1048576
    except OSError:
        return getrusage(RUSAGE_SELF).ru_maxrss / 1024


def _limit_memory() -> None:
    try:
        with open("/proc/self/status") as f:
            vm = next(int(ln.split()[1]) for ln in f if ln.startswith("VmSize:")) * 1024
        limit = vm + MEM_LIMIT_MB * 1048576
        setrlimit(RLIMIT_AS, (limit, limit))
    except (OSError, ValueError, StopIteration):
        pass


def signature(exc: BaseException) -> tuple[str, str, str]:
    """(exception type, innermost frame in this project, innermost frame): a crash's identity."""
    frames = traceback.extract_tb(exc.__traceback__)
    inner = frames[-1] if frames else None
    ours = None
    for fr in reversed(frames):  # the project's code, else this file's checks
        p = Path(fr.filename)
        if p.is_relative_to(REPO) and not p.is_relative_to(REPO / "bench"):
            ours = fr
            break
    if ours is None:
        ours = next((fr for fr in reversed(frames) if Path(fr.filename).is_relative_to(REPO)
                     and fr.name != "_watchdog"), None)

    def where(fr: Any) -> str:
        if fr is None:
            return "?"
        p = Path(fr.filename)
        name = p.relative_to(REPO) if p.is_relative_to(REPO) else "/".join(p.parts[-2:])
        return f"{name}:{fr.lineno} ({fr.name})"

    return type(exc).__name__, where(ours), where(inner)


@dataclass
class Finding:
    kind: str  # crash, hang, memory, leak, died
    target: str
    exc: str
    where: str  # innermost project frame
    inner: str
    message: str
    count: int = 1
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    minimized: str | None = None
    input_size: int | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.kind, self.exc, self.where, self.inner


@dataclass
class ShardSpec:
    target: str
    shard: int
    seed: int
    inputs: int
    seconds: float | None
    out: str
    slot: int
    minimize_s: float = MINIMIZE_S


def shard_rng(seed: int, target: str, shard: int) -> random.Random:
    return random.Random(f"{seed}/{target}/{shard}")


COUNTED = ("accepted", "rejected", "crashes", "hangs", "memory")
BEAT = 1 + len(COUNTED)  # per worker slot in the shared ``indexes``: input number, counts


def run_shard(spec: ShardSpec, starts: Any, indexes: Any) -> dict[str, Any]:
    """Run one shard of a target in this (worker) process; returns its counts and findings."""
    global _abort_at
    target = BY_NAME[spec.target]
    assert target.harness is not None
    _quiet_logs()  # the runtime logs every dropped message: not what is measured here
    h = target.harness()
    rng = shard_rng(spec.seed, spec.target, spec.shard)
    allowed = h.allowed
    counts = {"inputs": 0, "accepted": 0, "rejected": 0, "crashes": 0, "hangs": 0, "memory": 0}
    findings: dict[tuple[str, str, str, str], Finding] = {}
    out = Path(spec.out) / spec.target
    with contextlib.suppress(ValueError, OSError):  # not in the main thread / no SIGALRM
        signal.signal(signal.SIGALRM, _watchdog)
        signal.setitimer(signal.ITIMER_REAL, 0.25, 0.25)
    _limit_memory()
    sys.set_int_max_str_digits(0)
    rss_start = _rss_mb()
    rss_peak = rss_start
    rss_base: float | None = None
    warm = min(2000, max(1, spec.inputs // 10))
    max_alloc = 0
    started = time.perf_counter()
    deadline = started + spec.seconds if spec.seconds else None
    perf = time.perf_counter
    i = 0
    stopped = ""
    mono = time.monotonic

    def record(kind: str, exc: BaseException | None, inp: Any, secs: float,
               msg: str = "") -> None:
        if isinstance(exc, Hang):  # where it was when interrupted; the innermost frame varies
            exc_name, ours, _ = signature(exc)
            inner, msg = "-", msg or f"interrupted after {secs:.1f} s"
        elif exc is not None:
            exc_name, ours, inner = signature(exc)
            msg = (f"{msg} ({exc_name} where it allocates, with {MEM_JUMP_MB} MB to spare)"
                   if kind == "memory" and msg else f"{exc_name}: {exc}"[:300])
        else:
            exc_name, ours, inner = "-", "-", "-"
            msg = msg or f"ran {secs:.2f} s"
        key = (kind, exc_name, ours, inner)
        f = findings.get(key)
        if f is None:
            if len(findings) >= MAX_SIGNATURES * 4:
                return
            f = findings[key] = Finding(kind, spec.target, exc_name, ours, inner, msg,
                                        count=0, seconds=secs)
        f.count += 1
        f.seconds = max(f.seconds, secs)
        if len(f.files) < KEEP_PER_SIGNATURE and len(findings) <= MAX_SIGNATURES:
            out.mkdir(parents=True, exist_ok=True)
            tag = hashlib.sha1("/".join(key).encode()).hexdigest()[:8]
            base = out / f"{kind}-{tag}-s{spec.shard}-{len(f.files)}"
            data = h.dump(inp)
            base.with_suffix(".bin").write_bytes(data)
            tb = "".join(traceback.format_exception(exc)) if exc is not None else msg
            if len(tb) > 20000:
                tb = tb[:8000] + "\n...\n" + tb[-8000:]
            base.with_suffix(".txt").write_text(
                f"target: {spec.target}\nkind: {kind}\nseconds: {secs:.3f}\n"
                f"seed: {spec.seed} shard: {spec.shard} input: {i}\n"
                f"replay: python bench/fuzz.py --target {spec.target} --replay "
                f"{base.with_suffix('.bin')}\n\n{tb}\n")
            f.files.append(str(base.with_suffix(".bin")))
            f.input_size = len(data)
            if len(f.files) == 1 and kind == "crash" and exc is not None and spec.minimize_s > 0:
                small = minimize(h, inp, (exc_name, ours, inner), spec.minimize_s)
                if small is not None:
                    p = base.with_name(base.name + "-min.bin")
                    p.write_bytes(small)
                    f.minimized = str(p)

    try:
        while i < spec.inputs:
            if deadline is not None and (i & 63) == 0 and perf() > deadline:
                stopped = f"--seconds reached after {i} inputs"
                break
            if i == warm:
                rss_base = _rss_mb()
            sampled = i % SAMPLE_EVERY == SAMPLE_EVERY - 1
            slow = SAMPLED_SLOWDOWN if sampled else 1.0
            inp = None
            t0 = 0.0
            try:
                inp = h.generate(rng)
                maxrss = getrusage(RUSAGE_SELF).ru_maxrss
                starts[spec.slot] = mono()
                indexes[spec.slot * BEAT] = i
                if (i & 255) == 0:  # what a parent that has to kill this worker reports
                    indexes[spec.slot * BEAT + 1:spec.slot * BEAT + BEAT] = [
                        counts[k] for k in COUNTED]
                if sampled:
                    tracemalloc.start()
                t0 = perf()
                _abort_at = t0 + ABORT_S * slow
                try:
                    ok = h.run(inp)
                except allowed:
                    ok = False
                dt = perf() - t0
                _abort_at = 0.0
                grew = (getrusage(RUSAGE_SELF).ru_maxrss - maxrss) / 1024
                # one outcome per input: a slow or greedy one is that, whatever it returned
                if dt > HANG_S * slow:
                    counts["hangs"] += 1
                    record("hang", where_slow(h, inp), inp, dt, f"ran {dt:.2f} s")
                elif grew > MEM_JUMP_MB:
                    counts["memory"] += 1
                    record("memory", where_greedy(h, inp), inp, dt,
                           f"one input raised peak RSS by {grew:.0f} MB")
                elif ok:
                    counts["accepted"] += 1
                    if rng.random() < 0.02:
                        h.remember(inp, rng)
                else:
                    counts["rejected"] += 1
            except Hang as exc:
                _abort_at = 0.0
                counts["hangs"] += 1
                grew = (getrusage(RUSAGE_SELF).ru_maxrss - maxrss) / 1024
                dt = perf() - t0
                record("hang", exc, inp, dt, f"interrupted after {dt:.1f} s" + (
                    f", having raised peak RSS by {grew:.0f} MB" if grew > MEM_JUMP_MB else ""))
                h.reset()
            except MemoryError as exc:
                _abort_at = 0.0
                counts["memory"] += 1
                record("memory", exc, inp, perf() - t0)
                h.reset()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # the point: anything but the allowed error
                _abort_at = 0.0
                counts["crashes"] += 1
                record("crash", exc, inp, perf() - t0)
                h.reset()
            finally:
                _abort_at = 0.0
                starts[spec.slot] = 0.0
                if sampled and tracemalloc.is_tracing():
                    max_alloc = max(max_alloc, tracemalloc.get_traced_memory()[1])
                    tracemalloc.stop()
            i += 1
            if (i & 4095) == 0:
                rss_peak = max(rss_peak, _rss_mb())
    finally:
        with contextlib.suppress(ValueError, OSError):
            signal.setitimer(signal.ITIMER_REAL, 0)
    counts["inputs"] = i
    elapsed = time.perf_counter() - started
    rss_end = _rss_mb()
    rss_peak = max(rss_peak, rss_end, getrusage(RUSAGE_SELF).ru_maxrss / 1024)
    growth = rss_end - (rss_base if rss_base is not None else rss_start)
    result_findings = [f.__dict__ for f in findings.values()]
    # RSS a hang or a memory blow-up took is seldom given back: that is not a leak of its own
    if growth > RSS_GROWTH_MB and not counts["hangs"] + counts["memory"]:
        result_findings.append(Finding("leak", spec.target, "-", "-", "-",
                                       f"RSS grew {growth:.0f} MB after warm-up").__dict__)
    return {"target": spec.target, "shard": spec.shard, **counts, "seconds": elapsed,
            "rss_peak_mb": rss_peak, "rss_growth_mb": growth, "max_alloc": max_alloc,
            "findings": result_findings, "stopped": stopped}


def where_greedy(h: Harness, inp: Any) -> BaseException | None:
    """Run a greedy input again with only MEM_JUMP_MB of address space to spare, to see
    which allocation fails (the soft limit goes back afterwards)."""
    if not h.shrinkable:
        return None
    try:
        soft, hard = getrlimit(RLIMIT_AS)
        with open("/proc/self/status") as f:
            vm = next(int(ln.split()[1]) for ln in f if ln.startswith("VmSize:")) * 1024
        setrlimit(RLIMIT_AS, (vm + MEM_JUMP_MB * 1048576, hard))
    except (OSError, ValueError, StopIteration):
        return None
    try:
        h.run(inp)
    except MemoryError as exc:
        return exc
    except Exception:
        return None
    finally:
        setrlimit(RLIMIT_AS, (soft, hard))
        h.reset()
    return None


def where_slow(h: Harness, inp: Any) -> Hang | None:
    """Run a slow input again, interrupted at HANG_S, to see where its time goes."""
    global _abort_at
    if not h.shrinkable:  # stateful (the engine): running it twice is not the same input
        return None
    _abort_at = time.perf_counter() + HANG_S
    try:
        h.run(inp)
    except Hang as exc:
        return exc
    except Exception:
        return None
    finally:
        _abort_at = 0.0
    return None


def minimize(h: Harness, inp: Any, sig: tuple[str, str, str], budget_s: float) -> bytes | None:
    """Delta-debug a crashing input down while it crashes the same way (bounded in time)."""
    view = h.shrink_views(inp)
    if view is None:
        return None
    data, back = view
    if len(data) > 300_000:
        return None
    end = time.perf_counter() + budget_s

    def same(candidate: bytes) -> bool:
        global _abort_at
        _abort_at = time.perf_counter() + ABORT_S
        try:
            h.reset()
            for x in h.load(h.dump(back(candidate))):
                h.run(x)
        except h.allowed:
            return False
        except (Hang, KeyboardInterrupt, MemoryError):
            return False
        except BaseException as exc:
            return signature(exc) == sig
        finally:
            _abort_at = 0.0
        return False

    chunk = max(1, len(data) // 2)
    while chunk >= 1 and time.perf_counter() < end:
        i = 0
        shrunk = False
        while i < len(data) and time.perf_counter() < end:
            candidate = data[:i] + data[i + chunk:]
            if same(candidate):
                data = candidate
                shrunk = True
            else:
                i += chunk
        if not shrunk:
            chunk //= 2
    h.reset()
    return data


def _worker_main(spec: ShardSpec, starts: Any, indexes: Any, results: Any) -> None:
    try:
        res = run_shard(spec, starts, indexes)
    except BaseException as exc:
        res = {"target": spec.target, "shard": spec.shard, "error": repr(exc),
               "traceback": traceback.format_exc()}
    results.put(res)


# ------------------------------------------------------------------------ parent


def plan(targets: list[Target], inputs: int, per_target: int | None,
         jobs: int) -> list[tuple[Target, list[int]]]:
    """How many inputs each shard of each target runs."""
    built = [t for t in targets if t.harness is not None]
    total_share = sum(t.share for t in built) or 1.0
    out = []
    for t in built:
        n = per_target if per_target is not None else max(1, round(inputs * t.share / total_share))
        shards = max(1, min(jobs, n // 200))
        sizes = [n // shards + (1 if k < n % shards else 0) for k in range(shards)]
        out.append((t, sizes))
    return out


def run_all(args: argparse.Namespace, targets: list[Target]) -> tuple[dict[str, Any], float]:
    jobs = max(1, args.jobs)
    work = plan(targets, args.inputs, args.per_target, jobs)
    specs: list[ShardSpec] = []
    for t, sizes in work:
        for k, n in enumerate(sizes):
            specs.append(ShardSpec(t.name, k, args.seed, n, args.seconds, str(args.out), -1,
                                   args.minimize))
    results: dict[str, list[dict[str, Any]]] = {t.name: [] for t, _ in work}
    started = time.perf_counter()
    if "fork" not in mp.get_all_start_methods():  # no fork: one process, no hard watchdog
        starts, indexes = [0.0], [0] * BEAT
        for spec in specs:
            spec.slot = 0
            results[spec.target].append(run_shard(spec, starts, indexes))
            _progress(spec.target, results[spec.target][-1])
        return results, time.perf_counter() - started
    ctx = mp.get_context("fork")
    for t in targets:  # import every module under test once, before forking
        if t.harness is not None:
            with contextlib.suppress(Exception):
                t.harness()
    starts = ctx.RawArray("d", jobs)
    indexes = ctx.RawArray("q", jobs * BEAT)
    queue = ctx.SimpleQueue()
    pending = list(specs)
    running: dict[int, tuple[Any, ShardSpec]] = {}
    free = list(range(jobs))
    while pending or running:
        while pending and free:
            spec = pending.pop(0)
            spec.slot = free.pop(0)
            starts[spec.slot] = 0.0
            proc = ctx.Process(target=_worker_main, args=(spec, starts, indexes, queue),
                               daemon=True)
            proc.start()
            running[spec.slot] = (proc, spec)
        time.sleep(0.05)
        while not queue.empty():
            res = queue.get()
            for slot, (proc, spec) in list(running.items()):
                if spec.target == res["target"] and spec.shard == res["shard"]:
                    proc.join(timeout=10)
                    del running[slot]
                    free.append(slot)
            results[res["target"]].append(res)
            _progress(res["target"], res)
        for slot, (proc, spec) in list(running.items()):
            began = starts[slot]
            stuck = began and time.monotonic() - began > KILL_S
            if proc.is_alive() and not stuck:
                continue
            if not proc.is_alive():
                proc.join(timeout=1)
                if not queue.empty():
                    continue  # its result is waiting: picked up on the next turn
            else:  # stuck in C code that SIGALRM cannot interrupt: ours to end, by pid
                os.kill(proc.pid, signal.SIGKILL)
                proc.join(timeout=10)
            kind = "hang" if stuck else "died"
            why = (f"killed after {KILL_S:.0f} s on one input" if stuck
                   else f"worker died with exit code {proc.exitcode}")
            n = int(indexes[slot * BEAT])
            # the counts it last shared (every 256 inputs), plus the input that stopped it
            res = dict(zip(COUNTED, indexes[slot * BEAT + 1:slot * BEAT + BEAT], strict=True))
            res[{"hang": "hangs", "died": "crashes"}[kind]] += 1
            res.update(target=spec.target, shard=spec.shard, inputs=sum(res.values()),
                       seconds=0.0, rss_peak_mb=0.0, rss_growth_mb=0.0, max_alloc=0,
                       stopped=f"{why}, input #{n}: counted are the first {n & ~255} "
                               "inputs (as last shared) and that one")
            res |= {
                "findings": [Finding(kind, spec.target, "-", "-", "-",
                                     f"{why}; input #{n} of shard {spec.shard}, seed "
                                     f"{spec.seed}").__dict__]}
            results[spec.target].append(res)
            del running[slot]
            free.append(slot)
            _progress(spec.target, res)
    return results, time.perf_counter() - started


def _progress(name: str, res: dict[str, Any]) -> None:
    if "error" in res:
        print(f"  {name} shard {res['shard']}: worker error {res['error']}", file=sys.stderr)
        return
    bad = res["crashes"] + res["hangs"] + res["memory"]
    print(f"  {name} shard {res['shard']}: {res['inputs']:,} inputs in {res['seconds']:.1f} s"
          f"{f', {bad} findings' if bad else ''}", file=sys.stderr, flush=True)


def summarize(targets: list[Target], results: dict[str, list[dict[str, Any]]],
              atheris_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for t in targets:
        if t.harness is None:
            rows.append({"target": t.name, "decoder": t.decoder, "status": "not built yet"})
            continue
        if t.name not in results:  # --only-atheris
            rows.extend(a for a in atheris_rows if a["target"] == t.name)
            continue
        shards = [r for r in results[t.name] if "error" not in r]
        errors = [r for r in results[t.name] if "error" in r]
        row: dict[str, Any] = {"target": t.name, "decoder": t.decoder, "status": "ran",
                               "engine": "mutation", "note": t.note}
        for k in ("inputs", "accepted", "rejected", "crashes", "hangs", "memory"):
            row[k] = sum(r[k] for r in shards)
        row["crashes"] += len(errors)
        row["inputs_per_s"] = sum(r["inputs"] / r["seconds"] for r in shards if r["seconds"])
        row["rss_peak_mb"] = max((r["rss_peak_mb"] for r in shards), default=0.0)
        row["rss_growth_mb"] = max((r["rss_growth_mb"] for r in shards), default=0.0)
        row["max_alloc_kb"] = max((r["max_alloc"] for r in shards), default=0) / 1024
        row["seconds"] = max((r["seconds"] for r in shards), default=0.0)
        merged: dict[tuple[str, ...], dict[str, Any]] = {}
        for r in shards:
            for f in r["findings"]:
                key = (f["kind"], f["exc"], f["where"], f["inner"], f["message"]
                       if f["kind"] in ("leak", "died") else "")
                if key in merged:
                    merged[key]["count"] += f["count"]
                    merged[key]["files"] += f["files"]
                    merged[key]["seconds"] = max(merged[key]["seconds"], f["seconds"])
                    merged[key]["minimized"] = merged[key]["minimized"] or f["minimized"]
                else:
                    merged[key] = dict(f)
        row["findings"] = list(merged.values())
        row["memory"] += sum(1 for f in row["findings"] if f["kind"] == "leak")
        row["stopped"] = sorted({r["stopped"] for r in shards if r["stopped"]})
        row["errors"] = [e["traceback"] for e in errors]
        rows.append(row)
        rows.extend(a for a in atheris_rows if a["target"] == t.name)
    return rows


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    from importlib.metadata import PackageNotFoundError, version

    versions = []
    for dist in ("orjson", "PyYAML", "pydantic", "hypothesis", "atheris"):
        with contextlib.suppress(PackageNotFoundError):
            versions.append(f"{dist} {version(dist)}")
    return {"platform": platform.platform(), "cpu": f"{cpu}, {os.cpu_count()} cores",
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "packages": ", ".join(versions)}


def fmt_int(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


HEADERS = ["target", "inputs", "accepted", "rejected", "crashes", "hangs", "memory", "inputs/s",
           "peak RSS", "RSS growth", "max alloc/input"]


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in rows:
        name = r["target"] if r.get("engine", "mutation") == "mutation" else \
            f"{r['target']} ({r['engine']})"
        if r["status"] != "ran":
            out.append([name, "not built yet", *[""] * (len(HEADERS) - 2)])
            continue
        out.append([name, fmt_int(r["inputs"]), fmt_int(r["accepted"]), fmt_int(r["rejected"]),
                    fmt_int(r["crashes"]), fmt_int(r["hangs"]), fmt_int(r["memory"]),
                    f"{r['inputs_per_s']:,.0f}",
                    f"{r['rss_peak_mb']:.0f} MB" if r["rss_peak_mb"] else "-",
                    f"{r['rss_growth_mb']:+.1f} MB" if r.get("rss_growth_mb") is not None
                    else "-",
                    f"{r['max_alloc_kb']:,.0f} KiB" if r.get("max_alloc_kb") is not None
                    else "-"])
    return out


def print_report(rows: list[dict[str, Any]], info: dict[str, Any], markdown: bool) -> None:
    body = table_rows(rows)
    total = sum(r["inputs"] for r in rows if r["status"] == "ran")
    if markdown:
        print("| " + " | ".join(HEADERS) + " |")
        print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(HEADERS))) + "|")
        for line in body:
            print("| " + " | ".join(line) + " |")
        print(f"| **total** | **{total:,}** |" + " |" * (len(HEADERS) - 2))
    else:
        try:
            from rich.console import Console
            from rich.table import Table

            table = Table(title="firegrid decoder fuzzing", title_justify="left")
            for i, h in enumerate(HEADERS):
                table.add_column(h, justify="left" if i == 0 else "right")
            for line in body:
                table.add_row(*line)
            table.add_row("total", f"{total:,}", *[""] * (len(HEADERS) - 2), style="bold")
            Console(width=160, highlight=False).print(table)
        except ImportError:
            widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(HEADERS)]
            print("  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)))
            for line in body:
                print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
            print(f"total {total:,}")
    print()
    for k, v in info.items():
        print(f"{k}: {v}")
    notes = [(r["target"], r["note"]) for r in rows if r.get("note")]
    for name, note in notes:
        print(f"note: {name}: {note}")
    for r in rows:
        for s in r.get("stopped", []):
            print(f"note: {r['target']}: {s}")
        for e in r.get("errors", []):
            print(f"worker error in {r['target']}:\n{e}")
    findings = [f for r in rows for f in r.get("findings", [])]
    if findings:
        print(f"\nfindings ({len(findings)} distinct):")
        for f in findings:
            print(f"- {f['target']}: {f['kind']} x{f['count']:,}: {f['message'][:200]}")
            if f["exc"] != "-":
                print(f"    at {f['where']}  (innermost: {f['inner']})")
            if f.get("seconds"):
                print(f"    slowest: {f['seconds']:.2f} s")
            for p in f["files"][:2]:
                print(f"    reproducer: {p}")
            if f.get("minimized"):
                size = Path(f["minimized"]).stat().st_size if Path(f["minimized"]).exists() \
                    else "?"
                print(f"    minimised ({size} bytes): {f['minimized']}")


# ------------------------------------------------------------------------ atheris


def atheris_pass(args: argparse.Namespace, targets: list[Target]) -> list[dict[str, Any]]:
    """Coverage-guided libFuzzer runs (atheris), a child process per target, --jobs at once."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed: skipping the coverage-guided pass "
              "(pip install atheris; it is not one of firegrid's dependencies)", file=sys.stderr)
        return []
    todo = [t for t in targets if t.harness is not None and t.name != "engine"]
    running: list[tuple[Target, subprocess.Popen[bytes], Path, float]] = []
    done: dict[str, dict[str, Any]] = {}
    while todo or running:
        while todo and len(running) < max(1, args.jobs):
            t = todo.pop(0)
            out = Path(args.out) / t.name / "atheris"
            out.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--atheris-child", t.name,
                   "--out", str(args.out), "--", f"-runs={args.atheris_runs}",
                   f"-seed={args.seed or 1}", f"-timeout={math.ceil(HANG_S)}",
                   f"-rss_limit_mb={MEM_LIMIT_MB}", f"-malloc_limit_mb={MEM_LIMIT_MB}",
                   f"-artifact_prefix={out}/", "-print_final_stats=1"]
            if args.atheris_seconds:
                cmd.append(f"-max_total_time={math.ceil(args.atheris_seconds)}")
            with open(out / "libfuzzer.log", "wb") as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            running.append((t, proc, out, time.perf_counter()))
        time.sleep(0.2)
        for item in list(running):
            t, proc, out, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            done[t.name] = _atheris_row(t, proc.returncode, out, time.perf_counter() - t0)
    return [done[t.name] for t in targets if t.name in done]


def _atheris_row(t: Target, rc: int, out: Path, secs: float) -> dict[str, Any]:
    log = (out / "libfuzzer.log").read_text(errors="replace")
    runs = _stat(log, "number_of_executed_units")
    peak = _stat(log, "peak_rss_mb")
    counts: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        counts = json.loads((out / "counts.json").read_text())
    crashed = rc != 0
    hang = "ERROR: libFuzzer: timeout" in log
    oom = "out-of-memory" in log
    findings = []
    if crashed:
        m = re.search(r"Uncaught Python exception: ===\n(.*?)\n", log)
        arts = re.findall(r"Test unit written to (\S+)", log)
        last = log.strip().splitlines()[-1] if log.strip() else f"exit {rc}"
        findings.append(Finding("hang" if hang else "memory" if oom else "crash", t.name,
                                m.group(1).split(":")[0][:80] if m else "-", "-", "-",
                                (m.group(1) if m else last)[:300], files=arts).__dict__)
    print(f"  {t.name} (atheris): {runs} runs in {secs:.1f} s, exit {rc}", file=sys.stderr,
          flush=True)
    return {"target": t.name, "decoder": t.decoder, "status": "ran", "engine": "atheris",
            "note": "", "inputs": runs or counts.get("inputs", 0),
            "accepted": counts.get("accepted", 0), "rejected": counts.get("rejected", 0),
            "crashes": int(crashed and not hang and not oom), "hangs": int(hang),
            "memory": int(oom), "inputs_per_s": (runs or 0) / secs if secs else 0.0,
            "rss_peak_mb": float(peak or 0), "rss_growth_mb": None, "max_alloc_kb": None,
            "seconds": secs, "findings": findings, "stopped": [], "errors": []}


def _stat(log: str, name: str) -> int | None:
    m = re.search(rf"stat::{name}:\s+(\d+)", log)
    return int(m.group(1)) if m else None


def atheris_child(name: str, out: str, libfuzzer_args: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["drivers", "alerting", "gateway", "firmware_sim",
                                             "yaml"]):
        import yaml  # noqa: F401

        import alerting.page  # noqa: F401
        import drivers.native  # noqa: F401
        import firmware_sim.scenario  # noqa: F401
        import gateway.config
        import gateway.runtime  # noqa: F401
    target = BY_NAME[name]
    assert target.harness is not None
    h = target.harness()
    corpus = Path(out) / name / "atheris" / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    seed_rng = random.Random(1)
    for k in range(64):  # seeds, so that libFuzzer starts from valid inputs
        inp = h.generate(seed_rng)
        view = h.shrink_views(inp)
        data = h.dump(inp) if view is None else view[0]
        if isinstance(inp, tuple):
            data = inp[0].encode() + b"\n" + inp[1]
        (corpus / f"seed-{k}").write_bytes(data)
    counts = {"inputs": 0, "accepted": 0, "rejected": 0}
    stats = Path(out) / name / "atheris" / "counts.json"
    allowed = h.allowed
    runs = next((int(a.split("=", 1)[1]) for a in libfuzzer_args if a.startswith("-runs=")), 0)

    def one(data: bytes) -> None:
        counts["inputs"] += 1
        try:
            ok = h.run(h.from_fuzz_bytes(data))
        except allowed:
            counts["rejected"] += 1
        else:
            counts["accepted" if ok else "rejected"] += 1
        if counts["inputs"] % 256 == 0 or counts["inputs"] >= runs:
            stats.write_text(json.dumps(counts))

    import atexit

    atexit.register(lambda: stats.write_text(json.dumps(counts)))
    _quiet_logs()
    atheris.Setup([sys.argv[0], *libfuzzer_args, str(corpus)], one)
    atheris.Fuzz()


# ------------------------------------------------------------------------ main


def replay(name: str, path: Path) -> int:
    target = BY_NAME[name]
    if target.harness is None:
        print(f"{name}: not built yet", file=sys.stderr)
        return 2
    _quiet_logs()
    h = target.harness()
    for k, inp in enumerate(h.load(path.read_bytes())):
        t0 = time.perf_counter()
        try:
            ok = h.run(inp)
        except h.allowed as exc:
            print(f"input {k}: rejected: {type(exc).__name__}: {str(exc)[:200]}")
        except BaseException:
            traceback.print_exc()
            return 1
        else:
            print(f"input {k}: {'accepted' if ok else 'dropped'}")
        print(f"  {time.perf_counter() - t0:.3f} s")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="targets: " + ", ".join(
                                    f"{t.name}{'' if t.harness else ' (not built yet)'}"
                                    for t in TARGETS))
    p.add_argument("--inputs", type=int, default=1_000_000,
                   help="total inputs over all targets, shared by weight (default 1,000,000)")
    p.add_argument("--per-target", type=int, default=None,
                   help="inputs for every target instead (overrides --inputs)")
    p.add_argument("--seconds", type=float, default=None,
                   help="stop each target (each of its worker processes) after this long")
    p.add_argument("--target", nargs="+", default=None, metavar="NAME",
                   help="only these targets (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of every generator (default 0)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: one per core)")
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "firegrid-fuzz"
                   / time.strftime("%Y%m%d-%H%M%S"),
                   help="where reproducers go (default: $TMPDIR/firegrid-fuzz/<date-time>)")
    p.add_argument("--minimize", type=float, default=MINIMIZE_S, metavar="SECONDS",
                   help="time to shrink the first reproducer of each crash (0: do not)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--atheris", action="store_true",
                   help="add a coverage-guided pass with atheris (if installed)")
    p.add_argument("--only-atheris", action="store_true",
                   help="the atheris pass alone, without the mutation pass")
    p.add_argument("--atheris-runs", type=int, default=100_000,
                   help="libFuzzer runs per target in the atheris pass (default 100,000)")
    p.add_argument("--atheris-seconds", type=float, default=60,
                   help="... or this long per target, whichever comes first (default 60)")
    p.add_argument("--replay", type=Path, default=None,
                   help="run one reproducer file again (with --target NAME)")
    p.add_argument("--atheris-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("libfuzzer", nargs="*", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.atheris_child:
        atheris_child(args.atheris_child, str(args.out), args.libfuzzer)
        return 0
    names = args.target or [t.name for t in TARGETS]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        print(f"unknown target(s): {', '.join(unknown)}; known: {', '.join(BY_NAME)}",
              file=sys.stderr)
        return 2
    if args.replay is not None:
        if len(names) != 1:
            print("--replay needs exactly one --target", file=sys.stderr)
            return 2
        return replay(names[0], args.replay)
    if args.inputs < 1 or (args.per_target is not None and args.per_target < 1):
        print("--inputs and --per-target must be at least 1", file=sys.stderr)
        return 2
    targets = [t for t in TARGETS if t.name in names]
    info = machine()
    budget = (f"atheris, {args.atheris_runs:,} runs or {args.atheris_seconds:g} s each"
              if args.only_atheris else f"{args.per_target or args.inputs:,} inputs"
              f"{' each' if args.per_target else ''}")
    print(f"fuzzing {', '.join(t.name for t in targets if t.harness)} ({budget}, "
          f"seed {args.seed}, {args.jobs} jobs) on {info['cpu']}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    results = {} if args.only_atheris else run_all(args, targets)[0]
    atheris_rows = atheris_pass(args, targets) if args.atheris or args.only_atheris else []
    wall = time.perf_counter() - t0
    rows = summarize(targets, results, atheris_rows)
    total = sum(r["inputs"] for r in rows if r["status"] == "ran")
    info = {**info, "seed": str(args.seed), "jobs": str(args.jobs),
            "wall time": f"{wall:.1f} s", "total inputs": f"{total:,}",
            "reproducers": str(args.out)}
    print_report(rows, info, args.markdown)
    bad = sum(r.get("crashes", 0) + r.get("hangs", 0) + r.get("memory", 0) for r in rows)
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": info, "rows": rows, "exit": int(bad > 0)},
                                        indent=1, default=str))
    return 1 if bad else 0



if __name__ == "__main__":
    sys.exit(main())
