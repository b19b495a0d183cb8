"""Asyncio client for InfluxDB's v1 HTTP API: ``/ping``, ``/write`` and ``/query``.

The audit trail (CONTRACT §4) goes to InfluxDB through the v1 API because it is the one
every server speaks: InfluxDB 1.x (Debian ships 1.6.7, too old for ``/api/v2``), and the
v1-compatible endpoints of 2.x and 3.x. Points are rendered with plain f-strings rather
than a client library's Point class: serialising is on the hot path when the journal
catches up after an outage, and f-strings are an order of magnitude faster.

Errors are split by what the caller should do next:

- :class:`InfluxUnreachable`: connection failed, timed out, or the server answered 5xx.
  Keep the data and retry later.
- :class:`InfluxWriteError` with ``permanent=True``: the server rejected the data itself
  (line-protocol parse error, field type conflict, points beyond retention: HTTP 400).
  Retrying the same lines can never succeed; record and skip them.
- :class:`InfluxWriteError` with ``permanent=False``: any other 4xx (wrong credentials,
  unknown database, body too large, rate limited). Fix the setup, then retry.
- :class:`InfluxQueryError`: InfluxQL error reported by the server.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import aiohttp
import orjson

__all__ = [
    "FieldValue",
    "InfluxClient",
    "InfluxError",
    "InfluxQueryError",
    "InfluxTarget",
    "InfluxUnreachable",
    "InfluxWriteError",
    "escape_field_str",
    "escape_measurement",
    "escape_tag",
    "format_point",
]

FieldValue = float | int | str | bool

_DB_RE = re.compile(r"[A-Za-z0-9_-]+")
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_FLOAT_MAX = sys.float_info.max


# --- errors --------------------------------------------------------------------------


class InfluxError(Exception):
    """Base of every error raised by this module."""


class InfluxUnreachable(InfluxError):
    """The server could not be reached or failed (5xx): the data is fine, retry later."""


class InfluxWriteError(InfluxError):
    """The server refused a write with a 4xx status.

    ``permanent`` is True when the *data* was rejected (HTTP 400: parse error, partial
    write, field type conflict, beyond retention) so retrying the same lines is useless.
    """

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        self.body = body
        self.message = _error_message(body)
        self.permanent = status in (400, 422)
        super().__init__(f"InfluxDB write failed with HTTP {status}: {self.message}")

    @property
    def dropped(self) -> int | None:
        """Points the server dropped, when it says so (1.x: ``... dropped=N``)."""
        m = re.search(r"dropped=(\d+)", self.body)
        return int(m.group(1)) if m else None


class InfluxQueryError(InfluxError):
    """The server reported an error for an InfluxQL statement."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.message = message
        self.status = status
        super().__init__(message)


def _error_message(body: str) -> str:
    """The ``error`` text of a JSON error body, or the (shortened) raw body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.strip()[:500]
    if isinstance(doc, dict):
        for key in ("error", "message"):
            if isinstance(doc.get(key), str):
                return str(doc[key])
    return body.strip()[:500]


# --- target --------------------------------------------------------------------------


def _redact_url(url: str) -> str:
    """``url`` with its password and token replaced by ``***``, safe for logs and errors.

    Works on raw text, so it is usable even for a URL that does not parse. It is
    deliberately more suspicious than urlsplit: everything before the *last* ``@`` is
    taken as userinfo, so a password with an unencoded ``/``, ``?`` or ``#`` (which
    urlsplit would read as the path) is still hidden.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        rest = f"{userinfo}@{rest}"
    authority, qmark, tail = rest.partition("?")
    tail = qmark + tail
    # any query value may be a (misspelt) secret: hide them all
    tail = re.sub(r"([?&][^=&#]*=)[^&#]*", r"\1***", tail)
    return f"{scheme}{sep}{authority}{tail}"


@dataclass(frozen=True)
class InfluxTarget:
    """Where and as whom to write: parsed from one URL in the site config.

    ``http[s]://[user[:password]@]host[:port]/<database>[?token=<token>]``. The path is
    the database name (v1 API; on 2.x/3.x the bucket mapped to it).
    """

    base_url: str
    database: str
    username: str | None = None
    password: str | None = None
    token: str | None = None

    def __repr__(self) -> str:  # never show secrets, even in tracebacks
        return f"InfluxTarget({self.redacted()!r})"

    @classmethod
    def parse(cls, url: str) -> InfluxTarget:
        """Parse a target URL; raise ValueError naming what is wrong (never the secret)."""
        shown = _redact_url(url)

        def bad(why: str) -> ValueError:
            return ValueError(f"invalid InfluxDB URL {shown!r}: {why}")

        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            # `from None`: urlsplit's own message may quote part of a password
            raise bad("cannot parse host/port") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise bad(
                f"scheme must be http or https, not {scheme!r}"
                if scheme
                else "scheme must be http or https (e.g. http://127.0.0.1:8086/firegrid)"
            )
        host = parts.hostname
        if not host:
            raise bad("host is missing")
        if parts.fragment:
            raise bad("fragment (#...) is not allowed")
        database = parts.path.strip("/")
        if not database:
            raise bad("database is missing: put it in the path, e.g. http://host:8086/firegrid")
        database = unquote(database)
        if not _DB_RE.fullmatch(database):
            raise bad(f"database name {database!r} must match [A-Za-z0-9_-]+ (one path segment)")
        token: str | None = None
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key != "token":
                raise bad(f"unknown query parameter {key!r} (only 'token' is accepted)")
            if not value:
                raise bad("token is empty")
            token = value
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        hostport = f"[{host}]" if ":" in host else host
        if port is not None:
            hostport = f"{hostport}:{port}"
        return cls(
            base_url=f"{scheme}://{hostport}",
            database=database,
            username=username,
            password=password,
            token=token,
        )

    def redacted(self) -> str:
        """The target as a URL for logs: user name shown, password and token hidden."""
        scheme, _, hostport = self.base_url.partition("://")
        auth = ""
        if self.username is not None:
            auth = quote(self.username, safe="")
            if self.password is not None:
                auth += ":***"
            auth += "@"
        q = "?token=***" if self.token else ""
        return f"{scheme}://{auth}{hostport}/{self.database}{q}"


# --- line protocol -------------------------------------------------------------------
# InfluxDB 1.x treats a delimiter as escaped when the byte before it is a backslash, and
# only unescapes "\,", "\=" and "\ " in names and tag values (a lone "\" is kept as is).
# So: escape the three delimiters, never let a value *end* in a backslash (it would
# swallow the following delimiter; an escaped space is appended, the only lossy case), and
# never emit a raw newline outside a quoted string (it would start a new point).


@lru_cache(maxsize=16384)
def escape_tag(s: str) -> str:
    """Escape a tag key, tag value or field key for line protocol.

    Cached: tag values (site, stage, zone, device) repeat from point to point.
    """
    if "\\" in s or "\n" in s or "\r" in s:
        s = s.replace("\n", "\\n").replace("\r", "\\r")
        if s.endswith("\\"):
            s += " "
    return s.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


@lru_cache(maxsize=1024)
def escape_measurement(s: str) -> str:
    """Escape a measurement name (commas and spaces; ``=`` needs no escape there)."""
    if not s:
        raise ValueError("measurement name must not be empty")
    if "\\" in s or "\n" in s or "\r" in s:
        s = s.replace("\n", "\\n").replace("\r", "\\r")
        if s.endswith("\\"):
            s += " "
    return s.replace(",", "\\,").replace(" ", "\\ ")


def escape_field_str(s: str) -> str:
    """Escape a string field value (without the surrounding quotes): ``\\`` and ``"``."""
    if "\\" in s:
        s = s.replace("\\", "\\\\")
    if '"' in s:
        s = s.replace('"', '\\"')
    return s


def _field_value(key: str, v: FieldValue) -> str:
    t = type(v)
    if t is float:
        if math.isfinite(v):  # type: ignore[arg-type]
            return repr(v)
        raise ValueError(f"field {key!r}: {v!r} cannot be stored (InfluxDB has no NaN/inf)")
    if t is bool:
        return "true" if v else "false"
    if t is int:
        if _INT64_MIN <= v <= _INT64_MAX:  # type: ignore[operator]
            return f"{v}i"
        raise ValueError(f"field {key!r}: {v} does not fit in a signed 64-bit integer")
    if t is str:
        return f'"{escape_field_str(v)}"'  # type: ignore[arg-type]
    # subclasses and numpy scalars: normalise, then format as above
    if isinstance(v, bool):
        return _field_value(key, bool(v))
    if isinstance(v, int):
        return _field_value(key, int(v))
    if isinstance(v, float):
        return _field_value(key, float(v))
    if isinstance(v, str):
        return _field_value(key, str(v))
    if hasattr(v, "item"):  # numpy scalar that is not a float/int subclass
        return _field_value(key, v.item())
    raise TypeError(f"field {key!r}: unsupported type {t.__name__}")


def format_point(
    measurement: str,
    tags: dict[str, str],
    fields: dict[str, FieldValue | None],
    time_ns: int,
) -> str:
    """Render one point as a line of InfluxDB line protocol (no trailing newline).

    Tags are sorted by key (what the server wants) and empty values are omitted; fields
    keep their order and ``None`` values are skipped. Floats are written with ``repr`` so
    they round-trip exactly, ints with the ``i`` suffix. At least one field must remain.
    """
    line = escape_measurement(measurement)
    for k in sorted(tags):
        v = tags[k]
        if v:
            line += f",{escape_tag(k)}={escape_tag(v if type(v) is str else str(v))}"
    sep = " "
    for k, v in fields.items():
        t = type(v)
        # inline fast paths for the common types; everything else via _field_value
        if t is float and -_FLOAT_MAX <= v <= _FLOAT_MAX:  # False for NaN and +-inf
            line += f"{sep}{escape_tag(k)}={v!r}"
        elif t is str:
            line += f'{sep}{escape_tag(k)}="{escape_field_str(v)}"'
        elif v is None:
            continue
        else:
            line += f"{sep}{escape_tag(k)}={_field_value(k, v)}"
        sep = ","
    if sep == " ":
        raise ValueError(f"point {measurement!r} has no fields (all None or none given)")
    return f"{line} {int(time_ns)}"


# --- client --------------------------------------------------------------------------


class InfluxClient:
    """One InfluxDB target over the v1 HTTP API, with its own aiohttp session.

    Use as ``async with InfluxClient(target) as client:``; the session can also be
    created lazily by the first request and released with :meth:`close`.
    """

    def __init__(self, target: InfluxTarget, *, timeout_s: float = 10) -> None:
        self.target = target
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        headers = {"User-Agent": "firegrid"}
        if target.token:
            # 2.x/3.x v1 compatibility; 1.x with auth disabled ignores it.
            headers["Authorization"] = f"Token {target.token}"
        elif target.username is not None:
            # 1.x accepts basic auth as well as u/p parameters; a header keeps the
            # password out of URLs (and so out of proxy and access logs).
            headers["Authorization"] = aiohttp.encode_basic_auth(
                target.username, target.password or ""
            )
        self._headers = headers
        self._write_url = f"{target.base_url}/write"
        self._write_params = {"db": target.database, "precision": "ns"}

    def __repr__(self) -> str:
        return f"InfluxClient({self.target.redacted()!r})"

    async def __aenter__(self) -> Self:
        self._ensure_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers=self._headers,
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        data: bytes | dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """Send one request; return (status, body). Transport failures and 5xx raise
        InfluxUnreachable naming the (redacted) target."""
        session = self._ensure_session()
        url = f"{self.target.base_url}{path}"
        try:
            async with session.request(method, url, params=params, data=data) as resp:
                body = await resp.text(errors="replace")
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise InfluxUnreachable(
                f"InfluxDB at {self.target.redacted()} unreachable ({path}): "
                f"{type(e).__name__}: {e}"
            ) from e
        if status >= 500:
            raise InfluxUnreachable(
                f"InfluxDB at {self.target.redacted()} failed ({path}): HTTP {status}: "
                f"{_error_message(body)}"
            )
        return status, body

    async def ping(self) -> None:
        """Check the server answers ``/ping``; raise InfluxUnreachable if not."""
        status, body = await self._request("GET", "/ping")
        if status not in (200, 204):
            raise InfluxUnreachable(
                f"InfluxDB at {self.target.redacted()} answered /ping with HTTP {status}: "
                f"{_error_message(body)}"
            )

    async def ensure_database(self) -> None:
        """Create the target database if missing (``CREATE DATABASE`` is idempotent).

        Only InfluxDB 1.x creates databases this way; on 2.x/3.x create the bucket and
        its v1 mapping beforehand (the server then reports an InfluxQueryError here).
        """
        await self._query_raw(f'CREATE DATABASE "{self.target.database}"', epoch=None)

    async def write_lines(self, lines: list[str]) -> None:
        """Write line-protocol lines (nanosecond timestamps) in one request.

        A point with the same measurement, tag set and timestamp as a stored one
        replaces it, so re-sending after an outage never doubles a record.
        """
        if not lines:
            return
        session = self._ensure_session()
        body = "\n".join(lines).encode()
        try:
            async with session.post(self._write_url, params=self._write_params, data=body) as resp:
                status = resp.status
                if status in (204, 200):
                    return
                text = await resp.text(errors="replace")
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise InfluxUnreachable(
                f"InfluxDB at {self.target.redacted()} unreachable (/write): "
                f"{type(e).__name__}: {e}"
            ) from e
        if status >= 500:
            raise InfluxUnreachable(
                f"InfluxDB at {self.target.redacted()} failed (/write): HTTP {status}: "
                f"{_error_message(text)}"
            )
        raise InfluxWriteError(status, text)

    async def _query_raw(self, q: str, *, epoch: str | None) -> dict[str, Any]:
        form = {"q": q, "db": self.target.database}
        if epoch:
            form["epoch"] = epoch
        status, body = await self._request("POST", "/query", data=form)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InfluxQueryError(
                f"HTTP {status} with a non-JSON body: {body.strip()[:500]}", status
            ) from None
        if not isinstance(doc, dict):
            raise InfluxQueryError(f"HTTP {status} with unexpected body: {body[:500]}", status)
        if "error" in doc:
            raise InfluxQueryError(str(doc["error"]), status)
        if status >= 400:
            raise InfluxQueryError(f"HTTP {status}: {_error_message(body)}", status)
        results = doc.get("results") or []
        if results and isinstance(results[0], dict) and "error" in results[0]:
            raise InfluxQueryError(str(results[0]["error"]), status)
        return doc

    async def query(self, q: str, *, epoch: str | None = "ns") -> list[dict[str, Any]]:
        """Run InfluxQL; return the series of the first statement.

        Each series is ``{"name", "tags", "columns", "values"}`` (``tags`` is ``{}`` when
        the query has no GROUP BY). With ``epoch="ns"`` times are integers in
        nanoseconds; ``epoch=None`` gives RFC 3339 strings.
        """
        doc = await self._query_raw(q, epoch=epoch)
        results = doc.get("results") or []
        if not results:
            return []
        return [
            {
                "name": s.get("name", ""),
                "tags": s.get("tags") or {},
                "columns": s.get("columns") or [],
                "values": s.get("values") or [],
            }
            for s in results[0].get("series") or []
        ]
