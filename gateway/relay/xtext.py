"""RFC 3461 xtext: how XCLIENT and XFORWARD attribute values travel on a command line."""


def xtext(value: str) -> str:
    """Encode `+`, `=`, spaces, controls and non-ASCII as `+HH` (bytes of the UTF-8 form)."""
    out = []
    for byte in value.encode("utf-8", "surrogateescape"):
        if 33 <= byte <= 126 and byte not in (ord("+"), ord("=")):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)
