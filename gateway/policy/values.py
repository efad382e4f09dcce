"""`@value`: the decorator for objects built on every connection.

Value objects (verdicts, records, steps, replies) are never mutated after construction:
code builds a new one (`dataclasses.replace`) instead. They are slotted dataclasses but
deliberately not `frozen=True`: a frozen dataclass's generated `__init__` goes through
`object.__setattr__` for every field, which measured 2.5 us for eight fields against
0.5 us unfrozen, and a decision builds about eight of them. Configuration-time objects
(the rules, Wording, RDNS, ListEntry, Policy) stay frozen.
"""

from dataclasses import dataclass

value = dataclass(slots=True)
