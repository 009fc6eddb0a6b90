#!/usr/bin/env bash
# Usage: scripts/rabbitmq-root.sh SUITE DIR
#
# Makes DIR a minimal Debian SUITE system (debootstrap) with that release's rabbitmq-server, unless DIR
# already holds one, and prints its RabbitMQ version. The tests start their private nodes from it with
# KUBEMTA_TEST_RABBITMQ_ROOT=DIR (tests/harness/rabbitmq.py runs them by chroot), so one machine runs the
# suite against RabbitMQ versions its own Debian does not ship: trixie (Debian 13) has 4.0, sid 4.3 or later.
# Needs root (debootstrap, chroot) and deb.debian.org; about 400 MB and two minutes per suite.
set -euo pipefail
suite=${1:?usage: $0 SUITE DIR}
root=${2:?usage: $0 SUITE DIR}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
server=usr/lib/rabbitmq/bin/rabbitmq-server
if [[ ! -x $root/$server ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "making a Debian $suite system in $root needs root" >&2
        exit 1
    fi
    if ! command -v debootstrap >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends debootstrap </dev/null
    fi
    partial=$root.partial
    rm -rf "$partial"
    mkdir -p "$(dirname "$root")"
    echo "debootstrap $suite into $root (log: $partial.log)" >&2
    if ! debootstrap --variant=minbase --include=rabbitmq-server "$suite" "$partial" "$mirror" >"$partial.log" 2>&1 </dev/null; then
        tail -20 "$partial.log" >&2
        exit 1
    fi
    rm -rf "$root"
    mv "$partial" "$root"
    rm -f "$partial.log"
fi
# The node is named ...@localhost: Erlang looks the name up through the root's own /etc/hosts, which debootstrap
# leaves out for some suites (sid).
if [[ ! -s $root/etc/hosts ]]; then
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
fi
version=$(chroot "$root" dpkg-query -W -f '${Version}' rabbitmq-server)
echo "$root: Debian $suite, rabbitmq-server $version"
