# Shared by scripts/quickstart.sh and scripts/test.sh (sourced, not run).
#
# These scripts stop only what they started. Debian's prometheus,
# prometheus-node-exporter and prometheus-alertmanager packages would start
# system daemons holding the ports unitlet's user services (and the tests)
# need; a policy-rc.d keeps them from being started at install time, so
# nothing has to be killed afterwards.

POLICY_RC_D="${POLICY_RC_D:-/usr/sbin/policy-rc.d}"
PACKAGED_DAEMONS="prometheus prometheus-node-exporter prometheus-alertmanager etcd"

# The system user a packaged daemon runs as.
packaged_daemon_user() {
  case $1 in
    etcd) echo etcd ;;
    *) echo prometheus ;;
  esac
}

# Install the given Debian packages that are not installed yet, without
# letting their maintainer scripts start any daemon.
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "==> apt-get install ${missing[*]} (daemons not started: policy-rc.d)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  without_daemon_starts apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Run "$@" with a policy-rc.d that denies every service start (exit 101,
# see /usr/share/doc/init-system-helpers/README.policy-rc.d.gz). A
# policy-rc.d that was there before is put back byte for byte afterwards;
# one we created is removed. Restored on failure and on interruption too.
without_daemon_starts() {
  local saved="" rc=0
  if [ -e "$POLICY_RC_D" ] || [ -L "$POLICY_RC_D" ]; then
    saved="$(mktemp "$POLICY_RC_D.unitlet-saved.XXXXXX")"
    cp -a "$POLICY_RC_D" "$saved"
  fi
  _unitlet_restore_policy_rc_d() {
    if [ -n "$saved" ]; then
      mv -f "$saved" "$POLICY_RC_D"
    else
      rm -f "$POLICY_RC_D"
    fi
  }
  trap '_unitlet_restore_policy_rc_d; exit 130' INT TERM
  printf '#!/bin/sh\n# Written by unitlet scripts/lib.sh for one apt-get install; removed afterwards.\nexit 101\n' \
    >"$POLICY_RC_D.unitlet-new"
  chmod 0755 "$POLICY_RC_D.unitlet-new"
  mv -f "$POLICY_RC_D.unitlet-new" "$POLICY_RC_D"
  "$@" || rc=$?
  _unitlet_restore_policy_rc_d
  trap - INT TERM
  unset -f _unitlet_restore_policy_rc_d
  return $rc
}

# PIDs of the packaged daemon $1 that are running: only processes whose
# executable is /usr/bin/$1 and that run as the package's user
# (prometheus; etcd for etcd), found through the init script's pidfile or
# /proc/*/exe.
packaged_daemon_pids() {
  local name=$1 exe=/usr/bin/$1 user uid pid pidfile
  user="$(packaged_daemon_user "$name")"
  uid="$(id -u "$user" 2>/dev/null)" || return 0
  pidfile=/run/$user/$name.pid
  {
    if [ -r "$pidfile" ]; then
      read -r pid <"$pidfile" || true
      [ -n "${pid:-}" ] && echo "$pid"
    fi
    for pid in /proc/[0-9]*; do
      echo "${pid#/proc/}"
    done
  } | sort -un | while read -r pid; do
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$exe" ] || continue
    [ "$(stat -c %u "/proc/$pid" 2>/dev/null)" = "$uid" ] || continue
    echo "$pid"
  done
}

# Packaged daemons still running from an earlier install (started before
# this script or on a machine without a policy-rc.d) would hold the ports:
# stop exactly those, and say so.
stop_packaged_daemons() {
  local s
  for s in $PACKAGED_DAEMONS; do
    stop_packaged_daemon "$s" || return 1
  done
}

# Stop the packaged daemon $1 if it runs: with systemd as PID 1 through
# systemctl; otherwise by PID (executable /usr/bin/$1, its package's user),
# never by a name pattern. (A packaged etcd is not needed either: the tests
# start their own members on free ports.)
stop_packaged_daemon() {
  local s=$1 pids pid left=""
  if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    if systemctl is-active --quiet "$s.service" 2>/dev/null; then
      echo "==> systemctl stop $s.service: the packaged daemon holds a port unitlet's user services need (systemctl disable $s to keep it off after a reboot)"
      systemctl stop "$s.service"
    fi
    return 0
  fi
  pids="$(packaged_daemon_pids "$s" | paste -sd' ')"
  [ -n "$pids" ] || return 0
  echo "==> stopping the packaged $s (PIDs $pids: /usr/bin/$s run by user $(packaged_daemon_user "$s")): it holds a port unitlet's user services or tests need"
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 1 100); do
    left=""
    for pid in $pids; do
      [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "/usr/bin/$s" ] && left="$left $pid"
    done
    [ -z "$left" ] && break
    sleep 0.1
  done
  if [ -n "$left" ]; then
    echo "stop_packaged_daemon: $s (PIDs$left) did not exit within 10s of SIGTERM; stop it and run again" >&2
    return 1
  fi
}

# Reads `unitlet get` (the table) on standard input; succeeds when there is
# at least one Service and every Service that can be Ready is: READY True,
# or False for want of its program (BinaryMissing: not installed here, it
# cannot be Ready). Any other condition — LimitsEnforced True, say — does
# not count.
services_ready() {
  awk 'NR == 1 && $1 == "NAME" { next }
       $2 == "Service" { n++; if ($3 != "True" && $4 != "BinaryMissing") waiting++ }
       END { exit !(n > 0 && waiting == 0) }'
}

# The cgroup directories of the private setup NAME, one per hierarchy.
private_cgroups() {
  local cg
  for cg in /sys/fs/cgroup/*/"$1" /sys/fs/cgroup/"$1"; do
    [ -d "$cg" ] && echo "$cg"
  done
  return 0
}

# Start `systemd --user` for the private setup NAME (/run/NAME,
# /var/lib/NAME, cgroup NAME under every hierarchy; XDG_* and
# DBUS_SESSION_BUS_ADDRESS already point there), moved into its cgroups
# before it execs; its PID goes to /var/lib/NAME/manager.pid.
start_private_manager() {
  local name=$1 base=/var/lib/$1 rt=/run/$1 moves="" h s
  mkdir -p /run/systemd/system "$base"
  install -d -m 700 "$rt"
  for h in /sys/fs/cgroup/*/; do
    [ -e "$h/cgroup.procs" ] || continue
    mkdir -p "$h/$name"
    for f in cpuset.cpus cpuset.mems; do
      [ -e "$h/$f" ] && cat "$h/$f" > "$h/$name/$f" 2>/dev/null || true
    done
    moves="$moves echo \$\$ > $h/$name/cgroup.procs || exit 97;"
  done
  if [ -e /sys/fs/cgroup/cgroup.procs ] && [ -z "$moves" ]; then
    mkdir -p "/sys/fs/cgroup/$name"
    moves="echo \$\$ > /sys/fs/cgroup/$name/cgroup.procs || exit 97;"
  fi
  setsid sh -c "$moves echo \$\$ > $base/manager.pid; exec /usr/lib/systemd/systemd --user" </dev/null >"$base/manager.log" 2>&1 &
  for _ in $(seq 200); do
    s=$(systemctl --user is-system-running 2>/dev/null || true)
    [ "$s" = running ] || [ "$s" = degraded ] && return 0
    sleep 0.1
  done
  echo "the user manager did not start; see $base/manager.log" >&2
  return 1
}

# Stop the private setup NAME: its user manager (which stops every unit,
# unitlet's first), then, by PID, whatever is still in its cgroups; remove
# the cgroups and the runtime directory /run/NAME. Only processes in NAME's
# own cgroups are signalled.
stop_private_manager() {
  local name=$1 base=/var/lib/$1 rt=/run/$1 pid="" cg pids left m
  [ -r "$base/manager.pid" ] && read -r pid < "$base/manager.pid" || true
  if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = /usr/lib/systemd/systemd ] \
     && grep -q ":/$name\(/\|$\)" "/proc/$pid/cgroup" 2>/dev/null; then
    echo "==> stopping the private user manager (PID $pid) and everything it runs"
    systemctl --user stop unitlet.service >/dev/null 2>&1 || true
    systemctl --user exit >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do
      [ -e "/proc/$pid" ] || break
      sleep 0.1
    done
    [ -e "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  fi
  for sig in TERM KILL; do
    pids="$(private_cgroups "$name" | while read -r cg; do find "$cg" -name cgroup.procs -exec cat {} +; done | sort -un | paste -sd' ')"
    [ -n "$pids" ] || break
    echo "==> SIG$sig to what is left in the $name cgroups: PIDs $pids"
    # shellcheck disable=SC2086
    kill -$sig $pids 2>/dev/null || true
    for _ in $(seq 100); do
      left="$(private_cgroups "$name" | while read -r cg; do find "$cg" -name cgroup.procs -exec cat {} +; done)"
      [ -z "$left" ] && break
      sleep 0.1
    done
  done
  private_cgroups "$name" | while read -r cg; do
    for _ in $(seq 50); do
      find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
      [ -d "$cg" ] || break
      sleep 0.1
    done
    if [ -d "$cg" ]; then echo "could not remove the cgroup $cg" >&2; else echo "    removed the cgroup $cg"; fi
  done
  if [ -d "$rt" ]; then
    awk -v p="$rt" '$5 == p || index($5, p "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
      umount -l "$m"
    done
    rm -rf --one-file-system "$rt"
    echo "    removed the runtime directory $rt"
  fi
  rm -f "$base/manager.pid"
}

# Stop unitlet.service and the units it manages in a systemd session (the
# user manager itself keeps running; `systemctl --user start unitlet`
# brings all back).
stop_session_stack() {
  local unitdir="${UNITLET_UNIT_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/systemd/user}" u units=()
  for u in "$unitdir"/*.timer "$unitdir"/*.service; do
    [ -f "$u" ] && grep -q '^X-Unitlet-Manifest=' "$u" && units+=("$(basename "$u")")
  done
  systemctl --user stop unitlet.service
  [ ${#units[@]} -eq 0 ] || systemctl --user stop "${units[@]}"
  echo "==> stopped unitlet.service and ${#units[@]} units it manages (${units[*]}); start again: systemctl --user start unitlet.service"
}
