#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine, as root: installs what
# the tests need (systemd, D-Bus, Prometheus and friends), then runs unit
# tests, integration tests against private, real systemd user managers and a
# real Prometheus, and the real-tool checks of the shipped stack.
# Tests never skip: a missing dependency fails the run loudly.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# etcd-server/etcd-client: the fleet tests' 3-member cluster (never the
# packaged daemon); openssl: its TLS test certificates; restic and
# openssh-server: the restic destination tests (their sshd is started by the
# test on a free port, never the packaged service). No protobuf packages:
# unitlet builds with only Rust.
ensure_packages systemd dbus dbus-user-session dbus-daemon prometheus prometheus-node-exporter prometheus-alertmanager etcd-server etcd-client openssl restic openssh-server python3-yaml python3-jsonschema python3-venv groff-base zsh fish curl ca-certificates
stop_packaged_daemons
# systemd --user checks this to believe the machine was booted with systemd.
mkdir -p /run/systemd/system

command -v cargo >/dev/null || { echo "cargo is missing: install the Rust toolchain (rustup)"; exit 1; }
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "==> installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# grafana-backup-tool, the real client the Grafana fake is checked against
# (tests/it/grafana.rs); the test would otherwise install it on first use.
if [ ! -f target/tools/grafana-backup-1.4.2/installed-by-unitlet-tests ]; then
  echo "==> installing grafana-backup-tool 1.4.2 into target/tools"
  rm -rf target/tools/grafana-backup-1.4.2
  python3 -m venv target/tools/grafana-backup-1.4.2
  target/tools/grafana-backup-1.4.2/bin/pip install --quiet --disable-pip-version-check grafana-backup==1.4.2
  echo 1.4.2 > target/tools/grafana-backup-1.4.2/installed-by-unitlet-tests
fi

echo "==> build"
cargo build --all-targets --locked
echo "==> tests (unit + integration against real systemd user managers)"
cargo nextest run --locked --no-fail-fast
echo "==> shipped stack: manifests and configs checked by the real tools"
# Valid as shipped: facts about this machine (the Grafana secret file that
# deploy/install.sh creates, programs not installed here) are warnings.
./target/debug/unitlet validate manifests/
bash scripts/check-deploy.sh
echo "==> builds with only a Rust toolchain (no protoc), from a copy with its own target"
only_rust=$(mktemp -d)
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$only_rust"
(cd "$only_rust" && PROTOC=/nonexistent CARGO_TARGET_DIR="$only_rust/target" cargo build --release --locked --quiet)
test -x "$only_rust/target/release/unitlet"
echo "==> the Debian package, from that release build: built, lintian, installed, run, removed"
(cd "$only_rust" && PROTOC=/nonexistent CARGO_TARGET_DIR="$only_rust/target" bash scripts/deb.sh)
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
bash scripts/check-deb.sh "$only_rust/target/debian/unitlet_${version}-1_$(dpkg --print-architecture).deb"
rm -rf "$only_rust"
echo "==> all checks passed"
