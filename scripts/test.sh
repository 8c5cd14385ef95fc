#!/usr/bin/env bash
# Run every test of dovecot-lmdb on a fresh Debian 12 machine (as root):
# install what is missing, build, then `make test` (cmocka unit tests, the
# same under ASan/UBSan, and the integration suite against real Dovecot
# processes, including a valgrind pass).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/scripts/install-deps.sh" test
make -C "$repo" test "$@"
