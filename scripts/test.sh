#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine, as root: installs what
# the tests need (systemd, D-Bus, Prometheus and friends), then runs unit
# tests, integration tests against private, real systemd user managers and a
# real Prometheus, and the real-tool checks of the shipped stack.
# Tests never skip: a missing dependency fails the run loudly.
set -euo pipefail
cd "$(dirname "$0")/.."

need=(systemd dbus dbus-user-session dbus-daemon prometheus prometheus-node-exporter prometheus-alertmanager python3-yaml ca-certificates)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's packages start system services where systemd is PID 1; tests
# start their own Prometheus, so stop any the package may have started.
for s in prometheus prometheus-node-exporter prometheus-alertmanager; do
  pkill -f "^/usr/bin/$s( |\$)" 2>/dev/null || true
done
# systemd --user checks this to believe the machine was booted with systemd.
mkdir -p /run/systemd/system

command -v cargo >/dev/null || { echo "cargo is missing: install the Rust toolchain (rustup)"; exit 1; }
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "==> installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

echo "==> build"
cargo build --all-targets --locked
echo "==> tests (unit + integration against real systemd user managers)"
cargo nextest run --locked --no-fail-fast
echo "==> shipped stack: manifests and configs checked by the real tools"
./target/debug/unitlet validate manifests/*.yaml
bash scripts/check-deploy.sh
echo "==> all checks passed"
