"""Errors meant for the operator: one line saying what and where, exit status 2.

Anything raised as a `UserError` is printed by the CLI as `onajimi: <message>` with no
traceback; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem the operator can fix: bad config, bad list line, bad argument."""


class ConfigError(UserError):
    """The configuration (or a file it names) is unusable."""


class StoreError(Exception):
    """The state store could not complete an operation (unreachable, locked, full)."""


class StoreUnusable(StoreError):
    """The store answered and refused us (a wrong password, no permission, a malformed
    URL): a configuration to fix, not an outage to wait out."""


class StoreBusy(StoreError):
    """One key changed under every attempt to update it (clients hammering it through
    several gateways). The store itself is fine: this costs that client a temporary
    failure, never the others an outage."""
