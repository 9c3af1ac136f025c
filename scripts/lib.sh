# Shared by scripts/quickstart.sh and scripts/test.sh (sourced, not run).

# Install the given Debian packages that are not installed yet.
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "==> apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Debian's packages run Prometheus, node_exporter and Alertmanager as system
# daemons, which would hold the ports unitlet's user services (and the
# tests) need: stop them.
stop_packaged_daemons() {
  local s
  for s in prometheus prometheus-node-exporter prometheus-alertmanager; do
    if [ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
      systemctl disable --now "$s" >/dev/null 2>&1 || true
    else
      pkill -f "^/usr/bin/$s( |\$)" 2>/dev/null || true
    fi
  done
}
