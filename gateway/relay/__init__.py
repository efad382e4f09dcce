"""The relay edge: accepted transactions go to the backend MTA during the client's session.

content.py   bare CR/LF (SMTP smuggling) checks and normalization
received.py  the Received: trace header
xtext.py     RFC 3461 xtext, for XCLIENT / XFORWARD values
reply.py     the backend's replies as values (pure: the session core mirrors them)
client.py    the SMTP client end of a backend connection: pipelined replies, in order
pool.py      idle backend connections kept for the next client (backend.reuse)
backend.py   the backend for one client session; every reply mirrored, every
             failure turned into a 4xx, never a 250 the backend did not give
"""
