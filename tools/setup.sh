#!/bin/sh
# Installs what ocirun's demo and tests need on a fresh Debian machine:
# Debian packages (only the missing ones) and a venv on /usr/bin/python3.
set -eu
cd "$(dirname "$0")/.."
need=""
for p in busybox-static libseccomp2 python3-venv iproute2 util-linux ${EXTRA_APT:-}; do
    dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
    echo "setup: apt-get install$need"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
[ "${SETUP_VENV:-1}" = 1 ] || exit 0   # `make demo` needs no test tools
[ -x .venv/bin/python ] || /usr/bin/python3 -m venv .venv
# reinstall only when requirements-dev.txt changed since the last install
stamp=.venv/.requirements.sha
sum=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
    .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
    echo "$sum" > "$stamp"
fi
