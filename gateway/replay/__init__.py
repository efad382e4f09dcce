"""`onajimi replay`: what a configuration would have done to the mail in an existing log.

A Postfix maillog, or Onajimi's own decision log, is read into SMTP sessions (who, what
reverse DNS said, which recipients got what), and each runs, at the time the log gives
it, through the real session core and Decider (simulation/gate.py) on a memory store.
DNS comes from the log: nothing is looked up. One file per job:

    timestamps.py  syslog stamps (no year, New Year) and RFC 3339 ones -> epoch seconds
    model.py       what a log says, whichever log: sessions, transactions, replies
    postfix.py     a Postfix maillog -> the model
    onajimi.py     Onajimi's decision log -> the model
    replay.py      the model through the front door; messages followed across attempts
    outcome.py     what it found, as plain data and JSON
    report.py      the text

Nothing here changes the policy; a replay only reads the log and the configuration.
"""
