"""The policy core: facts in, verdict out.

Rules of this package (h11-style): nothing here performs I/O, reads the clock or reads
configuration. It must not import asyncio, aiosmtpd, dnspython, redis,
sqlite3 or gateway.config (tests/test_layers.py checks). Time arrives as a `now`
argument, DNS as an `RDNS` fact, the store's record as a value, list entries as parsed
lines: gateway/assembly.py reads the files and the settings and builds the `Policy`.
"""
