#!/usr/bin/env bash
# Writes the CycloneDX SBOM (JSON, spec 1.6) of an installed device environment: every
# distribution in it with its version, PyPI package URL, licences and hashes where the metadata
# has them, and edge-agent as the root component. scripts/test.sh writes one per environment it
# builds (build/sbom/), docker/device/Dockerfile one per image (/opt/edge/sbom.cdx.json).
# Usage: scripts/sbom.sh VENV OUT.json
set -euo pipefail
# shellcheck source=bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

[ "$#" -eq 2 ] || die "usage: scripts/sbom.sh VENV OUT.json"
venv="$(cd "$1" && pwd)" || die "no environment at $1"
[ -x "$venv/bin/python" ] || die "$venv is not a virtual environment (no bin/python)"
out="$2"
mkdir -p "$(dirname "$out")"
tools="$(tools_venv)"
# --output-reproducible: no timestamp or random serial, so an unchanged environment gives an
# unchanged file. The BOM is validated against the CycloneDX schema before it is written.
"$tools/bin/cyclonedx-py" environment --pyproject "$ROOT/edge-agent/pyproject.toml" \
  --mc-type application --output-reproducible --output-format JSON --output-file "$out.partial" \
  "$venv/bin/python" || die "cyclonedx-py could not describe $venv"
mv "$out.partial" "$out"
say "SBOM of $venv: $out"
