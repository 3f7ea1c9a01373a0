#!/bin/sh
# Install what building and testing aviary needs on Debian 12 (bookworm).
# Runs apt-get as root, through sudo when started by another user.
# The one list of packages: README and .ci/run both use this script.
set -eu

PACKAGES="build-essential autoconf automake libtool pkg-config
libevent-dev libssl-dev libsqlite3-dev libwebsockets-dev check
mosquitto-clients python3 python3-paho-mqtt openssl
clang libclang-rt-14-dev clang-format"
# tests/integration/test_http.py parses /metrics with the Prometheus client's parser.
PACKAGES="$PACKAGES python3-prometheus-client"
# tests/integration/test_browser.py: Debian's Chromium, and npm to fetch MQTT.js.
PACKAGES="$PACKAGES chromium nodejs"
# make deb (dpkg-buildpackage with debhelper), .ci/deb-check (debootstrap; ip, to
# bring up loopback in its network namespace), and systemd's pkg-config file, which
# says where configure installs the unit.
PACKAGES="$PACKAGES debhelper debootstrap iproute2 systemd"
# The cluster (doc/ARCHITECTURE.md): its Redis client library, and the Redis
# server that tests/integration/test_cluster.py starts.
PACKAGES="$PACKAGES libhiredis-dev redis-server"
# Debian's npm only when there is none: another vendor's nodejs carries its own and
# conflicts with Debian's.
command -v npm >/dev/null 2>&1 || PACKAGES="$PACKAGES npm"

if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1; then
    as_root="sudo"
else
    echo "install-deps.sh: run me as root (or install sudo)" >&2
    exit 1
fi

$as_root apt-get update </dev/null
# shellcheck disable=SC2086 # the package list is meant to split into words
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y $PACKAGES </dev/null

# The MQTT.js browser bundle, at the version tests/browser/package.json pins.
(cd "$(dirname "$0")/../tests/browser" &&
    npm install --no-package-lock --no-audit --no-fund --ignore-scripts </dev/null)
