#!/usr/bin/env bash
# The device side on aarch64: an arm64 Debian bookworm rootfs with the device venv from
# edge-agent/requirements.lock and requirements-camera.lock (a camera's install), run under
# qemu-user (binfmt_misc) on an x86_64 host or natively on an aarch64 one. Inside it:
# `edge-agent validate-config` on device-configs/, `edge-agent doctor`, and `edge-agent run`
# of the real weather and camera models (fp32 and int8) on real inputs,
# against a Mosquitto on the host's loopback; the predictions must match the x86 device venv's
# (fp32 scores within 1e-4, labels equal). Called by scripts/test.sh before pytest.
#
# The last stdout line is one JSON object (status passed / failed / skipped with a reason), also
# written to $EDGE_MLOPS_ARM64_RESULT (default $EDGE_MLOPS_CACHE/arm64-check.json) for
# tests/integration/test_arm64_check.py. Exit 0 when passed or skipped, 1 when failed.
# Needs root (chroot, mounts, binfmt_misc); installs qemu-user-static, binfmt-support and
# debootstrap when missing. The rootfs is built once per lock (~10 min) under $EDGE_MLOPS_CACHE.
# Environment:
#   EDGE_MLOPS_ARM64=skip            report skipped without running (say why you skip it)
#   EDGE_MLOPS_ARM64_CPU             the CPU qemu emulates (default cortex-a72, the Pi 4's)
#   EDGE_MLOPS_DEBIAN_MIRROR         Debian mirror for debootstrap (default: the one apt uses)
#   EDGE_MLOPS_SHARED_DATA           real data (default ../shared/data; else the shipped samples)
#   DEV_VENV, EDGE_VENV              reuse test.sh's venvs instead of building them
set -euo pipefail
{ # read whole before it runs: editing this file during a run cannot derail the run
# shellcheck source=bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"

CHECK_VERSION=2 # part of the rootfs key: bump when the rootfs recipe below changes
SUITE=bookworm
DEVICE_VENV=/opt/edge # the device image's path (docker/device/Dockerfile)
DEVICE_WORK=/tmp/arm64-check
# The CPU qemu emulates: the Raspberry Pi 4's Cortex-A72 (ARMv8.0: no dotprod, no SVE), the
# lowest of the supported boards, so no kernel needs a feature a Pi 4 lacks. Others qemu knows:
# cortex-a76 (Pi 5), neoverse-n1, max (every feature qemu has, SVE/SME included).
QEMU_CPU="${EDGE_MLOPS_ARM64_CPU:-cortex-a72}"
RESULT_FILE="${EDGE_MLOPS_ARM64_RESULT:-$CACHE/arm64-check.json}"
KEY="$(lock_hash "$ROOT/edge-agent/requirements.lock" "$ROOT/edge-agent/requirements-camera.lock" \
  <(echo "arm64 $SUITE v$CHECK_VERSION"))"
ROOTFS="$CACHE/arm64-rootfs-$KEY"
STARTED_NS="$(date +%s%N)"
PHASES=()
CACHED=false
BUILD_S=0
VERDICT="" # the serve step's JSON file, when it got that far
RESULT_WRITTEN=""
BG_PID="" # debootstrap, in a process group of its own while it runs
FAIL_REASON=""

# bootstrap.sh's die, remembering the reason for the JSON line.
die() {
  FAIL_REASON="$*"
  printf 'error: %s\n' "$*" >&2
  exit 1
}

seconds_since() { # START_NS -> seconds with one decimal
  local ms=$((($(date +%s%N) - $1) / 1000000))
  printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
}
PHASE_NAME=""
PHASE_NS=0
phase() { # phase NAME: ends the previous phase (printing its time) and starts NAME
  if [ -n "$PHASE_NAME" ]; then
    local took; took="$(seconds_since "$PHASE_NS")"
    PHASES+=("$PHASE_NAME=$took")
    say "phase $PHASE_NAME took ${took}s"
  fi
  PHASE_NAME="${1:-}"
  PHASE_NS="$(date +%s%N)"
  if [ -n "$PHASE_NAME" ]; then say "arm64: $PHASE_NAME"; fi
}

# emit STATUS [REASON]: the one JSON line (stdout, last) and the result file; then exit.
emit() {
  local status="$1" reason="${2:-}" rc=0
  phase ""
  mkdir -p "$(dirname "$RESULT_FILE")"
  STATUS="$status" REASON="$reason" VERDICT="$VERDICT" CACHED="$CACHED" BUILD_S="$BUILD_S" \
    ELAPSED="$(seconds_since "$STARTED_NS")" PHASES="$(IFS='|'; echo "${PHASES[*]}")" KEY="$KEY" ROOTFS="$ROOTFS" \
    LOCK_SHA="$(sha256sum "$ROOT/edge-agent/requirements.lock" | cut -d' ' -f1)" \
    QEMU_CPU="$QEMU_CPU" HOST_ARCH="$(uname -m)" RESULT_FILE="$RESULT_FILE" "$PYTHON" - <<'EOF' || rc=$?
import json, os, time
env = os.environ
result = {
    "arch": "aarch64", "host_arch": env["HOST_ARCH"], "status": env["STATUS"],
    "reason": env["REASON"] or None, "max_abs_diff": None, "labels_equal": None,
}
if env["VERDICT"] and os.path.isfile(env["VERDICT"]):
    with open(env["VERDICT"]) as f:
        verdict = json.load(f)
    if env["STATUS"] == "passed":  # the serve step's own verdict decides
        result["status"], result["reason"] = verdict["status"], verdict.get("reason")
    result.update({k: v for k, v in verdict.items() if k not in ("status", "reason")})
result.update({
    "cached": env["CACHED"] == "true", "rootfs_build_s": float(env["BUILD_S"]),
    "elapsed_s": float(env["ELAPSED"]),
    "phases_s": {k: float(v) for k, v in (p.rsplit("=", 1) for p in env["PHASES"].split("|") if p)},
    "qemu_cpu": env["QEMU_CPU"] or None, "lock_key": env["KEY"], "lock_sha256": env["LOCK_SHA"], "rootfs": env["ROOTFS"],
    "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
})
line = json.dumps(result, separators=(",", ":"))
tmp = env["RESULT_FILE"] + ".tmp"
with open(tmp, "w") as f:
    f.write(json.dumps(result, indent=1) + "\n")
os.replace(tmp, env["RESULT_FILE"])
print(line)
raise SystemExit(1 if result["status"] == "failed" else 0)
EOF
  RESULT_WRITTEN=1
  exit "$rc"
}
skip() {
  say "arm64 check SKIPPED: $*"
  emit skipped "$*"
}

# -- mounts --------------------------------------------------------------------------------

mounts_under() { # every mount point at or below $1, deepest first
  awk -v d="$1" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}
unmount_under() {
  local m
  while read -r m; do
    [ -n "$m" ] || continue
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || say "could not unmount $m"
  done < <(mounts_under "$1")
}
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$BG_PID" ]; then # debootstrap's shells and dpkg ignore SIGINT: end its whole group
    kill -TERM -- "-$BG_PID" 2>/dev/null || true
    sleep 1
    kill -KILL -- "-$BG_PID" 2>/dev/null || true
  fi
  unmount_under "$ROOTFS.partial"
  unmount_under "$ROOTFS"
  if [ -n "$(mounts_under "$ROOTFS.partial")$(mounts_under "$ROOTFS")" ]; then
    say "WARNING: mounts left under $ROOTFS: $(mounts_under "$ROOTFS") (umount them by hand)"
  fi
  if [ -z "$RESULT_WRITTEN" ]; then
    if [ "$rc" -eq 130 ]; then FAIL_REASON="interrupted"; fi
    (emit failed "${FAIL_REASON:-stopped early (exit $rc); see the messages above}") || true
    rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mount_rootfs() { # /dev (bind), /dev/shm and /proc (psutil's telemetry) inside rootfs $1
  local r="$1"
  mount --bind /dev "$r/dev"
  mount -t tmpfs -o mode=1777,size=64m shm "$r/dev/shm"
  mount -t proc proc "$r/proc"
  # Not /sys: under qemu-user 7.2 /proc/cpuinfo is the host's x86 text, and onnxruntime's
  # cpuinfo, given x86 cpuinfo plus a /sys CPU list, segfaults on import. With /proc alone it
  # prints "cpuinfo_initialize failed" and runs (kernels are chosen from HWCAP, not cpuinfo).
}

# A clean environment inside (no host PIP_* or venv leaking in), plus the host's proxies.
ROOTFS_ENV=(/usr/bin/env -i "PATH=$DEVICE_VENV/bin:/usr/local/bin:/usr/bin:/bin" HOME=/root
  LANG=C.UTF-8 TMPDIR=/tmp PYTHONDONTWRITEBYTECODE=1)
for var in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  if [ -n "${!var:-}" ]; then ROOTFS_ENV+=("$var=${!var}"); fi
done
if [ "$(uname -m)" = x86_64 ]; then ROOTFS_ENV+=("QEMU_CPU=$QEMU_CPU"); fi
in_rootfs() { # in_rootfs ROOTFS CMD...
  local r="$1"; shift
  chroot "$r" "${ROOTFS_ENV[@]}" "$@"
}

# The pip settings this machine uses (files and PIP_* variables, as `pip config list` shows them),
# written as the rootfs's /etc/pip.conf so pip inside reaches the same index; local paths
# (file:// indexes, find-links folders: x86 wheels) cannot be reached from inside and are left out.
configure_network() {
  local r="$1" key value kept=() bundle=/etc/ssl/certs/ca-certificates.crt
  declare -A pip=()
  cp -L /etc/resolv.conf "$r/etc/resolv.conf"
  while IFS='=' read -r key value; do
    key="${key#*.}" value="${value#\'}" value="${value%\'}"
    case "$key" in
      cert) bundle="$value" ;;
      index-url | trusted-host | timeout | default-timeout | retries | proxy)
        if [[ "$value" == file:* || "$value" == /* ]]; then
          say "host pip $key=$value is a local path: not used inside the rootfs"
        else pip["${key/default-timeout/timeout}"]="$value"; fi ;;
      extra-index-url)
        kept=()
        for value in $value; do
          if [[ "$value" == http* ]]; then kept+=("$value")
          else say "host pip extra-index-url $value is local: not used inside the rootfs"; fi
        done
        if [ "${#kept[@]}" -gt 0 ]; then pip[extra-index-url]="${kept[*]}"; fi ;;
      find-links) say "host pip find-links $value is local: not used inside the rootfs" ;;
    esac
  done < <("$PYTHON" -m pip config list 2>/dev/null)
  mkdir -p "$r/usr/local/share/edge-mlops"
  if [ -f "$bundle" ]; then
    cp -L "$bundle" "$r/usr/local/share/edge-mlops/host-ca.crt"
    pip[cert]=/usr/local/share/edge-mlops/host-ca.crt
  fi
  {
    echo "[global]"
    echo "disable-pip-version-check = true"
    for key in "${!pip[@]}"; do echo "$key = ${pip[$key]}"; done
  } >"$r/etc/pip.conf"
}

debian_mirror() {
  if [ -n "${EDGE_MLOPS_DEBIAN_MIRROR:-}" ]; then echo "$EDGE_MLOPS_DEBIAN_MIRROR"; return; fi
  local found
  # deb822 (URIs:) or one-line (deb URI SUITE) sources; the main archive, not security.
  found="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
      2>/dev/null | grep -oE '^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)[a-z]+://[^[:space:]]+' \
    | grep -oE '[a-z]+://[^[:space:]]+' | grep -E '/debian/?$' | head -n1 || true)"
  echo "${found:-http://deb.debian.org/debian}"
}

# -- preconditions: anything missing here is a skip, said plainly ---------------------------

if [ "${EDGE_MLOPS_ARM64:-}" = skip ]; then skip "disabled by EDGE_MLOPS_ARM64=skip"; fi
[ "$(uname -s)" = Linux ] || skip "not Linux ($(uname -s)): binfmt_misc and chroot need a Linux kernel"
HOST_ARCH="$(uname -m)"
case "$HOST_ARCH" in
  x86_64) EMULATED=true ;;
  aarch64 | arm64) EMULATED=false QEMU_CPU="" ;;
  *) skip "host is $HOST_ARCH: the check runs on x86_64 (under qemu) or aarch64 (natively)" ;;
esac
[ "$(id -u)" -eq 0 ] || skip "not root: chroot, mounts and binfmt_misc registration need root"
probe="$(mktemp -d)"
if ! mount -t tmpfs probe "$probe" 2>/dev/null; then
  rmdir "$probe"
  skip "no mount privilege (a container without CAP_SYS_ADMIN?): cannot mount /proc into a rootfs"
fi
umount "$probe"
rmdir "$probe"

mkdir -p "$CACHE"
exec 9>"$CACHE/arm64-check.lock"
flock -w 1800 9 || die "another check-arm64.sh holds $CACHE/arm64-check.lock"

phase "system packages"
need=()
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
if [ "$EMULATED" = true ]; then
  [ -e /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
  command -v update-binfmts >/dev/null 2>&1 || [ -x /usr/sbin/update-binfmts ] || need+=(binfmt-support)
fi
if [ "${#need[@]}" -gt 0 ]; then apt_install "${need[@]}"; fi
export PATH="$PATH:/usr/sbin:/sbin"

QEMU_COPY=""
if [ "$EMULATED" = true ]; then
  phase "binfmt"
  BINFMT=/proc/sys/fs/binfmt_misc
  if [ ! -e "$BINFMT/register" ]; then
    mount -t binfmt_misc binfmt_misc "$BINFMT" 2>/dev/null \
      || skip "binfmt_misc is not available (mount -t binfmt_misc failed: no privileges or no kernel support), so aarch64 binaries cannot run here"
  fi
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  if ! head -n1 "$BINFMT/qemu-aarch64" 2>/dev/null | grep -qx enabled; then
    skip "could not register qemu-aarch64 with binfmt_misc (update-binfmts --enable qemu-aarch64 failed)"
  fi
  # Without the F flag the kernel looks for the interpreter inside the chroot: put it there.
  if ! grep -q '^flags:.*F' "$BINFMT/qemu-aarch64"; then
    QEMU_COPY="$(awk '$1 == "interpreter" { print $2 }' "$BINFMT/qemu-aarch64")"
  fi
  say "qemu-aarch64 registered ($(grep '^flags' "$BINFMT/qemu-aarch64")), emulating $QEMU_CPU"
fi

# -- the rootfs, once per lock -------------------------------------------------------------

phase "rootfs"
if [ -f "$ROOTFS/.complete" ]; then
  CACHED=true
  BUILD_S="$(cat "$ROOTFS/.build-seconds" 2>/dev/null || echo 0)"
  if [ -n "$QEMU_COPY" ] && [ ! -e "$ROOTFS$QEMU_COPY" ]; then
    mkdir -p "$ROOTFS$(dirname "$QEMU_COPY")"
    cp "$QEMU_COPY" "$ROOTFS$QEMU_COPY"
  fi
  say "arm64 rootfs cached: $ROOTFS (built in ${BUILD_S}s)"
else
  phase "debootstrap"
  build_ns="$(date +%s%N)"
  unmount_under "$ROOTFS.partial"
  [ -z "$(mounts_under "$ROOTFS.partial")" ] || die "mounts left under $ROOTFS.partial"
  rm -rf --one-file-system "$ROOTFS.partial"
  mkdir -p "$ROOTFS.partial"
  if [ -n "$QEMU_COPY" ]; then
    mkdir -p "$ROOTFS.partial$(dirname "$QEMU_COPY")"
    cp "$QEMU_COPY" "$ROOTFS.partial$QEMU_COPY"
  fi
  mirror="$(debian_mirror)"
  say "building the arm64 rootfs (once per lock change, ~10 min) from $mirror in $ROOTFS.partial"
  setsid debootstrap --arch=arm64 --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    "$SUITE" "$ROOTFS.partial" "$mirror" >"$CACHE/arm64-debootstrap.log" 2>&1 &
  BG_PID=$!
  if ! wait "$BG_PID"; then
    tail -n 15 "$CACHE/arm64-debootstrap.log" >&2
    die "debootstrap --arch=arm64 $SUITE failed (log: $CACHE/arm64-debootstrap.log)"
  fi
  BG_PID=""
  unmount_under "$ROOTFS.partial" # debootstrap's own /proc and /sys, if it left them

  phase "device venv (pip, emulated)"
  mount_rootfs "$ROOTFS.partial"
  configure_network "$ROOTFS.partial"
  cp "$ROOT/edge-agent/requirements.lock" "$ROOTFS.partial/tmp/requirements.lock"
  cp "$ROOT/edge-agent/requirements-camera.lock" "$ROOTFS.partial/tmp/requirements-camera.lock"
  # As docker/device/Dockerfile does it for a camera image: a venv, then the hashed locks (the
  # check runs the camera model too, so the camera extra is in); every arm64 wheel's sha256 is
  # checked against them.
  in_rootfs "$ROOTFS.partial" /usr/bin/python3 -m venv "$DEVICE_VENV"
  in_rootfs "$ROOTFS.partial" "$DEVICE_VENV/bin/pip" install -q --no-cache-dir --require-hashes \
    -r /tmp/requirements.lock -r /tmp/requirements-camera.lock >&2 \
    || die "pip install --require-hashes -r edge-agent/requirements.lock -r requirements-camera.lock failed in the arm64 rootfs"
  unmount_under "$ROOTFS.partial"
  [ -z "$(mounts_under "$ROOTFS.partial")" ] || die "mounts left under $ROOTFS.partial"
  BUILD_S="$(seconds_since "$build_ns")"
  echo "$BUILD_S" >"$ROOTFS.partial/.build-seconds"
  rm -rf --one-file-system "$ROOTFS"
  mv "$ROOTFS.partial" "$ROOTFS"
  touch "$ROOTFS/.complete"
  say "arm64 rootfs built in ${BUILD_S}s: $ROOTFS ($(du -sh --one-file-system "$ROOTFS" | cut -f1))"
fi

# -- this checkout on it -------------------------------------------------------------------

phase "host venvs"
DEV_VENV="${DEV_VENV:-$(dev_venv)}"
EDGE_VENV="${EDGE_VENV:-$(edge_venv)}"
WORK="$ROOTFS$DEVICE_WORK"
unmount_under "$ROOTFS"
rm -rf --one-file-system "$WORK"
mkdir -p "$WORK/wheel"

phase "models and inputs (x86)"
DATA="${EDGE_MLOPS_SHARED_DATA:-$ROOT/../shared/data}"
"$DEV_VENV/bin/python" "$ROOT/scripts/arm64_check.py" prepare --work "$WORK" --data "$DATA" >&2 \
  || die "could not build the models and inputs (scripts/arm64_check.py prepare)"

phase "edge-agent wheel into the rootfs"
mount_rootfs "$ROOTFS"
configure_network "$ROOTFS"
"$DEV_VENV/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/wheel" \
  "$ROOT/edge-agent" >&2 || die "could not build the edge-agent wheel"
wheel="$(basename "$(ls "$WORK"/wheel/edge_agent-*.whl)")"
in_rootfs "$ROOTFS" pip install -q --no-cache-dir --no-deps --force-reinstall \
  "$DEVICE_WORK/wheel/$wheel" >&2 || die "pip install $wheel failed in the arm64 rootfs"

phase "validate-config (arm64)"
cp -r "$ROOT/device-configs" "$WORK/device-configs"
configs=()
while IFS= read -r f; do configs+=("${f#"$ROOTFS"}"); done \
  < <(find "$WORK/device-configs" -maxdepth 1 -name '*.yaml' | sort)
in_rootfs "$ROOTFS" edge-agent validate-config "${configs[@]}" >&2 \
  || die "edge-agent validate-config failed on device-configs/ under arm64"

phase "serve on x86 and arm64"
VERDICT="$WORK/verdict.json"
"$DEV_VENV/bin/python" "$ROOT/scripts/arm64_check.py" serve --work "$WORK" \
  --device-work "$DEVICE_WORK" --host-agent "$EDGE_VENV/bin/edge-agent" \
  --device-prefix "$("$PYTHON" -c 'import json,sys; print(json.dumps(sys.argv[1:]))' \
    chroot "$ROOTFS" "${ROOTFS_ENV[@]}")" \
  --out "$VERDICT" >&2 || die "scripts/arm64_check.py serve crashed"

unmount_under "$ROOTFS"
emit passed
}
