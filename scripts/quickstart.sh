#!/usr/bin/env bash
# unitlet's main job on a fresh machine: install what it needs and run
# unitlet on the shipped monitoring stack.
#
#   scripts/quickstart.sh               install and start (about 5 minutes on
#                                       2 cores, mostly the build)
#   scripts/quickstart.sh --stop        stop the stack and unitlet (and the
#                                       private user manager, see below)
#   scripts/quickstart.sh --uninstall   --stop, then remove what was installed
#                                       (deploy/install.sh --uninstall lists
#                                       what it keeps)
#
# - On a systemd desktop (a user session exists): installs into your $HOME
#   with deploy/install.sh and starts unitlet.service in your session.
# - On a fresh Debian machine as root without a systemd session (a
#   container, CI): installs the Debian packages, starts a private systemd
#   user manager in its own runtime directory (/run/unitlet-demo) and cgroup
#   subtree (unitlet-demo under each hierarchy; never touching PID 1's),
#   keeps its files under /var/lib/unitlet-demo, and runs unitlet there.
#   Without a journald, every service there writes its output to
#   /var/lib/unitlet-demo/state/log/NAME.log (a drop-in), which `unitlet logs
#   NAME` reads. The environment to reach it is written to
#   /var/lib/unitlet-demo/env, to `source`.
# It ends by printing where to look.
#
# Environment: UNITLET_BIN, a unitlet binary to install instead of building
# one; UNITLET_DEMO, the private setup's name instead of unitlet-demo (its
# directories and cgroups are named after it).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
began=$SECONDS

action=start
case "${1:-}" in
  --stop) action=stop ;;
  --uninstall) action=uninstall ;;
  "") ;;
  *) echo "usage: scripts/quickstart.sh [--stop | --uninstall]" >&2; exit 2 ;;
esac

have_session() { systemctl --user is-system-running >/dev/null 2>&1 || [ "$(systemctl --user is-system-running 2>/dev/null)" = degraded ]; }
elapsed() { local s=$((SECONDS - $1)); echo "$((s / 60))m $((s % 60))s"; }

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

demo="${UNITLET_DEMO:-unitlet-demo}"
base=/var/lib/$demo
rt=/run/$demo

# The private setup is used when it exists already, or when this machine has
# no systemd session (PID 1 is not systemd, or no user manager answers).
private=0
if [ -e "$base/manager.pid" ] || [ -d "$rt" ] || [ "$(cat /proc/1/comm 2>/dev/null)" != systemd ] || ! have_session; then
  private=1
  export XDG_RUNTIME_DIR="$rt" XDG_CONFIG_HOME="$base/config" XDG_DATA_HOME="$base/data" XDG_STATE_HOME="$base/state"
  export DBUS_SESSION_BUS_ADDRESS="unix:path=$rt/bus"
fi

if [ "$action" != start ]; then
  if [ "$private" = 1 ]; then
    [ "$action" = uninstall ] && [ -S "$rt/bus" ] && bash deploy/install.sh --uninstall
    stop_private_manager "$demo"
    if [ "$action" = uninstall ]; then
      [ -e "$base/config/unitlet/.installed" ] && bash deploy/install.sh --uninstall
      rm -f "$base/env" "$base/manager.log" "$base/config/systemd/user/service.d/50-$demo-logs.conf"
      rm -rf "$base/state/log"
      find "$base" -depth -type d -empty -delete 2>/dev/null || true
      [ -d "$base" ] && echo "==> kept $base (what is listed above)"
    fi
  else
    if [ "$action" = uninstall ]; then
      bash deploy/install.sh --uninstall
    else
      stop_session_stack
    fi
  fi
  exit 0
fi

if [ "$(id -u)" = 0 ]; then
  ensure_packages systemd dbus dbus-user-session prometheus prometheus-node-exporter prometheus-alertmanager curl ca-certificates man-db
  stop_packaged_daemons
fi

if [ -z "${UNITLET_BIN:-}" ]; then
  command -v cargo >/dev/null || { echo "cargo is missing: install Rust (https://rustup.rs) and run this again"; exit 1; }
  echo "==> cargo build --profile dist (the longest step: about 4 minutes on 2 cores the first time)"
  built=$SECONDS
  cargo build --profile dist --locked
  echo "    built in $(elapsed "$built")"
  export UNITLET_BIN="$repo/target/dist/unitlet"
fi

if [ "$private" = 1 ]; then
  [ "$(id -u)" = 0 ] || { echo "no systemd user session here, and starting a private one needs root"; exit 1; }
  mkdir -p "$XDG_CONFIG_HOME/systemd/user/service.d" "$XDG_DATA_HOME" "$XDG_STATE_HOME/log"
  # No journald here: each service's output goes to a file of its own.
  logs_dropin="$XDG_CONFIG_HOME/systemd/user/service.d/50-$demo-logs.conf"
  printf '# Written by scripts/quickstart.sh: no journald collects this private manager'"'"'s output.\n[Service]\nStandardOutput=append:%s/log/%%N.log\nStandardError=append:%s/log/%%N.log\n' \
    "$XDG_STATE_HOME" "$XDG_STATE_HOME" > "$logs_dropin"
  if ! have_session; then
    echo "==> starting a private systemd user manager (runtime $rt)"
    start_private_manager "$demo"
  else
    systemctl --user daemon-reload
  fi
  # The environment to reach it; MANPATH because the man page is under
  # $XDG_DATA_HOME/man, where man-db does not look by itself.
  cat > "$base/env.new" <<EOF
# Written by scripts/quickstart.sh: \`source $base/env\` to use unitlet's private user manager.
export XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR
export XDG_CONFIG_HOME=$XDG_CONFIG_HOME
export XDG_DATA_HOME=$XDG_DATA_HOME
export XDG_STATE_HOME=$XDG_STATE_HOME
export DBUS_SESSION_BUS_ADDRESS=$DBUS_SESSION_BUS_ADDRESS
export PATH=$HOME/.local/bin:\$PATH
export MANPATH=$XDG_DATA_HOME/man:\${MANPATH:-}
EOF
  mv -f "$base/env.new" "$base/env"
fi

bash deploy/install.sh
export PATH="$HOME/.local/bin:$PATH"

echo "==> waiting for every Service that can be Ready to be Ready (at most 180 s)"
waited=$SECONDS
converged=0
for _ in $(seq 360); do
  if unitlet get 2>/dev/null | services_ready; then
    converged=1
    break
  fi
  sleep 0.5
done
if [ "$converged" = 1 ]; then
  echo "    converged in $(elapsed "$waited")"
else
  echo "    not converged after 180 s; what is not Ready says why below (unitlet logs NAME for its output)"
fi
for _ in $(seq 60); do
  curl -fsS 'http://127.0.0.1:9090/api/v1/query?query=up%7Bjob%3D%22node%22%7D' 2>/dev/null | grep -q '"1"\]' && break
  sleep 1
done
echo
unitlet get -o wide || true
echo
echo "unitlet is running as a systemd user service (unitlet.service); quickstart took $(elapsed "$began")."
if [ "$private" = 1 ]; then
  echo "This machine has no systemd session, so it runs in a private user manager. To use it:"
  echo "  source $base/env"
fi
echo "Where to look:"
echo "  unitlet get            status of every manifest (unitlet describe NAME for details)"
echo "  unitlet plan           what unitlet would change, and why"
echo "  unitlet logs [NAME]    a Service's output (unitlet's own without NAME; -f to follow)"
echo "  man unitlet            every command"
echo "  manifests:             ${XDG_CONFIG_HOME:-$HOME/.config}/unitlet/manifests"
echo "  Prometheus:            http://127.0.0.1:9090  (targets: http://127.0.0.1:9090/targets)"
echo "  Alertmanager:          http://127.0.0.1:9093"
echo "  unitlet's own metrics: http://127.0.0.1:9464/metrics"
echo "To stop everything: scripts/quickstart.sh --stop; to remove it: scripts/quickstart.sh --uninstall"
[ "$converged" = 1 ]
