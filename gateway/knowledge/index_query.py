"""A visitor's question as search terms: words only, stop words out, bounded in size.

Questions are natural language, never FTS syntax: quotes, `NEAR`, `AND`/`OR`/`NOT`, `*`,
`^`, `title:` are plain text here. Only word characters survive, so what each backend
builds from the terms (quoted FTS5 strings, a websearch tsquery) has no operator in it.
The question's first `MAX_CHARS` are read and at most `MAX_TERMS` terms kept: a search
costs the same for a 100 kB question as for a long sentence.
"""

from __future__ import annotations

import re

MAX_CHARS = 2000
MAX_TERMS = 24
MAX_TERM_CHARS = 64

_WORD = re.compile(r"[^\W_]+(?:_[^\W_]+)*")  # letters/digits, joined by inner underscores

# PostgreSQL's `english` stop list (Snowball's), plus the words questions are made of:
# they match nearly every passage and rank nothing.
_STOP_LIST = """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his
    himself she her hers herself it its itself they them their theirs themselves what which
    who whom this that these those am is are was were be been being have has had having do
    does did doing a an the and but if or because as until while of at by for with about
    against between into through during before after above below to from up down in out on
    off over under again further then once here there when where why how all any both each
    few more most other some such no nor not only own same so than too very s t can will
    just don should now
    could would may might must shall get got tell explain please hi hello thanks thank
    know want need way ll ve re d m
"""
STOP_WORDS = frozenset(_STOP_LIST.split())


def terms(question: str) -> list[str]:
    """The question's search terms, lower-cased, in order, without repeats."""
    found: dict[str, None] = {}
    for match in _WORD.finditer(question[:MAX_CHARS]):
        word = match.group().lower()
        if len(word) > MAX_TERM_CHARS or word in STOP_WORDS:
            continue
        found[word] = None
        if len(found) == MAX_TERMS:
            break
    return list(found)


def fts5_query(words: list[str]) -> str:
    """SQLite FTS5: each term a quoted string (the tokenizer stems it), OR'd."""
    return " OR ".join('"' + word.replace('"', '""') + '"' for word in words)


def websearch_query(words: list[str]) -> str:
    """PostgreSQL `websearch_to_tsquery`: the terms OR'd (`plainto_tsquery` would AND)."""
    return " or ".join(words)
