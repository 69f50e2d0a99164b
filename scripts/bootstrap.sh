#!/usr/bin/env bash
# Creates (or reuses) the pinned virtual environments and system packages the project needs.
# Sourced by the README's commands; safe to run on a fresh machine. Environment:
#   EDGE_MLOPS_CACHE  where venvs are cached, keyed by the lock files (default ~/.cache/edge-mlops)
#   PYTHON            interpreter to build venvs from (default python3.11, else python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${EDGE_MLOPS_CACHE:-$HOME/.cache/edge-mlops}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else 1)' \
  || die "Python 3.11 or newer is needed (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11"

apt_install() {
  # Installs Debian packages when running as root; otherwise says what is missing.
  local missing=("$@")
  if [ "$(id -u)" -ne 0 ]; then
    die "missing system packages: ${missing[*]} (install them with: sudo apt-get install ${missing[*]})"
  fi
  say "installing system packages: ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -q >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
      || die "apt-get install ${missing[*]} failed"
  fi
}

ensure_mosquitto() {
  local need=()
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
  command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
  if [ "${#need[@]}" -gt 0 ]; then apt_install "${need[@]}"; fi
  export PATH="$PATH:/usr/sbin"
}

ensure_rtsp() {
  # GStreamer's RTSP server (run by the system python3 through gi) serves H.264 to the camera
  # source's RTSP tests and benchmark; x264enc (plugins-ugly) encodes the clip they stream.
  local probe="import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0')
from gi.repository import Gst, GstRtspServer
Gst.init(None)
for f in ('x264enc', 'h264parse', 'qtdemux', 'rtph264pay', 'mp4mux', 'videoconvert'):
    assert Gst.ElementFactory.find(f), f"
  /usr/bin/python3 -c "$probe" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -ne 0 ]; then
    say "the GStreamer RTSP server is missing: the RTSP camera tests will be skipped" \
      "(sudo apt-get install gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base" \
      "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly)"
    return 0
  fi
  apt_install gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base \
    gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  /usr/bin/python3 -c "$probe" >/dev/null 2>&1 \
    || die "the GStreamer RTSP server does not load after installing it (/usr/bin/python3 + gi)"
}

ensure_stamps() {
  # Cut-out photographs of other animals, people and vehicles (Debian's tuxpaint-stamps-default,
  # GPL-2): the camera model's training pastes them into scenes as its hardest "no pet"
  # frames. Only the package's animals/, people/ and vehicles/ PNGs are kept, in the cache;
  # nothing is installed. Without them training still runs, on the scenes alone.
  local version=2022.06.04-1 dest="$CACHE/stamps"
  [ -f "$dest/.version" ] && [ "$(cat "$dest/.version")" = "$version" ] && return 0
  command -v apt-get >/dev/null 2>&1 || { say "no apt-get: the camera model trains without stamps"; return 0; }
  local tmp; tmp="$(mktemp -d)"
  say "fetching tuxpaint-stamps-default $version (cut-outs for the camera model's no-pet frames)"
  if ! (cd "$tmp" && apt-get download -q "tuxpaint-stamps-default=$version" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get download -q "tuxpaint-stamps-default=$version" >/dev/null 2>&1; }); then
    say "could not download tuxpaint-stamps-default: the camera model trains without stamps"
    rm -rf "$tmp"; return 0
  fi
  dpkg-deb -x "$tmp"/tuxpaint-stamps-default_*.deb "$tmp/x"
  rm -rf "$dest.partial" && mkdir -p "$dest.partial"
  local sub
  for sub in animals people vehicles; do
    (cd "$tmp/x/usr/share/tuxpaint/stamps" && find "$sub" -name '*.png' -not -path '*cartoon*' \
      -exec cp --parents {} "$dest.partial/" \;)
  done
  cp "$tmp/x/usr/share/doc/tuxpaint-stamps-default/copyright" "$dest.partial/COPYRIGHT" 2>/dev/null || true
  echo "$version" >"$dest.partial/.version"
  rm -rf "$dest" && mv "$dest.partial" "$dest" && rm -rf "$tmp"
}

apt_install_no_start() {
  # Installs packages without recommends and without starting their services: a policy-rc.d
  # answering 101 keeps the packages' scripts from starting them; one that is there already
  # (Debian's container images ship one) is left as it is.
  local policy=/usr/sbin/policy-rc.d placed="" apt_conf rc=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && placed=1
  fi
  apt_conf="$(mktemp)"
  echo 'APT::Install-Recommends "false";' >"$apt_conf"
  (APT_CONFIG="$apt_conf" apt_install "$@") || rc=$?
  rm -f "$apt_conf"
  if [ -n "$placed" ]; then rm -f "$policy"; fi
  return "$rc"
}

ensure_nats() {
  # nats-server (Debian, 2.9+: JetStream and an MQTT listener) runs the clustered broker tier's
  # tests and benchmark as a private 3-node cluster on loopback ports.
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    say "nats-server is missing: the broker cluster tests will be skipped (sudo apt-get install nats-server)"
    return 0
  fi
  apt_install_no_start nats-server || die "could not install nats-server"
}

ensure_postgres() {
  # PostgreSQL's server binaries (initdb, pg_ctl) run the fleet store's tests on a private
  # instance in a temporary folder; the package's own cluster service is left as it is.
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && return 0
  if [ "$(id -u)" -ne 0 ]; then
    say "PostgreSQL is missing: the PostgreSQL store tests will be skipped (sudo apt-get install postgresql)"
    return 0
  fi
  apt_install_no_start postgresql || die "could not install PostgreSQL (apt-get install postgresql)"
}

ensure_chromium() {
  # Debian's chromium drives the dashboard's browser tests (Playwright, never its own download).
  [ -x /usr/bin/chromium ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    say "chromium is missing: the dashboard browser tests will fail (sudo apt-get install chromium)"
    return 0
  fi
  apt_install chromium
}

ensure_promtool() {
  # promtool (Debian's prometheus package) lints the agent's and the fleet's /metrics in the tests.
  command -v promtool >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -ne 0 ]; then
    say "promtool is missing: the /metrics lint tests will fail" \
      "(sudo apt-get install --no-install-recommends prometheus)"
    return 0
  fi
  # Only the tool is wanted: no exporters (recommends), and no Prometheus server left on :9090.
  apt_install_no_start prometheus || die "could not install promtool (apt-get install prometheus)"
  # Where the service started anyway (systemd ignoring policy-rc.d), stop it and keep it off:
  # promtool came with the package just now, so any Prometheus running from it is the package's.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  local exe
  for exe in /proc/[0-9]*/exe; do
    if [ "$(readlink "$exe" 2>/dev/null)" = /usr/bin/prometheus ]; then
      exe="${exe#/proc/}"
      say "stopping the Prometheus server the package started (pid ${exe%/exe})"
      kill "${exe%/exe}" 2>/dev/null || true
    fi
  done
  command -v promtool >/dev/null 2>&1 || die "the prometheus package installed no promtool"
}

lock_hash() {
  cat "$@" | { sha256sum 2>/dev/null || shasum -a 256; } | cut -c1-16
}

# make_venv NAME LOCKFILE... -> prints the venv path; built once per lock content.
make_venv() {
  local name="$1"; shift
  local key; key="$(lock_hash "$@" <(echo "$("$PYTHON" -VV)"))"
  local venv="$CACHE/$name-$key"
  if [ ! -f "$venv/.complete" ]; then
    say "building $name environment (once per lock change) in $venv"
    rm -rf "$venv.partial"
    mkdir -p "$CACHE"
    "$PYTHON" -m venv "$venv.partial"
    "$venv.partial/bin/python" -m pip install -q --disable-pip-version-check --upgrade "pip>=24" >&2
    local args=() hashed=true
    for lock in "$@"; do
      args+=(-r "$lock")
      grep -q -- '--hash=sha256:' "$lock" || hashed=false
    done
    # Hashed locks (the device's, the tools') are installed only with every file's hash checked.
    if "$hashed"; then args+=(--require-hashes); fi
    "$venv.partial/bin/python" -m pip install -q --disable-pip-version-check "${args[@]}" 2>&1 \
      | grep -v 'is ignored: it is neither a file nor a directory' >&2
    rm -rf "$venv"
    mv "$venv.partial" "$venv"
    # venv scripts carry absolute paths: rewrite them for the final location.
    grep -rlI --exclude-dir=lib "$venv.partial" "$venv/bin" | xargs -r sed -i "s#$venv.partial#$venv#g"
    touch "$venv/.complete"
  fi
  echo "$venv"
}

# The development environment: cloud + edge + test tools, with this checkout installed editable.
dev_venv() {
  local venv
  venv="$(make_venv dev "$ROOT/cloud-trainer/requirements.lock" "$ROOT/requirements-dev.lock")"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
    -e "$ROOT/edge-agent" -e "$ROOT/cloud-trainer" >&2
  ln -sfn "$venv" "$ROOT/.venv"
  echo "$venv"
}

# The device environment: edge-agent[camera] alone, installed as a wheel the way a device gets
# it; it runs both kinds of device (the tests run cameras in it).
edge_venv() {
  local venv
  venv="$(make_venv edge "$ROOT/edge-agent/requirements.lock" "$ROOT/edge-agent/requirements-camera.lock")"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall \
    "$ROOT/edge-agent" >&2
  ln -sfn "$venv" "$ROOT/.venv-edge"
  echo "$venv"
}

# uv and cyclonedx-bom: scripts/lock.sh and the device SBOM (scripts/sbom.sh).
tools_venv() {
  make_venv tools "$ROOT/requirements-tools.lock"
}

# A weather station's environment: edge-agent without the camera extra (no OpenCV).
station_venv() {
  local venv
  venv="$(make_venv station "$ROOT/edge-agent/requirements.lock")"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall \
    "$ROOT/edge-agent" >&2
  echo "$venv"
}
