#!/usr/bin/env bash
# Installs the servers the multi-replica tests start privately: Debian's PostgreSQL 15 and Redis.
# Idempotent: does nothing when initdb, pg_ctl, pg_isready and redis-server are all found.
# Installs only as root with apt-get; anywhere else it says how, and exits 0 (the server tests
# then skip, unless MOODBOT_REQUIRE_SERVERS=1 makes them fail).
set -euo pipefail

# Debian keeps PostgreSQL's server programs off PATH, under /usr/lib/postgresql/N/bin;
# tests/servers.py looks there too.
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
have() { command -v "$1" >/dev/null 2>&1; }
have_pg() {
    local bin
    bin="$(pg_bin)"
    [ -n "$bin" ] && [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ] && [ -x "$bin/pg_isready" ]
}

if have_pg && have redis-server; then
    exit 0
fi

if [ "$(id -u)" = "0" ] && have apt-get; then
    packages=()
    have_pg || packages+=(postgresql-15)
    have redis-server || packages+=(redis-server)
    echo "install-servers: installing ${packages[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d 101 keeps the packages from starting system-wide servers: the tests start
    # their own private ones on free ports.
    had_policy=0
    [ -e /usr/sbin/policy-rc.d ] && had_policy=1
    [ "$had_policy" = 1 ] || printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    status=0
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null || status=$?
    [ "$had_policy" = 1 ] || rm -f /usr/sbin/policy-rc.d
    [ "$status" = 0 ] || exit "$status"
    have_pg && have redis-server && exit 0
    echo "install-servers: apt-get finished but PostgreSQL or redis-server is missing" >&2
    exit 1
fi

cat >&2 <<'HOW'
install-servers: PostgreSQL 15 and redis-server are not both installed, and this is not a root
shell with apt-get, so nothing was installed. The PostgreSQL and Redis tests will be skipped
(or set MOODBOT_TEST_POSTGRES_URL / MOODBOT_TEST_REDIS_URL to servers you run). To install:
  Debian/Ubuntu: sudo apt-get install --no-install-recommends postgresql-15 redis-server
  Fedora:        sudo dnf install postgresql-server redis
  macOS:         brew install postgresql@15 redis
HOW
exit 0
