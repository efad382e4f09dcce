"""The DNS edge: reverse lookups with forward confirmation, cached and single-flight.

transport.py  queries on long-lived UDP sockets (TCP on truncation), dnspython wire format
cache.py      a bounded LRU that honours TTLs
resolver.py   lookups, single-flight, FCrDNS -> the policy's RDNS fact
"""
