#!/bin/sh
# Writes the device bundle from balena device variables (when set), then runs the agent.
# Without those variables the bundle is expected on the /data volume already (copied there
# from `cloud-trainer device provision --out`).
set -eu

home="${EDGE_AGENT_HOME:-/data/edge-agent}"
umask 077
mkdir -p "$home"

# write_from_env VARIABLE FILE MODE: atomic (temp file + rename), nothing if the variable is unset.
write_from_env() {
    if value="$(printenv "$1")" && [ -n "$value" ]; then
        printf '%s\n' "$value" >"$home/.$2.tmp"
        chmod "$3" "$home/.$2.tmp"
        mv -f "$home/.$2.tmp" "$home/$2"
    fi
}

write_from_env EDGE_CONFIG_YAML device.yaml 0644
write_from_env EDGE_CA_PEM ca.crt 0644
write_from_env EDGE_FLEET_PUBLIC_KEY_PEM fleet-public.pem 0644
write_from_env EDGE_MQTT_PASSWORD mqtt-password 0600
write_from_env EDGE_CLIENT_CERT_PEM client.crt 0644
write_from_env EDGE_CLIENT_PRIVATE_KEY_PEM client.key 0600

# Secrets live in files from here on; keep them out of the agent's environment.
unset EDGE_MQTT_PASSWORD EDGE_CLIENT_PRIVATE_KEY_PEM

if [ ! -f "$home/device.yaml" ]; then
    echo "error: no device config at $home/device.yaml (provision the device first)" >&2
    exit 2
fi
exec "$@"
