#!/bin/sh
# make-certs.sh: a private CA for one firegrid site, the broker's server certificate
# and, optionally, client certificates. Needs only openssl (1.1.1 or 3.x).
#
#   deploy/mosquitto/make-certs.sh [options] DIR NAME [NAME...]
#
#   DIR    where to write (created mode 0700)
#   NAME   host names and IP addresses clients use to reach the broker, e.g.
#          "gw-taibai.lan 192.168.10.2 127.0.0.1"; all go into the server
#          certificate's subjectAltName, the first is also its CN. Clients check it:
#          connect with a name (or IP) that is in this list.
#   options:
#     --client NAME   also make clients/NAME.crt + .key (repeatable), CN=NAME; for
#                     firmware that wants TLS client authentication (the broker only
#                     demands one with require_certificate true)
#     --site NAME     put the site name into the certificates' subjects
#     --days N        validity of server and client certificates [825]
#     --ca-days N     validity of a new CA [3650]
#     --rsa           RSA 2048 keys instead of EC P-256 (very old device TLS stacks)
#
# Writes: ca.crt (0644, hand it to every client: FIREGRID_MQTT_CA, devices, pagers),
#         ca.key (0600, keep offline once all certificates are made),
#         server.crt (0644), server.key (0600), server.names (the names it was made for),
#         clients/NAME.crt|key (0644|0600).
#
# Idempotent: an existing CA and existing keys are kept. The server certificate is
# re-issued (same key) only when it is missing, not signed by ca.crt, lists other
# names than asked for, or expires within 30 days; a client certificate likewise.
# Rerunning with the same arguments changes nothing, so it is safe in an installer.
# To start over, delete DIR.
#
# Install for Debian's mosquitto (it reads the files after dropping to user mosquitto):
#   install -d -o root -g mosquitto -m 0750 /etc/mosquitto/firegrid/certs
#   install -o root -g mosquitto -m 0644 DIR/ca.crt DIR/server.crt /etc/mosquitto/firegrid/certs/
#   install -o root -g mosquitto -m 0640 DIR/server.key /etc/mosquitto/firegrid/certs/
# See docs/security.md.
set -eu

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

clients=""
site=""
days=825
ca_days=3650
keytype=ec
while [ $# -gt 0 ]; do
    case "$1" in
        --client) [ $# -ge 2 ] || usage; clients="$clients $2"; shift 2 ;;
        --site) [ $# -ge 2 ] || usage; site=$2; shift 2 ;;
        --days) [ $# -ge 2 ] || usage; days=$2; shift 2 ;;
        --ca-days) [ $# -ge 2 ] || usage; ca_days=$2; shift 2 ;;
        --rsa) keytype=rsa; shift ;;
        -h|--help) usage ;;
        --) shift; break ;;
        -*) echo "make-certs.sh: unknown option $1" >&2; usage ;;
        *) break ;;
    esac
done
[ $# -ge 2 ] || usage
dir=$1; shift
command -v openssl >/dev/null || { echo "make-certs.sh: openssl not found" >&2; exit 1; }
for n in "$@" $clients; do
    case "$n" in
        *[!A-Za-z0-9.:_-]*|"") echo "make-certs.sh: bad name: '$n'" >&2; exit 2 ;;
    esac
done

org="firegrid${site:+ $site}"
umask 077
mkdir -p "$dir" "$dir/clients"
chmod 0700 "$dir"
cd "$dir"
tmp=$(mktemp -d "./.make-certs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

newkey() {  # newkey FILE: a private key, mode 0600, unless it exists
    [ -s "$1" ] && return 0
    if [ "$keytype" = rsa ]; then
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null
    else
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
    fi
    chmod 0600 "$1"
}

san_of() {  # san_of NAME...: "DNS:gw.lan,IP:192.168.10.2"
    out=""
    for n in "$@"; do
        case "$n" in
            *:*) t="IP:$n" ;;             # IPv6
            *[!0-9.]*) t="DNS:$n" ;;      # a host name
            *) t="IP:$n" ;;               # IPv4
        esac
        out="${out:+$out,}$t"
    done
    printf '%s' "$out"
}

# still_good CRT [SAN]: the certificate exists, is signed by ca.crt, is valid for 30
# more days and (SAN given) was issued for exactly those names (recorded in CRT.names)
still_good() {
    [ -s "$1" ] || return 1
    openssl verify -CAfile ca.crt "$1" >/dev/null 2>&1 || return 1
    openssl x509 -in "$1" -noout -checkend 2592000 >/dev/null 2>&1 || return 1
    [ -z "$2" ] && return 0
    [ "$(cat "${1%.crt}.names" 2>/dev/null)" = "$2" ]
}

# issue CRT KEY CN EKU [SAN]: a certificate for KEY signed by the CA
issue() {
    [ -s ca.key ] || { echo "make-certs.sh: $dir/$1 needs a new certificate but" \
        "$dir/ca.key is not here: bring the CA key back for this run" >&2; exit 1; }
    cat > "$tmp/ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = $4
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EOF
    [ -n "${5:-}" ] && echo "subjectAltName = $5" >> "$tmp/ext"
    openssl req -new -key "$2" -subj "/O=$org/CN=$3" -out "$tmp/csr" 2>/dev/null
    openssl x509 -req -in "$tmp/csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -CAserial "$tmp/serial" -days "$days" -sha256 -extfile "$tmp/ext" \
        -out "$tmp/crt" 2>/dev/null
    chmod 0644 "$tmp/crt"
    mv "$tmp/crt" "$1"
    [ -n "${5:-}" ] && { printf '%s\n' "$5" > "${1%.crt}.names"; chmod 0644 "${1%.crt}.names"; }
    echo "make-certs.sh: wrote $dir/$1 (CN=$3${5:+, $5})"
}

# 1. the site CA (kept when ca.crt exists; ca.key may then be away, stored offline)
if [ ! -s ca.crt ]; then
    if [ -s ca.key ]; then
        echo "make-certs.sh: $dir/ca.key without ca.crt: restore ca.crt or delete both" >&2
        exit 1
    fi
    newkey ca.key
    openssl req -new -x509 -key ca.key -sha256 -days "$ca_days" \
        -subj "/O=$org/CN=$org CA" \
        -addext "basicConstraints = critical, CA:TRUE, pathlen:0" \
        -addext "keyUsage = critical, keyCertSign, cRLSign" \
        -addext "subjectKeyIdentifier = hash" \
        -out "$tmp/ca.crt" 2>/dev/null
    chmod 0644 "$tmp/ca.crt"
    mv "$tmp/ca.crt" ca.crt
    echo "make-certs.sh: wrote $dir/ca.crt (new CA)"
fi

# 2. the broker's server certificate
san=$(san_of "$@")
newkey server.key
if ! still_good server.crt "$san"; then
    issue server.crt server.key "$1" serverAuth "$san"
fi

# 3. client certificates
for c in $clients; do
    newkey "clients/$c.key"
    if ! still_good "clients/$c.crt" ""; then
        issue "clients/$c.crt" "clients/$c.key" "$c" clientAuth
    fi
done
chmod 0700 clients
exit 0
