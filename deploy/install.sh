#!/usr/bin/env bash
# Install unitlet and the shipped monitoring stack for the current user.
# Needs no root on a systemd desktop: everything goes under $HOME (XDG).
#
#   deploy/install.sh [--no-start]
#
# - copies the unitlet binary to ~/.local/bin ($UNITLET_BIN, else builds it),
# - copies manifests/, deploy/ and units/ to $XDG_CONFIG_HOME/unitlet/,
#   without overwriting files you changed there (it says which it kept),
# - links each component's data directory into $XDG_DATA_HOME/unitlet-stack,
# - installs unitlet.service and starts it (unless --no-start).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
start=1
[ "${1:-}" = "--no-start" ] && start=0

config="${XDG_CONFIG_HOME:-$HOME/.config}"
data="${XDG_DATA_HOME:-$HOME/.local/share}"
dest="$config/unitlet"
bin="$HOME/.local/bin"

if [ -n "${UNITLET_BIN:-}" ]; then
  exe="$UNITLET_BIN"
elif [ -x "$repo/target/release/unitlet" ]; then
  exe="$repo/target/release/unitlet"
else
  echo "==> building unitlet (cargo build --release)"
  (cd "$repo" && cargo build --release --locked)
  exe="$repo/target/release/unitlet"
fi
install -d -m 755 "$bin"
install -m 755 "$exe" "$bin/unitlet.new" && mv -f "$bin/unitlet.new" "$bin/unitlet"
echo "==> installed $bin/unitlet"

# Copy a tree, keeping files the user already changed.
copy_tree() {
  local from="$1" to="$2"
  (cd "$from" && find . -type f ! -name '.gitignore' -print) | while read -r f; do
    local src="$from/$f" dst="$to/$f"
    install -d -m 755 "$(dirname "$dst")"
    if [ -e "$dst" ] && ! cmp -s "$src" "$dst"; then
      echo "    kept your $dst (differs from the shipped one)"
    else
      install -m 644 "$src" "$dst"
    fi
  done
}
install -d -m 755 "$config" "$dest"
copy_tree "$repo/manifests" "$dest/manifests"
copy_tree "$repo/deploy" "$dest/deploy"
copy_tree "$repo/units" "$dest/units"
chmod 755 "$dest/manifests" "$dest/deploy" "$dest/units"
chmod go-w "$dest/manifests"/*.yaml
echo "==> manifests in $dest/manifests"

# Secrets live in private files that manifests name (environmentFile,
# credentials, tokenFile), never in manifests or unit files. Grafana's admin
# password is generated once; the file is never overwritten.
secrets="$HOME/.config/unitlet/secrets"
install -d -m 700 "$secrets"
if [ ! -e "$secrets/grafana.env" ]; then
  (umask 077
   pw="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
   printf 'GF_SECURITY_ADMIN_PASSWORD=%s\n' "$pw" > "$secrets/grafana.env.new")
  mv -f "$secrets/grafana.env.new" "$secrets/grafana.env"
  echo "==> generated Grafana's admin password in $secrets/grafana.env (mode 600)"
fi

for c in prometheus alertmanager loki grafana; do
  [ -d "$dest/deploy/$c" ] || continue
  install -d -m 700 "$data/unitlet-stack/$c"
  ln -sfn "$data/unitlet-stack/$c" "$dest/deploy/$c/data"
done
install -d -m 700 "$data/unitlet-stack/promtail"

install -d -m 755 "$config/systemd/user"
install -m 644 "$repo/deploy/unitlet.service" "$config/systemd/user/unitlet.service"
install -d -m 755 "$data/systemd/user"
if [ "$start" = 1 ]; then
  systemctl --user daemon-reload
  systemctl --user enable --now unitlet.service
  echo "==> unitlet.service started"
fi
