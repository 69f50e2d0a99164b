#!/usr/bin/env bash
# Installs everything (pinned venvs, Mosquitto, Chromium, promtool) and runs format check, lint,
# types and all tests.
# Extra arguments go to pytest, e.g. scripts/test.sh -k protocol -x
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"

ensure_mosquitto
ensure_chromium
ensure_promtool
VENV="$(dev_venv)"
EDGE_VENV="$(edge_venv)"
export EDGE_VENV

say "device environment: edge-agent alone must not pull cloud libraries"
forbidden="$("$EDGE_VENV/bin/python" -m pip list --format=freeze 2>/dev/null \
  | grep -iE '^(tensorflow[a-z_-]*|keras|mlflow[a-z_-]*|pandas|tf2onnx|torch)==' || true)"
if [ -n "$forbidden" ]; then
  die "edge-agent pulled cloud-only packages: $forbidden"
fi
"$EDGE_VENV/bin/edge-agent" --version >/dev/null

say "ruff format --check"
"$VENV/bin/ruff" format --check .
say "ruff check"
"$VENV/bin/ruff" check .
say "mypy"
"$VENV/bin/mypy" edge-agent/src cloud-trainer/src tests benchmarks

say "pytest"
set +e
"$VENV/bin/python" -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then die "pytest collected no tests"; fi
exit "$rc"
