#!/bin/sh
# One entry point for a fresh Debian machine (run as root):
#   ./setup.sh demo   install what is missing, then run `firegrid demo`
#   ./setup.sh test   install what is missing, then run ruff and the whole test suite
# Installs the Debian packages mosquitto, mosquitto-clients, influxdb, socat and
# libnet-snpp-perl (a third-party SNPP server for the tests; servers are started by
# the demo and the tests themselves, on free loopback ports) and a virtual environment
# in .venv with firegrid and its pinned dependencies.
set -eu
cd "$(dirname "$0")"

need=""
for pkg in mosquitto mosquitto-clients influxdb socat systemd libnet-snpp-perl; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
done
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need="$need python3-venv python3-pip"
command -v python3 >/dev/null 2>&1 || need="$need python3"
if [ -n "$need" ]; then
    echo "setup: installing Debian packages:$need"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # policy-rc.d: do not start the packaged system services; firegrid starts its own
    made_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=yes
    fi
    apt-get install -y -q --no-install-recommends $need
    [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

case "${1:-demo}" in
    demo)
        shift || true
        exec .venv/bin/firegrid demo "$@" ;;
    test)
        shift || true
        .venv/bin/ruff check .
        exec .venv/bin/python -m pytest -q "$@" ;;
    *)
        echo "usage: $0 demo|test" >&2
        exit 2 ;;
esac
