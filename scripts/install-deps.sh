#!/usr/bin/env bash
# Install, with apt-get, the Debian 12 packages that building, the demo and
# the tests need.  Only missing packages are installed; run as root.
#   scripts/install-deps.sh [build|test|bench]   (default: test)
# "bench" (used by `make bench` only) adds Debian's FTS backends that the
# benchmark compares against; the tests never need them.
set -euo pipefail

build_pkgs=(make gcc libc6-dev pkg-config dovecot-dev liblmdb-dev libssl-dev
            libzstd-dev dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd
            python3 openssl curl)
test_pkgs=(libcmocka-dev python3-pytest lmdb-utils valgrind clang
           debhelper dpkg-dev fakeroot strace)
bench_pkgs=(dovecot-fts-xapian dovecot-lucene time valgrind)

want=("${build_pkgs[@]}")
case "${1:-test}" in
  test)  want+=("${test_pkgs[@]}") ;;
  bench) want+=("${bench_pkgs[@]}") ;;
esac

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: missing packages (${missing[*]}); run as root" >&2
  exit 1
fi
echo "==> Installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Installing dovecot-core may try to start the system Dovecot; we never use
# it (tests run private instances on their own ports), so don't let the
# package start services here.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
