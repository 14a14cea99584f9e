#!/usr/bin/env bash
# Install the Debian 12 packages fleetq needs to build, test and benchmark,
# but only those that are missing.  Needs root (or sudo) when something is
# missing; does nothing otherwise.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git
  libzmq3-dev libcurl4-openssl-dev libmsgpack-dev liblmdb-dev libssl-dev
  libprotobuf-c-dev protobuf-c-compiler libmicrohttpd-dev libjansson-dev
  libsystemd-dev scdoc man-db
  python3 python3-zmq python3-msgpack python3-cryptography python3-prometheus-client openssl
  lmdb-utils nghttp2-server
)
if [ "${FQ_DEPS_PERF:-0}" = 1 ]; then
  PKGS+=(wrk redis-server gnuplot-nox libhiredis-dev)
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "deps: need root to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
