#!/usr/bin/env bash
# Installs everything (pinned venvs, Mosquitto, GStreamer's RTSP server, Chromium, promtool,
# nats-server, PostgreSQL,
# the camera model's cut-out stamps)
# and runs format check, lint, types and all tests.
# Extra arguments go to pytest, e.g. scripts/test.sh -k protocol -x
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"

ensure_mosquitto
ensure_rtsp
ensure_chromium
ensure_promtool
ensure_nats
ensure_postgres
ensure_stamps
export EDGE_MLOPS_STAMPS="$CACHE/stamps"
VENV="$(dev_venv)"
EDGE_VENV="$(edge_venv)"
STATION_VENV="$(station_venv)"
export EDGE_VENV STATION_VENV

say "device environment: edge-agent alone must not pull cloud libraries"
forbidden="$("$EDGE_VENV/bin/python" -m pip list --format=freeze 2>/dev/null \
  | grep -iE '^(tensorflow[a-z_-]*|keras|mlflow[a-z_-]*|pandas|tf2onnx|torch)==' || true)"
if [ -n "$forbidden" ]; then
  die "edge-agent pulled cloud-only packages: $forbidden"
fi
"$EDGE_VENV/bin/edge-agent" --version >/dev/null
say "station environment: edge-agent without the camera extra has no OpenCV"
if "$STATION_VENV/bin/python" -m pip list --format=freeze 2>/dev/null | grep -iq '^opencv'; then
  die "the station environment has OpenCV: it must come only with edge-agent[camera]"
fi
"$STATION_VENV/bin/edge-agent" --version >/dev/null
# Both device environments came from hashed locks (pip --require-hashes); their SBOMs are
# written with each build and checked against the locks by tests/integration/test_supply_chain.py.
export EDGE_MLOPS_SBOM_DIR="$ROOT/build/sbom"
"$ROOT/scripts/sbom.sh" "$EDGE_VENV" "$EDGE_MLOPS_SBOM_DIR/edge-agent-camera.cdx.json"
"$ROOT/scripts/sbom.sh" "$STATION_VENV" "$EDGE_MLOPS_SBOM_DIR/edge-agent-station.cdx.json"

say "ruff format --check"
"$VENV/bin/ruff" format --check .
say "ruff check"
"$VENV/bin/ruff" check .
say "mypy"
"$VENV/bin/mypy" edge-agent/src cloud-trainer/src tests benchmarks

# The device side under arm64 emulation (cached rootfs: a few minutes; first build ~10 min).
# A skip (no root, no binfmt_misc, EDGE_MLOPS_ARM64=skip) is reported, not failed; a failure
# fails the run after pytest. tests/integration/test_arm64_check.py reads its result file.
# EDGE_MLOPS_ARM64=skip leaves it out (reported as skipped, with that reason).
export EDGE_MLOPS_ARM64="${EDGE_MLOPS_ARM64:-run}"
say "arm64 device check (scripts/check-arm64.sh, EDGE_MLOPS_ARM64=$EDGE_MLOPS_ARM64)"
export EDGE_MLOPS_ARM64_RESULT="${EDGE_MLOPS_ARM64_RESULT:-$CACHE/arm64-check.json}"
arm64_rc=0
DEV_VENV="$VENV" "$ROOT/scripts/check-arm64.sh" || arm64_rc=$?

say "pytest"
set +e
"$VENV/bin/python" -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then die "pytest collected no tests"; fi
if [ "$arm64_rc" -ne 0 ]; then die "the arm64 device check failed: $EDGE_MLOPS_ARM64_RESULT"; fi
exit "$rc"
