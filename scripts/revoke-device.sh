#!/usr/bin/env bash
# Revokes one device's broker identity (password or certificate) and reloads nothing itself:
#   scripts/revoke-device.sh SITE DEVICE [--fleet-url URL]
# Then reload the broker (SIGHUP) so the password file, ACL and CRL take effect.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"

if [ "$#" -lt 2 ]; then
  die "usage: $0 SITE DEVICE [cloud-trainer device revoke options]"
fi
site="$1" device="$2"
shift 2
VENV="$(dev_venv)"
exec "$VENV/bin/cloud-trainer" device revoke \
  --state-dir "${EDGE_MLOPS_PROVISION_DIR:-var/provision}" --site "$site" --device "$device" "$@"
