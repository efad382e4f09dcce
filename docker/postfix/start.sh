#!/bin/sh
# Make the SASL user of compose.yaml (SASL_USER as user@realm) when SASL_PASSWORD is
# set, then run Postfix in the foreground. The password goes through stdin, never the
# command line; with no password there is no user, and every AUTH fails.
set -eu
if [ -n "${SASL_USER:-}" ] && [ -n "${SASL_PASSWORD:-}" ]; then
    case "$SASL_USER" in
        *@*) ;;
        *) echo "start-postfix: SASL_USER must be user@realm, not $SASL_USER" >&2; exit 2 ;;
    esac
    user="${SASL_USER%@*}"
    realm="${SASL_USER#*@}"
    printf '%s' "$SASL_PASSWORD" | saslpasswd2 -p -c -f /etc/sasldb2 -u "$realm" "$user"
    chown root:postfix /etc/sasldb2
    chmod 640 /etc/sasldb2
fi
exec postfix start-fg
