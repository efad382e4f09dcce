"""What the deferral procedure remembers things by.

* The *address key* is the client address masked to `ipv4_prefix` / `ipv6_prefix`:
  `203.0.113.9` (a /32 prints as the address) or `2001:db8:1:2::/64`. The penalty box is
  always keyed by it, so an impatient host is shut out by address and the entry can be
  exported to a firewall.
* The *client key* is the address key, or, with `lump_by_rdns`, the rDNS domain of a
  forward-confirmed, non-suspect name (`mail-ot1-f41.google.com` -> `google.com`), so a
  provider's pool of servers becomes familiar once rather than once per address.
* The *triplet key* (`policy.key = "triplet"`) adds the normalized sender and the
  recipient, postgrey-style.
* The *message key* names a message within a key's record, so a retry of the same
  message can be told from the next message of a backlog: the normalized sender, the
  first recipient (a sender retries a message with its recipients in the same order) and
  the SIZE it declared at MAIL (the same on a retry; absent when the MTA declares none,
  as OpenSMTPD: deferral.py tells its backlog's copies from retries).
"""

from __future__ import annotations

import functools
import re
import zlib

from gateway.policy.net import IPAddress, address_text, mask_address


def address_key(
    address: IPAddress, ipv4_prefix: int, ipv6_prefix: int, text: str | None = None
) -> str:
    """`text`, when given, is the address already formatted (saves formatting it twice)."""
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    if prefix == address.max_prefixlen:
        return text if text is not None else address_text(address)
    return str(mask_address(address, prefix))


def rdns_domain(name: str) -> str | None:
    """The name minus its first label, when that leaves a real domain (two labels or more).

    Returns None when lumping would be meaningless or risky: too few labels, or a
    remainder made only of digits (a PTR name that is an address in disguise).
    """
    first_dot = name.find(".")
    if first_dot < 0:
        return None
    domain = name[first_dot + 1 :]
    if domain.count(".") < 1 or domain.rsplit(".", 1)[-1].isdigit():
        return None
    return domain


def client_key(
    address_key_text: str, confirmed_name: str | None, suspect: bool, lump_by_rdns: bool
) -> str:
    """The key a client's deferral record lives under (see the module docstring)."""
    if lump_by_rdns and confirmed_name and not suspect:
        domain = rdns_domain(confirmed_name)
        if domain is not None:
            return domain
    return address_key_text


_BATV = re.compile(r"^(?:prvs|msprvs\d*|btv\d*)=[^=@]*=", re.IGNORECASE)
_DIGITS = re.compile(r"\d+")


def _srs_original(local: str) -> tuple[str, str] | None:
    """(local part, domain) of the address an SRS-rewritten local part stands for:
    `srs0=hhh=tt=orig.example=alice`, `srs1=hhh=fwd.example==hhh=tt=orig.example=alice`.
    The hash and timestamp change from one forwarding to the next; the original does not."""
    parts = local.split("=")
    if parts[0] == "srs0" and len(parts) >= 5:
        return "=".join(parts[4:]), parts[3]
    if parts[0] == "srs1" and len(parts) >= 8 and parts[3] == "":
        return "=".join(parts[7:]), parts[6]
    return None


def normalize_sender(sender: str) -> str:
    """Lower-case, strip BATV and SRS tags and +extension, turn digit runs (VERP) into `#`.

    `newsletter+bounce-4711@list.example`, `prvs=1234abcd=newsletter@list.example` and
    `SRS0=HHH=TT=list.example=newsletter@forwarder.example` all become
    `newsletter@list.example`; the null sender stays `<>`.
    """
    text = sender.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if not text:
        return "<>"
    text = text.lower()
    local, at, domain = text.rpartition("@")
    if not at:
        local, domain = text, ""
    original = _srs_original(local) if local.startswith("srs") else None
    if original is not None:
        local, domain = original
    local = _BATV.sub("", local)
    local = local.split("+", 1)[0]
    local = _DIGITS.sub("#", local)
    return f"{local}@{domain}" if at else local


def is_null_sender(sender: str) -> bool:
    """`<>` (given to the hooks as "" or "<>"), the sender of bounces and callbacks."""
    return sender.strip() in ("", "<>")


def normalize_recipient(recipient: str) -> str:
    text = recipient.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text.lower()


def triplet_key(client: str, sender: str, recipient: str) -> str:
    """`client/sender/recipient`, with the sender and recipient normalized."""
    return f"{client}/{normalize_sender(sender)}/{normalize_recipient(recipient)}"


@functools.lru_cache(maxsize=4096)  # a returning host's message: every retry asks again
def message_key(sender: str, recipient: str, size: int | None = None) -> str:
    """8 hex digits for (normalized sender, recipient, declared SIZE): the same in every
    gateway process. A retry carries the same three; two messages of a backlog rarely do."""
    text = f"{normalize_sender(sender)} {normalize_recipient(recipient)} {size or ''}"
    return f"{zlib.crc32(text.encode('utf-8', 'surrogateescape')):08x}"


def place_key(address: str) -> str:
    """6 hex digits naming one of our listening addresses ("IP:PORT") in a record."""
    return f"{zlib.crc32(address.encode()) & 0xFFFFFF:06x}"
