"""Records <-> compact JSON text: `["pending", first_seen, last_seen, ...]`.

One encoding for every backend, so a record written by one gateway can be read by any
other, and a compare-and-set can compare encoded text. New fields are only ever added
at the end, with defaults: an older record reads with the defaults, a newer one with its
extra fields left out.
"""

from __future__ import annotations

import json
from dataclasses import fields

from gateway.policy.messages import stored
from gateway.policy.records import (
    Familiar,
    Penalty,
    Pending,
    Pool,
    Pregreet,
    Record,
    Sibling,
    Strikes,
    Tally,
    Trace,
)

KINDS: dict[type, str] = {
    Pending: "pending",
    Familiar: "familiar",
    Penalty: "penalty",
    Tally: "tally",
    Pregreet: "pregreet",
    Strikes: "strikes",
    Sibling: "sibling",
    Trace: "trace",
    Pool: "pool",
}
_TYPES = {kind: cls for cls, kind in KINDS.items()}
_FIELDS = {cls: tuple(f.name for f in fields(cls)) for cls in KINDS}
# JSON arrays in these fields of a Pending record are tuples in it.
_MESSAGES = _FIELDS[Pending].index("messages")
_REMEMBERED = _FIELDS[Pending].index("remembered")
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def kind_of(record: Record) -> str:
    return KINDS[type(record)]


def encode(record: Record) -> str:
    cls = type(record)
    return _dumps([KINDS[cls], *(getattr(record, name) for name in _FIELDS[cls])])


def decode(text: str | bytes) -> Record:
    """Raises ValueError for text that is not a record (a corrupted or foreign value)."""
    try:
        kind, *values = json.loads(text)
        cls = _TYPES[kind]
        # Fields this version does not know (written by a newer gateway on the same
        # store) are left out, so gateways of two versions can share a store.
        known = values[: len(_FIELDS[cls])]
        if cls is Pending:
            if len(known) > _MESSAGES:
                known[_MESSAGES] = tuple(map(tuple, known[_MESSAGES]))
            if len(known) > _REMEMBERED:
                known[_REMEMBERED] = tuple(map(stored, known[_REMEMBERED]))
        return cls(*known)
    except (TypeError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a stored record: {text!r:.80}") from exc
