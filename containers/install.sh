#!/usr/bin/env bash
# Install lumbo_bids into /opt/lumbo_bids (a venv on Debian's Python 3.11). Shared by the
# Dockerfile and the Singularity recipe so that the two images cannot drift.
# Usage: install.sh SRC_DIR [cpu|gpu]   (gpu: tensorflow[and-cuda] instead of tensorflow-cpu)
set -euo pipefail
SRC=${1:?SRC_DIR}
FLAVOUR=${2:-cpu}
case "$FLAVOUR" in cpu|gpu) ;; *) echo "install.sh: flavour must be cpu or gpu, got '$FLAVOUR'" >&2; exit 64;; esac
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates >/dev/null
rm -rf /var/lib/apt/lists/*
python3 -m venv /opt/lumbo_bids
/opt/lumbo_bids/bin/python -m pip install --no-cache-dir --quiet --upgrade pip
# the project with its pinned dependencies (pyproject.toml), not editable: /opt holds everything
/opt/lumbo_bids/bin/python -m pip install --no-cache-dir --quiet "$SRC[$FLAVOUR]"
install -m 0755 "$SRC/run.py" /opt/lumbo_bids/run.py
/opt/lumbo_bids/bin/python /opt/lumbo_bids/run.py --version | tee /opt/lumbo_bids/VERSION
# byte-compile now: the container file system is read-only at run time
/opt/lumbo_bids/bin/python -m compileall -q /opt/lumbo_bids/lib >/dev/null || true
