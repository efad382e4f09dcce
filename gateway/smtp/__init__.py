"""The SMTP side: one module per stage of a session, the rules in one of them.

session.py    the session core: phases, flags and every rule of a session; no I/O
early.py      before the greeting: PROXY header, connect stage, a refused session
server.py     the aiosmtpd adapter: commands in, session-core calls, awaits, replies out
services.py   what the adapter may use (built by the runtime, swapped on reload)
limits.py     connection limits and stress
addresses.py  HELO names and mail paths: what aiosmtpd's parser forgives but SMTP does not
proxy.py      PROXY protocol headers: who the client really is
"""
