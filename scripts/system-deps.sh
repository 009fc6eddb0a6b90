#!/usr/bin/env bash
# Installs the Debian packages kubemta's tests and `make run` need, when missing:
# nsd (the test DNS server), swaks (a real SMTP client), rabbitmq-server (a private
# broker when none answers), prometheus (promtool, to test the alert rules), dovecot
# (LMTP + IMAP, the mailbox server of the LMTP tests), opendkim-tools (an independent
# DKIM verifier for the signing tests), postfix (the reference MTA the DSN tests talk to
# in both directions, and the benchmark's; only private instances under a test's temporary
# directory are ever started: debconf's "No configuration" leaves the system one without a
# main.cf, so the package starts nothing and port 25 stays free).
set -euo pipefail
missing=()
command -v nsd >/dev/null || missing+=(nsd)
command -v swaks >/dev/null || missing+=(swaks)
# swaks only recommends its TLS module, and recommends are not installed below
perl -MNet::SSLeay -e 1 2>/dev/null || missing+=(libnet-ssleay-perl)
command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
command -v promtool >/dev/null || missing+=(prometheus)
[[ -x /usr/lib/dovecot/lmtp ]] || missing+=(dovecot-lmtpd)
[[ -x /usr/lib/dovecot/imap ]] || missing+=(dovecot-imapd)
command -v opendkim-testmsg >/dev/null || missing+=(opendkim-tools)
command -v postfix >/dev/null || missing+=(postfix)
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing Debian packages: ${missing[*]} (run as root or install them)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [[ " ${missing[*]} " == *" postfix "* ]]; then
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi
