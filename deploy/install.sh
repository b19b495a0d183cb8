#!/bin/sh
# Install firegrid as an appliance on Debian 12, as root:
#   deploy/install.sh SITE.yaml            install, enable and start the service
#   deploy/install.sh --root DIR SITE.yaml lay the files out under DIR only (no users,
#                                          no packages, no venv, no systemctl): to inspect
#   deploy/install.sh --secure NAMES SITE.yaml
#       the secure broker (docs/security.md): logins and ACLs for every device and
#       responder of the site (gateway.brokerconf), a site CA and a server certificate
#       for NAMES (comma separated: every name and address clients use, e.g.
#       gw.lan,192.168.10.2,127.0.0.1), firegrid-secure.conf instead of firegrid.conf,
#       and the gateway logging in with its password file. Rerun after changing the
#       site: passwords and certificates are kept, logins follow the site file.
# What it does (docs/deploy.md): Debian packages mosquitto and influxdb; a system user
# `firegrid` in `dialout`; /opt/firegrid with a virtual environment; /etc/firegrid/site.yaml
# (checked first) and /etc/firegrid/env (created once, never overwritten); the systemd
# unit, the Mosquitto snippet and the journald limits; then `systemctl enable --now`.
set -eu
root=""; secure=""
while [ $# -gt 1 ]; do
    case "$1" in
        --root) root=$2; shift 2 ;;
        --secure) secure=$2; shift 2 ;;
        *) break ;;
    esac
done
site=${1:?usage: deploy/install.sh [--root DIR] [--secure NAMES] SITE.yaml}
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
mqtt_url="mqtt://127.0.0.1:1883"
[ -z "$secure" ] || mqtt_url="mqtt://firegrid-gateway@127.0.0.1:1883"
if [ ! -e "$etc/firegrid/env" ]; then
    umask 027
    printf '%s\n' "# read by firegrid.service; keep secrets here, not in the unit or site file" \
        "FIREGRID_MQTT=$mqtt_url" \
        "FIREGRID_INFLUX=http://127.0.0.1:8086/firegrid" > "$etc/firegrid/env"
    [ -z "$secure" ] || printf '%s\n' \
        "FIREGRID_MQTT_PASSWORD_FILE=/etc/firegrid/mqtt.password" >> "$etc/firegrid/env"
    chmod 0640 "$etc/firegrid/env"
    umask 022
elif [ -n "$secure" ] && ! grep -q "firegrid-gateway@" "$etc/firegrid/env"; then
    echo "install.sh: $etc/firegrid/env exists and is kept; for the secure broker set" \
        "FIREGRID_MQTT=$mqtt_url and FIREGRID_MQTT_PASSWORD_FILE=/etc/firegrid/mqtt.password" >&2
fi
install -D -m 0644 "$src/deploy/systemd/firegrid.service" "$etc/systemd/system/firegrid.service"
if [ -z "$secure" ]; then
    install -D -m 0644 "$src/deploy/mosquitto/firegrid.conf" "$etc/mosquitto/conf.d/firegrid.conf"
else
    # logins and ACLs from the site file; the CA stays in a root-only directory (move
    # ca.key offline once every certificate is made: docs/security.md)
    py=${FIREGRID_PYTHON:-$opt/.venv/bin/python}
    work="$etc/firegrid/broker"; ca="$etc/firegrid/ca"
    install -d -m 0700 "$work" "$ca"
    (cd "$opt" && "$py" -m gateway.brokerconf "$etc/firegrid/site.yaml" "$work")
    site_name=$(sed -n 's/^site:[[:space:]]*\([a-z0-9-]*\).*/\1/p' "$etc/firegrid/site.yaml")
    # shellcheck disable=SC2086 # NAMES is a comma separated list: one argument each
    sh "$src/deploy/mosquitto/make-certs.sh" --site "${site_name:-firegrid}" "$ca" \
        $(echo "$secure" | tr ',' ' ')
    auth="$etc/mosquitto/firegrid"
    install -d -m 0750 "$auth" "$auth/certs"
    install -m 0640 "$work/passwd" "$work/acl" "$auth/"
    install -m 0644 "$ca/ca.crt" "$ca/server.crt" "$auth/certs/"
    install -m 0640 "$ca/server.key" "$auth/certs/"
    install -m 0640 "$work/firegrid-gateway.password" "$etc/firegrid/mqtt.password"
    install -D -m 0644 "$src/deploy/mosquitto/firegrid-secure.conf" \
        "$etc/mosquitto/conf.d/firegrid.conf"
    if [ -z "$root" ]; then
        chgrp -R mosquitto "$auth"
        chgrp firegrid /etc/firegrid/mqtt.password
    fi
    echo "install.sh: logins in $work/credentials (hand out, then lock away);" \
        "site CA in $ca (move ca.key offline)"
fi
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
