#!/usr/bin/env bash
# Check the Debian package the way a user meets it, as root on Debian 12:
#
#   bash scripts/check-deb.sh target/debian/unitlet_0.2.0-1_amd64.deb
#
# 1. lintian: no errors (warnings are printed),
# 2. apt-get install ./PACKAGE; every file a user relies on is where it
#    belongs (dpkg -L); /usr/bin/unitlet --version is the crate's version;
#    the man page renders (man -l) and `man -w unitlet` finds it; the
#    completions load in bash, zsh and fish,
# 3. a private systemd user manager (own runtime directory, XDG directories
#    and HOME in it, own cgroups; as tests/it/support/mod.rs and
#    scripts/quickstart.sh start theirs) runs the packaged unit:
#    `systemctl --user enable --now unitlet`, is-active, and unitlet brings a
#    one-Service manifest to Ready,
# 4. the manager is stopped by PID (`systemctl --user exit`), its cgroups and
#    runtime directory removed; apt-get remove --purge unitlet; every file
#    dpkg -L listed is gone (a directory may stay only if another package
#    owns it).
#
# It refuses to run when unitlet is installed already (it would remove it).
# On failure it says what failed, prints the logs, and still cleans up: it
# stops only the manager it started (by PID, its own cgroups) and removes the
# package only if it installed it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

deb="${1:-}"
if [ -z "$deb" ] || [ ! -f "$deb" ]; then
  echo "usage: scripts/check-deb.sh PATH/unitlet_VERSION-REV_ARCH.deb (${deb:-no path given}: no such file)" >&2
  exit 2
fi
deb="$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")"
[ "$(id -u)" = 0 ] || { echo "check-deb: needs root (it installs the package and starts a private user manager)" >&2; exit 2; }
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"

# dpkg's status of the package unitlet: "install ok installed", "… not-installed",
# "deinstall ok config-files"; empty when dpkg does not know it.
pkg_status() { dpkg-query -W -f='${Status}' unitlet 2>/dev/null || true; }
fail() { echo "check-deb: FAIL: $*" >&2; exit 1; }
ok() { echo "    ok: $*"; }

if [ -n "$(pkg_status)" ] && [[ "$(pkg_status)" != *not-installed ]]; then
  fail "the package unitlet is installed already ($(pkg_status)); this check installs and removes it (apt-get remove --purge unitlet first)"
fi

ensure_packages lintian systemd dbus dbus-user-session man-db zsh fish

name="unitlet-debcheck-$$"
base=/var/lib/$name
rt=/run/$name
installed=0
manager=0
files="$(mktemp)"

cleanup() {
  local rc=$?
  trap - EXIT
  set +e
  if [ "$rc" != 0 ] && [ "$manager" = 1 ]; then
    echo "--- the private user manager's log ($base/manager.log), last 40 lines:" >&2
    tail -n 40 "$base/manager.log" >&2
    for f in "$rt"/state/log/*.log; do
      [ -f "$f" ] || continue
      echo "--- $f, last 40 lines:" >&2
      tail -n 40 "$f" >&2
    done
  fi
  [ "$manager" = 1 ] && stop_private_manager "$name"
  rm -rf "$base"
  if [ "$installed" = 1 ]; then
    echo "==> apt-get remove --purge unitlet (cleaning up after a failure)"
    DEBIAN_FRONTEND=noninteractive apt-get remove --purge -y -qq unitlet >/dev/null
  fi
  rm -f "$files"
  [ "$rc" = 0 ] || echo "check-deb: FAILED (exit $rc)" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --------------------------------------------------------------------------
echo "==> lintian $(basename "$deb")"
lintian --fail-on error "$deb" || fail "lintian reports errors (the E: lines above)"
ok "lintian: no errors"

# --------------------------------------------------------------------------
echo "==> apt-get install $deb"
installed=1
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb" >/dev/null
[[ "$(dpkg-query -W -f='${Status} ${Version}' unitlet)" == "install ok installed $version-"[0-9]* ]] \
  || fail "dpkg does not show unitlet $version installed: $(dpkg-query -W -f='${Status} ${Version}' unitlet)"
dpkg -L unitlet > "$files.all"
grep -vx '/\.' "$files.all" > "$files"
rm -f "$files.all"
echo "    dpkg -L unitlet: $(wc -l < "$files") paths"
for f in /usr/bin/unitlet \
  /usr/share/man/man1/unitlet.1.gz \
  /usr/share/bash-completion/completions/unitlet \
  /usr/share/zsh/vendor-completions/_unitlet \
  /usr/share/fish/vendor_completions.d/unitlet.fish \
  /usr/lib/systemd/user/unitlet.service \
  /usr/share/doc/unitlet/copyright \
  /usr/share/doc/unitlet/changelog.Debian.gz \
  /usr/share/doc/unitlet/README.md \
  /usr/share/doc/unitlet/docs/manifests.md \
  /usr/share/doc/unitlet/examples/manifests/prometheus.yaml \
  /usr/share/doc/unitlet/examples/deploy/prometheus/prometheus.yml \
  /usr/share/doc/unitlet/examples/units/node-exporter.service; do
  grep -qx "$f" "$files" || fail "the package does not hold $f"
  [ -f "$f" ] || fail "$f is listed by dpkg -L but not on disk"
done
ok "binary, man page, completions, user unit, docs and examples in place"

out="$(/usr/bin/unitlet --version)"
case "$out" in
  "unitlet $version"|"unitlet $version "*) ok "/usr/bin/unitlet --version: $out" ;;
  *) fail "/usr/bin/unitlet --version printed '$out', want unitlet $version" ;;
esac

grep -q '^\.TH unitlet 1' <<<"$(zcat /usr/share/man/man1/unitlet.1.gz)" \
  || fail "/usr/share/man/man1/unitlet.1.gz has no '.TH unitlet 1' header"
rendered="$(MANWIDTH=80 MANPAGER=cat man -l /usr/share/man/man1/unitlet.1.gz 2>&1)" \
  || fail "man -l /usr/share/man/man1/unitlet.1.gz failed: $rendered"
grep -q '^SYNOPSIS' <<<"$rendered" \
  || fail "man -l /usr/share/man/man1/unitlet.1.gz rendered no SYNOPSIS: $(head -n 5 <<<"$rendered")"
[ "$(man -w unitlet)" = /usr/share/man/man1/unitlet.1.gz ] \
  || fail "man -w unitlet answers '$(man -w unitlet 2>&1)', want /usr/share/man/man1/unitlet.1.gz"
ok "man page renders ($(wc -l <<<"$rendered") lines) and man unitlet finds it"

bash -c '. /usr/share/bash-completion/completions/unitlet && complete -p unitlet' >/dev/null \
  || fail "the bash completion does not register a completion for unitlet"
zsh -n /usr/share/zsh/vendor-completions/_unitlet || fail "zsh cannot parse /usr/share/zsh/vendor-completions/_unitlet"
fish -n /usr/share/fish/vendor_completions.d/unitlet.fish || fail "fish cannot parse /usr/share/fish/vendor_completions.d/unitlet.fish"
ok "completions load (bash) and parse (zsh, fish)"

# --------------------------------------------------------------------------
echo "==> the packaged unit under a private user manager ($rt)"
install -d -m 700 "$rt"
export HOME="$rt/home" XDG_RUNTIME_DIR="$rt" XDG_CONFIG_HOME="$rt/config" \
  XDG_DATA_HOME="$rt/data" XDG_STATE_HOME="$rt/state" DBUS_SESSION_BUS_ADDRESS="unix:path=$rt/bus"
# What a user has before enabling unitlet, as README says: a manifests
# directory (one Service here), nothing else (unitlet makes the rest).
mkdir -p "$HOME" "$XDG_CONFIG_HOME/unitlet/manifests" \
  "$XDG_STATE_HOME/log" "$XDG_CONFIG_HOME/systemd/user/service.d"
cat > "$XDG_CONFIG_HOME/unitlet/manifests/debcheck.yaml" <<'EOF'
apiVersion: unitlet/v1
kind: Service
metadata:
  name: debcheck-sleep
spec:
  description: a long sleep, started by the packaged unitlet (scripts/check-deb.sh)
  command: [/bin/sleep, infinity]
EOF
# No journald in a private manager: each service's output goes to a file.
printf '[Service]\nStandardOutput=append:%s/log/%%N.log\nStandardError=append:%s/log/%%N.log\n' \
  "$XDG_STATE_HOME" "$XDG_STATE_HOME" > "$XDG_CONFIG_HOME/systemd/user/service.d/50-debcheck-logs.conf"
manager=1
start_private_manager "$name"
read -r mpid < "$base/manager.pid"
ok "user manager running (PID $mpid, cgroups: $(private_cgroups "$name" | paste -sd' '))"

grep -qx 'ExecStart=/usr/bin/unitlet run' <<<"$(systemctl --user cat unitlet.service)" \
  || fail "the user manager does not load /usr/lib/systemd/user/unitlet.service with ExecStart=/usr/bin/unitlet run"
systemctl --user enable --now unitlet || fail "systemctl --user enable --now unitlet"
state="$(systemctl --user is-active unitlet || true)"
[ "$state" = active ] || fail "systemctl --user is-active unitlet: $state"
ok "systemctl --user enable --now unitlet: active ($(systemctl --user show -p MainPID --value unitlet | sed 's/^/MainPID /'))"
[ -L "$XDG_CONFIG_HOME/systemd/user/default.target.wants/unitlet.service" ] \
  || fail "enable made no $XDG_CONFIG_HOME/systemd/user/default.target.wants/unitlet.service link"

ready=0
for _ in $(seq 600); do
  if /usr/bin/unitlet get 2>/dev/null | services_ready; then ready=1; break; fi
  sleep 0.1
done
/usr/bin/unitlet get || true
[ "$ready" = 1 ] || fail "the packaged unitlet did not bring debcheck-sleep to Ready within 60s"
[ "$(systemctl --user is-active debcheck-sleep.service)" = active ] || fail "debcheck-sleep.service is not active"
ok "the packaged unitlet runs the manifest's Service (debcheck-sleep Ready)"

stop_private_manager "$name"
manager=0
rm -rf "$base"
for cg in $(private_cgroups "$name"); do fail "the cgroup $cg is still there"; done
[ ! -e "$rt" ] || fail "the runtime directory $rt is still there"
ok "private user manager stopped, its cgroups and runtime directory removed"

# --------------------------------------------------------------------------
echo "==> apt-get remove --purge unitlet"
DEBIAN_FRONTEND=noninteractive apt-get remove --purge -y -qq unitlet >/dev/null
installed=0
if [ -n "$(pkg_status)" ] && [[ "$(pkg_status)" != *not-installed ]]; then
  fail "dpkg still shows unitlet after the purge: $(pkg_status)"
fi
left=0
while read -r f; do
  if [ -d "$f" ] && [ ! -L "$f" ]; then
    # Shared directories stay when another package owns them.
    dpkg-query -S "$f" >/dev/null 2>&1 && continue
    echo "    left behind: the directory $f (no other package owns it)" >&2
    left=$((left + 1))
  elif [ -e "$f" ] || [ -L "$f" ]; then
    echo "    left behind: $f" >&2
    left=$((left + 1))
  fi
done < "$files"
[ "$left" = 0 ] || fail "$left paths of the package are left after apt-get remove --purge"
ok "removed: none of the $(wc -l < "$files") paths dpkg -L listed is left"
echo "check-deb: OK"
