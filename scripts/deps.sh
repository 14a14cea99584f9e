#!/usr/bin/env bash
# Install the Debian 12 packages fleetq needs to build, test and benchmark
# (and the npm packages of clients/node, from its package-lock.json),
# but only those that are missing.  Needs root (or sudo) when something is
# missing; does nothing otherwise.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git
  libzmq3-dev libcurl4-openssl-dev libmsgpack-dev liblmdb-dev libssl-dev
  libprotobuf-c-dev protobuf-c-compiler protobuf-compiler libmicrohttpd-dev libjansson-dev
  libsystemd-dev scdoc man-db
  python3 python3-zmq python3-msgpack python3-cryptography python3-pytest
  python3-prometheus-client openssl
  lmdb-utils nghttp2-server
  nats-server libnats-dev
)
if [ "${FQ_DEPS_PERF:-0}" = 1 ]; then
  # linux-perf: the `perf report` profiles kept under perf/results (issue 17).
  PKGS+=(wrk redis-server gnuplot-nox libhiredis-dev linux-perf)
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
# The Node client (clients/node) and its tests need node and npm: Debian's
# packages unless a node with its npm is there already (another packaging
# of Node brings npm inside its nodejs package).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi

# clients/node's npm packages (zeromq ships prebuilt addons for Linux x64
# in the package itself: no native build, nothing fetched but the
# registry's tarballs), installed again only when package-lock.json changed.
node_modules() {
  local dir
  dir="$(cd "$(dirname "$0")/.." && pwd)/clients/node"
  [ -f "$dir/package-lock.json" ] || return 0
  if [ ! -f "$dir/node_modules/.package-lock.json" ] ||
     [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    echo "deps: npm ci in clients/node" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
}

if [ ${#missing[@]} -eq 0 ]; then
  node_modules
  exit 0
fi

echo "deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "deps: need root to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
node_modules
