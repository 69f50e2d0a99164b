#!/usr/bin/env bash
# Provisions one device: broker identity, ACL entry, bundle folder, fleet registration.
#   scripts/provision-device.sh SITE DEVICE camera|weather [extra `device provision` options]
# e.g. scripts/provision-device.sh lisbon cam-01 camera --groups canary --broker-host mqtt.example.org
# The bundle goes to var/bundles/SITE.DEVICE unless --out is given. The broker must be reloaded
# (SIGHUP, e.g. `docker compose -f docker/compose.yml kill -s HUP mosquitto`) to apply.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"

if [ "$#" -lt 3 ]; then
  die "usage: $0 SITE DEVICE camera|weather [cloud-trainer device provision options]"
fi
site="$1" device="$2" kind="$3"
shift 3
out=(--out "var/bundles/$site.$device")
for arg in "$@"; do
  if [ "$arg" = "--out" ]; then out=(); fi
done

VENV="$(dev_venv)"
state="${EDGE_MLOPS_PROVISION_DIR:-var/provision}"
if [ ! -f "$state/pki/ca.crt" ]; then
  say "no fleet CA yet: initialising the broker files in $state"
  "$VENV/bin/cloud-trainer" broker init --state-dir "$state"
fi
exec "$VENV/bin/cloud-trainer" device provision --state-dir "$state" \
  --site "$site" --device "$device" --kind "$kind" "${out[@]}" "$@"
