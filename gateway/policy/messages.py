"""What a deferred message is, so that its retry can be told from the next message.

Promotion is earned by a retry of a message the key was deferred for (README "How it decides"),
so a pending key remembers its most recent deferred messages (`Message`), each with the
time of its own first try. An attempt carries an `Envelope`; it *matches* a remembered
message when:

* the normalized senders are equal (keys.normalize_sender: BATV and SRS tags, the
  +extension and VERP digits stripped; `<>` matches only `<>`);
* the SIZE declared at MAIL is equal, or absent both times;
* the recipient sets overlap: a retry may carry only the recipients still pending (one
  accepted at once as exempt, or at another MX, is not sent again).

Senders and recipients are kept as 8 hex digits (crc32 of the normalized text): the same
in every gateway process, and nothing readable is stored. A message remembers at most
RECIPIENTS_KEPT recipients; a key at most MESSAGES_KEPT messages (`remember` says
which are kept; a retry of one forgotten is deferred once more as a new message).

Records written before messages were remembered this way hold `(message key, tried_at,
places[, spare])` entries (keys.message_key: sender, first recipient, SIZE in one
hash): `upgraded` turns them into messages that match by that key alone, first tried
when the record began.
"""

from __future__ import annotations

import functools
import zlib
from typing import NamedTuple

from gateway.policy.keys import message_key, normalize_recipient, normalize_sender
from gateway.policy.values import value

MESSAGES_KEPT = 16  # deferred messages a pending key remembers (the oldest: see remember)
RECIPIENTS_KEPT = 8  # recipients a remembered message keeps (a retry overlaps early ones)


def _crc(text: str) -> str:
    return f"{zlib.crc32(text.encode('utf-8', 'surrogateescape')):08x}"


@functools.lru_cache(maxsize=8192)  # a returning host's message: every retry asks again
def sender_id(sender: str) -> str:
    """The normalized sender in 8 hex digits."""
    return _crc(normalize_sender(sender))


@functools.lru_cache(maxsize=8192)
def recipient_id(recipient: str) -> str:
    return _crc(normalize_recipient(recipient))


@value
class Envelope:
    """What an attempt says of its message: sender, declared SIZE, recipients so far."""

    sender: str  # sender_id
    size: int | None
    recipients: tuple[str, ...]  # recipient_id of each, in the order given
    legacy: str = ""  # keys.message_key of (sender, first recipient, SIZE): old records

    def with_recipient(self, recipient: str) -> Envelope:
        return Envelope(self.sender, self.size, (*self.recipients, recipient), self.legacy)


def envelope(sender: str, recipient: str, size: int | None) -> Envelope:
    return Envelope(
        sender_id(sender), size, (recipient_id(recipient),), message_key(sender, recipient, size)
    )


class Message(NamedTuple):
    """A deferred message a pending key remembers (stored as a JSON array)."""

    sender: str  # sender_id; "" for an entry of an old record (matched by `legacy` then)
    size: int | None
    recipients: tuple[str, ...]  # the old entry's message key, for an entry of an old record
    first: float  # when it was first tried: its retry promotes min_retry_delay after this
    tried_at: float  # when its latest try began
    places: str = ""  # which of our MX addresses (keys.place_key) that try reached
    spare: int = 0  # copies the sender has shown and no later session brought (deferral.py)

    def matches(self, env: Envelope) -> bool:
        if not self.sender:
            return bool(env.legacy) and self.recipients[0] == env.legacy
        if self.sender != env.sender or self.size != env.size:
            return False
        return any(r in self.recipients for r in env.recipients)

    def why_not(self, env: Envelope) -> str:
        """Why `env` is not a retry of this message (explain); "" when it is."""
        if not self.sender:
            return "" if self.matches(env) else "not the message of an older record"
        if self.sender != env.sender:
            return "another sender"
        if self.size != env.size:
            return f"SIZE {_size(env.size)}, not {_size(self.size)}"
        if not self.matches(env):
            return "no recipient in common"
        return ""

    def tried_again(self, now: float, place: str, spare: int) -> Message:
        return self._replace(tried_at=now, places=place, spare=spare)

    def with_recipients(self, env: Envelope) -> Message:
        """Recipients of the same transaction joining (bounded)."""
        known = list(self.recipients)
        for recipient in env.recipients:
            if recipient not in known and len(known) < RECIPIENTS_KEPT:
                known.append(recipient)
        return self._replace(recipients=tuple(known))


def _size(size: int | None) -> str:
    return "none" if size is None else str(size)


def new_message(env: Envelope, now: float, place: str) -> Message:
    return Message(env.sender, env.size, env.recipients[:RECIPIENTS_KEPT], now, now, place)


def find(messages: tuple[Message, ...], env: Envelope | None) -> int:
    """The index of the most recent remembered message `env` matches, or -1."""
    if env is None:
        return -1
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].matches(env):
            return index
    return -1


def describe_match(messages: tuple[Message, ...], env: Envelope | None, now: float) -> str:
    """Which remembered message `env` is a retry of, or why it is none (explain)."""
    if env is None:
        return "no envelope: a new message"
    index = find(messages, env)
    if index >= 0:
        first = messages[index].first
        return f"a retry of the message first tried {now - first:.0f} s ago"
    if not messages:
        return "a new message (none remembered)"
    # The nearest miss: one from the same sender, if any, says the most.
    same = [m for m in messages if m.sender == env.sender] or list(messages)
    reasons = sorted({m.why_not(env) for m in same})
    return f"a new message: none of {len(messages)} remembered matches ({'; '.join(reasons)})"


def remember(messages: tuple[Message, ...], message: Message, now: float, window: float):
    """`message` added as the most recent. When MESSAGES_KEPT are remembered already, it
    takes the place of one past `window` (its retry could not promote any more), else of
    the most recent one: the oldest are kept. A sender retrying a backlog larger than
    that in the order it first sent it (OpenSMTPD) retries the forgotten messages first,
    and each of them, deferred again, must not push out the ones whose retries come
    next: keeping the newest, a backlog of 200 would never meet one it remembered."""
    if len(messages) < MESSAGES_KEPT:
        return (*messages, message)
    for index, old in enumerate(messages):
        if now - old.first > window:
            return (*messages[:index], *messages[index + 1 :], message)
    return (*messages[:-1], message)


def stored(entry) -> Message:
    """A remembered message as it comes out of JSON (lists for tuples)."""
    sender, size, recipients, *rest = entry
    return Message(sender, size, tuple(recipients), *rest)


def upgraded(legacy: tuple, first_seen: float) -> tuple[Message, ...]:
    """The `messages` of a record from before: entries that match by the old key alone,
    first tried when the record began (the old rule's clock)."""
    out = []
    for key, tried_at, places, *rest in legacy:
        out.append(Message("", None, (key,), first_seen, tried_at, places, rest[0] if rest else 0))
    return tuple(out)
