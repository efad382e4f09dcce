"""The policy core: facts in, verdict out.

Rules of this package (h11-style): nothing here performs I/O or reads the clock. It must
not import asyncio, aiosmtpd, aiosmtplib, dnspython, redis or sqlite3. Time arrives as a
`now` argument, DNS as an `RDNS` fact, the store's record as a value. List files are the
one exception that touches the disk, and only in `lists.read_list_file`, called at
configuration load, never per connection.
"""
