"""The session core, one module per stage: gateway/smtp/session.py names them in
reading order and puts them together as `Session`."""
