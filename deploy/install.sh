#!/usr/bin/env bash
# Install unitlet and the shipped monitoring stack for the current user.
# Needs no root on a systemd desktop: everything goes under $HOME (XDG).
#
#   deploy/install.sh [--no-start]
#
# - copies the unitlet binary to ~/.local/bin: $UNITLET_BIN as it is, else
#   a stripped build (cargo build --profile dist, into target/dist/),
# - installs what the binary generates: the man page unitlet(1) to
#   $XDG_DATA_HOME/man/man1/unitlet.1, completions for bash
#   ($XDG_DATA_HOME/bash-completion/completions/unitlet), zsh
#   ($XDG_DATA_HOME/zsh/site-functions/_unitlet: a directory your fpath must
#   include) and fish ($XDG_CONFIG_HOME/fish/completions/unitlet.fish),
# - copies the documentation (README.md, docs/) to $XDG_DATA_HOME/doc/unitlet/,
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

# The dist profile is the release build without symbols or line tables
# (about a fifth of the size). Cargo rebuilds only what changed.
if [ -n "${UNITLET_BIN:-}" ]; then
  exe="$UNITLET_BIN"
elif command -v cargo >/dev/null 2>&1; then
  # The etcd client's protocol is compiled from .proto files at build time.
  if ! command -v protoc >/dev/null 2>&1 || [ ! -e /usr/include/google/protobuf/descriptor.proto ]; then
    echo "error: building unitlet needs protoc and the protobuf well-known types; install them (Debian: sudo apt-get install protobuf-compiler libprotobuf-dev) or set UNITLET_BIN to a unitlet binary" >&2
    exit 1
  fi
  echo "==> building unitlet (cargo build --profile dist)"
  (cd "$repo" && cargo build --profile dist --locked)
  exe="$repo/target/dist/unitlet"
elif [ -x "$repo/target/dist/unitlet" ]; then
  exe="$repo/target/dist/unitlet"
else
  echo "error: no cargo to build unitlet and no $repo/target/dist/unitlet; install Rust (rustup.rs) or set UNITLET_BIN to a unitlet binary" >&2
  exit 1
fi
install -d -m 755 "$bin"
install -m 755 "$exe" "$bin/unitlet.new" && mv -f "$bin/unitlet.new" "$bin/unitlet"
echo "==> installed $bin/unitlet ($(du -h "$bin/unitlet" | cut -f1))"

# Write what the installed binary prints into a file, atomically.
generate() {
  local to="$1"; shift
  install -d -m 755 "$(dirname "$to")"
  "$bin/unitlet" "$@" > "$to.new"
  chmod 644 "$to.new"
  mv -f "$to.new" "$to"
}
generate "$data/man/man1/unitlet.1" man
generate "$data/bash-completion/completions/unitlet" completions bash
generate "$data/zsh/site-functions/_unitlet" completions zsh
generate "$config/fish/completions/unitlet.fish" completions fish
echo "==> man page in $data/man/man1/unitlet.1 (man unitlet)"
echo "    completions: $data/bash-completion/completions/unitlet,"
echo "    $data/zsh/site-functions/_unitlet (add that directory to fpath),"
echo "    $config/fish/completions/unitlet.fish"

# The documentation, always replaced (it is not meant to be edited here).
doc="$data/doc/unitlet"
install -d -m 755 "$doc" "$doc/docs"
for f in README.md ARCHITECTURE.md BENCHMARKS.md CHANGELOG.md; do
  if [ -f "$repo/$f" ]; then install -m 644 "$repo/$f" "$doc/$f"; fi
done
install -m 644 "$repo"/docs/*.md "$doc/docs/"
echo "==> documentation in $doc"

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
# Documentation= names the default data directory; point it at the real one
# (when its path needs no escaping in a URL).
if [ "$doc" = "$HOME/.local/share/doc/unitlet" ] || [[ "$doc" == *[!A-Za-z0-9/._-]* ]]; then
  install -m 644 "$repo/deploy/unitlet.service" "$config/systemd/user/unitlet.service.new"
else
  sed "s|file://%h/.local/share/doc/unitlet/|file://$doc/|g" "$repo/deploy/unitlet.service" \
    > "$config/systemd/user/unitlet.service.new"
  chmod 644 "$config/systemd/user/unitlet.service.new"
fi
mv -f "$config/systemd/user/unitlet.service.new" "$config/systemd/user/unitlet.service"
install -d -m 755 "$data/systemd/user"
if [ "$start" = 1 ]; then
  systemctl --user daemon-reload
  systemctl --user enable --now unitlet.service
  echo "==> unitlet.service started"
fi
