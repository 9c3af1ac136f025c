#!/usr/bin/env bash
# Install unitlet and the shipped monitoring stack for the current user.
# Needs no root on a systemd desktop: everything goes under $HOME (XDG).
#
#   deploy/install.sh [--no-start]
#   deploy/install.sh --uninstall
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
# - installs unitlet.service and starts it (unless --no-start),
# - writes down every file it installed, with its checksum, in
#   $XDG_CONFIG_HOME/unitlet/.installed.
#
# --uninstall stops and disables unitlet.service and the units unitlet wrote,
# then removes what .installed lists and the unit files unitlet wrote
# (marked X-Unitlet-Manifest=) and its state. It keeps, and lists: files you
# changed since they were installed (manifests, configs), backups, the
# stack's data ($XDG_DATA_HOME/unitlet-stack) and secrets.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
start=1
mode=install
case "${1:-}" in
  --no-start) start=0 ;;
  --uninstall) mode=uninstall ;;
  "") ;;
  *) echo "usage: deploy/install.sh [--no-start | --uninstall]" >&2; exit 2 ;;
esac

config="${XDG_CONFIG_HOME:-$HOME/.config}"
data="${XDG_DATA_HOME:-$HOME/.local/share}"
state="${XDG_STATE_HOME:-$HOME/.local/state}"
dest="$config/unitlet"
bin="$HOME/.local/bin"
installed="$dest/.installed"

# Remove what install.sh installed and the units unitlet wrote; keep and
# list what is yours (changed files, backups, the stack's data, secrets).
uninstall() {
  local unitdir="${UNITLET_UNIT_DIR:-$data/systemd/user}" reach=0 u sum path d
  local -a ours=(unitlet.service) kept=()
  local removed=0
  for u in "$unitdir"/*.timer "$unitdir"/*.service; do
    [ -f "$u" ] && grep -q '^X-Unitlet-Manifest=' "$u" && ours+=("$(basename "$u")")
  done
  systemctl --user show-environment >/dev/null 2>&1 && reach=1
  if [ "$reach" = 1 ]; then
    # unitlet first (it would start the others again), then timers, then the rest.
    systemctl --user disable --now unitlet.service >/dev/null 2>&1 || true
    # shellcheck disable=SC2046
    systemctl --user stop $(printf '%s\n' "${ours[@]}" | grep '\.timer$') >/dev/null 2>&1 || true
    systemctl --user stop "${ours[@]}" >/dev/null 2>&1 || true
    echo "==> stopped unitlet.service and the ${#ours[@]} units unitlet manages here"
  fi
  for u in "${ours[@]:1}"; do
    rm -f "$unitdir/$u" && removed=$((removed + 1))
    # When a Persistent= timer last ran (systemd's, for that timer only).
    rm -f "$data/systemd/timers/stamp-$u"
  done
  [ -d "$data/systemd/timers" ] && rmdir "$data/systemd/timers" 2>/dev/null || true
  # Enablement links (WantedBy=) of those units, wherever they were made.
  for d in "$config/systemd/user" "$unitdir"; do
    [ -d "$d" ] || continue
    for u in "${ours[@]}"; do
      find "$d" -mindepth 2 -maxdepth 2 \( -path '*.wants/*' -o -path '*.requires/*' \) -name "$u" -type l -delete
    done
    find "$d" -mindepth 1 -maxdepth 1 -type d \( -name '*.wants' -o -name '*.requires' \) -empty -delete
  done
  if [ -f "$installed" ]; then
    while read -r sum path; do
      if [ "$sum" = link ]; then
        [ -L "$path" ] && rm -f "$path" && removed=$((removed + 1))
      elif [ -f "$path" ]; then
        if [ "$(sha256sum < "$path" | cut -d' ' -f1)" = "$sum" ]; then
          rm -f "$path" && removed=$((removed + 1))
        fi
      fi
    done < "$installed"
    rm -f "$installed"
  else
    echo "    no $installed: nothing was installed here by deploy/install.sh (or by an older one)"
  fi
  # unitlet's state, but for backups.
  if [ -d "$state/unitlet" ]; then
    find "$state/unitlet" -mindepth 1 -maxdepth 1 ! -name backups -exec rm -rf {} +
  fi
  for d in "$dest" "$data/doc/unitlet" "$data/unitlet-stack" "$state/unitlet"; do
    [ -d "$d" ] && find "$d" -depth -mindepth 1 -type d -empty -delete
    [ -d "$d" ] && rmdir "$d" 2>/dev/null || true
  done
  [ "$reach" = 1 ] && systemctl --user daemon-reload >/dev/null 2>&1 || true
  echo "==> removed $removed files: the unitlet binary, man page, completions, docs, unitlet.service, the shipped manifests and configs, the unit files unitlet wrote, its state"
  [ -d "$dest" ] && while IFS= read -r path; do kept+=("$path"); done < <(find "$dest" \( -type f -o -type l \) | sort)
  [ -d "$HOME/.config/unitlet/secrets" ] && [[ "$HOME/.config/unitlet/secrets" != "$dest"/* ]] \
    && kept+=("$HOME/.config/unitlet/secrets/ (secrets)")
  [ -d "$state/unitlet/backups" ] && kept+=("$state/unitlet/backups/ (backups)")
  [ -d "$data/unitlet-stack" ] && kept+=("$data/unitlet-stack/ (the stack's data: Prometheus TSDB, Alertmanager, Grafana, Loki)")
  if [ ${#kept[@]} -gt 0 ]; then
    echo "==> kept (yours: changed since installed, secrets, backups, data; remove by hand if unwanted):"
    printf '    %s\n' "${kept[@]}"
  fi
}

if [ "$mode" = uninstall ]; then
  uninstall
  exit 0
fi

# Every file installed, as "SHA256  PATH" ("link  PATH" for a symlink):
# what --uninstall removes (a file whose checksum changed is yours now).
install -d -m 755 "$dest"
: > "$installed.new"
record() {
  local f
  for f in "$@"; do
    if [ -L "$f" ]; then
      printf 'link  %s\n' "$f" >> "$installed.new"
    else
      printf '%s  %s\n' "$(sha256sum < "$f" | cut -d' ' -f1)" "$f" >> "$installed.new"
    fi
  done
}

# The dist profile is the release build without symbols or line tables
# (about a fifth of the size). Cargo rebuilds only what changed.
if [ -n "${UNITLET_BIN:-}" ]; then
  exe="$UNITLET_BIN"
elif command -v cargo >/dev/null 2>&1; then
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
record "$bin/unitlet"
echo "==> installed $bin/unitlet ($(du -h "$bin/unitlet" | cut -f1))"

# Write what the installed binary prints into a file, atomically.
generate() {
  local to="$1"; shift
  install -d -m 755 "$(dirname "$to")"
  "$bin/unitlet" "$@" > "$to.new"
  chmod 644 "$to.new"
  mv -f "$to.new" "$to"
  record "$to"
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
  if [ -f "$repo/$f" ]; then install -m 644 "$repo/$f" "$doc/$f" && record "$doc/$f"; fi
done
install -m 644 "$repo"/docs/*.md "$doc/docs/"
for f in "$doc"/docs/*.md; do record "$f"; done
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
      record "$dst"
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
  record "$dest/deploy/$c/data"
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
record "$config/systemd/user/unitlet.service"
mv -f "$installed.new" "$installed"
install -d -m 755 "$data/systemd/user"
if [ "$start" = 1 ]; then
  systemctl --user daemon-reload
  systemctl --user enable --now unitlet.service
  echo "==> unitlet.service started"
fi
