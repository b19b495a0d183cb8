"""Start and stop real local servers (Mosquitto, InfluxDB 1.x) for the demo and the tests,
and the socat pseudo-terminal pairs that stand in for serial cables (``PtyPair``).

firegrid's acceptance tests run against the real brokers and databases it meets in the
field, not mocks, so that reconnects, persistence and restarts behave as they do on a
gateway. This module owns those server processes: it writes a private config into a
working directory, starts the server bound to 127.0.0.1 only, waits until it really
serves, and stops it again by PID. Stopping and starting again on the same directory
and port is a *restart*: the broker keeps its retained messages and sessions, the
database keeps its data, which is how outage handling is tested.

Processes are only ever signalled by the PID we started (never by name), ``stop()`` is
idempotent, and an ``atexit`` hook stops anything still running when Python exits.
When started from the main thread on Linux the child also gets ``PR_SET_PDEATHSIG``,
so a server does not outlive a test run that was killed with SIGKILL.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

MOSQUITTO_BIN = "/usr/sbin/mosquitto"
INFLUXD_BIN = "/usr/bin/influxd"
SOCAT_BIN = shutil.which("socat") or "/usr/bin/socat"

_STOP_GRACE_S = 5.0
_POLL_S = 0.02


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The kernel picks it (bind to port 0), so parallel test runs do not collide; there
    is a small race until the server binds it, which is acceptable for tests.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int, timeout: float = 0.2) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(path: Path, max_bytes: int = 4000) -> str:
    """Last part of a log file, for error messages that explain a failed start."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"<no log: {e}>"


def _check_conf_path(p: Path) -> None:
    """Server config files are line based: a path with whitespace would be misread."""
    if any(c.isspace() for c in str(p)):
        raise ValueError(f"working directory path must not contain whitespace: {str(p)!r}")


# --- parent-death signal -------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
except OSError:  # not glibc/Linux: rely on stop() and atexit only
    _libc = None


def _make_preexec() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to SIGTERM the child when its parent dies.

    PDEATHSIG fires when the *thread* that forked exits, so it is only used from the
    main thread (whose end is the end of the process). Returns None when unavailable.
    """
    if _libc is None or threading.current_thread() is not threading.main_thread():
        return None
    libc = _libc
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # parent already gone before prctl took effect
            os._exit(1)

    return preexec


# --- process bookkeeping -------------------------------------------------------------

_live: set[_ChildProcess] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_all() -> None:
    """Stop every server this process started and did not stop, by PID."""
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


class _ChildProcess:
    """One child process with a working directory: spawn, wait until ready, stop by PID."""

    name = "server"

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None

    # public read-only state
    @property
    def pid(self) -> int | None:
        """PID of the running server, or None when it is not running."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def workdir(self) -> Path:
        """Directory with the config, data and logs of this server."""
        if self._workdir is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._workdir

    @property
    def log_path(self) -> Path:
        """File receiving the server's stdout and stderr."""
        return self.workdir / f"{self.name}.out.log"

    # lifecycle
    def _spawn(self, argv: list[str]) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} start: {argv}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal goes to us, not to it
                preexec_fn=_make_preexec(),
            )
        with _live_lock:
            _live.add(self)

    def _wait_ready(self, ready: Callable[[], bool], timeout_s: float) -> None:
        """Poll ``ready()`` until true; on exit or timeout, stop and raise with the log."""
        deadline = time.monotonic() + timeout_s
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise RuntimeError(
                    f"{self.name} exited with code {code} during startup; log tail:\n"
                    f"{self._log_tail()}"
                )
            if ready():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.name} not ready {self._where()} after {timeout_s} s;"
                    f" log tail:\n{self._log_tail()}"
                )
            time.sleep(_POLL_S)

    def _where(self) -> str:
        """Where the process should be serving, for a startup error."""
        return f"in {self._workdir}"

    def _log_tail(self) -> str:
        return _tail(self.log_path)

    def stop(self) -> None:
        """Stop the server: SIGTERM to its PID, SIGKILL after 5 s. Safe to call twice.

        SIGTERM lets Mosquitto write its persistence file and InfluxDB close its
        WAL cleanly, which is what a restart test needs.
        """
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        with _live_lock:
            _live.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _ServerProcess(_ChildProcess):
    """One server child process on a TCP port of 127.0.0.1: start with readiness check,
    stop by PID, restart on the same directory and port."""

    def __init__(self) -> None:
        super().__init__()
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The TCP port the server listens on (kept across restarts)."""
        if self._port is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._port

    def _resolve(self, workdir: Path | None, port: int | None) -> tuple[Path, int]:
        if self.running:
            raise RuntimeError(f"{self.name} already running (pid {self.pid})")
        wd = Path(workdir).resolve() if workdir is not None else self._workdir
        if wd is None:
            raise ValueError(f"{self.name}: workdir is required on first start")
        _check_conf_path(wd)
        wd.mkdir(parents=True, exist_ok=True)
        p = port if port is not None else (self._port or free_port())
        if _port_open(p):
            raise RuntimeError(f"{self.name}: port 127.0.0.1:{p} is already in use")
        self._workdir, self._port = wd, p
        return wd, p

    def _where(self) -> str:
        return f"on 127.0.0.1:{self._port}"

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} port={self._port} {state}>"


class PtyPair(_ChildProcess):
    """Two linked pseudo-terminals made by socat: a serial cable for the tests.

    ``gateway`` (``<workdir>/<name>-gw``) is the end firegrid opens, ``device``
    (``<workdir>/<name>-dev``) the end a simulated panel or unit opens; both are links
    socat makes to the ptys of the moment, so the paths stay the same across restarts.
    ``stop()`` (alias ``pull()``) stops socat by its PID, which is a pulled cable: the
    ptys and links go. ``start()`` (alias ``plug()``) makes a new pair at the same
    paths, the cable plugged back in. As a context manager it is stopped on exit.

    >>> with PtyPair(tmp_path, "panel") as cable:    # doctest: +SKIP
    ...     cable.plug()
    ...     open_feed(cable.gateway); open_panel(cable.device)
    ...     cable.pull(); cable.plug()               # the cable pulled and back
    """

    name = "socat"

    def __init__(self, workdir: Path, name: str = "pty") -> None:
        super().__init__()
        wd = Path(workdir).resolve()
        _check_conf_path(wd)
        if "," in str(wd) or "," in name or any(c.isspace() for c in name):
            raise ValueError(f"socat link paths take no comma or whitespace: {wd}, {name!r}")
        self._workdir = wd
        self.label = name
        self.gateway = wd / f"{name}-gw"
        self.device = wd / f"{name}-dev"

    @property
    def log_path(self) -> Path:
        """File receiving socat's diagnostics (``-d -d``), one per pair."""
        return self.workdir / f"{self.label}-socat.log"

    def start(self, timeout_s: float = 5.0) -> None:
        """Start socat and wait until both links exist."""
        if self.running:
            raise RuntimeError(f"{self.name} {self.label} already running (pid {self.pid})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for link in (self.gateway, self.device):
            if link.is_symlink():  # left by a socat that was killed: not our new pair
                link.unlink()
        self._spawn([SOCAT_BIN, "-d", "-d", f"pty,raw,echo=0,link={self.gateway}",
                     f"pty,raw,echo=0,link={self.device}"])
        self._wait_ready(lambda: self.gateway.exists() and self.device.exists(), timeout_s)

    def plug(self) -> None:
        """The cable plugged in: ``start()``."""
        self.start()

    def pull(self) -> None:
        """The cable pulled out: ``stop()``."""
        self.stop()

    def _where(self) -> str:
        return f"at {self.gateway} and {self.device}"

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.gateway} {self.device} {state}>"


class Mosquitto(_ServerProcess):
    """A private Mosquitto 2.x broker on 127.0.0.1, anonymous, optionally persistent.

    >>> with Mosquitto() as mq:            # doctest: +SKIP
    ...     mq.start(tmp_path)
    ...     connect_to(mq.url)
    ...     mq.stop(); mq.start()          # broker restart, retained messages kept
    """

    name = "mosquitto"

    def __init__(self) -> None:
        super().__init__()
        self._persistence = True

    @property
    def url(self) -> str:
        """Broker address in the form firegrid's config takes: ``mqtt://127.0.0.1:<port>``."""
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        """Always 127.0.0.1: lab servers never listen beyond loopback."""
        return "127.0.0.1"

    @property
    def conf_path(self) -> Path:
        """The generated mosquitto.conf."""
        return self.workdir / "mosquitto.conf"

    def _log_tail(self) -> str:
        # Mosquitto writes most of its log to its own file, the rest to stderr.
        own = self.workdir / "mosquitto.log"
        head = _tail(own) + "\n" if own.exists() else ""
        return head + _tail(self.log_path)

    def start(
        self,
        workdir: Path | None = None,
        port: int | None = None,
        *,
        persistence: bool | None = None,
        timeout_s: float = 10.0,
        extra: list[str] | None = None,
    ) -> None:
        """Write mosquitto.conf into ``workdir`` and start the broker; wait until it accepts.

        ``extra`` are further mosquitto.conf lines (``max_queued_messages 5``).
        ``workdir``, ``port``, ``persistence`` and ``extra`` default to the previous start, so a
        bare ``start()`` after ``stop()`` restarts the same broker on the same port with
        its persistence file. A new port is picked on the first start when none is given.
        """
        wd, p = self._resolve(workdir, port)
        if persistence is not None:
            self._persistence = persistence
        if extra is not None:
            self._extra = list(extra)
        lines = [
            "# written by firmware_sim.lab; regenerated on every start",
            f"listener {p} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if self._persistence else 'false'}",
            f"persistence_location {wd}/",
            "persistence_file mosquitto.db",
            f"log_dest file {wd / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            *getattr(self, "_extra", []),
        ]
        if os.geteuid() == 0:
            # As root, mosquitto drops to user "mosquitto", which cannot write a private
            # workdir; naming root keeps it as the user who owns the workdir.
            lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
        self.conf_path.write_text("\n".join(lines) + "\n")
        self._spawn([MOSQUITTO_BIN, "-c", str(self.conf_path)])
        self._wait_ready(lambda: _port_open(p), timeout_s)


class InfluxDB(_ServerProcess):
    """A private InfluxDB 1.x (influxd) on 127.0.0.1 with auth off and data in ``workdir``.

    Tuned for tests: no usage reporting, no ``_internal`` monitor database, no
    continuous queries, no subscriber, quiet logs.
    """

    name = "influxd"

    def __init__(self, *, auth: bool = False) -> None:
        super().__init__()
        self._rpc_port: int | None = None
        self.auth = auth  # [http] auth-enabled: users and passwords, as a 1.x site runs it

    def create_admin(self, user: str, password: str) -> None:
        """With auth on, the first user must be an admin; InfluxDB allows creating it openly."""
        data = urllib.parse.urlencode(
            {"q": f"CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES"})
        with urllib.request.urlopen(f"{self.base_url}/query", data=data.encode(), timeout=5):
            pass

    def url(self, db: str) -> str:
        """URL of database ``db`` as firegrid's config takes it: ``http://127.0.0.1:<port>/<db>``."""
        return f"http://127.0.0.1:{self.port}/{db}"

    @property
    def base_url(self) -> str:
        """HTTP root of the server, e.g. for ``/ping``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def conf_path(self) -> Path:
        """The generated influxdb.conf."""
        return self.workdir / "influxdb.conf"

    def _ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/ping", timeout=0.5) as r:
                return int(r.status) == 204
        except (urllib.error.URLError, OSError):
            return False

    def start(
        self,
        workdir: Path | None = None,
        port: int | None = None,
        *,
        timeout_s: float = 20.0,
    ) -> None:
        """Write influxdb.conf into ``workdir`` and start influxd; wait for ``/ping`` = 204.

        A bare ``start()`` after ``stop()`` restarts on the same directories and ports, so
        the data written before is still there.
        """
        wd, p = self._resolve(workdir, port)
        if self._rpc_port is None or _port_open(self._rpc_port):
            self._rpc_port = free_port()
        # Keys checked against `influxd config` of Debian's 1.6.7. Unknown keys are
        # silently ignored by 1.6, so a typo here would not fail loudly. Debian renamed
        # upstream's `reporting-disabled = true` to `reporting-enabled` (default false);
        # both are written so either build stays quiet.
        conf = f"""\
# written by firmware_sim.lab; regenerated on every start
reporting-disabled = true
reporting-enabled = false
bind-address = "127.0.0.1:{self._rpc_port}"

[meta]
  dir = "{wd / "meta"}"
  logging-enabled = false

[data]
  dir = "{wd / "data"}"
  wal-dir = "{wd / "wal"}"
  query-log-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{p}"
  auth-enabled = {"true" if self.auth else "false"}
  log-enabled = false
  pprof-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false
  log-enabled = false

[logging]
  level = "warn"
  suppress-logo = true
"""
        self.conf_path.write_text(conf)
        self._spawn([INFLUXD_BIN, "-config", str(self.conf_path)])
        self._wait_ready(self._ping, timeout_s)


def influx_rows(base_url: str, db: str, q: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Run InfluxQL on ``/query`` and return every row as a dict (times in ns).

    Synchronous on purpose: tests and bench scripts read the audit trail back this way.
    """
    data = urllib.parse.urlencode({"db": db, "q": q, "epoch": "ns"}).encode()
    with urllib.request.urlopen(f"{base_url}/query", data=data, timeout=timeout) as resp:
        doc = json.loads(resp.read())
    out: list[dict[str, Any]] = []
    for series in doc["results"][0].get("series", []):
        cols = series["columns"]
        out.extend(dict(zip(cols, row, strict=True)) for row in series["values"])
    return out
