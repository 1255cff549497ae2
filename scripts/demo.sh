#!/usr/bin/env bash
# Install, then segment the bundled example dataset (participant level).
# Outputs: ./demo_out (BIDS derivatives); Nipype cache: ./demo_work.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/lumbo-bids examples/ds-spine-mini demo_out participant -w demo_work "$@"
echo "[demo] done: derivatives in $(pwd)/demo_out"
