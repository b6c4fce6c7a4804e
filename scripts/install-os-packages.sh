#!/usr/bin/env bash
# Installs the Debian packages the tests and the local cluster need, only when missing:
# redis-server (Redis Streams queue tests), chromium (headless screenshot of `skillfactory report`),
# prometheus (the dashboard tests scrape the services with a real Prometheus).
set -euo pipefail
packages=(redis-server chromium prometheus)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
