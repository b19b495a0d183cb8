"""Broker users, passwords and ACLs for one site: Mosquitto's ``password_file`` and ``acl_file``.

Every client of the site's broker logs in as itself, and the ACL lets it write only
what it speaks for (see docs/security.md):

- a native MQTT device (username = device id) writes exactly ``signal/<its id>`` and
  reads ``device/<its id>`` (the receipt of its alarms);
- a responder (username = responder id) writes ``page/<its id>/ack`` and
  ``incident/+/close`` and reads ``page/<its id>``, ``incident/#`` and ``status``;
  a grid worker (tier 0) also writes ``confirm/+/reply`` and reads ``confirm/#``;
- ``firegrid-gateway`` reads and writes the whole ``firegrid/<site>/#`` tree (and the
  base topics of Zigbee2MQTT/Frigate feeds); ``firegrid-gateway-bulk``, its second
  session for telemetry (docs/mqtt.md, two sessions), reads ``signal/#`` with the same
  password;
- ``dutyroom`` (optional) and any ``--viewer NAME`` read ``firegrid/<site>/#`` and write
  nothing;
- a Zigbee2MQTT or Frigate feed gets one user named after the feed, confined to its
  base topic.

ACL entries are explicit per-user ``topic`` lines, not ``%u`` patterns, so the file
says in plain words who may do what. Passwords are random (``secrets.token_urlsafe``),
kept in ``credentials`` (mode 0600) for the installer to hand out, and hashed into
``passwd`` by ``mosquitto_passwd -U`` (the plain text never reaches a command line).
Running again keeps the passwords of users that still exist, so devices already
provisioned keep working; ``--rotate`` makes new ones for everybody.

    python -m gateway.brokerconf SITE.yaml OUTDIR [--no-dutyroom] [--viewer NAME]... [--rotate]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import ID, ConfigError, FrigateFeed, Site, Zigbee2MqttFeed, load_site
from gateway.mqtt_link import BROKER_DROPPED, BULK_SUFFIX

GATEWAY_USER = "firegrid-gateway"
GATEWAY_BULK_USER = GATEWAY_USER + BULK_SUFFIX  # same password: the gateway has one
DUTYROOM_USER = "dutyroom"
MOSQUITTO_PASSWD = "mosquitto_passwd"

PASSWD_FILE = "passwd"
ACL_FILE = "acl"
CREDENTIALS_FILE = "credentials"
GATEWAY_PASSWORD_FILE = "firegrid-gateway.password"

_TOPIC_LEVELS = re.compile(r"^[^\s+#]+(/[^\s+#]+)*$")  # a plain topic: no wildcards, no spaces


class BrokerConfError(Exception):
    """A site that cannot be turned into broker users (name clash, bad topic, no tool)."""

    def __init__(self, message: str, *, in_site: bool = True):
        super().__init__(message)
        self.in_site = in_site  # the site file must change (exit 2), not the machine (1)


@dataclass
class BrokerUser:
    """One MQTT login and the topics it may read and write."""

    name: str
    role: str  # gateway, dutyroom, viewer, device, responder, worker, feed
    read: list[str] = field(default_factory=list)
    write: list[str] = field(default_factory=list)

    def acl_lines(self) -> list[str]:
        lines = [f"user {self.name}"]
        both = [t for t in self.read if t in self.write]
        lines += [f"topic readwrite {t}" for t in both]
        lines += [f"topic write {t}" for t in self.write if t not in both]
        lines += [f"topic read {t}" for t in self.read if t not in both]
        return lines


def broker_users(site: Site, *, dutyroom: bool = True,
                 viewers: Iterable[str] = ()) -> list[BrokerUser]:
    """The site's MQTT users with their ACLs; raises BrokerConfError on a name clash.

    ``viewers`` are further read-only logins like ``dutyroom``: one per dashboard or
    screen, since the secure broker config ties the client id to the username and two
    connections with one login throw each other off.
    """
    p = f"firegrid/{site.site}/"
    feed_topics: list[tuple[str, str]] = []  # (feed name, base topic)
    for feed in site.feeds:
        if isinstance(feed, Zigbee2MqttFeed | FrigateFeed):
            base = feed.base_topic.strip("/")
            if not _TOPIC_LEVELS.match(base):
                raise BrokerConfError(f"feed {feed.name}: base_topic {feed.base_topic!r} must be "
                                      "a plain topic (no spaces, + or #)")
            feed_topics.append((feed.name, base))

    users = [BrokerUser(GATEWAY_USER, "gateway", read=[p + "#", BROKER_DROPPED],
                        write=[p + "#"]),
             # the gateway's bulk lane (docs/mqtt.md, two sessions): reads signals, writes nothing
             BrokerUser(GATEWAY_BULK_USER, "gateway", read=[p + "signal/#", BROKER_DROPPED])]
    for _, base in feed_topics:
        users[0].read.append(f"{base}/#")
        users[0].write.append(f"{base}/#")
    if dutyroom:
        users.append(BrokerUser(DUTYROOM_USER, "dutyroom", read=[p + "#"]))
    for name in viewers:
        if not re.match(ID, name):
            raise BrokerConfError(f"viewer name {name!r}: letters, digits, '.', '_', '-' only")
        users.append(BrokerUser(name, "viewer", read=[p + "#"]))
    for name, base in feed_topics:
        users.append(BrokerUser(name, "feed", read=[f"{base}/#"], write=[f"{base}/#"]))
    for d in site.devices:
        if d.feed is None:  # devices on other feeds never log in to the broker themselves
            # it reads its own device/<id> for the receipt of its alarms (docs/mqtt.md)
            users.append(BrokerUser(d.id, "device", write=[f"{p}signal/{d.id}"],
                                    read=[f"{p}device/{d.id}"]))
    for r in site.responders:
        user = BrokerUser(
            r.id, "worker" if r.tier == 0 else "responder",
            read=[f"{p}page/{r.id}", f"{p}incident/#", f"{p}status"],
            write=[f"{p}page/{r.id}/ack", f"{p}incident/+/close"],
        )
        if r.tier == 0:
            user.read.append(f"{p}confirm/#")
            user.write.append(f"{p}confirm/+/reply")
        users.append(user)

    seen: dict[str, str] = {}
    for u in users:
        if u.name in seen:
            raise BrokerConfError(
                f"MQTT username {u.name!r} would be both a {seen[u.name]} and a {u.role}: "
                "rename one of them in the site file")
        seen[u.name] = u.role
    return users


def acl_text(site: Site, users: Iterable[BrokerUser]) -> str:
    """Mosquitto acl_file: no topic lines before the first ``user`` (anonymous gets nothing)."""
    out = [
        f"# Mosquitto ACL for firegrid site {site.site}; written by gateway.brokerconf.",
        "# Regenerate rather than edit: python -m gateway.brokerconf SITE.yaml OUTDIR",
        "# Anything not granted here is refused; a refused publish is dropped silently.",
    ]
    for u in users:
        out += ["", f"# {u.role}", *u.acl_lines()]
    return "\n".join(out) + "\n"


def read_credentials(path: Path) -> dict[str, str]:
    """username -> password from an earlier ``credentials`` file (missing file: empty)."""
    creds: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return creds
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and not line.startswith("#"):
            creds[fields[0]] = fields[2]
    return creds


def credentials_text(site: Site, users: Iterable[BrokerUser], passwords: dict[str, str]) -> str:
    lines = [
        f"# MQTT credentials for firegrid site {site.site}; written by gateway.brokerconf.",
        "# SECRET: hand each line to the device or person it names, then keep this file",
        "# offline or mode 0600. Columns: username role password",
    ]
    lines += [f"{u.name} {u.role} {passwords[u.name]}" for u in users]
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to ``path`` with ``mode`` from the first byte on, then rename into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _hash_passwords(outdir: Path, plain: str, tool: str) -> None:
    """``user:password`` lines -> ``passwd`` hashed by ``mosquitto_passwd -U`` (in place)."""
    exe = shutil.which(tool) or (tool if os.access(tool, os.X_OK) else None)
    if exe is None:
        raise BrokerConfError(f"{tool} not found: install Debian's mosquitto package "
                              "(it provides /usr/bin/mosquitto_passwd)", in_site=False)
    fd, tmp = tempfile.mkstemp(prefix=".passwd.", dir=outdir)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(plain)
        done = subprocess.run([exe, "-U", tmp], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip().splitlines()
            raise BrokerConfError(f"{tool} -U failed (exit {done.returncode})"
                                  + (f": {why[-1]}" if why else ""), in_site=False)
        os.replace(tmp, outdir / PASSWD_FILE)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@dataclass
class Written:
    outdir: Path
    users: list[BrokerUser]
    new_passwords: list[str]  # usernames that got a new password this time


def write_broker_files(site: Site, outdir: Path, *, dutyroom: bool = True,
                       viewers: Iterable[str] = (), rotate: bool = False,
                       mosquitto_passwd: str = MOSQUITTO_PASSWD) -> Written:
    """Write passwd, acl, credentials and firegrid-gateway.password into ``outdir``."""
    users = broker_users(site, dutyroom=dutyroom, viewers=viewers)
    outdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    old = {} if rotate else read_credentials(outdir / CREDENTIALS_FILE)
    passwords: dict[str, str] = {}
    fresh: list[str] = []
    for u in users:
        if u.name == GATEWAY_BULK_USER:
            continue  # below: the gateway's own password
        if u.name in old:
            passwords[u.name] = old[u.name]
        else:
            passwords[u.name] = secrets.token_urlsafe(18)  # 144 bits, no ':' or spaces
            fresh.append(u.name)
    passwords[GATEWAY_BULK_USER] = passwords[GATEWAY_USER]

    _hash_passwords(outdir, "".join(f"{u.name}:{passwords[u.name]}\n" for u in users),
                    mosquitto_passwd)
    _write_atomic(outdir / ACL_FILE, acl_text(site, users), 0o644)
    _write_atomic(outdir / CREDENTIALS_FILE, credentials_text(site, users, passwords), 0o600)
    _write_atomic(outdir / GATEWAY_PASSWORD_FILE, passwords[GATEWAY_USER] + "\n", 0o600)
    return Written(outdir, users, fresh)


def main(argv: list[str] | None = None) -> int:
    """``python -m gateway.brokerconf SITE.yaml OUTDIR``: 0 done, 2 bad site, 1 other failure."""
    ap = argparse.ArgumentParser(
        prog="python -m gateway.brokerconf",
        description="Write Mosquitto password and ACL files for a firegrid site.")
    ap.add_argument("site", type=Path, help="site YAML file")
    ap.add_argument("outdir", type=Path, help="directory for passwd, acl, credentials")
    ap.add_argument("--no-dutyroom", action="store_true",
                    help=f"no read-only {DUTYROOM_USER!r} user")
    ap.add_argument("--viewer", action="append", default=[], metavar="NAME",
                    help="another read-only login like dutyroom (repeatable)")
    ap.add_argument("--rotate", action="store_true",
                    help="new passwords for every user (default: keep existing ones)")
    ap.add_argument("--mosquitto-passwd", default=MOSQUITTO_PASSWD, metavar="PATH",
                    help="mosquitto_passwd binary [%(default)s]")
    args = ap.parse_args(argv)
    try:
        site = load_site(args.site)
    except ConfigError as exc:
        print("\n".join(exc.lines()), file=sys.stderr)
        return 2
    try:
        done = write_broker_files(site, args.outdir, dutyroom=not args.no_dutyroom,
                                  viewers=args.viewer, rotate=args.rotate,
                                  mosquitto_passwd=args.mosquitto_passwd)
    except BrokerConfError as exc:
        print(f"{args.site}: {exc}", file=sys.stderr)
        return 2 if exc.in_site else 1
    except OSError as exc:
        print(f"{args.outdir}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    roles: dict[str, int] = {}
    for u in done.users:
        roles[u.role] = roles.get(u.role, 0) + 1
    summary = ", ".join(f"{n} {role}" for role, n in roles.items())
    print(f"{done.outdir}: {PASSWD_FILE}, {ACL_FILE}, {CREDENTIALS_FILE} (0600), "
          f"{GATEWAY_PASSWORD_FILE} (0600) for site {site.site}: {len(done.users)} users "
          f"({summary}); {len(done.new_passwords)} new passwords")
    return 0


if __name__ == "__main__":
    sys.exit(main())
