#!/usr/bin/env bash
# unitlet's main job on a fresh machine: install what it needs and run
# unitlet on the shipped monitoring stack.
#
# - On a systemd desktop (a user session exists): installs into your $HOME
#   with deploy/install.sh and starts unitlet.service in your session.
# - On a fresh Debian machine as root without a systemd session (a
#   container, CI): installs the Debian packages, starts a private systemd
#   user manager in its own runtime directory and cgroup subtree (never
#   touching PID 1's), and runs unitlet there.
# It ends by printing where to look.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

have_session() { systemctl --user is-system-running >/dev/null 2>&1 || [ "$(systemctl --user is-system-running 2>/dev/null)" = degraded ]; }

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
if [ "$(id -u)" = 0 ]; then
  ensure_packages systemd dbus dbus-user-session prometheus prometheus-node-exporter prometheus-alertmanager protobuf-compiler libprotobuf-dev curl ca-certificates
  stop_packaged_daemons
fi

command -v cargo >/dev/null || { echo "cargo is missing: install Rust (https://rustup.rs) and run this again"; exit 1; }
echo "==> cargo build --profile dist"
cargo build --profile dist --locked

if [ "$(cat /proc/1/comm 2>/dev/null)" != systemd ] || ! have_session; then
  [ "$(id -u)" = 0 ] || { echo "no systemd user session here, and starting a private one needs root"; exit 1; }
  base=/var/lib/unitlet-demo
  rt=/run/unitlet-demo
  export XDG_RUNTIME_DIR="$rt" XDG_CONFIG_HOME="$base/config" XDG_DATA_HOME="$base/data" XDG_STATE_HOME="$base/state"
  export DBUS_SESSION_BUS_ADDRESS="unix:path=$rt/bus"
  if ! systemctl --user is-system-running >/dev/null 2>&1 && [ "$(systemctl --user is-system-running 2>/dev/null || true)" != degraded ]; then
    echo "==> starting a private systemd user manager (runtime $rt)"
    mkdir -p /run/systemd/system "$XDG_CONFIG_HOME" "$XDG_DATA_HOME" "$XDG_STATE_HOME"
    install -d -m 700 "$rt"
    moves=""
    for h in /sys/fs/cgroup/*/; do
      [ -e "$h/cgroup.procs" ] || continue
      mkdir -p "$h/unitlet-demo"
      for f in cpuset.cpus cpuset.mems; do
        [ -e "$h/$f" ] && cat "$h/$f" > "$h/unitlet-demo/$f" 2>/dev/null || true
      done
      moves="$moves echo \$\$ > $h/unitlet-demo/cgroup.procs || exit 97;"
    done
    [ -e /sys/fs/cgroup/cgroup.procs ] && [ -z "$moves" ] && { mkdir -p /sys/fs/cgroup/unitlet-demo; moves="echo \$\$ > /sys/fs/cgroup/unitlet-demo/cgroup.procs || exit 97;"; }
    setsid sh -c "$moves exec /usr/lib/systemd/systemd --user" </dev/null >"$base/manager.log" 2>&1 &
    for _ in $(seq 200); do
      s=$(systemctl --user is-system-running 2>/dev/null || true)
      [ "$s" = running ] || [ "$s" = degraded ] && break
      sleep 0.1
    done
    s=$(systemctl --user is-system-running 2>/dev/null || true)
    [ "$s" = running ] || [ "$s" = degraded ] || { echo "the user manager did not start; see $base/manager.log"; exit 1; }
  fi
  private=1
else
  private=0
fi

bash deploy/install.sh
export PATH="$HOME/.local/bin:$PATH"

echo "==> waiting for the stack to converge (at most 120 s)"
for _ in $(seq 240); do
  if unitlet get prometheus -o json 2>/dev/null | grep -q '"status": "True"' \
     && unitlet get node-exporter -o json 2>/dev/null | grep -q '"status": "True"' \
     && unitlet get alertmanager -o json 2>/dev/null | grep -q '"status": "True"'; then
    break
  fi
  sleep 0.5
done
for _ in $(seq 60); do
  curl -fsS 'http://127.0.0.1:9090/api/v1/query?query=up%7Bjob%3D%22node%22%7D' 2>/dev/null | grep -q '"1"\]' && break
  sleep 1
done
echo
unitlet get -o wide || true
echo
echo "unitlet is running as a systemd user service (unitlet.service)."
if [ "$private" = 1 ]; then
  echo "This machine has no systemd session, so it runs in a private user manager. To use it:"
  echo "  export XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR XDG_CONFIG_HOME=$XDG_CONFIG_HOME XDG_DATA_HOME=$XDG_DATA_HOME XDG_STATE_HOME=$XDG_STATE_HOME DBUS_SESSION_BUS_ADDRESS=$DBUS_SESSION_BUS_ADDRESS PATH=$HOME/.local/bin:\$PATH"
fi
echo "Where to look:"
echo "  unitlet get            status of every manifest (unitlet describe NAME for details)"
echo "  unitlet plan           what unitlet would change, and why"
echo "  manifests:             ${XDG_CONFIG_HOME:-$HOME/.config}/unitlet/manifests"
echo "  Prometheus:            http://127.0.0.1:9090  (targets: http://127.0.0.1:9090/targets)"
echo "  Alertmanager:          http://127.0.0.1:9093"
echo "  unitlet's own metrics: http://127.0.0.1:9464/metrics"
echo "  logs:                  journalctl --user -u unitlet.service (or systemctl --user status unitlet)"
