#!/bin/sh
# Install firegrid as an appliance on Debian 12, as root:
#   deploy/install.sh SITE.yaml            install, enable and start the service
#   deploy/install.sh --root DIR SITE.yaml lay the files out under DIR only (no users,
#                                          no packages, no venv, no systemctl): to inspect
# What it does (docs/deploy.md): Debian packages mosquitto and influxdb; a system user
# `firegrid` in `dialout`; /opt/firegrid with a virtual environment; /etc/firegrid/site.yaml
# (checked first) and /etc/firegrid/env (created once, never overwritten); the systemd
# unit, the Mosquitto snippet and the journald limits; then `systemctl enable --now`.
set -eu
root=""
if [ "${1:-}" = "--root" ]; then root=$2; shift 2; fi
site=${1:?usage: deploy/install.sh [--root DIR] SITE.yaml}
src=$(cd "$(dirname "$0")/.." && pwd)
opt="$root/opt/firegrid"; etc="$root/etc"

if [ -z "$root" ]; then
    [ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 2; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends mosquitto influxdb python3-venv
    id firegrid >/dev/null 2>&1 || useradd --system --user-group --groups dialout \
        --no-create-home --home-dir /var/lib/firegrid --shell /usr/sbin/nologin firegrid
fi

install -d -m 0755 "$opt"
# the source tree without its own venv or caches
(cd "$src" && tar --exclude=.venv --exclude=.git --exclude='__pycache__' -cf - .) \
    | (cd "$opt" && tar -xf -)
if [ -z "$root" ]; then
    python3 -m venv "$opt/.venv"
    "$opt/.venv/bin/pip" install -q "$opt"
    "$opt/.venv/bin/firegrid" check-config "$site"
fi

install -d -m 0755 "$etc/firegrid"
install -m 0640 "$site" "$etc/firegrid/site.yaml"
if [ ! -e "$etc/firegrid/env" ]; then
    umask 027
    printf '%s\n' "# read by firegrid.service; keep secrets here, not in the unit or site file" \
        "FIREGRID_MQTT=mqtt://127.0.0.1:1883" \
        "FIREGRID_INFLUX=http://127.0.0.1:8086/firegrid" > "$etc/firegrid/env"
    chmod 0640 "$etc/firegrid/env"
fi
install -D -m 0644 "$src/deploy/systemd/firegrid.service" "$etc/systemd/system/firegrid.service"
install -D -m 0644 "$src/deploy/mosquitto/firegrid.conf" "$etc/mosquitto/conf.d/firegrid.conf"
install -D -m 0644 "$src/deploy/journald/firegrid.conf" \
    "$etc/systemd/journald.conf.d/firegrid.conf"

if [ -z "$root" ]; then
    chgrp firegrid /etc/firegrid/site.yaml /etc/firegrid/env
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        systemctl restart systemd-journald mosquitto
        systemctl enable --now firegrid
        echo "firegrid installed; follow it with: journalctl -u firegrid -f"
    else
        echo "firegrid installed; systemd is not running here, start it with systemctl later"
    fi
fi
