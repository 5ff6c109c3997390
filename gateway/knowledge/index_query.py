"""A visitor's question as search terms: words only, stop words out, bounded in size.

Questions are natural language, never FTS syntax: quotes, `NEAR`, `AND`/`OR`/`NOT`, `*`,
`^`, `title:` are plain text here. Only word characters survive, so what each backend
builds from the terms (quoted FTS5 strings, a websearch tsquery) has no operator in it.
The question's first `MAX_CHARS` are read and at most `MAX_TERMS` terms kept: a search
costs the same for a 100 kB question as for a long sentence.

Rarity (`candidates`, `idf`): a question's common words match most of the index and rank
nothing, the rare ones name its topic; so both backends rank a bounded set of candidates,
the rarest terms' passages (docs/DESIGN.md, "Rarity, on both backends").
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

MAX_CHARS = 2000
MAX_TERMS = 24
MAX_TERM_CHARS = 64
# The passages a search ranks, about: the rarest terms' are taken while their passage
# counts add up to this. Measured on the PostgreSQL manual (docs/BENCHMARKS.md): ranking
# at most 1,000 of its 7,907 passages answers as many questions as ranking all of them,
# in a third of PostgreSQL's time.
RANKED = 1000

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


class Candidates(NamedTuple):
    """The passages ranked: those with any of `words` (the rarest), or with all of them."""

    words: list[str]
    every: bool


def candidates(docs: dict[str, int]) -> Candidates | None:
    """Which passages to rank, from each term's passage count (`docs`, in the question's
    order); None: those with any term. A term in no passage is left out: it would rule out
    everything. The backends rank any term's passages when fewer than asked for are found
    (the counts may include other routes')."""
    found = sorted((count, n, word) for n, (word, count) in enumerate(docs.items()) if count)
    rarest: list[str] = []
    total = 0
    for count, _, word in found:
        total += count
        if total > RANKED:
            break
        rarest.append(word)
    if rarest:
        return Candidates(rarest, every=False) if len(rarest) < len(found) else None
    return Candidates([word for _, _, word in found], every=True) if len(found) > 1 else None


def fts5_phrase(word: str) -> str:
    """A term as an FTS5 string: quoted, so the tokenizer stems it and nothing is syntax."""
    return '"' + word.replace('"', '""') + '"'


def fts5_query(words: list[str], every: bool = False) -> str:
    """SQLite FTS5: the terms OR'd, or ANDed (`every`)."""
    return (" AND " if every else " OR ").join(map(fts5_phrase, words))


def websearch_query(words: list[str], every: bool = False) -> str:
    """PostgreSQL `websearch_to_tsquery`: the terms OR'd, or ANDed (`every`)."""
    return " ".join(words) if every else " or ".join(words)


def idf(docs: int, total: int) -> float:
    """BM25's inverse document frequency, never negative: ~0 for a term in every passage,
    8.6 for one in 1 of 8,000."""
    return math.log(1 + (total - docs + 0.5) / (docs + 0.5))
