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
