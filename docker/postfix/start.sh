#!/bin/sh
# Make the SASL user of compose.yaml (SASL_USER as user@realm, SASL_PASSWORD), then run
# Postfix in the foreground. The password goes through stdin, never the command line.
set -eu
if [ -n "${SASL_USER:-}" ]; then
    user="${SASL_USER%@*}"
    realm="${SASL_USER#*@}"
    printf '%s' "${SASL_PASSWORD:?SASL_PASSWORD is needed with SASL_USER}" \
        | saslpasswd2 -p -c -f /etc/sasldb2 -u "$realm" "$user"
    chown root:postfix /etc/sasldb2
    chmod 640 /etc/sasldb2
fi
exec postfix start-fg
