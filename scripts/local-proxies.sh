#!/usr/bin/env bash
# Debian's nginx and PgBouncer on this machine, for the tests that put WhatsNext servers behind a
# load balancer or a connection pooler (tests/proxies.py starts its own instances of each, with
# configurations of its own on loopback ports; this script only makes the programs available).
#
# Usage: scripts/local-proxies.sh [install]   install nginx and pgbouncer with apt-get when missing
#        scripts/local-proxies.sh status      exit 0 when both programs are installed
#
# Needs root and apt-get (Debian/Ubuntu). The packages' own services, where their install scripts
# start them, are stopped again: nothing listens on port 80 or 6432 because of this script.
set -euo pipefail

action=${1:-install}
NGINX=/usr/sbin/nginx
PGBOUNCER=/usr/sbin/pgbouncer

die() {
  echo "local-proxies: $*" >&2
  exit 1
}
say() { echo "local-proxies: $*"; }

installed() { [ -x "$NGINX" ] && [ -x "$PGBOUNCER" ]; }

case "$action" in
  status)
    installed
    ;;
  install)
    if installed; then
      say "nginx and pgbouncer are installed"
      exit 0
    fi
    [ "$(id -u)" -eq 0 ] || die "installing nginx and pgbouncer needs root"
    command -v apt-get >/dev/null || die "apt-get not found: install nginx and pgbouncer by hand"
    export DEBIAN_FRONTEND=noninteractive
    packages=()
    [ -x "$NGINX" ] || packages+=(nginx)
    [ -x "$PGBOUNCER" ] || packages+=(pgbouncer)
    say "installing ${packages[*]}"
    # One installer at a time (the test suite's take the same lock), waiting for dpkg's lock.
    apt_get() { flock /tmp/whatsnext-apt.lock apt-get -o DPkg::Lock::Timeout=600 "$@"; }
    if ! apt_get install -y --no-install-recommends "${packages[@]}" >/tmp/local-proxies-apt.log 2>&1; then
      apt_get update >>/tmp/local-proxies-apt.log 2>&1 || true
      apt_get install -y --no-install-recommends "${packages[@]}" >>/tmp/local-proxies-apt.log 2>&1 ||
        { tail -20 /tmp/local-proxies-apt.log >&2; die "apt-get install ${packages[*]} failed"; }
    fi
    # The packages may have started their default services: the tests run their own instances.
    for service in nginx pgbouncer; do
      if command -v service >/dev/null; then
        service "$service" stop >/dev/null 2>&1 || true
      fi
    done
    installed || die "nginx or pgbouncer is still missing after apt-get install"
    say "installed: $("$NGINX" -v 2>&1), $("$PGBOUNCER" --version 2>&1 | head -1)"
    ;;
  *)
    die "unknown action $action (install or status)"
    ;;
esac
