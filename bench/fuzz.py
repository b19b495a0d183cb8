"""Fuzzing: every decoder fed mutated and generated inputs; crashes, hangs and memory counted.

Run from the repository root (the project installed, e.g. editable)::

    python bench/fuzz.py [--inputs 1000000] [--seconds N] [--target NAME ...] [--seed S]

Each target is one decoder of untrusted input (a registry, ``TARGETS``, so the pager
channels still to be built slot in). For each, a worker process generates inputs by

* mutating a seed corpus of valid payloads or files: byte flips, insertions of random
  bytes and of format tokens, deletions, repeats, splices, truncation; and, on the
  parsed structure, values replaced by extreme numbers, NaN/Infinity literals, huge
  strings, wrong types, odd unicode and deep nesting, keys added, dropped, misspelt and
  duplicated (YAML targets also get anchors and aliases, tags, merge keys, alias bombs);
* generating them outright: random bytes, and "token soup" of the format's pieces;
* for the device feeds' stream codecs (GB/T 26875.3, panel printers, Modbus RTU replies):
  streams of valid frames or records made by the codecs' own encoders, mutated and
  re-checksummed, cut into reads in many ways (whole, byte by byte, random pieces), the
  clock moving between them; for the MQTT feeds (Zigbee2MQTT, Frigate): message sequences
  on a fresh codec;
* for the pager channels (TAP, SNPP): dialogues recorded from the codecs talking to each
  other (TapClient to TapTerminal, SnppClient and MstaPoll to the SNPP simulator), replayed
  with their reads cut anywhere, mutated, or replaced by random bytes, with ticks at random
  times and at the machines' own deadlines;

and runs each through the decoder. An input is *accepted* (a value came out), *rejected*
(the decoder's own error, the one the code promises callers), a *crash* (any other
exception, or a broken invariant: an accepted value that its consumer cannot use), a
*hang* (it took more than ``HANG_S``; interrupted at ``ABORT_S``) or a *memory* finding
(it hit the worker's address-space limit, ``MEM_LIMIT_MB`` over its start, or raised the
worker's peak RSS by more than ``MEM_JUMP_MB`` on its own; or the worker's RSS grew by
more than ``RSS_GROWTH_MB`` after warm-up: a leak; or, for a feed codec, an internal
buffer past its documented bound). Per target the table also shows peak RSS, RSS growth
after warm-up, the largest Python allocation of one input (tracemalloc, on a sample of
inputs) and, for the feed codecs, the largest buffer held after any call, with its bound.

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
from typing import Any, ClassVar

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


def _receipt() -> Harness:
    """The device side of the alarm receipt: a retained device/<id> read by a detector."""
    from drivers.native import KeptAlarm, receipt_ts

    def call(data: bytes) -> float | None:
        got = receipt_ts(data)
        kept = KeptAlarm(resend_s=30.0)
        kept.raised(1700000000.25, now=0.0)
        named = kept.heard(data)
        assert named == (got is not None and got >= 1700000000.25), (got, named)
        assert (kept.due(1.0, reconnected=True) is None) == named
        return got

    def check(got: Any, data: bytes) -> None:
        assert got is None or (type(got) is float and math.isfinite(got)), got

    seeds: list[Any] = [
        {"device": "smk-301", "state": "alarm", "kind": "smoke", "since": 1700000000.5,
         "alarm_ts": 1700000000.25},
        {"device": "smk-301", "state": "normal", "kind": "smoke", "since": 1700000001.0},
        {"device": "smk-301", "state": "fault", "troubles": ["fault"], "alarm_ts": 1e300},
    ]
    vocab = ["alarm", "normal", "disabled", 1700000000.25, 1700000000.2499, 0, -1, 1e308, True]
    keys = ["device", "state", "kind", "since", "alarm_ts", "troubles"]
    return JsonHarness(call, (), seeds, vocab, keys, 4096, check)


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
            (f"confirm/{inc}/reply", {"decision": "dismiss", "by": "w-03", "cause": "unwanted"}),
            ("page/guard-1/ack", {"incident": inc, "status": "ack"}),
            ("page/squad-3/ack", {"incident": inc, "status": "on_scene"}),
            (f"incident/{inc}/close", {"by": "w-07", "reason": "fire out"}),
            (f"incident/{inc}/close", {"by": "w-07"}),
            (f"incident/{inc}/close", {"by": "w-07", "reason": "toast", "cause": "unwanted"}),
            ("device/smk-301", {"state": "alarm"}),
            ("status", {"online": True}),
        ]
        self.vocab: list[Any] = [*STATES, *ACK_STATUSES, "confirm", "dismiss", "w-07",
                                 "guard-1", inc, "smoke", "fire out", 1.5]
        self.keys = ["state", "kind", "value", "ts", "bearing_deg", "decision", "by",
                     "reason", "incident", "status", "cause"]
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
        from alerting.causes import CAUSES
        from alerting.page import ACK_STATUSES, AckError
        from drivers.signal import STATES, PayloadError
        from gateway.config import parse_site
        from gateway.engine import Engine
        from gateway.metrics import Metrics
        from gateway.model import Refused
        from gateway.runtime import Gateway

        self.causes: tuple[Any, ...] = CAUSES
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
            if rng.random() < 0.2:
                body["cause"] = rng.choice((*self.causes, "toast", None))
        elif r < 0.85:
            topic = f"page/{who()}/ack"
            body = {"incident": pick_inc(),
                    "status": rng.choice(("ack", "on_scene", "on_scene", "decline"))}
        else:
            topic = f"incident/{pick_inc()}/close"
            body = {"by": who(), "reason": rng.choice(("out", "", "x" * 600, "火 🔥"))}
            if rng.random() < 0.3:
                body["cause"] = rng.choice((*self.causes, "toast", 3))
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
                    incident, decision, by, cause = item.data
                    d = eng.reply(incident, decision, by, now, cause)
                elif item.kind == "ack":
                    d = eng.ack(item.data.responder, item.data.incident, item.data.status, now)
                else:
                    incident, by, reason, cause = item.data
                    d = eng.close(incident, by, reason, now, cause)
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


# ------------------------------------------------------------------------ feed codecs
#
# The device feeds: stream codecs (GB/T 26875.3, panel printers, Modbus RTU replies) fed
# byte streams cut into reads in many ways, MQTT codecs (Zigbee2MQTT, Frigate) fed short
# message sequences, and the small parsers beside them (ADUs, refs, thresholds). A stream
# codec must never raise: whatever is wrong comes out as Garbage. Each harness also
# tracks the largest buffer (or state) its codec held after any call, against the bound
# the codec documents; a buffer past its bound raises ``Unbounded``, a memory finding.


class Unbounded(AssertionError):
    """A codec's buffer or state outgrew its documented bound (counted under memory)."""


def _text_ok(s: Any, what: str) -> None:
    assert type(s) is str, f"{what} is a {type(s).__name__}: {s!r:.80}"
    s.encode("utf-8")  # a lone surrogate could not be journaled, logged as JSON or published


def check_feed_events(events: Any) -> None:
    """What every feed codec promises of its events (``drivers.feed``): the gateway's
    ``Feeds.events`` and the engine take them without another check."""
    from drivers.feed import TROUBLES, Garbage, Reading, Reset, Seen, Trouble
    from drivers.signal import STATES, Signal

    assert type(events) is list, f"events are a {type(events).__name__}"
    for ev in events:
        if isinstance(ev, Signal):
            _text_ok(ev.device, "Signal.device")
            assert ev.device and ev.state in STATES, ev
            assert ev.kind is None or type(ev.kind) is str, ev
            for v, lo, hi in ((ev.value, -1e12, 1e12), (ev.ts, 0.0, 4102444800.0),
                              (ev.bearing_deg, -360.0, 360.0)):
                assert v is None or (type(v) is float and math.isfinite(v) and lo <= v <= hi), ev
            assert type(ev.meta) is tuple, ev
            for pair in ev.meta:
                assert type(pair) is tuple and len(pair) == 2, ev
                _text_ok(pair[0], "meta key")
                v = pair[1]
                if isinstance(v, str):
                    _text_ok(v, "meta value")
                else:
                    assert type(v) in (int, float) and math.isfinite(v), ev
            orjson_dumps(ev.meta)  # the audit record stores it
        elif isinstance(ev, Trouble):
            _text_ok(ev.ref, "Trouble.ref")
            _text_ok(ev.detail, "Trouble.detail")
            assert ev.trouble in TROUBLES and type(ev.active) is bool, ev
        elif isinstance(ev, Seen):
            if ev.ref is not None:
                _text_ok(ev.ref, "Seen.ref")
            b = ev.battery
            assert b is None or (type(b) is float and 0.0 <= b <= 100.0), ev
        elif isinstance(ev, Reading):
            _text_ok(ev.ref, "Reading.ref")
            _text_ok(ev.unit, "Reading.unit")
            assert type(ev.raw) in (int, float) and math.isfinite(ev.raw), ev
        elif isinstance(ev, Reset):
            if ev.ref is not None:
                _text_ok(ev.ref, "Reset.ref")
        elif isinstance(ev, Garbage):
            _text_ok(ev.reason, "Garbage.reason")
            _text_ok(ev.where, "Garbage.where")
            assert type(ev.nbytes) is int and ev.nbytes >= 0, ev
        else:
            raise AssertionError(f"not a feed event: {ev!r:.200}")


def split(data: bytes, seed: int, allow_empty: bool = True) -> list[bytes]:
    """``data`` cut into reads as a transport might deliver it: whole, byte by byte, in
    small, frame-sized or large pieces, now and then an empty read. Same seed, same cuts."""
    n = len(data)
    mode = seed % 8
    if mode == 0 or n == 0:
        return [data]
    if mode == 1 and n <= 4096:
        return [data[i:i + 1] for i in range(n)]
    rng = random.Random(seed)
    hi = (3, 8, 64, 300, 1100, 5000)[mode % 6]
    out: list[bytes] = []
    i = 0
    while i < n:
        if allow_empty and mode == 7 and rng.random() < 0.05:
            out.append(b"")
        k = rng.randint(1, hi)
        out.append(data[i:i + k])
        i += k
    return out


def _check_bound(h: Any, size: int, what: str) -> None:
    if size > h.buffer_max:
        h.buffer_max = size
    if size > h.buffer_bound:
        raise Unbounded(f"{what} holds {size:,} {h.buffer_unit}, over its bound of "
                        f"{h.buffer_bound:,}")


def _hexify(inp: dict[str, Any]) -> bytes:
    return json.dumps({k: v.hex() if isinstance(v, bytes) else v for k, v in inp.items()},
                      sort_keys=True).encode()


class _HexDataInputs:
    """Inputs that are a dict with raw ``data`` bytes: pooled, dumped and replayed as hex."""

    pool: list[bytes]

    def remember(self, inp: dict[str, Any], rng: random.Random) -> None:
        if len(inp["data"]) <= 4096:
            _pool_add(self.pool, inp["data"], rng, 200)

    def dump(self, inp: dict[str, Any]) -> bytes:
        return _hexify(inp)

    def load(self, data: bytes) -> list[Any]:
        obj = json.loads(data)
        obj["data"] = bytes.fromhex(obj["data"])
        return [obj]


class StreamHarness(_HexDataInputs, Harness):
    """A stream decoder: one input is a byte stream and how it is cut into reads
    (``{"data", "cuts", "clean"}``; ``clean``: made of valid units only, unmutated, so
    the stronger oracles apply)."""

    tokens: ClassVar[list[bytes]] = []
    vocab: ClassVar[list[Any]] = ["x"]
    max_len = 24000
    buffer_unit = "B"
    buffer_bound = 0

    def __init__(self) -> None:
        self.pool: list[bytes] = []
        self.mut: Mutator | None = None
        self.buffer_max = 0
        self.stats: dict[str, int] = {}

    def mutator(self, rng: random.Random) -> Mutator:
        if self.mut is None or self.mut.rng is not rng:
            self.mut = Mutator(rng, self.tokens, self.vocab, self.vocab, self.max_len)
        return self.mut

    # per format

    def valid(self, rng: random.Random, clean: bool) -> tuple[bytes, list[Any]]:
        """One valid unit (a frame, a record) and, for the clean oracle, what it means."""
        raise NotImplementedError

    def repair(self, data: bytes) -> bytes:
        """Make a mutated unit well framed again (checksum, length), where the format has
        them: so that mutations reach past the framing."""
        return data

    def special(self, rng: random.Random) -> bytes:
        """Format-specific shapes the generic mutators seldom make."""
        return self.mutator(rng).soup()

    def feed(self, inp: dict[str, Any]) -> bool:
        raise NotImplementedError

    # the Harness interface

    def generate(self, rng: random.Random) -> dict[str, Any]:
        m = self.mutator(rng)
        r = rng.random()
        expect: list[Any] = []
        clean = False
        if r < 0.12:
            clean = True
            parts = []
            for _ in range(rng.choice((1, 1, 2, 3, 8))):
                unit, meaning = self.valid(rng, True)
                parts.append(unit)
                expect += meaning
            data = b"".join(parts)
        elif r < 0.55:
            parts = []
            for _ in range(rng.choice((1, 1, 2, 3, 5, 12))):
                unit = self.valid(rng, False)[0]
                if rng.random() < 0.6:
                    unit = m.bytes(unit, self.pool)
                    if rng.random() < 0.5:
                        unit = self.repair(unit)
                parts.append(unit)
                if rng.random() < 0.08:
                    parts.append(rng.randbytes(rng.randint(1, 40)))
            data = b"".join(parts)
        elif r < 0.68:
            base = rng.choice(self.pool) if self.pool and rng.random() < 0.7 else \
                self.valid(rng, False)[0]
            data = m.bytes(base, self.pool)
            if rng.random() < 0.3:
                data = self.repair(data)
        elif r < 0.8:
            data = self.special(rng)
        elif r < 0.9:
            data = m.random_bytes()
        else:
            data = m.soup()
        inp: dict[str, Any] = {"data": data if clean else data[:self.max_len],
                               "cuts": rng.getrandbits(32), "clean": clean}
        if clean:
            inp["expect"] = expect
        return inp

    def run(self, inp: dict[str, Any]) -> bool:
        return self.feed(inp)

    def from_fuzz_bytes(self, data: bytes) -> dict[str, Any]:
        return {"data": data, "cuts": (len(data) * 2654435761 + (data[:1] or b"\0")[0]) % 2**32,
                "clean": False}

    def shrink_views(self, inp: dict[str, Any]) -> tuple[bytes, Callable[[bytes], Any]]:
        cuts = inp["cuts"]
        return inp["data"], lambda b: {"data": b, "cuts": cuts, "clean": False}


# --- GB/T 26875.3

GB_DESCRIPTIONS = ["", "1号楼3层烟感", "火警 fire", "x" * 40, "@@##", "描述" * 20, "\x00abc",
                   " trailing  ", "室外消火栓 #2", "🔥"]


def _gb_label(rng: random.Random) -> tuple[int, ...]:
    r = rng.random()
    if r < 0.65:
        return (rng.randrange(60), rng.randrange(60), rng.randrange(24), rng.randint(1, 28),
                rng.randint(1, 12), rng.randrange(100))
    if r < 0.85:
        return rng.choice(((0, 0, 0, 1, 1, 0), (59, 59, 23, 31, 12, 99), (0, 0, 0, 29, 2, 23),
                           (0, 0, 0, 0, 0, 0), (60, 60, 24, 32, 13, 100), (0, 0, 0, 31, 4, 24)))
    return tuple(rng.randrange(256) for _ in range(6))


def gb_objects(rng: random.Random) -> list[Any]:
    """Information objects of one random modelled type, with values at and past the edges."""
    from drivers import gb26875 as gb

    kind = rng.choice((gb.SystemStatus, gb.ComponentStatus, gb.ComponentStatus, gb.AnalogValue,
                       gb.Operation, gb.UitdStatus, gb.UitdOperation, gb.UitdVersion))
    n = min(kind.MAX, rng.choice((1, 1, 1, 2, 3, 5, kind.MAX)))

    def u8() -> int:
        return rng.choice((0, 1, 255, rng.randrange(256)))

    def u16() -> int:
        return rng.choice((0, 2, 2, 4, 0x0100, 0x0104, 0x2000, 0x2002, 0x0702, 0x7C, 0xFFFF,
                           rng.randrange(65536)))

    def addr() -> int:
        return rng.choice((0, 1, 131082, 0xFFFFFFFF, rng.getrandbits(32)))

    objs: list[Any] = []
    for _ in range(n):
        t = _gb_label(rng)
        if kind is gb.SystemStatus:
            objs.append(gb.SystemStatus(u8(), u8(), u16(), t))
        elif kind is gb.ComponentStatus:
            objs.append(gb.ComponentStatus(u8(), u8(), u8(), addr(), u16(),
                                           rng.choice(GB_DESCRIPTIONS), t))
        elif kind is gb.AnalogValue:
            objs.append(gb.AnalogValue(u8(), u8(), u8(), addr(), rng.choice((0, 1, 3, 6, 12, 13,
                                                                             255)),
                                       rng.choice((-32768, 32767, 0, -1, rng.randint(-32768,
                                                                                     32767))), t))
        elif kind is gb.Operation:
            objs.append(gb.Operation(u8(), u8(), u8(), u8(), t))
        elif kind is gb.UitdStatus:
            objs.append(gb.UitdStatus(u8(), t))
        elif kind is gb.UitdOperation:
            objs.append(gb.UitdOperation(u8(), u8(), t))
        else:
            objs.append(gb.UitdVersion(u8(), u8()))
    return objs


def gb_adu(rng: random.Random, clean: bool) -> bytes:
    """An ADU: valid objects (or a heartbeat's empty one) if ``clean``; else also unknown
    types, counts over the maximum, truncated or over-long bodies, a frame inside."""
    from drivers import gb26875 as gb

    r = rng.random()
    if r < 0.12:
        return b""
    if clean or r < 0.6:
        return gb.build_adu(gb_objects(rng))
    valid = gb.build_adu(gb_objects(rng))
    if r < 0.68:  # a type this codec keeps raw
        return bytes([rng.choice((0, 5, 26, 61, 91, 128, 255)), rng.randrange(256)]) + \
            rng.randbytes(rng.choice((0, 1, 8, 100, 1000)))
    if r < 0.76:
        return valid[:rng.randrange(len(valid))]
    if r < 0.82:
        return valid + rng.randbytes(rng.randint(1, 20))
    if r < 0.88:  # the count over the type's maximum
        t = valid[0]
        return bytes([t, gb._KINDS[t].MAX + rng.randint(1, 255 - gb._KINDS[t].MAX)]) + valid[2:]
    if r < 0.94:  # a complete frame inside the ADU (see Deframer's "frame inside" rule)
        inner = gb.encode_frame(gb.Frame(serial=rng.randrange(65536), time=_gb_label(rng),
                                         src=1, dst=0, command=2))
        return bytes([99, 1]) + rng.randbytes(rng.randint(0, 4)) + inner
    return bytes([rng.randrange(256)])


def gb_frame(rng: random.Random, clean: bool, command: int | None = None) -> bytes:
    from drivers import gb26875 as gb

    if command is None:
        command = rng.choice((2, 2, 2, 2, 5, 3, 6)) if clean else \
            rng.choice((2, 2, 2, 2, 5, 3, 6, 1, 4, 0, 7, 255))
    return gb.encode_frame(gb.Frame(
        serial=rng.choice((0, 1, 65535, rng.randrange(65536))),
        version=(1, 1) if clean or rng.random() < 0.9 else (rng.randrange(256), rng.randrange(256)),
        time=_gb_label(rng) if clean or rng.random() < 0.9 else tuple(rng.randbytes(6)),
        src=rng.choice((0, 1, 0x123456789A, (1 << 48) - 1, rng.getrandbits(48))),
        dst=rng.choice((0, 0, 1, rng.getrandbits(48))), command=command,
        adu=(gb_adu(rng, clean) if command in (2, 5) or not clean else b"")[:gb.MAX_ADU]))


def gb_repair(data: bytes) -> bytes:
    """The frame at the first ``@@`` made well framed again: its length field, checksum and
    tail fit whatever the mutation left (so the mutation reaches the ADU parser)."""
    from drivers.gb26875 import MAX_ADU, OVERHEAD, checksum

    b = bytearray(data)
    at = b.find(b"@@")
    if at < 0 or len(b) - at < OVERHEAD:
        return data
    n = min(len(b) - at - OVERHEAD, MAX_ADU)
    end = at + OVERHEAD + n
    b[at + 24:at + 26] = n.to_bytes(2, "little")
    b[end - 3] = checksum(b[at + 2:end - 3])
    b[end - 2:end] = b"##"
    return bytes(b)


GB_TOKENS = [b"@@", b"##", b"@", b"#", b"@" * 30, b"\x00\x04", b"\x01\x04", b"\xff\xff",
             b"\x00\x00", b"\x02", b"\x03", b"\x05", b"\x06", b"\x01\x01", b"\x02\x01",
             b"\x15\x01", b"\x19\x01", b"\x02\x16", b"\x01\x66", b"\xff", b"\x00", b"##@@"]


class _GbStream(StreamHarness):
    tokens = GB_TOKENS
    vocab: ClassVar[list[Any]] = ["@@", "##", "火警"]

    def __init__(self) -> None:
        super().__init__()
        from drivers import gb26875 as gb

        self.gb = gb
        rng = random.Random(26875)
        self.pool = [gb_frame(rng, True) for _ in range(40)]
        self.heartbeat = gb.encode_frame(gb.Frame(serial=1, time=(0, 0, 0, 1, 1, 24), src=1,
                                                  dst=0, command=2))
        self.tokens = [*GB_TOKENS, self.heartbeat, self.heartbeat[:27]]

    def valid(self, rng: random.Random, clean: bool) -> tuple[bytes, list[Any]]:
        return gb_frame(rng, clean), []

    def repair(self, data: bytes) -> bytes:
        return gb_repair(data)

    def special(self, rng: random.Random) -> bytes:
        gb = self.gb
        r = rng.randrange(8)
        if r == 0:  # a run of '@' (every start a false one)
            return b"@" * rng.choice((2, 27, 29, 30, 1054, 3000))
        if r == 1:  # a header whose length says 1024, then short frames: cut short by them
            head = bytearray(gb_frame(rng, True, 2)[:27])
            head[24:26] = rng.choice((1024, 1023, 500, 1025, 0xFFFF)).to_bytes(2, "little")
            return bytes(head) + b"".join(gb_frame(rng, True) for _ in range(rng.randint(0, 4)))
        if r == 2:  # the same frame again and again (a resend after a lost 确认)
            f = gb_frame(rng, True, 2)
            return f * rng.choice((2, 3, 50))
        if r == 3:  # heartbeats, many
            return self.heartbeat * rng.choice((2, 100, 700))
        if r == 4:  # fake headers with good tails but bad checksums
            parts = []
            for _ in range(rng.randint(1, 20)):
                f = bytearray(gb_frame(rng, False))
                f[-3] ^= 1 + rng.randrange(255)
                parts.append(bytes(f))
            return b"".join(parts)
        if r == 5:  # a frame whose ADU is a complete frame
            inner = gb_frame(rng, True, rng.choice((2, 3, 6)))[:1020]
            return gb.encode_frame(gb.Frame(serial=7, time=(0, 0, 0, 1, 1, 24), src=1, dst=0,
                                            command=2, adu=bytes([99, 1]) + inner))
        if r == 6:  # the bytes of a frame interleaved with another's
            a, b = gb_frame(rng, True), gb_frame(rng, True)
            k = rng.randrange(1, len(a))
            return a[:k] + b + a[k:]
        return self.mutator(rng).soup()

    def expected_sends(self, data: bytes) -> list[int]:
        return [f.serial for f in self.gb.Deframer().feed(data)
                if isinstance(f, self.gb.Frame) and f.command == self.gb.CMD_SEND]


class Gb26875SessionHarness(_GbStream):
    """``CentreSession.receive`` (+ ``tick``, ``close``): a TCP connection from a UITD, with
    the clock advancing between reads (so stalled partial frames are abandoned)."""

    buffer_bound = 2 * 1054  # "the buffer never holds more than two maximum frames"
    CENTRE = 0x00A1B2C3D4E5

    def feed(self, inp: dict[str, Any]) -> bool:
        gb = self.gb
        from drivers.feed import Garbage, Seen

        s = gb.CentreSession(self.CENTRE)
        crng = random.Random(inp["cuts"] ^ 0x9E3779B9)
        stalls = not inp["clean"] and crng.random() < 0.4
        now = 1_700_000_000.0 + crng.random()
        events: list[Any] = []
        replies: list[bytes] = []
        for chunk in split(inp["data"], inp["cuts"]):
            now += crng.choice((0.0, 0.01, 1.0, 4.999, 5.0, 7.5, 60.0)) if stalls else 0.001
            if stalls and crng.random() < 0.2:
                ev, rep = s.tick(now)
                events += ev
                replies.append(rep)
            ev, rep = s.receive(chunk, now)
            _check_bound(self, s._deframer.buffered, "the deframer")
            events += ev
            replies.append(rep)
        if stalls:
            ev, rep = s.tick(now + 10)
            events += ev
            replies.append(rep)
        events += s.close()
        check_feed_events(events)
        for rep in replies:
            assert type(rep) is bytes, rep
        # every reply: whole 确认/否认 frames from the centre, with an empty ADU
        out = gb.Deframer().feed(b"".join(replies))
        for f in out:
            assert isinstance(f, gb.Frame), f"a reply that is no frame: {f}"
            assert f.command in (gb.CMD_CONFIRM, gb.CMD_DENY) and f.src == self.CENTRE \
                and f.adu == b"", f
        if inp["clean"]:
            bad = [e for e in events if isinstance(e, Garbage)]
            assert not bad, f"valid frames gave garbage: {bad[:3]}"
            sends = self.expected_sends(inp["data"])
            got = [(f.serial, f.command) for f in out]
            assert got == [(sn, gb.CMD_CONFIRM) for sn in sends], \
                f"valid sends {sends} answered {got}"
            frames = len(gb.Deframer().feed(inp["data"]))
            seen = sum(1 for e in events if e == Seen(None))
            assert seen == frames, f"{frames} valid frames, {seen} Seen(None)"
        return any(not isinstance(e, Garbage) for e in events)


class Gb26875UplinkHarness(_GbStream):
    """``UplinkSession.receive`` (+ ``tick``, ``lost``): what a monitoring centre sends back
    to the gateway reporting to it, with three reports waiting and the clock advancing."""

    buffer_bound = 2 * 1054
    ME, CENTRE = 0x000379, 0x015B38

    def feed(self, inp: dict[str, Any]) -> bool:
        gb = self.gb
        from alerting.centre_report import UplinkSession, fire_report

        s = UplinkSession(self.ME, self.CENTRE, timeout_s=10.0, retries=3)
        crng = random.Random(inp["cuts"] ^ 0x5DEECE66D)
        now = 1_700_000_000.0
        sent: dict[int, bytes] = {}
        for k in range(3):
            serial, frame = s.report([fire_report(sys_addr=1, part_type=40, part_addr=k + 1,
                                                  description="smk", at_s=now,
                                                  utc_offset_s=0)], now)
            sent[serial] = frame
        outcomes: list[Any] = []
        out: list[bytes] = []
        for chunk in split(inp["data"], inp["cuts"]):
            now += crng.choice((0.0, 0.001, 1.0, 9.99, 10.0, 30.0))
            o, b = s.receive(chunk, now)
            _check_bound(self, s._deframer.buffered, "the deframer")
            outcomes += o
            out.append(b)
            o, b = s.tick(now)
            outcomes += o
            out.append(b)
        outcomes += s.lost()
        # every exchange ends exactly once, confirmed or not, and only ours
        ended = [o.serial for o in outcomes]
        assert sorted(ended) == sorted(sent), f"outcomes {ended} for serials {sorted(sent)}"
        for o in outcomes:
            assert 1 <= o.attempts <= 4, o
        # what goes back: our own reports again, or 确认/否认 from our address, empty
        for f in gb.Deframer().feed(b"".join(out)):
            assert isinstance(f, gb.Frame), f"sent bytes that are no frame: {f}"
            if f.command == gb.CMD_SEND:
                assert gb.encode_frame(f) == sent.get(f.serial), f"resent {f.serial} changed"
            else:
                assert f.command in (gb.CMD_CONFIRM, gb.CMD_DENY) and f.src == self.ME \
                    and f.dst == self.CENTRE and f.adu == b"", f
        return any(o.ok for o in outcomes)


class Gb26875DeframerHarness(_GbStream):
    """``Deframer.feed`` (+ ``abandon``) alone, with the stream's accounting checked: every
    byte is in exactly one Frame or BadFrame (or still buffered), in stream order.

    The frames must not depend on how the stream was cut, with two exceptions the
    resynchronisation rules make (counted in the notes, not failed): a valid frame that
    holds another (a complete frame inside an incomplete one wins), and a valid frame whose
    start lies inside a bad frame in one reading but not the other (whether a bad
    checksum's frame is cut at a complete frame inside it depends on whether that frame
    has fully arrived)."""

    buffer_bound = 2 * 1054
    NESTED = "streams with a valid frame inside a valid frame (cut-dependent by design)"
    SWALLOWED = "valid frames inside a bad frame in one reading only (cut-dependent)"

    def layout(self, data: bytes, items: list[Any]) -> list[tuple[int, Any]]:
        """Each item with its stream offset; asserts the accounting."""
        gb = self.gb
        out = []
        pos = 0
        for it in items:
            out.append((pos, it))
            if isinstance(it, gb.Frame):
                raw = gb.encode_frame(it)
                assert data[pos:pos + len(raw)] == raw, f"frame {it} is not the bytes at {pos}"
                pos += len(raw)
            else:
                assert isinstance(it, gb.BadFrame), it
                assert it.offset == pos and it.nbytes > 0, f"{it} where {pos} was expected"
                if it.header is not None:
                    assert it.serial == it.header.serial, it
                pos += it.nbytes
        out.append((pos, None))
        return out

    def feed(self, inp: dict[str, Any]) -> bool:
        gb = self.gb
        data = inp["data"]
        d = gb.Deframer()
        arng = random.Random(inp["cuts"] + 1)
        abandons = not inp["clean"] and arng.random() < 0.3
        items: list[Any] = []
        for chunk in split(data, inp["cuts"]):
            items += d.feed(chunk)
            _check_bound(self, d.buffered, "the deframer")
            if abandons and arng.random() < 0.1:
                items += d.abandon()
                _check_bound(self, d.buffered, "the deframer")
        cut = self.layout(data, items)
        pos = cut[-1][0]
        assert pos + d.buffered == len(data), \
            f"{pos} bytes reported + {d.buffered} buffered != {len(data)} fed"
        frames = [it for it in items if isinstance(it, gb.Frame)]
        if not abandons:
            d2 = gb.Deframer()
            whole = self.layout(data, d2.feed(data))
            assert whole[-1][0] + d2.buffered == len(data)
            if any(isinstance(f, gb.Frame) and self.holds_frame(f) for _, f in [*whole, *cut]):
                self.stats[self.NESTED] = self.stats.get(self.NESTED, 0) + 1
            else:
                self.compare(cut, whole)
        if inp["clean"]:
            assert len(frames) == len(items) and pos == len(data), \
                f"valid frames not all read: {[i for i in items if not isinstance(i, gb.Frame)]}"
        return bool(frames)

    def holds_frame(self, f: Any) -> bool:
        """Whether a complete valid frame starts inside ``f``'s bytes."""
        gb = self.gb
        raw = gb.encode_frame(f)
        return b"@@" in raw[1:] and any(isinstance(x, gb.Frame)
                                        for x in gb.Deframer().feed(raw[1:]))

    def compare(self, cut: list[tuple[int, Any]], whole: list[tuple[int, Any]]) -> None:
        gb = self.gb

        def frames(lay: list[tuple[int, Any]]) -> set[tuple[int, Any]]:
            return {(p, f) for p, f in lay if isinstance(f, gb.Frame)}

        def inside_bad_start(lay: list[tuple[int, Any]], at: int) -> bool:
            return any(isinstance(b, gb.BadFrame) and b.header is not None
                       and p < at < p + b.nbytes for p, b in lay)

        a, b = frames(cut), frames(whole)
        if a == b:
            return
        for (p, f), other, how in [*((x, whole, "cut") for x in a - b),
                                   *((x, cut, "whole") for x in b - a)]:
            assert inside_bad_start(other, p), (
                f"the frames depend on how the stream was cut: serial {f.serial} at offset {p}"
                f" read only {how}, and not inside a bad frame in the other reading")
        self.stats[self.SWALLOWED] = self.stats.get(self.SWALLOWED, 0) + len(a ^ b)


class Gb26875AduHarness(Harness):
    """``parse_adu``: ``FrameError`` is its error. Accepted objects must give their events
    (``object_events``) and build back to the same bytes (descriptions aside: they are
    text, decoded with replacement)."""

    def __init__(self) -> None:
        from drivers import gb26875 as gb

        self.gb = gb
        self.allowed = (gb.FrameError,)
        rng = random.Random(26875)
        self.pool = [gb_adu(rng, True) for _ in range(60)]
        self.mut: Mutator | None = None

    def generate(self, rng: random.Random) -> bytes:
        if self.mut is None or self.mut.rng is not rng:
            self.mut = Mutator(rng, GB_TOKENS, ["火警"], ["x"], 1100)
        r = rng.random()
        if r < 0.25:
            return gb_adu(rng, True)
        if r < 0.5:
            return gb_adu(rng, False)
        if r < 0.85:
            return self.mut.bytes(rng.choice(self.pool), self.pool)
        if r < 0.95:
            return self.mut.random_bytes()[:1100]
        return self.mut.soup()

    def run(self, inp: bytes) -> bool:
        gb = self.gb
        objs = gb.parse_adu(inp)
        assert type(objs) is list
        events: list[Any] = []
        for o in objs:
            events += gb.object_events(o)
        check_feed_events(events)
        if not objs:  # nothing, or a type with a count of 0
            assert not inp or (len(inp) == 2 and inp[1] == 0), f"{len(inp)} bytes, no object"
            return True
        if isinstance(objs[0], gb.RawAdu):
            assert len(objs) == 1 and bytes([objs[0].type_flag, objs[0].count]) + \
                objs[0].body == inp, objs
            return True
        again = bytearray(gb.build_adu(objs))
        want = bytearray(inp)
        assert len(again) == len(want), f"rebuilt {len(again)} bytes from {len(want)}"
        if isinstance(objs[0], gb.ComponentStatus):
            for i in range(len(objs)):
                at = 2 + i * gb.ComponentStatus.SIZE + 9
                again[at:at + 31] = want[at:at + 31] = b"\0" * 31
        assert again == want, "objects do not build back to their bytes"
        return True

    def remember(self, inp: bytes, rng: random.Random) -> None:
        _pool_add(self.pool, inp, rng, 200)

    def dump(self, inp: bytes) -> bytes:
        return inp

    def load(self, data: bytes) -> list[Any]:
        return [data]

    def shrink_views(self, inp: bytes) -> tuple[bytes, Callable[[bytes], Any]]:
        return inp, lambda b: b


# --- fire panel printers

PANEL_TOKENS = [
    b"\x1b6", b"\x1b9", b"\x1b", b"6", b"9", b"\n\n", b"\n\r\n", b"\r\n", b"\n", b"\r",
    b"\r\n\r\n", b" | ", b"|", b"ALARM ACT", b"TRBL ACT", b"ALARM RST", b"MON ACT", b"PULL ACT",
    b"SYSTEM RESET", b"RESET", b"RST", b"L:1 D:126", b"L:999 D:999", b"E:045", b"E:",
    b"12:06:56 10/20/2023", b"99:99 99/99/9999", b"A" * 257, b"\x00", b"\xff", b"\x80", b"\xa3",
    "火警".encode("gb18030"), "故障".encode("gb18030"), "恢复".encode("gb18030"),
    "复位".encode("gb18030"), "首次火警".encode("gb18030"), "故障恢复".encode("gb18030"),
    "屏蔽".encode("gb18030"), "火警:01088".encode("gb18030"), "故障：99999".encode("gb18030"),
    b"004-004", b"999-999", b"0004-0004", "００４-００４".encode("gb18030"),
    b"23/10/20  12:06", b"00/00/00 0:00", "感烟探测器".encode("gb18030"),
    "\ufffd".encode("gb18030"),
]
PANEL_LABELS = ["", "1号楼3层走廊", "B3-2F east", "厨房", "Lobby 火", "消防泵房", "x" * 60]
EDWARDS_LABELS = ["", "Lobby", "2F EAST CORRIDOR", "Küche", "STAIR 3 / LVL 4", "x" * 100]


def _when(rng: random.Random) -> Any:
    from datetime import datetime

    return datetime(rng.randint(2000, 2099), rng.randint(1, 12), rng.randint(1, 28),
                    rng.randrange(24), rng.randrange(60), rng.randrange(60))


def panel_record(rng: random.Random, dialect: str) -> tuple[bytes, list[tuple[Any, ...]]]:
    """One record as the simulator's encoders print it, and the events it must give
    (``(type, ref, state)``; every record ends with ``Seen(None)``)."""
    from drivers.panel_printer import ESC_START, ESC_TEXT, encode_edwards, encode_gst

    alive = ("Seen", None, None)
    if dialect == "edwards":
        kind = rng.choice(("fire", "fire", "fault", "restore", "reset", "monitor"))
        ref = None if kind == "reset" else (
            f"{rng.randrange(1000):03d}-{rng.randrange(1000):03d}" if rng.random() < 0.8
            else f"E{rng.randrange(1000):03d}")
        event = None
        if kind == "fire" and rng.random() < 0.4:
            event = rng.choice(("PULL ACT", "SMOKE ACT", "HEAT ACT", "FIRE ALARM ACT"))
        data = encode_edwards(kind, ref, _when(rng), rng.choice(EDWARDS_LABELS), event=event)
        state = {"fire": "alarm", "fault": "fault", "restore": "clear"}.get(kind)
        if kind == "monitor":
            return data, [alive]
        if kind == "reset":
            return data, [("Reset", None, None), alive]
        return data, [("Signal", ref, state), alive]
    if dialect == "lida" and rng.random() < 0.7:  # the Lida form: 火警:01088 in the header
        word, state = rng.choice((("火警", "alarm"), ("故障", "fault"), ("恢复", "clear"),
                                  ("火警恢复", "clear"), ("复位", None)))
        d = f"{rng.randrange(10)}{rng.randrange(100):02d}{rng.randrange(100):02d}"
        sep = rng.choice((":", "：", " : "))
        head = f"{_when(rng):%y/%m/%d %H:%M}\n{word}{sep}{d}".encode("gb18030")
        label = rng.choice(PANEL_LABELS).encode("gb18030")
        data = ESC_START + head + b"\n" + ESC_TEXT + label + b"\n\n"
        if state is None:
            return data, [("Reset", None, None), alive]
        ref = f"{d[0]}-{int(d[1:3]):03d}-{int(d[3:5]):03d}"
        return data, [("Signal", ref, state), alive]
    kind = rng.choice(("fire", "fire", "fault", "restore", "reset"))
    ref = None if kind == "reset" else f"{rng.randrange(1000):03d}-{rng.randrange(1000):03d}"
    data = encode_gst(kind, ref, _when(rng), rng.choice(PANEL_LABELS),
                      rng.choice(("感烟探测器", "手动报警按钮", "", "感温探测器")),
                      rng.random() < 0.7,
                      date_format=rng.choice(("%y/%m/%d", "%m/%d/%y", "%d/%m/%y")))
    if kind == "reset":
        return data, [("Reset", None, None), alive]
    state = {"fire": "alarm", "fault": "fault", "restore": "clear"}[kind]
    return data, [("Signal", ref, state), alive]


def _event_key(ev: Any) -> tuple[Any, ...]:
    from drivers.feed import Reset, Seen
    from drivers.signal import Signal

    if isinstance(ev, Signal):
        return ("Signal", ev.device, ev.state)
    if isinstance(ev, Reset):
        return ("Reset", ev.ref, None)
    if isinstance(ev, Seen):
        return ("Seen", ev.ref, None)
    return (type(ev).__name__, None, None)


class PanelHarness(StreamHarness):
    """``PrinterParser(dialect).feed`` (+ ``flush``). Besides never raising and bounded
    buffers, the codec promises its events do not depend on how the stream was cut: the
    events of the cut stream must equal those of the whole one."""

    tokens = PANEL_TOKENS
    vocab: ClassVar[list[Any]] = ["火警", "故障", "ALARM", "TRBL", "PULL", "RST", "004-004",
                                  "L:1 D:126"]

    def __init__(self, dialect: str) -> None:
        super().__init__()
        from drivers import panel_printer as pp

        self.pp = pp
        self.dialect = dialect
        self.buffer_bound = pp.MAX_LINE if dialect == "edwards" else pp.MAX_RECORD
        rng = random.Random(dialect)
        self.pool = [panel_record(rng, dialect)[0] for _ in range(40)]
        if dialect != "edwards":  # the other dialect's records: noise on a shared port
            self.pool += [panel_record(rng, "edwards")[0] for _ in range(5)]
        else:
            self.pool += [panel_record(rng, "gst")[0] for _ in range(5)]

    def valid(self, rng: random.Random, clean: bool) -> tuple[bytes, list[Any]]:
        return panel_record(rng, self.dialect)

    def special(self, rng: random.Random) -> bytes:
        pp = self.pp
        r = rng.randrange(7)
        if r == 0:  # a record that never ends
            return pp.ESC_START + b"23/10/20 12:06\n" + b"x" * rng.choice((2040, 2046, 2047,
                                                                           2048, 5000))
        if r == 1:  # lines at and over the limit
            return b"A" * rng.choice((255, 256, 257, 4096, 9000)) + rng.choice((b"\r\n", b""))
        if r == 2:  # records cut off by the next ESC 6
            return b"".join(self.valid(rng, False)[0][:rng.randint(1, 30)] for _ in range(6))
        if r == 3:  # junk over the report size
            return rng.randbytes(rng.choice((4095, 4096, 4097, 12000)))
        if r == 4:  # ESC ESC ESC ... 6
            return b"\x1b" * rng.randint(1, 3000) + b"6" + self.valid(rng, False)[0]
        if r == 5:  # an Edwards label that looks like an event line
            return b"ALARM ACT | 12:06:56 10/20/2023 L:1 D:1\r\nTRBL | 1:00 1/1/23 E:1\r\n\r\n"
        return self.mutator(rng).soup()

    def _run(self, pieces: list[bytes]) -> list[Any]:
        p = self.pp.PrinterParser(self.dialect)
        events: list[Any] = []
        for piece in pieces:
            events += p.feed(piece)
            _check_bound(self, len(p._impl._buf), "the parser's buffer")
        events += p.flush()
        assert len(p._impl._buf) == 0, "flush left bytes behind"
        return events

    def feed(self, inp: dict[str, Any]) -> bool:
        from drivers.feed import Garbage

        data = inp["data"]
        cut = self._run(split(data, inp["cuts"]))
        check_feed_events(cut)
        whole = self._run([data])
        assert cut == whole, "events depend on how the stream was cut: " + \
            next(f"#{i}: {a!r:.200} cut, {b!r:.200} whole"
                 for i, (a, b) in enumerate(zip(cut + [None] * len(whole),
                                                whole + [None] * len(cut), strict=False))
                 if a != b)
        if inp["clean"]:
            got = [_event_key(e) for e in cut]
            want = [tuple(e) for e in inp["expect"]]
            assert got == want, f"the encoder's records read as {got[:6]}, not {want[:6]}"
        return any(not isinstance(e, Garbage) for e in cut)


# --- Modbus RTU replies, through pymodbus as the client reads them


class ModbusRtuHarness(StreamHarness):
    """A reply to one read request, through pymodbus's RTU client path: the client's
    ``TransactionManager.data_received`` (its transport buffer, ``FramerRTU`` and
    ``DecodePDU``), the response future the request awaits, ``execute``'s device-id check,
    then ``ModbusPoller._read``'s handling of the response. Input: ``{"unit", "fc", "start",
    "count", "data", "cuts"}``.

    pymodbus raises ``ModbusIOException`` (a ``ModbusException``) from ``data_received``
    for a well-framed reply it cannot decode; on a serial port that reaches asyncio's
    exception handler (logged), and the read times out: counted as rejected (and in the
    notes). Any other exception out of ``data_received``, or any exception out of
    ``ModbusPoller._read``, is a crash.
    """

    vocab: ClassVar[list[Any]] = ["\x03", "\x04"]

    def __init__(self) -> None:
        super().__init__()
        import logging

        from pymodbus.exceptions import ModbusException
        from pymodbus.framer import FramerRTU
        from pymodbus.logging import Log
        from pymodbus.pdu import DecodePDU, ExceptionResponse
        from pymodbus.pdu.register_message import (
            ReadHoldingRegistersResponse,
            ReadInputRegistersResponse,
        )

        import drivers.modbus as mb

        Log.setLevel(logging.CRITICAL)
        logging.getLogger("drivers.modbus").setLevel(logging.CRITICAL)
        self.mb = mb
        self.modbus_exc = ModbusException
        self.framer = FramerRTU(DecodePDU(False))
        self.exc_response = ExceptionResponse
        self.responses = {3: ReadHoldingRegistersResponse, 4: ReadInputRegistersResponse}
        self.others: list[bytes] = []
        for _fc, (_req, resp) in sorted(DecodePDU.pdu_table.items()):
            with contextlib.suppress(Exception):
                p = resp()
                p.dev_id = 1
                self.others.append(self.framer.buildFrame(p))
        for sub in DecodePDU.pdu_sub_table.values():
            for _req, resp in sub.values():
                with contextlib.suppress(Exception):
                    p = resp()
                    p.dev_id = 1
                    self.others.append(self.framer.buildFrame(p))
        self.tokens = [b"\x03", b"\x04", b"\x83", b"\x84", b"\x2b\x0e", b"\x08\x00\x15",
                       b"\x18", b"\xff", b"\x00", b"\x01\x03\x02", b"\xfa", b"\x00\x00",
                       b"\xff\xff", *self.others[:8]]
        self.pool = list(self.others)
        self.fcs = [*sorted(DecodePDU.pdu_table), 0x81, 0x83, 0x84, 0x90, 0xAB]
        self.buffer_bound = 264  # FramerBase.MAX_SIZE, which the client makes its limit
        self.loop: Any = None
        self.ctx: Any = None

    def crc(self, body: bytes) -> bytes:
        return self.framer.compute_CRC(body).to_bytes(2, "big")

    def repair(self, data: bytes) -> bytes:
        """Cut or pad to the size the function code's PDU class says, then the right CRC:
        only such frames get past the framer to the PDU decoders."""
        if len(data) < 4:
            return data
        with contextlib.suppress(Exception):  # a framer that fails here fails in run too
            cls = self.framer.decoder.lookupPduClass(data)
            size = cls.calculateRtuFrameSize(data) if cls else 0
            if 4 <= size <= 300:
                data = (data + bytes(size))[:size]
        return data[:-2] + self.crc(data[:-2])

    def reply(self, rng: random.Random, unit: int, fc: int, count: int) -> bytes:
        r = rng.random()
        if r < 0.55:
            n = count if r < 0.45 else rng.choice((0, 1, count - 1, count + 1, 125, 127))
            n = max(0, min(n, 127))
            regs = [rng.choice((0, 1, 0x7FFF, 0x8000, 0xFFFF, rng.randrange(65536)))
                    for _ in range(n)]
            pdu = self.responses[fc if r < 0.5 else 7 - fc](registers=regs,
                                                            dev_id=unit if r < 0.52 else 1)
            return self.framer.buildFrame(pdu)
        if r < 0.7:
            pdu = self.exc_response(fc, rng.choice((1, 2, 3, 4, 5, 6, 8, 10, 11, 0, 255)),
                                    device_id=unit)
            return self.framer.buildFrame(pdu)
        other = rng.choice(self.others)
        return bytes([unit]) + other[1:-2] + self.crc(bytes([unit]) + other[1:-2])

    def valid(self, rng: random.Random, clean: bool) -> tuple[bytes, list[Any]]:
        return self.reply(rng, 1, 3, rng.randint(1, 125)), []

    def special(self, rng: random.Random) -> bytes:
        valid = self.valid(rng, False)[0]
        r = rng.randrange(7)
        if r >= 5:  # any function code the client decodes, a random body, framed right
            fc = rng.choice(self.fcs)
            return self.repair(bytes([1, fc]) + rng.randbytes(rng.choice((0, 1, 2, 3, 4, 5, 6,
                                                                          8, 10, 20, 60, 250)))
                               + b"\0\0")
        if r == 0:  # the request's echo first (RS-485 adapters that hear themselves)
            return bytes.fromhex("010300000001840a") + valid
        if r == 1:
            return rng.randbytes(rng.randint(1, 20)) + valid
        if r == 2:
            return valid + rng.randbytes(rng.randint(1, 20))
        if r == 3:  # a byte count that claims more than is there, CRC right
            body = bytes([1, 3, rng.choice((250, 251, 255))]) + rng.randbytes(rng.randint(0, 40))
            return body + self.crc(body)
        return valid[:rng.randrange(1, len(valid))]

    def generate(self, rng: random.Random) -> dict[str, Any]:
        unit = rng.choice((1, 1, 2, 17, 247, rng.randint(1, 247)))
        fc = rng.choice((3, 4))
        count = rng.choice((1, 1, 2, 10, 125, rng.randint(1, 125)))
        inp = super().generate(rng)
        if rng.random() < 0.45:
            data = self.reply(rng, unit, fc, count)
            if rng.random() < 0.35:
                data = self.mutator(rng).bytes(data, self.pool)
                if rng.random() < 0.6:
                    data = self.repair(data)
            inp["data"] = data
        inp.pop("expect", None)
        inp.update(unit=unit, fc=fc, start=rng.choice((0, 7, 65535 - count + 1)), count=count,
                   clean=False)
        return inp

    def _setup(self) -> None:
        import asyncio

        from pymodbus.client import AsyncModbusSerialClient
        from pymodbus.framer import FramerType

        self.loop = asyncio.new_event_loop()

        async def make() -> Any:
            return AsyncModbusSerialClient("/dev/null-firegrid-fuzz", framer=FramerType.RTU,
                                           baudrate=115200, timeout=0.5, retries=0,
                                           reconnect_delay=0)

        self.ctx = self.loop.run_until_complete(make()).ctx
        self.poller = self.mb.ModbusPoller("/dev/null-firegrid-fuzz", 115200, ["1:0"],
                                           lambda ev: None, lambda up, why: None)
        self.poller._gap_s = 0.0

    def feed(self, inp: dict[str, Any]) -> bool:
        from pymodbus.exceptions import ModbusIOException

        if self.ctx is None:
            self._setup()
        ctx, loop = self.ctx, self.loop
        unit, fc, count = inp["unit"], inp["fc"], inp["count"]
        # what TransactionManager.execute does before it sends a request
        ctx.recv_buffer = b""
        fut = ctx.response_future = loop.create_future()
        ctx.request_dev_id, ctx.request_transaction_id = unit, 0
        for chunk in split(inp["data"], inp["cuts"], allow_empty=False):
            try:
                ctx.data_received(chunk)
            except self.modbus_exc:
                self.stats["ModbusException out of data_received (logged; the read times "
                           "out)"] = self.stats.get("ModbusException out of data_received "
                                                    "(logged; the read times out)", 0) + 1
            _check_bound(self, len(ctx.recv_buffer), "the client's receive buffer")

        class Client:  # stands in for AsyncModbusSerialClient: execute's checks, then the PDU
            async def read(self, address: int, count: int = 1, device_id: int = 1) -> Any:
                if not fut.done():
                    raise TimeoutError  # pymodbus: no answer within the timeout
                resp = fut.result()
                if device_id and resp.dev_id != device_id:
                    raise ModbusIOException(f"request uses device id={device_id} but "
                                            f"received {resp.dev_id}")
                if resp.transaction_id and resp.transaction_id != 0:
                    raise ModbusIOException("transaction id")
                return resp

            read_holding_registers = read_input_registers = read

        self.poller._holding = fc == 3
        block = self.mb.Block(unit, inp["start"], count, ((inp["start"], f"{unit}:0"),))
        result = loop.run_until_complete(self.poller._read(Client(), block))
        if isinstance(result, list):
            assert len(result) == count and all(type(v) is int and 0 <= v <= 0xFFFF
                                                for v in result), result
            return True
        assert isinstance(result, self.mb._Failed) and type(result.detail) is str, result
        return False

    def from_fuzz_bytes(self, data: bytes) -> dict[str, Any]:
        inp = super().from_fuzz_bytes(data[3:])
        inp.update(unit=(data[:1] or b"\1")[0] % 247 + 1, fc=3 + (data[1:2] or b"\0")[0] % 2,
                   start=0, count=(data[2:3] or b"\0")[0] % 125 + 1)
        return inp

    def shrink_views(self, inp: dict[str, Any]) -> tuple[bytes, Callable[[bytes], Any]]:
        rest = {k: v for k, v in inp.items() if k != "data"}
        return inp["data"], lambda b: {**rest, "data": b}


def _modbus_ref() -> Harness:
    from drivers.modbus import parse_ref, plan_blocks

    def check(value: Any, ref: Any) -> None:
        unit, register = value
        assert type(unit) is int and type(register) is int, value
        assert 1 <= unit <= 247 and 0 <= register <= 0xFFFF, value
        assert parse_ref(f"{unit}:{register}") == value, value
        (block,) = plan_blocks([ref])
        assert block.unit == unit and block.start == register and block.count == 1, block

    return TextHarness(parse_ref, (ValueError,),
                       ["1:0", "247:65535", "01:7", "1:00000", "17:40001", "0:0", "248:1"],
                       [b":", b"0", b"9", b"1", b"247", b"248", b"65535", b"65536", b" ", b"\n",
                        b"+", b"-", b"0x1", b"1_0", b"9999999999", b"99999999999", b"\x00",
                        "\u0663".encode(), "\uff11".encode(), b"::", b"1:"], check)


class TextHarness(Harness):
    """A parser of one short string (a ref from the site file); a few non-strings too."""

    def __init__(self, call: Callable[[Any], Any], allowed: tuple[type[BaseException], ...],
                 seeds: list[str], tokens: list[bytes],
                 check: Callable[[Any, Any], None] | None = None):
        self.call, self.allowed, self.check = call, allowed, check
        self.pool = [s.encode() for s in seeds]
        self.tokens = tokens
        self.mut: Mutator | None = None

    def generate(self, rng: random.Random) -> Any:
        if self.mut is None or self.mut.rng is not rng:
            self.mut = Mutator(rng, self.tokens, ["1"], ["1"], 200)
        r = rng.random()
        if r < 0.03:
            return rng.choice((None, 1, 1.5, b"1:0", ["1:0"], True))
        if r < 0.2:
            return rng.choice(self.pool).decode("utf-8", "replace")
        if r < 0.85:
            return self.mut.bytes(rng.choice(self.pool), self.pool).decode("utf-8", "replace")
        if r < 0.93:
            return self.mut.soup().decode("utf-8", "replace")
        return rng.randbytes(rng.randint(0, 12)).decode("latin-1")

    def run(self, inp: Any) -> bool:
        value = self.call(inp)
        if self.check is not None:
            self.check(value, inp)
        return True

    def remember(self, inp: Any, rng: random.Random) -> None:
        if isinstance(inp, str):
            _pool_add(self.pool, inp.encode("utf-8", "surrogatepass"), rng, 200)

    def dump(self, inp: Any) -> bytes:
        return json.dumps(_tag(inp)).encode()

    def load(self, data: bytes) -> list[Any]:
        return [_untag(json.loads(data))]

    def from_fuzz_bytes(self, data: bytes) -> str:
        return data.decode("utf-8", "replace")

    def shrink_views(self, inp: Any) -> tuple[bytes, Callable[[bytes], Any]] | None:
        if not isinstance(inp, str):
            return None
        return inp.encode("utf-8", "surrogatepass"), lambda b: b.decode("utf-8", "replace")


def _tag(v: Any) -> Any:
    """Values JSON cannot hold as themselves (NaN, 10**400, Fraction, bytes...) as tagged
    lists, for reproducer files."""
    from decimal import Decimal
    from fractions import Fraction

    if v is None or isinstance(v, bool | str):
        return v
    if type(v) is int:
        return ["int", str(v)]
    if type(v) is float:
        return ["float", v.hex()]
    if isinstance(v, Fraction):
        return ["fraction", str(v.numerator), str(v.denominator)]
    if isinstance(v, Decimal):
        return ["decimal", str(v)]
    if isinstance(v, bytes):
        return ["bytes", v.hex()]
    if isinstance(v, complex):
        return ["complex", v.real.hex(), v.imag.hex()]
    if isinstance(v, list):
        return ["list", [_tag(x) for x in v]]
    if type(v).__module__ == "numpy":
        return ["numpy", type(v).__name__, repr(v.item())]
    return ["repr", repr(v)]


def _untag(v: Any) -> Any:
    from decimal import Decimal
    from fractions import Fraction

    if not isinstance(v, list):
        return v
    t = v[0]
    if t == "int":
        return int(v[1])
    if t == "float":
        return float.fromhex(v[1])
    if t == "fraction":
        return Fraction(int(v[1]), int(v[2]))
    if t == "decimal":
        return Decimal(v[1])
    if t == "bytes":
        return bytes.fromhex(v[1])
    if t == "complex":
        return complex(float.fromhex(v[1]), float.fromhex(v[2]))
    if t == "list":
        return [_untag(x) for x in v[1]]
    if t == "numpy":
        import numpy as np

        return getattr(np, v[1])(float(v[2]) if "float" in v[1] else int(v[2]))
    return v[1]


# --- analog thresholds


class AnalogHarness(Harness):
    """``Threshold(scale, alarm_at, clear_at)`` fed 1-30 raw readings with ``update``.
    ``ValueError`` is its error: a refused config is a rejected input; a refused reading
    inside an accepted input must leave the state as it was. Every accepted reading is
    checked against the rule (CONTRACT §2): value = raw × scale, finite; an alarm edge
    exactly when a normal device reaches ``alarm_at``, a clear edge exactly when an
    alarmed one falls to ``clear_at`` (and below ``alarm_at``)."""

    def __init__(self) -> None:
        from decimal import Decimal
        from fractions import Fraction

        from drivers.analog import Threshold

        self.cls = Threshold
        self.allowed = (ValueError,)
        nan, inf = float("nan"), float("inf")
        self.odd: list[Any] = [
            nan, inf, -inf, -0.0, 5e-324, 1.7976931348623157e308, -1.7976931348623157e308,
            2**53 + 1, 2**1023, 2**1024, -(2**1024), 10**400, True, False, None, "25", b"1",
            Fraction(1, 3), Fraction(10**400, 3), Decimal("1.5"), Decimal("NaN"), 1 + 0j,
            [1], 65535, 32767, -32768, 0, 1e12, -1e12]
        with contextlib.suppress(ImportError):
            import numpy as np

            self.odd += [np.float64(nan), np.float64(2.5), np.int64(2**63 - 1), np.float32(3e38),
                         np.int16(-32768), np.float16(65504)]

    def number(self, rng: random.Random, around: list[float]) -> Any:
        r = rng.random()
        if r < 0.1:
            return rng.choice(self.odd)
        if r < 0.6 and around:
            a = rng.choice(around)
            return rng.choice((a, a + rng.uniform(-1, 1), a * rng.uniform(0.5, 1.5),
                               math.nextafter(a, math.inf), math.nextafter(a, -math.inf)))
        if r < 0.8:
            return rng.randint(-32768, 65535)
        return rng.uniform(-1e6, 1e6)

    def generate(self, rng: random.Random) -> dict[str, Any]:
        scale = rng.choice((1.0, 1.0, 0.1, 0.01, 10, -1.0, 1e-300, 1e300, 3)) \
            if rng.random() < 0.9 else rng.choice(self.odd)
        alarm = None if rng.random() < 0.1 else (
            rng.choice((25, 0, 68, -5, 0.5, 1e308)) if rng.random() < 0.85
            else rng.choice(self.odd))
        clear = None if rng.random() < 0.3 or (alarm is None and rng.random() < 0.9) else (
            rng.choice((10, 25, 30, -1e308, 0)) if rng.random() < 0.85 else rng.choice(self.odd))
        around = []
        for lim in (alarm, clear):
            with contextlib.suppress(OverflowError, ZeroDivisionError, TypeError):
                s = float(scale) if type(scale) in (int, float) and scale else 1.0
                raw = float(lim) / s if type(lim) in (int, float) else math.nan
                if math.isfinite(raw):
                    around.append(raw)
        readings = [self.number(rng, around) for _ in range(rng.choice((1, 2, 5, 10, 30)))]
        return {"scale": scale, "alarm_at": alarm, "clear_at": clear, "readings": readings}

    def run(self, inp: dict[str, Any]) -> bool:
        th = self.cls(inp["scale"], inp["alarm_at"], inp["clear_at"])
        assert th.state == "normal"
        for raw in inp["readings"]:
            before = th.state
            try:
                value, edge = th.update(raw)
            except ValueError:
                assert th.state == before, "a refused reading changed the state"
                continue
            assert type(value) is float and math.isfinite(value), value
            assert value == float(raw) * th.scale, (value, raw, th.scale)
            alarm_at, clear_at = th.alarm_at, th.clear_at
            if alarm_at is None:
                assert edge is None and th.state == "normal", (edge, th)
            elif before == "normal":
                want = "alarm" if value >= alarm_at else None
                assert edge == want and th.state == ("alarm" if want else "normal"), \
                    (raw, value, edge, th)
            else:
                assert clear_at is not None
                want = "clear" if value <= clear_at and value < alarm_at else None
                assert edge == want and th.state == ("normal" if want else "alarm"), \
                    (raw, value, edge, th)
        return True

    def dump(self, inp: dict[str, Any]) -> bytes:
        return json.dumps({k: _tag(v) for k, v in inp.items()}).encode()

    def load(self, data: bytes) -> list[Any]:
        return [{k: _untag(v) for k, v in json.loads(data).items()}]

    def from_fuzz_bytes(self, data: bytes) -> dict[str, Any]:
        import struct

        vals = [v for (v,) in struct.iter_unpack("<d", data[:len(data) // 8 * 8])]
        vals += [1.0, 25.0, 10.0]
        return {"scale": vals[0], "alarm_at": vals[1], "clear_at": vals[2], "readings": vals[3:]}


# --- the MQTT feeds: Zigbee2MQTT and Frigate


class MqttFeedHarness(Harness):
    """A codec of MQTT messages with state: one input is a sequence of 1-16 messages
    (``[topic, payload, dt]``; topic None: a ``tick``) on a fresh codec, the clock moving
    by ``dt`` (now and then backwards). It never raises; accepted: some event other than
    Garbage came out."""

    buffer_unit = "entries"

    def __init__(self) -> None:
        self.buffer_max = 0
        self.stats: dict[str, int] = {}

    def codec(self) -> Any:
        raise NotImplementedError

    def message(self, rng: random.Random, state: dict[str, Any]) -> tuple[str | None, bytes]:
        raise NotImplementedError

    def after(self, codec: Any, topic: str | None, events: list[Any], state: dict[str, Any]
              ) -> None:
        """Per-codec checks after each message."""

    def generate(self, rng: random.Random) -> dict[str, Any]:
        state: dict[str, Any] = {}
        msgs = []
        for _ in range(rng.choice((1, 1, 2, 3, 5, 8, 16))):
            topic, payload = self.message(rng, state)
            dt = rng.choice((0.0, 0.0, 0.1, 1.0, 29.9, 30.0, 30.1, 3600.0)) \
                if rng.random() < 0.97 else -5.0
            msgs.append([topic, payload, dt])
        return {"msgs": msgs}

    def run(self, inp: dict[str, Any]) -> bool:
        from drivers.feed import Garbage

        codec = self.codec()
        now = 1_700_000_000.0
        state: dict[str, Any] = {}
        useful = False
        for topic, payload, dt in inp["msgs"]:
            now += dt
            events = codec.tick(now) if topic is None else codec.receive(topic, payload, now)
            check_feed_events(events)
            self.after(codec, topic, events, state)
            nd = codec.next_deadline()
            assert nd is None or (type(nd) is float and math.isfinite(nd)), nd
            useful = useful or any(not isinstance(e, Garbage) for e in events)
        return useful

    def dump(self, inp: dict[str, Any]) -> bytes:
        return json.dumps({"msgs": [[t, p.hex(), dt] for t, p, dt in inp["msgs"]]}).encode()

    def load(self, data: bytes) -> list[Any]:
        obj = json.loads(data)
        return [{"msgs": [[t, bytes.fromhex(p), dt] for t, p, dt in obj["msgs"]]}]

    def from_fuzz_bytes(self, data: bytes) -> dict[str, Any]:
        topic, _, payload = data.partition(b"\n")
        return {"msgs": [[topic.decode("utf-8", "replace").replace("\x00", ""), payload, 1.0]]}

    def shrink_views(self, inp: dict[str, Any]) -> tuple[bytes, Callable[[bytes], Any]] | None:
        msgs = inp["msgs"]
        if len(msgs) != 1 or msgs[0][0] is None:
            return None
        topic, _, dt = msgs[0]
        return msgs[0][1], lambda b: {"msgs": [[topic, b, dt]]}


def _mangle_topic(rng: random.Random, topic: str) -> str:
    levels = ["", "+", "#", " ", "火", "availability", "bridge", "events", "audio", "x" * 300,
              "\u200b", "..", "fire_alarm", "available"]
    parts = topic.split("/")
    op = rng.randrange(5)
    i = rng.randrange(len(parts))
    if op == 0:
        parts[i] = rng.choice(levels)
    elif op == 1:
        parts.insert(rng.randint(0, len(parts)), rng.choice(levels))
    elif op == 2 and len(parts) > 1:
        del parts[i]
    elif op == 3:
        parts[i] = parts[i].upper()
    else:
        parts[i] += rng.choice(("/", "//", " ", "\t"))
    return "/".join(parts).replace("\x00", "")


class Zigbee2MqttHarness(MqttFeedHarness):
    """``Zigbee2Mqtt.receive`` (+ ``tick``) on a site with five devices (two latching, one
    named with a '/', one in Chinese). Checked beyond the common event checks: events name
    configured devices only, alarms and clears alternate per device (a clear only after an
    alarm), troubles are the codec's three, state per device stays bounded."""

    DEVICES: ClassVar[dict[str, float | None]] = {
        "kitchen_smoke": None, "stuck_smoke": 30.0, "temp_1": None, "floor2/hall": 0.5,
        "火警探测器": None}

    def __init__(self) -> None:
        super().__init__()
        from drivers import zigbee2mqtt as z
        from firmware_sim.zigbee_devices import smoke_detector, temperature_sensor

        self.z = z
        self.options = {k: z.Z2mOptions(clear_after_s=v) for k, v in self.DEVICES.items()}
        self.buffer_bound = len(z.ALARM_KEYS) + len(z.TROUBLE_KEYS) + 1
        seeds: list[Any] = [smoke_detector("a").state, temperature_sensor("b").state,
                            {"smoke": True, "battery": 97, "battery_low": False, "tamper": False,
                             "linkquality": 120},
                            {"gas": True, "carbon_monoxide": False, "temperature": 68.5,
                             "battery": 5, "battery_low": True, "tamper": True},
                            {"state": "online"}, {"state": "offline"}]
        vocab: list[Any] = [True, False, None, 0, 100, 101, -1, "low", "true", 21.5, -273.15,
                            -273.16, 2000, 2000.1, "online", "offline"]
        keys = ["smoke", "gas", "carbon_monoxide", "tamper", "battery_low", "battery",
                "temperature", "linkquality", "state", "water_leak"]
        self.json = JsonHarness(lambda b: b, (), seeds, vocab, keys, 6000)

    def codec(self) -> Any:
        return self.z.Zigbee2Mqtt("zigbee2mqtt", self.options)

    def message(self, rng: random.Random, state: dict[str, Any]) -> tuple[str | None, bytes]:
        r = rng.random()
        if r < 0.05:
            return None, b""
        name = rng.choice(list(self.DEVICES)) if rng.random() < 0.9 else \
            rng.choice(("unknown_plug", "bridge", "", "kitchen_smoke/x"))
        topic = f"zigbee2mqtt/{name}"
        avail = rng.random() < 0.18
        if avail:
            topic += "/availability"
        if rng.random() < 0.04:
            topic = rng.choice(("zigbee2mqtt/bridge/state", "zigbee2mqtt/bridge/log",
                                "zigbee2mqtt", "zigbee2mqtt/", "frigate/events",
                                "zigbee2mqtt2/kitchen_smoke"))
        if rng.random() < 0.05:
            topic = _mangle_topic(rng, topic)
        p = rng.random()
        if p < 0.03:
            return topic, b""
        if p < 0.05:
            return topic, b'{"smoke": true, "pad": "' + b"x" * 4100 + b'"}'
        if avail and p < 0.5:
            return topic, rng.choice((b'{"state":"online"}', b'{"state":"offline"}', b"online",
                                      b"offline", b" online\n", b"ONLINE", b'{"state":1}',
                                      b"[]", b'{"state":'))
        if p < 0.6:  # a well-formed state: walks the edges
            body: dict[str, Any] = {}
            for k in ("smoke", "gas", "carbon_monoxide", "tamper", "battery_low"):
                if rng.random() < 0.5:
                    body[k] = rng.random() < 0.4 if rng.random() < 0.9 else None
            if rng.random() < 0.5:
                body["battery"] = rng.choice((100, 97, 5, 0, 55.5))
            if rng.random() < 0.3:
                body["temperature"] = rng.uniform(-30, 120)
            return topic, orjson_dumps(body)
        return topic, self.json.payload(rng)

    def after(self, codec: Any, topic: str | None, events: list[Any], state: dict[str, Any]
              ) -> None:
        from drivers.feed import Reading, Seen, Trouble
        from drivers.signal import Signal

        lo, hi = self.z.TEMPERATURE_RANGE
        for ev in events:
            if isinstance(ev, Signal):
                assert ev.device in self.DEVICES and ev.state in ("alarm", "clear"), ev
                if ev.state == "clear":
                    assert state.get(ev.device), f"a clear without an alarm before: {ev}"
                state[ev.device] = ev.state == "alarm"
            elif isinstance(ev, Trouble):
                assert ev.ref in self.DEVICES and ev.trouble in ("offline", "tamper",
                                                                 "battery_low"), ev
            elif isinstance(ev, Reading):
                assert ev.ref in self.DEVICES and lo <= ev.raw <= hi, ev
            elif isinstance(ev, Seen):
                assert ev.ref is None or ev.ref in self.DEVICES, ev
        assert set(codec._devices) == set(self.DEVICES)
        for dev in codec._devices.values():
            _check_bound(self, len(dev.reported) + len(dev.troubles), f"device {dev.ref}")


class FrigateHarness(MqttFeedHarness):
    """``Frigate.receive`` on four cameras (one without a view, one with extreme numbers,
    one named in Chinese): events, audio, availability. Checked beyond the common event
    checks: bearings in [0, 360), events name configured cameras only, open events per
    camera at most ``MAX_ACTIVE``."""

    def __init__(self) -> None:
        super().__init__()
        from drivers import frigate as fr

        self.fr = fr
        self.cameras = {"cam-01": fr.CameraView(45.0, 90.0, 1280),
                        "cam-02": fr.CameraView(),
                        "cam-03": fr.CameraView(1e300, 360.0, 1),
                        "门口": fr.CameraView(-270.5, 0.001, 640)}
        self.buffer_bound = fr.MAX_ACTIVE
        rng = random.Random(6)
        seeds = [json.loads(p) for p in self._events(rng, "cam-01", 6)]
        vocab: list[Any] = ["fire", "smoke", "fire_alarm", "person", "new", "update", "end",
                            "cam-01", "门口", "unknown", True, False, None, 0, 1, 1.0000001,
                            -1, 100000, 100001, 4102444800, 4102444801, [0, 0, 1, 1],
                            [1, 1, 0, 0], ["zone_a"], ["a,b"], "x" * 129]
        keys = ["type", "after", "before", "camera", "label", "id", "false_positive", "box",
                "top_score", "score", "current_zones", "start_time", "end_time"]
        self.json = JsonHarness(lambda b: b, (), seeds, vocab, keys, 70000)

    def codec(self) -> Any:
        return self.fr.Frigate("frigate", self.cameras)

    def generate(self, rng: random.Random) -> dict[str, Any]:
        if rng.random() < 0.05:  # more fires open on one camera than it remembers
            camera = rng.choice(list(self.cameras))
            msgs = []
            for k in range(rng.randint(self.fr.MAX_ACTIVE, self.fr.MAX_ACTIVE + 8)):
                body = {"type": "new", "after": {"camera": camera, "label": "fire",
                                                 "id": f"{1700000000 + k}.5-x{k}",
                                                 "box": [k, 0, k + 10, 10]}}
                msgs.append(["frigate/events", orjson_dumps(body), 1.0])
            msgs += [["frigate/events", orjson_dumps({"type": "end", "after": {
                "camera": camera, "label": "fire", "id": f"{1700000000 + k}.5-x{k}"}}), 1.0]
                for k in rng.sample(range(len(msgs)), rng.randint(0, len(msgs)))]
            return {"msgs": msgs}
        return super().generate(rng)

    def _events(self, rng: random.Random, camera: str, n: int) -> list[bytes]:
        from firmware_sim.frigate_events import SimCamera

        cam = SimCamera(camera, width=rng.choice((1280, 640, 1)), rng=rng)
        now = 1_700_000_000.0 + rng.random()
        label = rng.choice(("fire", "fire", "smoke", "fire_alarm", "person", "car"))
        box = sorted(rng.sample(range(0, 1280), 2))
        obj = cam.track(now, label, (box[0], 10, box[1], 400), rng.random(),
                        rng.choice(((), ("zone_a",), ("z1", "z2"))))
        out = [obj.publish("new", now).payload]
        for _ in range(n - 2):
            obj.change(score=rng.random(), false_positive=rng.random() < 0.1)
            out.append(obj.publish("update", now + 1).payload)
        out.append(obj.publish("end", now + 2).payload)
        return out

    def message(self, rng: random.Random, state: dict[str, Any]) -> tuple[str | None, bytes]:
        r = rng.random()
        camera = rng.choice(list(self.cameras)) if rng.random() < 0.92 else \
            rng.choice(("unknown", "", "cam-01/x"))
        if r < 0.12:
            topic = f"frigate/{camera}/audio/fire_alarm"
            payload = rng.choice((b"ON", b"OFF", b" ON\n", b"on", b"", b"1"))
        elif r < 0.2:
            topic = "frigate/available"
            payload = rng.choice((b"online", b"offline", b"online ", b"ONLINE", b"\xff"))
        elif r < 0.23:
            topic = rng.choice(("frigate/stats", f"frigate/{camera}/audio/speech", "frigate",
                                "frigate/events/x", "other/events"))
            payload = b"{}"
        else:
            topic = "frigate/events"
            queue = state.setdefault("queue", [])
            if not queue or rng.random() < 0.1:  # a new tracked object on some camera
                queue.extend(self._events(rng, camera, rng.choice((2, 3, 5))))
            payload = queue.pop(0)
            if rng.random() < 0.3:
                payload = self.json.payload(rng) if rng.random() < 0.5 else \
                    self.json.mut.bytes(payload, self.json.pool) if self.json.mut else payload
            elif rng.random() < 0.02:
                payload = payload + b" " * 66000
        if rng.random() < 0.04:
            topic = _mangle_topic(rng, topic)
        return topic, payload

    def after(self, codec: Any, topic: str | None, events: list[Any], state: dict[str, Any]
              ) -> None:
        from drivers.feed import Seen, Trouble
        from drivers.signal import Signal

        for ev in events:
            if isinstance(ev, Signal):
                assert ev.device in self.cameras and ev.state in ("alarm", "clear"), ev
                b = ev.bearing_deg
                assert b is None or 0.0 <= b < 360.0, ev
            elif isinstance(ev, Trouble):
                assert ev.ref in self.cameras and ev.trouble == "offline", ev
            elif isinstance(ev, Seen):
                assert ev.ref is None or ev.ref in self.cameras, ev
        assert set(codec._active) == set(self.cameras)
        for active in codec._active.values():
            _check_bound(self, len(active), "open events of a camera")


# ------------------------------------------------------------------------ pager channels
#
# TAP (alerting.tap) and SNPP (alerting.snpp) are sans-IO state machines that parse what
# the far end sends. A TAP input is a *script* replayed on a fresh machine: reads
# (``["r", bytes, at]``), ticks at a time (``["t", at]``) and ticks relative to the
# machine's own next deadline (``["d", delta]``, resolved when it runs, so that deadlines
# are hit exactly, just missed and overshot); the clock never goes back (a transport's
# ``loop.time()``). An SNPP input is the server's byte stream, cut into reads, then
# (usually) the server hanging up. Valid inputs come from the codecs themselves: a
# TapClient run against a TapTerminal in memory, every call to each side recorded; an
# SnppClient or MstaPoll run against the simulator's SNPP ``Session``
# (``firmware_sim.snpp_server``), plus the RFC 1861 transcript of the fact sheet (§2.4).

TAP_T0 = 1000.0  # the transport's loop.time() when a session starts

TAP_TOKENS = [
    b"ID=", b"ID=\r", b"\x06", b"\x06\r", b"\x15", b"\x15\r", b"\x1e", b"\x1e\r", b"\x1b\x04",
    b"\x1b\x04\r", b"\x1b[p", b"\x1b[p\r", b"\x1b[P", b"\x1b", b"\x1b[", b"\x1b[q", b"\r",
    b"\n", b"\r\n", b"110 1.8\r", b"114 Welcome\r", b"211 Page(s) Sent Successfully\r",
    b"212 ", b"514 Checksum error - Exp. 5:7 Got 5:8\r", b"503 Too many checksum errors\r",
    b"511 Invalid pager ID\r", b"115 Goodbye\r", b"501 Timeout\r", b"  continued\r", b"999",
    b"21", b"\x04\r", b"\x02", b"\x03", b"\x17", b"\x1f", b"\x1a", b"\x80", b"\xff", b"\x86",
    b"\xc9\xc4\xbd", b"\x9b\xdb\xf0", b"A" * 511, b"A" * 513, b"\x00",
]
TAP_PASSWORDS = ("000000", "000000", "", "secret", "1234", "pw\x1b", "密码", "a b", "P" * 40)
TAP_IDS = ("1234567", "1234567", "12", "5551212", "0", "", "A" * 30, "12\r34", "页", "9" * 16)
TAP_TEXTS = ("Fire alarm Bldg 3 2F east", "FIRE b3-2f smk-301 ack 1", "", " ", "FIRE   ",
             "火警 3楼 🔥", "é à ü ﬁ", "line1\r\nline2", "\x02\x03\x04\x1a\x1b\x17\x1f\x1e",
             "x" * 80, "y" * 249, "z" * 250, "w" * 251, "FIRE " * 120, "\x1a" * 130, "a\x7f b",
             ".\r.", "ID=", "\x1b[p")
TAP_CHARS = ("FIRE", " ", "\r", "\n", "é", "火", "\x1a", "\x03", "\x17", "1", ".", "\x7f", "~",
             "\x00", "🔥")


def tap_text(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return rng.choice(TAP_TEXTS)
    return "".join(rng.choice(TAP_CHARS) for _ in range(rng.randint(0, 300)))


def tap_timers(rng: random.Random) -> list[float]:
    if rng.random() < 0.5:
        return [2.0, 1.0, 10.0, 4.0, 8.0]  # TapTimers' defaults: the spec's
    return [rng.choice((0.25, 0.5, 1.0, 2.0, 4.0, 10.0)) for _ in range(5)]


def tap_client_cfg(rng: random.Random) -> dict[str, Any]:
    """A TapClient's arguments, as JSON: password, pages, timers, counts, block size."""
    return {"password": rng.choice(TAP_PASSWORDS),
            "pages": [[rng.choice(TAP_IDS), tap_text(rng)]
                      for _ in range(rng.choice((1, 1, 1, 2, 3, 5)))],
            "timers": tap_timers(rng), "n1": rng.choice((1, 2, 3, 3, 5)),
            "n2": rng.choice((0, 1, 3, 3)), "n3": rng.choice((1, 2, 3, 3)),
            "max_chars": rng.choice((250, 250, 250, 245, 80, 16, 3, 2)),
            "transparency": rng.random() < 0.85}


def tap_terminal_cfg(rng: random.Random, client: dict[str, Any] | None) -> dict[str, Any]:
    """A TapTerminal's options as JSON, mostly matching ``client`` (its password, ids)."""
    from alerting.tap import MAX_BLOCK

    if client is not None and rng.random() < 0.85:
        password = client["password"]
    else:
        password = rng.choice((None, None, *TAP_PASSWORDS))
    known = None
    if rng.random() < 0.15:
        ids = [p[0] for p in client["pages"]] if client else list(TAP_IDS)
        known = rng.sample(ids, rng.randint(0, len(ids)))
    return {"password": password, "eol": rng.choice(("\r", "\r", "\r\n")),
            "verbose": rng.random() < 0.8,
            "banner": rng.choice(("firegrid TAP simulator", None, "", "Welcome " * 20, "火")),
            "known_ids": known, "implied_login": rng.random() < 0.2,
            "max_block": rng.choice((MAX_BLOCK, MAX_BLOCK, MAX_BLOCK, MAX_BLOCK, 40, 100, 300)),
            "n2": rng.choice((0, 1, 3, 3)), "n3": rng.choice((1, 3, 3)), "timers": tap_timers(rng),
            "faults": {"nak_next": rng.choice((0, 0, 0, 0, 0, 0, 1, 2, 5)),
                       "rs_next": rng.choice((0, 0, 0, 0, 0, 0, 0, 1, 3)),
                       "rs_code": rng.choice(("511", "512", "513", "505", "999")),
                       "hang_up_at": rng.choice((None,) * 12 + ("probe", "logon", "block")),
                       "silent": rng.random() < 0.03}}


def tap_client(cfg: dict[str, Any]) -> Any:
    from alerting.tap import TapClient, TapTimers

    return TapClient(cfg["password"], [(p[0], p[1]) for p in cfg["pages"]],
                     TapTimers(*cfg["timers"]), cfg["n1"], cfg["n2"], cfg["n3"],
                     max_chars=cfg["max_chars"], transparency=cfg["transparency"])


def tap_terminal(cfg: dict[str, Any]) -> Any:
    from alerting.tap import TapFaults, TapTerminal, TapTimers

    known = cfg["known_ids"]
    return TapTerminal(cfg["password"], faults=TapFaults(**cfg["faults"]),
                       timers=TapTimers(*cfg["timers"]), n2=cfg["n2"], n3=cfg["n3"],
                       known_ids=None if known is None else set(known), banner=cfg["banner"],
                       eol=cfg["eol"].encode("latin-1"), verbose=cfg["verbose"],
                       implied_login=cfg["implied_login"], max_block=cfg["max_block"])


def tap_client_summary(c: Any) -> dict[str, Any]:
    return {"state": c.state.value, "error": c.error, "logout_clean": c.logout_clean,
            "results": [[r.accepted, r.permanent, r.attempts, r.code, r.detail]
                        for r in c.results]}


def tap_terminal_summary(t: Any) -> dict[str, Any]:
    return {"state": t.state.value, "reason": t.reason, "pages": [list(p) for p in t.pages],
            "refused": [code for code, _ in t.refused], "blocks": len(t.blocks)}


def tap_dialogue(rng: random.Random) -> dict[str, Any]:
    """A TapClient against a TapTerminal in memory, on a simulated clock (each side ticked
    when its deadline comes and nothing else happens): what each side was given, as a
    script, and how each ended. Replayed on a fresh machine, a script gives the same."""
    ccfg = tap_client_cfg(rng)
    tcfg = tap_terminal_cfg(rng, ccfg)
    c, t = tap_client(ccfg), tap_terminal(tcfg)
    now = TAP_T0
    cs: list[list[Any]] = []  # the client's script: the terminal's bytes, its ticks
    ts: list[list[Any]] = []  # the terminal's script: the client's bytes, its ticks
    sent, said = bytearray(), bytearray()
    t.start(now)
    out = c.start(now)
    sent += out
    for _ in range(5000):
        if c.done:
            break
        if out:
            ts.append(["r", out, now])
            back = t.receive(out, now)
            said += back
            out = b""
            if back:
                cs.append(["r", back, now])
                out = c.receive(back, now)
                sent += out
            continue
        due = [d for d in (c.next_deadline, t.next_deadline) if d is not None]
        if not due:
            break
        now = max(now, min(due))
        if t.next_deadline is not None and now >= t.next_deadline:
            ts.append(["t", now])
            back = t.tick(now)
            said += back
            if back:
                cs.append(["r", back, now])
                out = c.receive(back, now)
                sent += out
                continue
        if c.next_deadline is not None and now >= c.next_deadline:
            cs.append(["t", now])
            out = c.tick(now)
            sent += out
    return {"client": ccfg, "terminal": tcfg, "cs": cs, "ts": ts, "sent": bytes(sent).hex(),
            "said": bytes(said).hex(), "csum": tap_client_summary(c),
            "tsum": tap_terminal_summary(t)}


def _cut_script(rng: random.Random, script: list[list[Any]]) -> list[list[Any]]:
    """A recorded script with each read cut into pieces (same time); ticks kept."""
    out: list[list[Any]] = []
    for step in script:
        if step[0] == "r":
            out += [["r", piece, step[2]] for piece in split(step[1], rng.getrandbits(32))]
        else:
            out.append(list(step))
    return out


def _tick_script(rng: random.Random, pieces: list[bytes], calm: bool = False
                 ) -> list[list[Any]]:
    """Reads of ``pieces`` (each cut at random) with ticks at random times between them:
    at a time, or at the machine's next deadline ± a little (early ones must do nothing).
    ``calm``: no ticks and the clock stands still (long dialogues, no timeouts)."""
    steps: list[list[Any]] = []
    now = TAP_T0
    for seg in pieces:
        for chunk in split(seg, rng.getrandbits(32)):
            if calm:
                steps.append(["r", chunk, now])
                continue
            if rng.random() < 0.12:
                if rng.random() < 0.55:
                    steps.append(["d", rng.choice((0.0, 0.0, 0.0, 1e-9, 0.001, 0.5, 30.0,
                                                   -0.001, -1e-9))])
                else:
                    now += rng.choice((0.0, 0.001, 0.25, 1.0, 2.0, 8.0, 10.0, 10.000001, 600.0))
                    steps.append(["t", now])
            if rng.random() < 0.3:
                now += rng.choice((0.0, 0.001, 0.1, 0.9, 2.0, 4.0, 10.0, 11.0, 60.0))
            steps.append(["r", chunk, now])
    if steps and not calm and rng.random() < 0.3:
        steps.append(["d", 0.0])
    return steps


def _dump_script(inp: dict[str, Any]) -> bytes:
    obj = dict(inp)
    obj["steps"] = [[s[0], s[1].hex(), s[2]] if s[0] == "r" else s for s in inp["steps"]]
    return json.dumps(obj).encode()


def _load_script(data: bytes) -> list[Any]:
    obj = json.loads(data)
    obj["steps"] = [["r", bytes.fromhex(s[1]), s[2]] if s[0] == "r" else s
                    for s in obj["steps"]]
    return [obj]


def _script_view(inp: dict[str, Any]) -> tuple[bytes, Callable[[bytes], Any]]:
    """The reads' bytes, to minimise; put back at the same steps (clipped), ticks kept."""
    steps = inp["steps"]
    data = b"".join(s[1] for s in steps if s[0] == "r")

    def back(b: bytes) -> dict[str, Any]:
        out, i = [], 0
        for s in steps:
            if s[0] == "r":
                out.append(["r", b[i:i + len(s[1])], s[2]])
                i += len(s[1])
            else:
                out.append(list(s))
        if i < len(b):
            out.append(["r", b[i:], out[-1][2] if out and out[-1][0] == "r" else TAP_T0])
        return {**{k: v for k, v in inp.items() if k != "steps"}, "steps": out, "clean": False}

    return data, back


class _TapScriptHarness(Harness):
    """What the TAP targets share: dialogues, scripts, mutation, reproducers."""

    max_len = 12000
    tokens: ClassVar[list[bytes]] = TAP_TOKENS
    side = "client"  # which side's script this target replays
    REPLAYED = "recorded dialogues replayed exactly (reads cut anywhere)"

    def __init__(self) -> None:
        import alerting.tap as tap

        self.tap = tap
        self.buffer_max = 0
        self.stats: dict[str, int] = {}
        rng = random.Random(f"tap/{self.side}")
        self.dialogues = [tap_dialogue(rng) for _ in range(60)]
        key = "cs" if self.side == "client" else "ts"
        self.pool = [b"".join(s[1] for s in d[key] if s[0] == "r") for d in self.dialogues]
        self.mut: Mutator | None = None

    def mutator(self, rng: random.Random) -> Mutator:
        if self.mut is None or self.mut.rng is not rng:
            self.mut = Mutator(rng, self.tokens, ["ID=", "110", "211", "PG1"], ["x"],
                               self.max_len)
        return self.mut

    def segments(self, d: dict[str, Any]) -> list[bytes]:
        return [s[1] for s in d["cs" if self.side == "client" else "ts"] if s[0] == "r"]

    def mangle(self, rng: random.Random, segs: list[bytes]) -> list[bytes]:
        """A dialogue's reads, some mutated, dropped, repeated, merged, junk between."""
        m = self.mutator(rng)
        out: list[bytes] = []
        for seg in segs:
            r = rng.random()
            if r < 0.3:
                out.append(m.bytes(seg, self.pool))
            elif r < 0.35:
                continue
            elif r < 0.4:
                out += [seg] * rng.choice((2, 3, 10))
            elif r < 0.45 and out:
                out[-1] += seg
            elif r < 0.5:
                out += [m.soup()[:40], seg]
            elif r < 0.53:
                out.append(bytes(b | 0x80 for b in seg))  # a 7E1 line read as 8N1
            else:
                out.append(seg)
        return out

    def special(self, rng: random.Random, cfg: dict[str, Any]) -> list[bytes]:
        raise NotImplementedError

    def generate(self, rng: random.Random) -> dict[str, Any]:
        m = self.mutator(rng)
        r = rng.random()
        d = tap_dialogue(rng) if rng.random() < 0.3 else rng.choice(self.dialogues)
        cfg = d[self.side]
        key = "cs" if self.side == "client" else "ts"
        if r < 0.15:  # the recorded script, reads cut, ticks where they were: must replay
            return {"cfg": cfg, "steps": _cut_script(rng, d[key]), "clean": True,
                    "expect": {"out": d["sent" if self.side == "client" else "said"],
                               "summary": d["csum" if self.side == "client" else "tsum"]}}
        if r < 0.55:
            pieces = self.mangle(rng, self.segments(d))
        elif r < 0.65:
            pieces = [m.bytes(rng.choice(self.pool), self.pool)]
        elif r < 0.8:
            if rng.random() < 0.4:
                cfg = (tap_client_cfg(rng) if self.side == "client"
                       else tap_terminal_cfg(rng, None))
            pieces = self.special(rng, cfg)
        elif r < 0.9:
            pieces = [m.random_bytes()]
        else:
            pieces = [m.soup()]
        if r >= 0.55 and rng.random() < 0.5:
            cfg = tap_client_cfg(rng) if self.side == "client" else tap_terminal_cfg(rng, None)
        total = 0
        for k, p in enumerate(pieces):  # at most max_len bytes in all
            pieces[k] = p[:max(0, self.max_len - total)]
            total += len(pieces[k])
        calm = 0.65 <= r < 0.8 and rng.random() < 0.5  # half the special shapes: no timeouts
        return {"cfg": cfg, "steps": _tick_script(rng, pieces, calm), "clean": False,
                "end": rng.choice(("ticks", "ticks", "ticks", "lost", "abort"))}

    def remember(self, inp: dict[str, Any], rng: random.Random) -> None:
        data = b"".join(s[1] for s in inp["steps"] if s[0] == "r")
        if len(data) <= 4096:
            _pool_add(self.pool, data, rng, 200)

    def dump(self, inp: dict[str, Any]) -> bytes:
        return _dump_script(inp)

    def load(self, data: bytes) -> list[Any]:
        return _load_script(data)

    def shrink_views(self, inp: dict[str, Any]) -> tuple[bytes, Callable[[bytes], Any]]:
        return _script_view(inp)

    def clock(self, machine: Any, step: list[Any], now: float) -> float | None:
        """The time a step runs at (None: a deadline tick with no deadline: skipped)."""
        if step[0] == "d":
            due = machine.next_deadline
            return None if due is None else max(now, due + step[1])
        return max(now, step[-1])


class TapClientHarness(_TapScriptHarness):
    """``TapClient.start/receive/tick`` (+ ``connection_lost``/``abort``): a paging
    terminal's responses. It must never raise; after every call it is ``done`` or has a
    ``next_deadline``; ticked at its deadlines with nothing more heard, it is done within
    ``n1 + n2 + n3 + 3`` ticks; an early tick does nothing. What it sends must be its own
    probes (at most ``n1``), logons (at most ``n3``), blocks (each at most ``n2 + 1``
    times, every block of an accepted page sent) and one ``EOT CR``; a page is accepted
    or refused (RS) only by the terminal, and a session without error answered every page.
    A recorded dialogue, its reads cut anywhere, replays to the same bytes and results."""

    side = "client"
    buffer_unit = "B"

    def __init__(self) -> None:
        super().__init__()
        self.buffer_bound = self.tap._MAX_LINE
        self.kept = self.tap._MAX_KEPT

    def special(self, rng: random.Random, cfg: dict[str, Any]) -> list[bytes]:
        eol = rng.choice((b"\r", b"\r\n", b"\n"))
        hello = [b"ID=" + eol, b"110 1.8" + eol + b"\x06" + eol + b"\x1b[p" + eol]
        pages = len(cfg["pages"])
        r = rng.randrange(10)
        if r == 0:  # ID= again and again: every logon attempt used up
            return [b"ID=" + eol] * rng.randint(1, 12)
        if r == 1:  # every block NAKed
            return hello + [b"514 Checksum error" + eol + b"\x15" + eol] * rng.randint(1, 20)
        if r == 2:  # more ACKs than blocks, in one read or many
            return hello + [b"\x06" * rng.randint(1, 40)] * rng.choice((1, 3))
        if r == 3:  # text that never ends, or lines over the limit
            return [*hello, b"A" * rng.choice((511, 512, 513, 4000, 11000))
                    + rng.choice((b"", eol, b"\x06"))]
        if r == 4:  # ESC sequences cut across reads
            return [b"ID=", b"\r", b"\x1b", b"[", b"p", b"\x1b", b"\x04"][:rng.randint(1, 7)]
        if r == 5:  # message sequences, many (the client keeps 32)
            return hello + [b"211 Page(s) Sent" + eol] * rng.randint(30, 300) + [b"\x06"]
        if r == 6:  # every page accepted, then RS after the logout
            return hello + [b"211 ok" + eol + b"\x06" + eol] * pages + [b"\x1e" + eol,
                                                                         b"\x1b\x04" + eol]
        if r == 7:  # a late 110 (a repeated logon's answer) with the block's ACK
            return hello + [b"110 1.8" + eol + b"\x06" + eol] * rng.randint(1, 4)
        if r == 8:  # RS for every page, with and without a code
            return hello + [rng.choice((b"511 Invalid" + eol, b"")) + b"\x1e" + eol] * pages
        # continuation lines and verbose banners between the answers
        return hello + [b"211 ok" + eol + b"  more text" + eol + b"\x06" + eol] * pages + [
            b"115 Goodbye" + eol + b"\x1b\x04" + eol]

    def from_fuzz_bytes(self, data: bytes) -> dict[str, Any]:
        cfg = next((d["client"] for d in self.dialogues if d["csum"]["logout_clean"]),
                   self.dialogues[0]["client"])  # one that a terminal took pages from
        seed = (len(data) * 2654435761 + (data[:1] or b"\0")[0]) % 2**32
        return {"cfg": cfg, "steps": _tick_script(random.Random(seed), [data]), "clean": False}

    def _check(self, c: Any, now: float) -> None:
        sc = c._scanner
        _check_bound(self, len(sc._line), "the response scanner's line")
        if len(sc._esc) > 2 or len(c._pending) > self.kept or len(c.messages) > self.kept:
            raise Unbounded(f"scanner ESC {len(sc._esc)} B, pending {len(c._pending)}, "
                            f"messages {len(c.messages)} (bounds 2, {self.kept}, {self.kept})")
        if c.done:
            assert c.next_deadline is None, "done, yet a deadline"
        else:
            due = c.next_deadline
            assert due is not None, f"waiting in {c.state.value} with no deadline: stuck"
            assert type(due) is float and math.isfinite(due), due

    def run(self, inp: dict[str, Any]) -> bool:
        cfg = inp["cfg"]
        c = tap_client(cfg)
        now = TAP_T0
        sent = [c.start(now)]
        self._check(c, now)
        for step in inp["steps"]:
            at = self.clock(c, step, now)
            if at is None:
                continue
            now = at
            if step[0] == "r":
                out = c.receive(step[1], now)
            else:
                due = c.next_deadline
                before = tap_client_summary(c), c.state, c._deadline
                out = c.tick(now)
                if due is None or now < due:
                    assert out == b"" and (tap_client_summary(c), c.state, c._deadline) == \
                        before, f"an early tick (at {now}, deadline {due}) did something"
            assert type(out) is bytes, out
            sent.append(out)
            self._check(c, now)
        if inp["clean"]:
            want = inp["expect"]
            got = tap_client_summary(c)
            assert b"".join(sent).hex() == want["out"], "the replayed client sent other bytes"
            assert json.loads(json.dumps(got)) == want["summary"], \
                f"the replayed client ended otherwise: {got} != {want['summary']}"
            self.stats[self.REPLAYED] = self.stats.get(self.REPLAYED, 0) + 1
        end = inp.get("end", "ticks")
        if end == "lost":
            c.connection_lost(now)
            assert c.done, "the line dropped, the session goes on"
        elif end == "abort":
            c.abort("fuzz: the transport's deadline")
            assert c.done
        limit = cfg["n1"] + cfg["n2"] + cfg["n3"] + 3
        for _ in range(limit):  # nothing more heard: its own timers must end the session
            if c.done:
                break
            now = max(now, c.next_deadline)
            sent.append(c.tick(now))
            self._check(c, now)
        assert c.done, f"not done after {limit} ticks at its deadlines: {c.state.value}"
        self.verify(c, cfg, b"".join(sent))
        return any(r.accepted or r.permanent for r in c.results)

    def verify(self, c: Any, cfg: dict[str, Any], sent: bytes) -> None:
        """What was sent is the client's own units, within their counts; results add up."""
        tap = self.tap
        logon = b"\x1bPG1" + tap.ascii7(cfg["password"]).encode("ascii") + b"\r"
        allowed: dict[bytes, int] = {}
        for page in c._blocks:
            for b in page:
                allowed[b] = allowed.get(b, 0) + cfg["n2"] + 1
        counts: dict[bytes, int] = {}
        i = probes = logons = eots = 0
        while i < len(sent):
            rest = sent[i:i + tap.MAX_BLOCK + 8]
            if rest.startswith(logon):
                unit = logon
                logons += 1
            elif rest.startswith(b"\x04\r"):
                unit = b"\x04\r"
                eots += 1
            elif rest.startswith(b"\x02"):
                unit = next((b for b in allowed if rest.startswith(b)), b"")
                assert unit, f"sent a block that is not one of its pages': {rest[:80]!r}"
            elif rest.startswith(b"\r"):
                unit = b"\r"
                probes += 1
            else:
                raise AssertionError(f"sent bytes that are none of its units: {rest[:80]!r}")
            counts[unit] = counts.get(unit, 0) + 1
            i += len(unit)
        assert probes <= cfg["n1"], f"{probes} probes, n1 = {cfg['n1']}"
        assert logons <= cfg["n3"], f"{logons} logons, n3 = {cfg['n3']}"
        assert eots <= 1, f"{eots} logouts"
        for b, n in counts.items():
            if b in allowed:
                assert n <= allowed[b], f"block sent {n} times, n2 = {cfg['n2']}: {b[:40]!r}"
        blocks_sent = sum(n for b, n in counts.items() if b in allowed)
        assert sum(r.attempts for r in c.results) == blocks_sent, \
            f"attempts {[r.attempts for r in c.results]}, {blocks_sent} blocks sent"
        for r, page in zip(c.results, c._blocks, strict=True):
            assert not (r.accepted and r.permanent), r
            _text_ok(r.detail, "PageResult.detail")
            assert r.code is None or (type(r.code) is str and len(r.code) == 3
                                      and r.code.isdigit()), r
            if r.accepted:
                assert all(b in counts for b in page), f"accepted, yet not all sent: {r}"
            if r.accepted or r.permanent:
                assert r.attempts >= 1, f"answered without a block sent: {r}"
        if c.error is None:
            assert all(r.accepted or r.permanent for r in c.results), \
                f"no error, yet pages unanswered: {tap_client_summary(c)}"
        else:
            _text_ok(c.error, "TapClient.error")
        if eots:
            assert all(r.accepted or r.permanent for r in c.results), "logout before the end"
        for code, text in c.messages:
            _text_ok(code, "message code")
            _text_ok(text, "message text")


class TapTerminalHarness(_TapScriptHarness):
    """``TapTerminal.start/receive/tick``: a caller's bytes, the simulator's side. It must
    never raise; its input buffer stays within ``_MAX_BUFFER`` (8,192 B) after every read;
    it answers in 7-bit ASCII; once closed it says nothing more; logging on or ready, it
    has a deadline, and ticked at its deadlines it hangs up within ``n3 + 3`` ticks. A
    recorded dialogue, its reads cut anywhere, replays to the same answers and pages."""

    side = "terminal"
    buffer_unit = "B"
    OPEN = "inputs whose open transaction (fields of unfinished ETB/US blocks) passed 8 KiB"

    def __init__(self) -> None:
        super().__init__()
        self.buffer_bound = self.tap._MAX_BUFFER
        self.logons = [b"\x1bPG1", b"\x1bPG3", b"\x1bpg1", b"\x1bPG9", b"\x1bPG", b"\x1b",
                       b"PG1", b"\x1b\x1bPG1", b"\x1bPG1\x1bPG1"]

    def block(self, rng: random.Random, info: bytes, terminator: int | None = None,
              good: bool = True) -> bytes:
        tap = self.tap
        term = terminator if terminator is not None else rng.choice(tap.TERMINATORS)
        body = b"\x02" + info + bytes((term,))
        chk = tap.checksum(body)
        if not good:
            chk = bytes(((chk[0] + 1) & 0x7F,)) + chk[1:]
        return body + chk + rng.choice((b"\r", b"\r", b"", b"\n"))

    def special(self, rng: random.Random, cfg: dict[str, Any]) -> list[bytes]:
        tap = self.tap
        pw = (cfg["password"] or "").encode("ascii", "replace")
        hello = [b"\r", b"\x1bPG1" + pw + b"\r"]
        r = rng.randrange(9)
        if r == 0:  # logons, good and bad
            return [b"\r", rng.choice(self.logons) + rng.choice((pw, b"", b"x" * 70, b"\xff"))
                    + rng.choice((b"\r", b"\n", b""))] * rng.choice((1, 1, 2, 4))
        if r == 1:  # bad checksums: 514 + NAK, then 503 and hang up
            return hello + [self.block(rng, b"123\r" + b"x" * 10 + b"\r", tap.ETX, False)
                            for _ in range(rng.randint(1, 6))]
        if r == 2:  # a transaction that never ends: ETB / US blocks, valid, many
            n = rng.choice((2, 10, 46))  # 46 full ones: 11.5 kB of fields, held until ETX
            return hello + [self.block(rng, b"a" * 250 if n == 46 else rng.choice(
                (b"a" * 250, b"1\r" * 125, b"b\r")), rng.choice((tap.ETB, tap.US)))
                for _ in range(n)]
        if r == 3:  # oversized blocks, with and without a terminator
            k = cfg["max_block"] + rng.choice((-6, -5, -4, 0, 1, 300))
            return [*hello, b"\x02" + b"x" * max(0, k) + rng.choice((b"\x03123\r", b"", b"\x1f"))]
        if r == 4:  # logouts, good and bad
            return [*hello, rng.choice((b"\x04\r", b"\x04\n", b"\x04x", b"\x04", b"\x04\x04\r"))]
        if r == 5:  # junk with block starts inside
            return hello + [rng.randbytes(rng.randint(1, 40)) + b"\x02" + rng.randbytes(20)
                            for _ in range(rng.randint(1, 8))]
        if r == 6:  # the client's own blocks for unknown ids, transparency off, odd sizes
            pages = tap_client_cfg(rng)["pages"]
            out = list(hello)
            for pid, text in pages:
                out += tap.blocks(pid, text, rng.choice((250, 80, 3, 2, 300)),
                                  transparency=rng.random() < 0.5)
            return out
        if r == 7:  # a caller that never logs on: the prompts, then 501
            return [b"\r"] + [b"\r"] * rng.randint(0, 5)
        return hello + [self.block(rng, b"1234567\r" + b"\x1a" * rng.randint(0, 30) + b"\r",
                                   tap.ETX)] * rng.randint(1, 4)

    def from_fuzz_bytes(self, data: bytes) -> dict[str, Any]:
        cfg = next((d["terminal"] for d in self.dialogues if d["tsum"]["pages"]),
                   self.dialogues[0]["terminal"])  # one that took pages
        seed = (len(data) * 2654435761 + (data[:1] or b"\0")[0]) % 2**32
        return {"cfg": cfg, "steps": _tick_script(random.Random(seed), [data]), "clean": False}

    def _check(self, t: Any, out: bytes, was_closed: bool) -> None:
        assert type(out) is bytes, out
        assert all(b < 0x80 for b in out), f"an answer that is not 7-bit: {out[:80]!r}"
        if was_closed:
            assert out == b"", f"closed, yet answered {out[:80]!r}"
        _check_bound(self, len(t._buf), "the terminal's input buffer")
        st = self.tap.TermState
        if t.closed:
            assert t.next_deadline is None
        elif t.state in (st.WAIT_LOGON, st.READY) and not t.faults.silent:
            due = t.next_deadline
            assert due is not None and type(due) is float and math.isfinite(due), \
                f"{t.state.value} with no deadline: stuck"

    def run(self, inp: dict[str, Any]) -> bool:
        st = self.tap.TermState
        cfg = inp["cfg"]
        t = tap_terminal(cfg)
        now = TAP_T0
        said = [t.start(now)]
        logged_on = False
        biggest = 0
        for step in inp["steps"]:
            at = self.clock(t, step, now)
            if at is None:
                continue
            now = at
            was_closed = t.closed
            if step[0] == "r":
                out = t.receive(step[1], now)
            else:
                due = t.next_deadline
                out = t.tick(now)
                if due is None or now < due:
                    assert out == b"", f"an early tick (at {now}, deadline {due}) answered"
            said.append(out)
            self._check(t, out, was_closed)
            logged_on = logged_on or t.state is st.READY
            biggest = max(biggest, sum(map(len, t._fields)) + len(t._partial or b""))
        if inp["clean"]:
            want = inp["expect"]
            assert b"".join(said).hex() == want["out"], "the replayed terminal said other bytes"
            got = json.loads(json.dumps(tap_terminal_summary(t)))
            assert got == want["summary"], f"the replayed terminal ended otherwise: {got}"
            self.stats[self.REPLAYED] = self.stats.get(self.REPLAYED, 0) + 1
        for _ in range(cfg["n3"] + 3):  # the caller went quiet: its timers hang up
            if t.closed or t.state is st.WAIT_CR or t.faults.silent:
                break
            now = max(now, t.next_deadline)
            out = t.tick(now)
            said.append(out)
            self._check(t, out, False)
        assert t.closed or t.state is st.WAIT_CR or t.faults.silent, \
            f"still {t.state.value} after {cfg['n3'] + 3} ticks at its deadlines"
        if biggest > 8192:
            self.stats[self.OPEN] = self.stats.get(self.OPEN, 0) + 1
        for pid, text in t.pages:
            assert type(pid) is str and type(text) is str and (pid + text).isascii(), (pid, text)
        return logged_on or bool(t.pages)


# --- SNPP

SNPP_TOKENS = [
    b"\r\n", b"\n", b"\r", b"220 ", b"250 ", b"221 ", b"354 ", b"421 ", b"500 ", b"502 ",
    b"503 ", b"550 ", b"554 ", b"750 ", b"850 ", b"860 ", b"861 ", b"870 ", b"880 ", b"881 ",
    b"888 ", b"889 ", b"950 ", b"960 ", b"780 ", b"214-", b"250-", b"220-", b"2", b"99", b"\t",
    b" ", b"-", b"00321 1234 ", b"01", b"02", b"03", b"00001 231114221320+0 ", b"+0", b"-0800",
    b"x" * 1023, b"x" * 1025, b"\xff", b"\x00", b"\xc3\xa9", b"\xed\xa0\x80", b"\x1b", b"OK",
]
SNPP_PAGERS = ("5551212", "555", "1", "A" * 64, "x-y_z.9", "12345678901234567890")
SNPP_TEXTS = ("Fire alarm Bldg 3 2F east, reply 01 ack 02 decline 03 on scene", "", " ",
              "火警 3楼 🔥", "x" * 250, "x" * 251, "line1\nline2", ".\n..\n.x", "a\r\nb\rc",
              "\x00\x1b\x7f", "y" * 3000, "z" * 9000, "é" * 200)
SNPP_REPLIES = ("yes", "Yes!", "ok", "no", "On-Scene", "on_scene", "3", "01", "no way", "",
                "火", "ack " * 240)  # the simulator cannot say 1 KiB (encode_reply refuses)

_SNPP_SERVER: Any = None


def snpp_server(rng: random.Random, mode: str) -> Any:
    """The SNPP simulator with tags, pass codes and MSTA time stamps that do not depend on
    the clock or ``secrets`` (so the seeds, and a run, are the same every time)."""
    global _SNPP_SERVER
    if _SNPP_SERVER is None:
        from firmware_sim.snpp_server import SnppServer, _Tag

        class FuzzSnppServer(SnppServer):
            seeded = random.Random(0)

            def new_tag(self, code: int) -> tuple[str, str]:
                tag = f"{next(self._tag_numbers):05d}"
                pass_code = f"{self.seeded.randrange(10000):04d}"
                self.tags[tag] = _Tag(pass_code, code, changed=1_700_000_000.0)
                return tag, pass_code

        _SNPP_SERVER = FuzzSnppServer
    server = _SNPP_SERVER(mode=mode)
    server.seeded = random.Random(rng.getrandbits(32))
    return server


def snpp_machine(cfg: dict[str, Any]) -> Any:
    from alerting.snpp import MstaPoll, Plan, SnppClient

    if cfg["kind"] == "msta":
        return MstaPoll(cfg["tag"], cfg["pass"])
    return SnppClient(Plan(cfg["pager"], cfg["text"], cfg["two_way"]))


def snpp_summary(m: Any) -> dict[str, Any]:
    if hasattr(m, "outcome"):
        o = m.outcome
        out = None if o is None else [o.accepted, o.detail, list(o.codes), o.two_way,
                                      list(o.tag) if o.tag else None, o.fallback]
        return {"finished": m.finished, "outcome": out}
    return {"finished": m.finished, "status": m.status, "detail": m.detail,
            "reply": str(m.reply) if m.reply else None}


def snpp_cfg(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.3:
        return {"kind": "msta", "tag": rng.choice(("00321", "1", "T" * 64)),
                "pass": rng.choice(("1234", "0000", "p"))}
    text = rng.choice(SNPP_TEXTS) if rng.random() < 0.8 else "".join(
        rng.choice(("FIRE", " ", "\n", ".", "é", "\r", "\x00")) for _ in range(rng.randint(0, 400)))
    return {"kind": "page", "pager": rng.choice(SNPP_PAGERS), "text": text,
            "two_way": rng.random() < 0.7}


def snpp_dialogue(rng: random.Random) -> dict[str, Any]:
    """An SnppClient (or an MstaPoll) against the simulator's Session: the server's bytes
    (one piece per answer), whether the server hung up at the end, and how it ended."""
    from firmware_sim.snpp_server import Session

    mode = rng.choice(("normal",) * 8 + ("reject", "fail", "hangup", "level2", "level1",
                                         "silent"))
    server = snpp_server(rng, "normal")
    cfg = snpp_cfg(rng)
    if cfg["kind"] == "msta":
        tag, pass_code = server.new_tag(rng.choice((860, 861, 880, 960)))
        hook = rng.randrange(7)
        if hook == 0:
            server.reply(tag, rng.choice(("01", "02", "03", "99", "")))
        elif hook == 1:
            server.reply_text(tag, rng.choice(SNPP_REPLIES))
        elif hook == 2:
            server.read(tag)
        elif hook == 3:
            server.expire(tag)
        server.tags[tag].changed = 1_700_000_000.0
        cfg = {"kind": "msta", "tag": tag if rng.random() < 0.9 else "99999",
               "pass": pass_code if rng.random() < 0.9 else "0000x"}
    elif rng.random() < 0.2:
        server.offline.add(cfg["pager"])
    server.mode = mode
    m = snpp_machine(cfg)
    s = Session(server)
    segs: list[bytes] = []
    sent = bytearray()
    data = s.greeting()
    close = False
    for _ in range(200):
        if not data:
            if s.closing and not m.finished:
                close = True
                sent += m.receive(b"")
            break
        segs.append(data)
        out = m.receive(data)
        sent += out
        if m.finished:
            break
        data = s.receive(out) if out else b""
    return {"cfg": cfg, "segs": segs, "data": b"".join(segs), "close": close,
            "expect": {"out": bytes(sent).hex(), "summary": snpp_summary(m)}}


RFC1861_SESSION = {  # the fact sheet's §2.4 level-1 test vector, as the client's dialogue
    "cfg": {"kind": "page", "pager": "5551212", "text": "Your network is hosed",
            "two_way": False},
    "segs": [b"220 SNPP Gateway Ready\r\n", b"250 Pager ID Accepted\r\n", b"250 Message OK\r\n",
             b"250 Message Sent OK\r\n", b"221 OK, Goodbye\r\n"],
    "close": True,
}


class SnppClientHarness(_HexDataInputs, Harness):
    """``SnppClient.receive`` and ``MstaPoll.receive``: an SNPP server's reply stream, cut
    into reads, then (mostly) the server hanging up (``receive(b"")``). Only ``SnppError``
    may come out, and after it the session is over (finished, decided, deaf); the reply
    buffer stays within ``MAX_LINE + 1``. Every write is whole CRLF lines of UTF-8 of at
    most ``MAX_LINE`` bytes; once decided, only one ``QUIT``; accepted only after a
    ``SEND``; a tag only on an accepted two-way page, and one that ``check_token`` takes;
    an MSTA status one of the module's. Without an error, the cuts change nothing (the
    whole stream in one read gives the same); a recorded dialogue replays the same."""

    max_len = 12000
    buffer_unit = "B"
    DIFFERS = ("verdict (accepted / MSTA status) differs between the cut and the whole "
               "stream, a protocol error in one of them")

    def __init__(self) -> None:
        import alerting.snpp as snpp

        self.snpp = snpp
        self.allowed = (snpp.SnppError,)
        self.buffer_bound = snpp.MAX_LINE + 1
        self.buffer_max = 0
        self.stats: dict[str, int] = {}
        self.statuses = {snpp.WAITING, snpp.READ, snpp.DELIVERED, snpp.ACK, snpp.DECLINE,
                         snpp.ON_SCENE, snpp.UNKNOWN, snpp.EXPIRED, snpp.UNKNOWN_TAG,
                         snpp.FAILED}
        rng = random.Random("snpp")
        self.dialogues = [snpp_dialogue(rng) for _ in range(80)]
        rfc = dict(RFC1861_SESSION)
        rfc["data"] = b"".join(rfc["segs"])
        m, sent, err = self.play(rfc["cfg"], rfc["segs"], rfc["close"])
        assert err is None and m.outcome.accepted and sent == (
            b"PAGE 5551212\r\nMESS Your network is hosed\r\nSEND\r\nQUIT\r\n"), sent
        rfc["expect"] = {"out": sent.hex(), "summary": snpp_summary(m)}
        self.dialogues.append(rfc)
        self.pool = [d["data"] for d in self.dialogues]
        self.mut: Mutator | None = None

    def mutator(self, rng: random.Random) -> Mutator:
        if self.mut is None or self.mut.rng is not rng:
            self.mut = Mutator(rng, SNPP_TOKENS, ["Gateway Ready", "OK", "00321", "1234"],
                               ["x"], self.max_len)
        return self.mut

    def special(self, rng: random.Random) -> bytes:
        r = rng.randrange(9)
        eol = rng.choice((b"\r\n", b"\n", b"\r\r\n"))
        ok = b"220 ready" + eol
        if r == 0:  # lines at and past MAX_LINE, ended or not
            n = rng.choice((1019, 1020, 1021, 1022, 1023, 1024, 1025, 1026, 5000))
            return ok + b"250 " + b"x" * (n - 4) + rng.choice((b"\r\n", b"\n", b"", b"\r"))
        if r == 1:  # continuation lines without end
            return ok + (b"250-more" + eol) * rng.randint(1, 500) + rng.choice((b"250 end" + eol,
                                                                                b""))
        if r == 2:  # replies nobody asked for
            return ok + (b"250 OK" + eol) * rng.randint(2, 40)
        if r == 3:  # a two-way SEND answer with odd tags
            tag = rng.choice((b"", b"00321", b"T" * 65, b"\xff\xfe", b"a b", b"00321 \t 1234"))
            return ok + (b"250 OK" + eol) * 7 + b"860 " + tag + b" " + rng.choice(
                (b"1234", b"", b"p" * 65)) + b" Delivered" + eol + b"221 bye" + eol
        if r == 4:  # MSTA answers of every shape
            code = rng.choice((b"860", b"870", b"880", b"881", b"888", b"889", b"960", b"780",
                               b"550", b"421", b"889-"))
            return ok + code + b" " + rng.choice((b"", b"00001 ", b"00001 231114221320+0 ",
                                                  b"1 231114221320 -0800 ", b"x 2311 ")) + \
                rng.choice(SNPP_REPLIES).encode() + eol + b"221 bye" + eol
        if r == 5:  # 354 where it is not asked for, DATA refused, 4xx in the middle
            return ok + rng.choice((b"354 go", b"500 no", b"502 no", b"421 bye", b"999 ?")) + eol
        if r == 6:  # codes that are not three digits, separators that are not space or -
            return ok + rng.choice((b"25", b"2500 x", b"250x", b"25O ok", b"\x00250 ok",
                                    b" 250 ok", b"250\x00ok", b"-250 ok")) + eol
        if r == 7:  # the fallback dance: every two-way step refused, then DATA refused
            return ok + (rng.choice((b"500 no", b"550 no", b"750 no", b"250 ok")) + eol) * 12
        return ok + bytes(rng.choice(b"250 \r\n-") for _ in range(rng.randint(1, 300)))

    def generate(self, rng: random.Random) -> dict[str, Any]:
        m = self.mutator(rng)
        d = snpp_dialogue(rng) if rng.random() < 0.3 else rng.choice(self.dialogues)
        r = rng.random()
        inp: dict[str, Any] = {"cfg": d["cfg"], "cuts": rng.getrandbits(32), "clean": False,
                               "close": d["close"]}
        if r < 0.15:
            return {**inp, "data": d["data"], "clean": True, "expect": d["expect"]}
        if r < 0.55:
            out = []
            for seg in d["segs"]:
                k = rng.random()
                if k < 0.3:
                    out.append(m.bytes(seg, self.pool))
                elif k < 0.36:
                    continue
                elif k < 0.42:
                    out += [seg] * rng.choice((2, 3))
                elif k < 0.46:
                    out.append(m.soup()[:60] + b"\r\n")
                else:
                    out.append(seg)
            data = b"".join(out)
        elif r < 0.65:
            data = m.bytes(rng.choice(self.pool), self.pool)
        elif r < 0.8:
            data = self.special(rng)
        elif r < 0.9:
            data = m.random_bytes()
        else:
            data = m.soup()
        if r >= 0.55 and rng.random() < 0.5:
            inp["cfg"] = snpp_cfg(rng)
        inp["close"] = rng.random() < 0.6
        inp["data"] = data[:self.max_len]
        return inp

    def play(self, cfg: dict[str, Any], reads: list[bytes], close: bool
             ) -> tuple[Any, bytes, BaseException | None]:
        snpp = self.snpp
        m = snpp_machine(cfg)
        sent = bytearray()
        quits = 0
        err: BaseException | None = None
        pieces = [*reads, b""] if close else reads
        for piece in pieces:
            decided, finished = m.decided, m.finished
            try:
                out = m.receive(piece)
            except snpp.SnppError as exc:
                err = exc
                assert m.finished and m.decided, "a protocol error left the session open"
                assert m.receive(b"250 OK\r\n") == b"" and m.receive(b"") == b"", \
                    "a session answered after its protocol error"
                break
            assert type(out) is bytes, out
            if finished:
                assert out == b"", f"finished, yet sent {out[:80]!r}"
            if decided:
                assert out in (b"", b"QUIT\r\n"), f"decided, yet sent {out[:80]!r}"
            if out:
                assert out.endswith(b"\r\n"), out[-80:]
                out.decode("utf-8")
                for line in out[:-2].split(b"\r\n"):
                    assert b"\r" not in line and b"\n" not in line, line[:80]
                    assert len(line) <= snpp.MAX_LINE, f"a line of {len(line)} bytes"
            quits += out.count(b"QUIT\r\n")
            sent += out
            _check_bound(self, m._s.parser._lines.pending, "the reply buffer")
            if not piece:
                assert m.finished and m.decided, "the server hung up, the session goes on"
        assert quits <= 1, f"{quits} QUITs"
        assert len(m.codes) <= 16 and all(type(c) is int and 0 <= c <= 999 for c in m.codes)
        if m.finished:
            assert m.decided, "finished without an outcome"
        self.verify(m, cfg, bytes(sent))
        return m, bytes(sent), err

    def verify(self, m: Any, cfg: dict[str, Any], sent: bytes) -> None:
        snpp = self.snpp
        if cfg["kind"] == "msta":
            assert m.status is None or m.status in self.statuses, m.status
            if m.status is not None:
                _text_ok(m.detail, "MstaPoll.detail")
            if m.reply is not None:
                assert m.status == snpp.parse_msta(m.reply), (m.status, m.reply)
            return
        o = m.outcome
        if o is None:
            return
        _text_ok(o.detail, "Outcome.detail")
        _text_ok(o.fallback, "Outcome.fallback")
        if o.accepted:
            assert b"SEND\r\n" in sent, "accepted without a SEND"
        if o.tag is not None:
            assert o.accepted and o.two_way, o
            for t in o.tag:
                snpp.check_token(t, "tag")
        if o.two_way or o.fallback:
            assert cfg["two_way"], o
        assert not (o.two_way and o.fallback), o

    def run(self, inp: dict[str, Any]) -> bool:
        snpp = self.snpp
        data, cfg = inp["data"], inp["cfg"]
        reads = [p for p in split(data, inp["cuts"], allow_empty=False) if p]
        m, sent, err = self.play(cfg, reads, inp["close"])
        if cfg["kind"] == "msta":  # every line of the stream through parse_reply/parse_msta
            for line in data.split(b"\n")[:64]:
                try:
                    reply = snpp.parse_reply(line.removesuffix(b"\r"))
                except snpp.SnppError:
                    continue
                assert snpp.parse_msta(reply) in self.statuses, reply
        if inp["clean"]:
            want = inp["expect"]
            assert err is None, f"the recorded dialogue raised {err!r}"
            assert sent.hex() == want["out"], "the replayed session sent other bytes"
            got = json.loads(json.dumps(snpp_summary(m)))
            assert got == want["summary"], f"the replayed session ended otherwise: {got}"
        elif len(reads) > 1:  # compare with the whole stream in one read
            m2, sent2, err2 = self.play(cfg, [data], inp["close"])
            if err is None and err2 is None:
                assert sent == sent2 and snpp_summary(m) == snpp_summary(m2), \
                    f"the session depends on the cuts: {snpp_summary(m)} / {snpp_summary(m2)}"
            elif self.verdict(m) != self.verdict(m2):
                self.stats[self.DIFFERS] = self.stats.get(self.DIFFERS, 0) + 1
        if err is not None:
            raise err
        return m.decided

    @staticmethod
    def verdict(m: Any) -> Any:
        """What the transport acts on: the page accepted or not; the MSTA status."""
        if hasattr(m, "outcome"):
            return None if m.outcome is None else m.outcome.accepted
        return m.status

    def from_fuzz_bytes(self, data: bytes) -> dict[str, Any]:
        return {"cfg": self.dialogues[0]["cfg"], "data": data, "close": True, "clean": False,
                "cuts": (len(data) * 2654435761 + (data[:1] or b"\0")[0]) % 2**32}

    def shrink_views(self, inp: dict[str, Any]) -> tuple[bytes, Callable[[bytes], Any]]:
        rest = {k: v for k, v in inp.items() if k not in ("data", "clean", "expect")}
        return inp["data"], lambda b: {**rest, "data": b, "clean": False}


# ------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class Target:
    name: str
    decoder: str  # what it calls
    share: float  # of --inputs (the YAML parsers are pure Python and ~100x slower)
    harness: Callable[[], Harness] | None  # None: the decoder is not built yet
    note: str = ""


TARGETS: list[Target] = [
    Target("native", "drivers.native.decode", 0.09, _native),
    Target("mqtt-ack", "alerting.page.decode_mqtt_ack", 0.05, _mqtt_ack),
    Target("receipt", "drivers.native.receipt_ts + KeptAlarm.heard (device side)", 0.02,
           _receipt, "a device reading its retained device/<id>; the receipt must name "
           "exactly the alarms at or before alarm_ts"),
    Target("runtime-parse", "gateway.runtime.Gateway._parse", 0.08, lambda: ParseHarness()),
    Target("engine", "gateway.engine.Engine via Gateway._parse", 0.07, lambda: EngineHarness(),
           "1 input = 1 message (through Gateway._parse) + usually a tick, in episodes"),
    Target("config", "gateway.config.parse_site", 0.03, _config,
           "pure-Python YAML: ~100x slower, so fewer inputs; accepted sites also run the engine"),
    Target("scenario", "firmware_sim.scenario.parse_scenario", 0.03, _scenario,
           "pure-Python YAML: ~100x slower, so fewer inputs; accepted ones must encode"),
    Target("gb26875", "drivers.gb26875.CentreSession.receive/tick/close", 0.07,
           lambda: Gb26875SessionHarness(),
           "1 input = 1 TCP stream in random reads, the clock moving; replies must be frames"),
    Target("gb26875-deframer", "drivers.gb26875.Deframer.feed/abandon", 0.06,
           lambda: Gb26875DeframerHarness(),
           "1 input = 1 stream in random reads; every byte accounted for, in order"),
    Target("gb26875-uplink", "alerting.centre_report.UplinkSession.receive/tick/lost", 0.04,
           lambda: Gb26875UplinkHarness(),
           "1 input = what a centre sends back, in random reads; each report ends once"),
    Target("gb26875-adu", "drivers.gb26875.parse_adu", 0.04, lambda: Gb26875AduHarness(),
           "accepted objects give events and build back to the same bytes"),
    Target("panel-gst", "drivers.panel_printer.PrinterParser('gst').feed/flush", 0.04,
           lambda: PanelHarness("gst"),
           "1 input = 1 stream in random reads; events must not depend on the cuts"),
    Target("panel-lida", "drivers.panel_printer.PrinterParser('lida').feed/flush", 0.04,
           lambda: PanelHarness("lida"), "as panel-gst, with Lida-form records"),
    Target("panel-edwards", "drivers.panel_printer.PrinterParser('edwards').feed/flush", 0.05,
           lambda: PanelHarness("edwards"), "as panel-gst, Edwards iO1000 lines"),
    Target("zigbee2mqtt", "drivers.zigbee2mqtt.Zigbee2Mqtt.receive/tick", 0.05,
           lambda: Zigbee2MqttHarness(), "1 input = 1-16 MQTT messages on a fresh codec"),
    Target("frigate", "drivers.frigate.Frigate.receive", 0.05, lambda: FrigateHarness(),
           "1 input = 1-16 MQTT messages on a fresh codec"),
    Target("modbus-rtu", "pymodbus RTU client reply path + drivers.modbus.ModbusPoller._read",
           0.06, lambda: ModbusRtuHarness(),
           "1 input = 1 request and its reply bytes in random reads"),
    Target("modbus-ref", "drivers.modbus.parse_ref", 0.02, _modbus_ref),
    Target("analog", "drivers.analog.Threshold.update", 0.03, lambda: AnalogHarness(),
           "1 input = 1 threshold config + 1-30 readings; rejected = config refused"),
    Target("tap-client", "alerting.tap.TapClient.start/receive/tick", 0.05,
           lambda: TapClientHarness(),
           "1 input = a terminal's bytes in random reads with ticks between, on a fresh client"),
    Target("tap-terminal", "alerting.tap.TapTerminal.start/receive/tick", 0.04,
           lambda: TapTerminalHarness(),
           "1 input = a caller's bytes in random reads with ticks between, on a fresh terminal"),
    Target("snpp-client", "alerting.snpp.SnppClient.receive / MstaPoll.receive", 0.05,
           lambda: SnppClientHarness(),
           "1 input = a server's replies in random reads (+ hang-up); compared with one read"),
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
            except Unbounded as exc:  # a codec's buffer past its documented bound
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
            "findings": result_findings, "stopped": stopped,
            "buffer_max": getattr(h, "buffer_max", None),
            "buffer_bound": getattr(h, "buffer_bound", None),
            "buffer_unit": getattr(h, "buffer_unit", "B"), "stats": dict(getattr(h, "stats", {}))}


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
    """Delta-debug a crashing input down while it crashes the same way (bounded in time);
    returns it as the harness dumps inputs, so that ``--replay`` runs it."""
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
    return h.dump(back(data))  # replayable: --replay FILE --target NAME


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
    # --inputs is the total: largest remainders, so rounding neither adds nor loses any
    exact = [inputs * t.share / total_share for t in built]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(built)), key=lambda i: counts[i] - exact[i])[
            :max(0, inputs - sum(counts))]:
        counts[i] += 1
    out = []
    for t, share_n in zip(built, counts, strict=True):
        n = per_target if per_target is not None else max(1, share_n)
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
        buffers = [r["buffer_max"] for r in shards if r.get("buffer_max") is not None]
        row["buffer_max"] = max(buffers) if buffers else None
        row["buffer_bound"] = next((r["buffer_bound"] for r in shards
                                    if r.get("buffer_bound") is not None), None)
        row["buffer_unit"] = next((r["buffer_unit"] for r in shards if r.get("buffer_unit")), "B")
        stats: dict[str, int] = {}
        for r in shards:
            for k, v in r.get("stats", {}).items():
                stats[k] = stats.get(k, 0) + v
        row["stats"] = stats
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
           "peak RSS", "RSS growth", "max alloc/input", "max buffer (bound)"]


def fmt_buffer(r: dict[str, Any]) -> str:
    """The largest buffer (or state) the codec held after any call, and its bound."""
    n = r.get("buffer_max")
    if n is None:
        return "-"
    unit = r.get("buffer_unit") or "B"
    bound = r.get("buffer_bound")
    return f"{n:,} {unit}" + (f" ({bound:,})" if bound is not None else "")


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
                    else "-", fmt_buffer(r)])
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
            Console(width=190, highlight=False).print(table)
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
        for k, v in sorted(r.get("stats", {}).items()):
            print(f"note: {r['target']}: {k}: {v:,}")
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

        import alerting.page
        import alerting.snpp
        import alerting.tap  # noqa: F401
        import drivers.analog
        import drivers.frigate
        import drivers.gb26875
        import drivers.modbus
        import drivers.native
        import drivers.panel_printer
        import drivers.zigbee2mqtt  # noqa: F401
        import firmware_sim.scenario
        import firmware_sim.snpp_server  # noqa: F401
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
