"""Thousands of regular expressions tried against one name, without trying them all.

Python's `re` tries the branches of an alternation one by one at every position (about
100 ns a branch), so 5,000 patterns joined by `|` cost about a millisecond per name. List
files are not random patterns though, and `RegexSet` files each pattern under the most
selective key the pattern itself guarantees:

* suffix: complete labels of a literal the text must end with
  (`\\.dip\\.t-dialin\\.net$` -> `dip.t-dialin.net`). A lookup probes one dict entry per
  label boundary of the text (`a.b.c` -> `a.b.c`, `b.c`, `c`);
* token: a whole token (letters and digits between `.`/`-`, or after a leading `^`)
  that every match contains (`^[0-9a-f]{8}\\.c7\\.` -> `c7`, `^cpe7-` -> `cpe7`). The text
  is split into its tokens once (a C call) and each token is one dict probe;
* trigram: three consecutive characters of a literal every match contains
  (`dialup7[a-z]*` -> one of `dia`, ..., `up7`), tried only when the text contains them;
  probing costs one slice per text position, so this is the fallback for literals that
  are not whole tokens.
  Token and trigram keys are chosen per pattern as its least crowded one, so thousands
  of patterns that differ only in a number still land in buckets of one or two;
* first character: anchored patterns without such a literal (`^[0-9a-f]{8}`), by the
  set of characters a match can start with, tried with `match` at one position only;
* everything else: one `match` alternation for anchored patterns, one `search` for the rest.

Each bucket is one compiled alternation in which every pattern is wrapped in its own
capturing group, so `Match.lastindex` names the pattern that matched. Patterns that
cannot share an alternation (backreferences, global inline flags) are tried alone. The
analysis reads the `re` module's own parse tree; anything it does not understand falls
back to the generic bucket: slower, never wrong. Texts are expected in lower case (DNS
names are case-insensitive) and every pattern is compiled case-insensitively.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

try:  # Python 3.11+
    from re import _constants as _sre_c  # type: ignore[attr-defined]
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - older layouts
    import sre_constants as _sre_c  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

T = TypeVar("T")

_AT_START = {_sre_c.AT_BEGINNING, _sre_c.AT_BEGINNING_STRING}
_AT_END = {_sre_c.AT_END, _sre_c.AT_END_STRING}
_BACKREFS = {
    getattr(_sre_c, name)
    for name in (
        "GROUPREF",
        "GROUPREF_EXISTS",
        "GROUPREF_IGNORE",
        "GROUPREF_LOC_IGNORE",
        "GROUPREF_UNI_IGNORE",
    )
    if hasattr(_sre_c, name)
}
_REPEATS = {
    getattr(_sre_c, name)
    for name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
    if hasattr(_sre_c, name)
}
_CATEGORIES = {_sre_c.CATEGORY_DIGIT: "0123456789", _sre_c.CATEGORY_SPACE: " \t\n\r\f\v"}
_MAX_FIRST = 40  # a first-character set larger than this is not worth indexing


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the parser tells us about one pattern."""

    suffix: str | None  # complete trailing labels the text must end with
    first: frozenset[str] | None  # anchored: the characters a match can start with
    anchored: bool
    tokens: tuple[str, ...]  # whole tokens every match contains
    trigrams: tuple[str, ...]  # every trigram of the literals each match contains
    shareable: bool  # may join an alternation


def _walk_has_backref(node: Any) -> bool:
    if isinstance(node, _sre_parse.SubPattern):
        return any(op in _BACKREFS or _walk_has_backref(av) for op, av in node)
    if isinstance(node, list | tuple):
        return any(_walk_has_backref(item) for item in node)
    return False


def _embeddable(pattern: str, flags: int) -> bool:
    """Whether the pattern still compiles inside a group (global inline flags do not)."""
    try:
        re.compile(f"({pattern})", flags)
    except re.error:
        return False
    return True


def _class_chars(items: list) -> frozenset[str] | None:
    chars: set[str] = set()
    for op, av in items:
        if op == _sre_c.LITERAL:
            chars.add(chr(av).lower())
        elif op == _sre_c.RANGE:
            lo, hi = av
            if hi - lo > _MAX_FIRST:
                return None
            chars.update(chr(c).lower() for c in range(lo, hi + 1))
        elif op == _sre_c.CATEGORY and av in _CATEGORIES:
            chars.update(_CATEGORIES[av])
        else:  # NEGATE, word categories, ...: too wide to be worth it
            return None
    return frozenset(chars)


def _first(ops: list) -> tuple[frozenset[str] | None, bool]:
    """(characters a match of `ops` can start with, whether `ops` can match empty).

    None for the character set means "could be anything".
    """
    chars: set[str] = set()
    for op, av in ops:
        if op == _sre_c.AT:
            continue  # zero-width
        if op == _sre_c.LITERAL:
            first, nullable = frozenset((chr(av).lower(),)), False
        elif op == _sre_c.IN:
            first, nullable = _class_chars(av), False
        elif op == _sre_c.SUBPATTERN:
            first, nullable = _first(list(av[-1]))
        elif op == _sre_c.BRANCH:
            first, nullable = frozenset(), False
            for branch in av[1]:
                branch_first, branch_nullable = _first(list(branch))
                if branch_first is None:
                    return None, True
                first = first | branch_first
                nullable = nullable or branch_nullable
        elif op in _REPEATS:
            low, _, item = av
            first, nullable = _first(list(item))
            nullable = nullable or low == 0
        else:  # ANY, NOT_LITERAL, assertions, ...
            return None, True
        if first is None:
            return None, True
        chars |= first
        if not nullable:
            return frozenset(chars), False
    return frozenset(chars), True


def _literal_runs(ops: list) -> list[str]:
    """The runs of literal characters every match must contain (top-level runs only)."""
    return [text for text, _, _ in _bounded_runs(ops)]


def _bounded_runs(ops: list) -> list[tuple[str, bool, bool]]:
    """Literal runs, each with: starts at the text's start (after `^`), ends at its end
    (before `$`)."""
    runs: list[tuple[str, bool, bool]] = []
    run: list[str] = []
    start = 0
    for i, (op, av) in enumerate([*ops, (None, None)]):
        if op == _sre_c.LITERAL:
            if not run:
                start = i
            run.append(chr(av).lower())
        elif run:
            at_start = start == 1 and ops[0][0] == _sre_c.AT and ops[0][1] in _AT_START
            at_end = op == _sre_c.AT and av in _AT_END
            runs.append(("".join(run), at_start, at_end))
            run = []
    return runs


_SEPARATORS = re.compile(r"[.-]")
_join = "".join


def split_tokens(text: str) -> list[str]:
    """A name's tokens: `p12-3.dyn.example` -> p12, 3, dyn, example."""
    return text.replace("-", ".").split(".")


def _required_tokens(ops: list) -> tuple[str, ...]:
    """Whole tokens every match contains: bounded by separators inside the literal, or by
    the start/end of the text where the literal touches `^`/`$`."""
    tokens: dict[str, None] = {}
    for literal, at_start, at_end in _bounded_runs(ops):
        parts = _SEPARATORS.split(literal)
        for i, part in enumerate(parts):
            left = i > 0 or at_start
            right = i < len(parts) - 1 or at_end
            if part and left and right:
                tokens[part] = None
    return tuple(tokens)


def _required_trigrams(ops: list) -> tuple[str, ...]:
    grams: dict[str, None] = {}
    for literal in _literal_runs(ops):
        for i in range(len(literal) - 2):
            grams[literal[i : i + 3]] = None
    return tuple(grams)


def can_match_within(compiled: re.Pattern[str], alphabet: str) -> bool:
    """False when every match needs a character outside `alphabet` (so a text made only of
    those characters, like an IPv4 address, cannot match). True when unsure."""
    try:
        ops = list(_sre_parse.parse(compiled.pattern, compiled.flags))
    except Exception:
        return True
    allowed = set(alphabet)
    return all(set(run) <= allowed for run in _literal_runs(ops))


def _shape(pattern: str, flags: int) -> _Shape:
    try:
        parsed = _sre_parse.parse(pattern, flags)
        ops = list(parsed)
        shareable = not _walk_has_backref(parsed) and _embeddable(pattern, flags)
    except Exception:  # an unexpected parser shape: treat as opaque
        return _Shape(None, None, False, (), (), False)
    if not ops:
        return _Shape(None, None, False, (), (), shareable)
    anchored = ops[0][0] == _sre_c.AT and ops[0][1] in _AT_START

    suffix = None
    if ops[-1][0] == _sre_c.AT and ops[-1][1] in _AT_END:
        chars: list[str] = []
        i = len(ops) - 2
        while i >= 0 and ops[i][0] == _sre_c.LITERAL:
            chars.append(chr(ops[i][1]))
            i -= 1
        literal = "".join(reversed(chars)).lower()
        whole = i < 0 or (i == 0 and anchored)  # the literal is the entire text
        if literal.startswith("."):
            suffix = literal[1:] or None
        elif whole and literal:
            suffix = literal
        elif "." in literal:
            # The first label may be partial (`x*irtua\.com$`): keep only complete labels.
            suffix = literal.split(".", 1)[1] or None

    first = None
    if anchored:
        first, nullable = _first(ops[1:])
        if nullable or (first is not None and len(first) > _MAX_FIRST):
            first = None
    return _Shape(
        suffix, first, anchored, _required_tokens(ops), _required_trigrams(ops), shareable
    )


class _Bucket(Generic[T]):
    """Patterns tried together: one alternation plus any that must stay alone."""

    __slots__ = ("_alone", "_combined", "_group_owner", "_items", "_use_match")

    def __init__(self, use_match: bool) -> None:
        self._use_match = use_match
        self._items: list[tuple[int, re.Pattern[str], T]] = []
        self._alone: list[tuple[int, re.Pattern[str], T]] = []
        self._combined: re.Pattern[str] | None = None
        self._group_owner: dict[int, tuple[int, T]] = {}

    def add(self, order: int, compiled: re.Pattern[str], value: T, shareable: bool) -> None:
        (self._items if shareable else self._alone).append((order, compiled, value))

    def __bool__(self) -> bool:
        return bool(self._items or self._alone)

    def build(self) -> None:
        # Input order decides which line is reported when several match.
        self._items.sort(key=lambda item: item[0])
        self._alone.sort(key=lambda item: item[0])
        if not self._items:
            return
        parts: list[str] = []
        owner: dict[int, tuple[int, T]] = {}
        group = 1
        for order, compiled, value in self._items:
            if compiled.flags & re.VERBOSE:
                parts.append(f"((?x:{compiled.pattern}))")
            else:
                parts.append(f"({compiled.pattern})")
            owner[group] = (order, value)
            group += 1 + compiled.groups
        try:
            self._combined = re.compile("|".join(parts), re.IGNORECASE)
            self._group_owner = owner
        except re.error:
            # Named groups repeated across patterns and the like: try each alone.
            self._alone.extend(self._items)
            self._alone.sort(key=lambda item: item[0])
            self._combined = None

    def first(self, text: str) -> tuple[int, T] | None:
        best: tuple[int, T] | None = None
        if self._combined is not None:
            m = self._combined.match(text) if self._use_match else self._combined.search(text)
            if m is not None and m.lastindex is not None:
                best = self._group_owner[m.lastindex]
        for order, compiled, value in self._alone:
            if best is not None and best[0] < order:
                break
            m = compiled.match(text) if self._use_match else compiled.search(text)
            if m is not None:
                best = (order, value)
                break
        return best


class RegexSet(Generic[T]):
    """Compiled patterns with values; `first(text)` returns the value of a matching one.

    When several patterns match, the one that came first in the input order is reported,
    unless two of them sit in the same alternation, where the leftmost match wins.
    """

    __slots__ = (
        "_by_first",
        "_by_token",
        "_by_trigram",
        "_count",
        "_generic",
        "_generic_anchored",
        "_suffix",
        "_trigram_keys",
    )

    def __init__(self, items: Iterable[tuple[re.Pattern[str], T]] = ()) -> None:
        self._suffix: dict[str, _Bucket[T]] = {}
        self._by_first: dict[str, _Bucket[T]] = {}
        self._by_token: dict[str, _Bucket[T]] = {}
        self._by_trigram: dict[str, _Bucket[T]] = {}
        self._generic_anchored: _Bucket[T] = _Bucket(use_match=True)
        self._generic: _Bucket[T] = _Bucket(use_match=False)
        shaped = [
            (order, compiled, value, _shape(compiled.pattern, compiled.flags))
            for order, (compiled, value) in enumerate(items)
        ]
        self._count = len(shaped)
        load: dict[str, int] = {}

        # Patterns with few trigrams to choose from pick first, so the others can avoid them.
        def choices(item) -> tuple[int, int]:
            shape = item[3]
            return (len(shape.tokens) or len(shape.trigrams), item[0])

        for order, compiled, value, shape in sorted(shaped, key=choices):
            if shape.suffix:
                bucket = self._suffix.setdefault(shape.suffix, _Bucket(use_match=False))
            elif shape.tokens:
                token = min(shape.tokens, key=lambda t: (load.get("t:" + t, 0), -len(t)))
                load["t:" + token] = load.get("t:" + token, 0) + 1
                bucket = self._by_token.setdefault(token, _Bucket(use_match=False))
            elif shape.trigrams:
                gram = min(shape.trigrams, key=lambda g: load.get(g, 0))
                load[gram] = load.get(gram, 0) + 1
                bucket = self._by_trigram.setdefault(gram, _Bucket(use_match=False))
            elif shape.first is not None:
                # One bucket per possible first character; the pattern joins each of them.
                for char in shape.first:
                    first_bucket = self._by_first.setdefault(char, _Bucket(use_match=True))
                    first_bucket.add(order, compiled, value, shape.shareable)
                continue
            elif shape.anchored:
                bucket = self._generic_anchored
            else:
                bucket = self._generic
            bucket.add(order, compiled, value, shape.shareable)
        for bucket in (
            *self._suffix.values(),
            *self._by_first.values(),
            *self._by_token.values(),
            *self._by_trigram.values(),
        ):
            bucket.build()
        self._generic_anchored.build()
        self._generic.build()
        self._trigram_keys = frozenset(self._by_trigram)

    def __len__(self) -> int:
        return self._count

    def first(self, text: str) -> T | None:
        """The value of a pattern matching `text` (expected lower-case), or None."""
        if not self._count:
            return None
        found: list[tuple[int, T]] = []
        if self._suffix:
            suffix = self._suffix
            start = 0
            while True:
                bucket = suffix.get(text[start:])
                if bucket is not None:
                    hit = bucket.first(text)
                    if hit is not None:
                        found.append(hit)
                dot = text.find(".", start)
                if dot < 0:
                    break
                start = dot + 1
        if text and self._by_first:
            bucket = self._by_first.get(text[0])
            if bucket is not None:
                hit = bucket.first(text)
                if hit is not None:
                    found.append(hit)
        if self._by_token:
            by_token = self._by_token
            for token in set(split_tokens(text)):
                bucket = by_token.get(token)
                if bucket is not None:
                    hit = bucket.first(text)
                    if hit is not None:
                        found.append(hit)
        if self._by_trigram:
            by_trigram = self._by_trigram
            # All trigrams of the text, built in C; only those that are keys are probed.
            grams = self._trigram_keys.intersection(
                map(_join, zip(text, text[1:], text[2:], strict=False))
            )
            for gram in grams:
                hit = by_trigram[gram].first(text)
                if hit is not None:
                    found.append(hit)
        for bucket in (self._generic_anchored, self._generic):
            if bucket:
                hit = bucket.first(text)
                if hit is not None:
                    found.append(hit)
        if not found:
            return None
        return min(found, key=lambda hit: hit[0])[1]
