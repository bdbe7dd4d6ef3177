#!/usr/bin/env bash
# Debian packages the arena uses: real Fashion-MNIST (the fmnist-cnn workload) and PostgreSQL
# (the scale-out tests start a throwaway server). Installs what is missing with apt-get (as root,
# or through sudo); elsewhere prints what to install and carries on (the workload then stops with
# a clear error, the PostgreSQL tests skip).
set -uo pipefail
need=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
if [ "${1:-}" = "--with-postgres" ]; then
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
    echo "note: install ${need[*]} (Debian/Ubuntu packages) for the full arena and test suite" >&2
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q "${need[@]}" >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q "${need[@]}" >/dev/null; } \
    || echo "note: could not install ${need[*]}; install them for the full arena and test suite" >&2
exit 0
