#!/usr/bin/env bash
# Set up and run the main job: the demo on the embedded model (offline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m vitlens_widgets "$@"
