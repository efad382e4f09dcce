"""One glossary (gateway/glossary.py): a config word, a log word and a metric label for one
idea are the same word, and each place knows every word of its enum and no other."""

from __future__ import annotations

import logging
from dataclasses import fields

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import config
from gateway.errors import ConfigError
from gateway.glossary import TERMS, Term
from gateway.metrics import Metrics
from gateway.observer import Observer
from gateway.policy.decision import Verdict
from gateway.policy.vocabulary import (
    Action,
    AuthResult,
    Event,
    Limit,
    OnError,
    Reason,
    RelayResult,
    TarpitResult,
)
from gateway.smtp.core.notes import (
    AuthEnded,
    Decided,
    LimitReached,
    Note,
    Relayed,
    StoreTrouble,
    TarpitEnded,
)
from tests.conftest import make_settings
from tests.sessions import in_transaction

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)

IDS = [term.words.__name__ for term in TERMS]


def words(term: Term) -> set[str]:
    return {word.value for word in term.words}


def test_every_enum_of_the_vocabulary_is_in_the_glossary() -> None:
    from gateway.policy import vocabulary

    enums = {
        value
        for value in vars(vocabulary).values()
        if isinstance(value, type) and issubclass(value, vocabulary.StrEnum)
    }
    enums -= {vocabulary.StrEnum, Event}  # Event: the names of the log lines themselves
    assert enums == {term.words for term in TERMS}


@pytest.mark.parametrize("term", [t for t in TERMS if t.metric], ids=lambda t: t.words.__name__)
def test_a_metric_label_takes_exactly_the_words(term: Term) -> None:
    """Every word has its series from the start (a dashboard finds them at zero), and
    no series has a word the enum does not know."""
    family, label = term.metric
    exposed = set()
    for metric in text_string_to_metric_families(Metrics().exposition().decode()):
        for sample in metric.samples:
            if sample.name == family:
                exposed.add(sample.labels[label])
    assert exposed == words(term)


def _note(term: Term, word: str) -> Note:
    """A note carrying `word` of `term`, as the session core leaves it."""
    enum = term.words
    if enum is Action:
        return Decided(Verdict(Action(word), Reason.CLEAN))
    if enum is Reason:
        return Decided(Verdict(Action.DEFER, Reason(word)))
    if enum is Limit:
        return LimitReached(Limit(word))
    if enum is RelayResult:
        return Relayed(RelayResult(word), "250 2.0.0 Ok", in_transaction().transaction, 0.1)
    if enum is AuthResult:
        return AuthEnded("PLAIN", AuthResult(word), 235)
    if enum is TarpitResult:
        return TarpitEnded(TarpitResult(word), 65.0)
    assert enum is OnError
    return StoreTrouble(Event.STORE_ERROR, "bob@example.com", OnError(word))


@pytest.mark.parametrize("term", [t for t in TERMS if t.log], ids=lambda t: t.words.__name__)
def test_a_log_field_says_the_word(term: Term, caplog: pytest.LogCaptureFixture) -> None:
    line, field = term.log
    observer = Observer(Metrics())
    session = in_transaction()
    for word in words(term):
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            observer.note(session, _note(term, word))
        said = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{line} ")]
        assert said and f" {field}={word}" in said[0], (word, said)


@pytest.mark.parametrize("term", [t for t in TERMS if t.setting], ids=lambda t: t.words.__name__)
def test_a_setting_takes_exactly_the_words(term: Term) -> None:
    section, key = term.setting.split(".")
    for word in words(term):
        assert getattr(getattr(make_settings({section: {key: word}}), section), key) == word
    with pytest.raises(ConfigError) as refused:
        make_settings({section: {key: "not-a-word"}})
    assert all(word in str(refused.value) for word in words(term)), str(refused.value)


@pytest.mark.parametrize("term", [t for t in TERMS if t.stands_for], ids=lambda t: t.words.__name__)
def test_words_that_stand_for_settings_name_real_ones(term: Term) -> None:
    assert set(term.stands_for) == words(term)
    for setting in term.stands_for.values():
        section, key = setting.split(".")
        assert key in {f.name for f in fields(getattr(config, f"{section.capitalize()}Settings"))}


def test_the_readme_glossary_lists_every_word() -> None:
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("### Glossary") : readme.index("## Configuration")]
    for term in TERMS:
        (row,) = [line for line in table.splitlines() if line.startswith(f"| {term.meaning} |")]
        assert all(f"`{word}`" in row for word in words(term)), term.words.__name__
