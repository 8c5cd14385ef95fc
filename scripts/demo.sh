#!/usr/bin/env bash
# Demo of dovecot-lmdb: a private Dovecot on 127.0.0.1 with mail in lmdb:~/lmdb.
#
#   scripts/demo.sh [start]   install what is missing, build, start, deliver mail
#   scripts/demo.sh stop      stop the demo Dovecot   (make demo-stop)
#   scripts/demo.sh status    is it running, how to connect
#
# Runs as root on Debian 12. The system Dovecot (/etc/dovecot, its service) is
# never used or changed: the demo has its own config and processes under
# DEMO_DIR (default /tmp/dovecot-lmdb-demo).
# Environment: DEMO_DIR, DEMO_MAIL_LOCATION (default lmdb:~/lmdb; e.g.
# maildir:~/Maildir), DEMO_CORPUS, DEMO_MESSAGES, DEMO_SKIP_BUILD=1,
# DOVECOT_LMDB_MODULE_DIR (where the built lib*.so are).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=/usr/bin/python3
demo_py="$repo/tests/integration/demo.py"
cmd=${1:-start}

case "$cmd" in
  start) ;;
  stop|status) exec "$py" "$demo_py" "$cmd" ;;
  -h|--help|help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: run as root (it installs packages and runs Dovecot's mail processes as a system user)" >&2
  exit 1
fi

bash "$repo/scripts/install-deps.sh" build

if [ "${DEMO_SKIP_BUILD:-0}" != 1 ]; then
  if [ -f "$repo/Makefile" ]; then
    echo "==> Building (make in $repo)"
    make -C "$repo"
  else
    echo "==> No Makefile in $repo: skipping the build" >&2
  fi
fi

echo "==> Starting the demo Dovecot"
exec "$py" "$demo_py" start
