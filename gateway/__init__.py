"""Onajimi: a queue-less SMTP front door (ichigen-san, S25R and greylisting).

Layout, by the rule "the policy is pure, the edges do the I/O":
    policy/    facts in, verdict out: S25R, lists, keys, records, the deferral state machine
    resolver/  DNS edge: PTR lookups and forward confirmation, cached and single-flight
    store/     state edge: pending / familiar / penalty records and dynamic list entries
    cli/       the `onajimi` command
"""

__version__ = "0.1.0"
