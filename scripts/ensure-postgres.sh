#!/usr/bin/env bash
# Make sure PostgreSQL server binaries are present for the history tests.
# Installs Debian's `postgresql` package only when no initdb is found and we
# are root; otherwise says what is missing and exits 0 (the tests then skip).
set -euo pipefail

if compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-postgres: no /usr/lib/postgresql/*/bin/initdb and not root;" \
         "the PostgreSQL history tests will be skipped" >&2
    exit 0
fi
if ! command -v apt-get > /dev/null; then
    echo "ensure-postgres: apt-get not available; the PostgreSQL history tests will be skipped" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql > /dev/null
echo "ensure-postgres: installed $(compgen -G '/usr/lib/postgresql/*/bin/initdb' | head -n1)"
