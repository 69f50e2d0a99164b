#!/usr/bin/env bash
# Regenerates the hashed locks that installs check with pip --require-hashes:
#   edge-agent/requirements.lock         the device closure (a weather station's install)
#   edge-agent/requirements-camera.lock  the camera extra on top of it (OpenCV only)
#   requirements-tools.lock              uv and cyclonedx-bom (this script, the SBOM)
# Every pin carries the sha256 of each file the index has for that version, on every platform
# (an arm64 board checks its own wheel against the same lock). Versions stay as they are; with
# --upgrade, the newest versions edge-agent/pyproject.toml allows are taken. Needs the index.
# cloud-trainer/requirements.lock and requirements-dev.lock are plain pins for build and test
# hosts, edited by hand; nothing in them runs on a device.
#
# Usage: scripts/lock.sh [--upgrade]
set -euo pipefail
# shellcheck source=bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"

UPGRADE=false
case "${1:-}" in
  "") ;;
  --upgrade) UPGRADE=true ;;
  *) die "usage: scripts/lock.sh [--upgrade]" ;;
esac

UV="$(tools_venv)/bin/uv"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

pins() { # LOCK -> its name==version lines, hashes and comments dropped
  sed -n 's/^\([A-Za-z0-9][A-Za-z0-9._-]*==[^ ;\\]*\).*/\1/p' "$1"
}

compile() { # OUT HEADER INPUT... [uv options] -> OUT with HEADER above uv's output
  local out="$1" header="$2"; shift 2
  "$UV" pip compile --quiet --generate-hashes --universal --python-version 3.11 \
    --custom-compile-command "scripts/lock.sh" --no-strip-markers --no-annotate "$@" -o "$WORK/out.txt" \
    || die "uv pip compile failed for $out"
  { printf '%s\n' "$header"; cat "$WORK/out.txt"; } > "$out.new"
  mv "$out.new" "$out"
  say "wrote $out ($(pins "$out" | wc -l) pins)"
}

STATION_LOCK=edge-agent/requirements.lock
CAMERA_LOCK=edge-agent/requirements-camera.lock
TOOLS_LOCK=requirements-tools.lock
keep=() # constraints that hold today's versions
if ! "$UPGRADE"; then
  pins "$STATION_LOCK" > "$WORK/station.pins"
  pins "$CAMERA_LOCK" > "$WORK/camera.pins"
  pins "$TOOLS_LOCK" > "$WORK/tools.pins"
  keep=(-c "$WORK/station.pins" -c "$WORK/camera.pins")
fi

compile "$STATION_LOCK" "# The device closure of edge-agent (Python 3.11): a weather station's install. A camera adds
# requirements-camera.lock (edge-agent[camera]). Install both with pip --require-hashes." \
  edge-agent/pyproject.toml "${keep[@]}"

# The camera extra, resolved with the station's pins held: OpenCV must fit them. Its lock holds
# OpenCV alone (its numpy is the station lock's), so the two are always installed together.
pins "$STATION_LOCK" > "$WORK/station.now"
sed -n 's/^camera *= *\[\(.*\)\]/\1/p' edge-agent/pyproject.toml | tr -d '" ' | tr ',' '\n' \
  > "$WORK/camera.in"
[ -s "$WORK/camera.in" ] || die "edge-agent/pyproject.toml has no camera extra"
"$UV" pip compile --quiet --universal --python-version 3.11 "$WORK/camera.in" \
  -c "$WORK/station.now" "${keep[@]:2}" -o "$WORK/camera-full.txt" \
  || die "the camera extra does not resolve against $STATION_LOCK"
compile "$CAMERA_LOCK" "# edge-agent[camera] on top of requirements.lock: OpenCV for the camera source, image models
# and visits (its numpy is requirements.lock's). Install with
# pip install --require-hashes -r requirements.lock -r requirements-camera.lock" \
  "$WORK/camera.in" -c "$WORK/camera-full.txt" --no-deps

tools_keep=()
if ! "$UPGRADE"; then tools_keep=(-c "$WORK/tools.pins"); fi
sed -n 's/^\(uv\|cyclonedx-bom\)==.*/\1/p' "$TOOLS_LOCK" > "$WORK/tools.in"
compile "$TOOLS_LOCK" "# Tools for the hashed locks (scripts/lock.sh) and the device SBOM (scripts/sbom.sh)." \
  "$WORK/tools.in" "${tools_keep[@]}"
