#!/usr/bin/env bash
# The main job end to end on embedded defaults (private Mosquitto, local MLflow store).
# Extra arguments go to `cloud-trainer demo`, e.g. scripts/demo.sh --workdir runs/demo
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
ensure_mosquitto
VENV="$(dev_venv)"
exec "$VENV/bin/cloud-trainer" demo "$@"
