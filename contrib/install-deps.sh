#!/bin/sh
# Installs what imgspool needs to build and test, on Debian/Ubuntu, only when something is missing.
set -e
need=""
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
for p in gcc make pkg-config libcurl4-openssl-dev libjansson-dev libinih-dev perl python3 \
	clang libclang-rt-14-dev; do
	have_pkg "$p" || need="$need $p"
done
[ -z "$need" ] && exit 0
echo "installing:$need"
if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $need
