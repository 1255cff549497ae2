#!/usr/bin/env bash
# Install, then segment the bundled example dataset (participant level).
# Outputs: ./demo_out (BIDS derivatives, one HTML QC report per subject); Nipype cache: ./demo_work.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
echo "[demo] segmenting the 8 images of examples/ds-spine-mini: about 3 minutes on 2 CPU cores (-v: every step)"
.venv/bin/lumbo-bids examples/ds-spine-mini demo_out participant -w demo_work "$@"
echo "[demo] done: derivatives in $(pwd)/demo_out; open the QC reports listed above (demo_out/sub-*.html)"
