"""`onajimi simulate`: what a configuration costs real senders, before it meets them.

A week of sender behaviour runs through the real policy code: the SMTP session core
(smtp/session.py) and the Decider, in the order an SMTP session calls them, on the
memory store, with a simulated clock. DNS is given (no resolver), nothing is sent over a
socket and nothing sleeps. One file per job:

    retry.py       when a sender's queue tries a deferred message again (per MTA family)
    senders.py     sender classes: published behaviour of real MTAs and of bots (cited)
    population.py  classes -> sender instances: addresses, PTR names, what they send when
    gate.py        one SMTP session through the session core and the Decider (replay uses it too)
    engine.py      the event queue and the simulated clock; senders' attempts through the gate
    stats.py       figures per class, and the run's result as plain data (and JSON)
    report.py      the text tables (one configuration, or two side by side)
    plot.py        the delay distribution per class as an SVG, written by hand
    loader.py      `--senders FILE`: new classes, built-in ones reweighted

Nothing here changes the policy; a simulation only reads the configuration it is given.
"""
