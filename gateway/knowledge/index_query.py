"""A visitor's question as search terms: words only, stop words out, bounded in size.

Questions are natural language, never FTS syntax: quotes, `NEAR`, `AND`/`OR`/`NOT`, `*`,
`^`, `title:` are plain text here. Only word characters survive, so what each backend
builds from the terms (quoted FTS5 strings, a websearch tsquery) has no operator in it.
The question's first `MAX_CHARS` are read and at most `MAX_TERMS` terms kept: a search
costs the same for a 100 kB question as for a long sentence.

Rarity (`candidates`, `idf`): a question's common words ("table", "create" are in a third
of a database manual's passages) match most of the index and rank nothing; the rare ones
name its topic. Both backends look up each term's passage count before searching: only
passages with a rare term are candidates (when the question has one), and every term
weighs by its inverse document frequency (BM25's own in SQLite; in PostgreSQL's rank).
The threshold is general, never a list of words tuned on a question set.
"""

from __future__ import annotations

import math
import re

MAX_CHARS = 2000
MAX_TERMS = 24
MAX_TERM_CHARS = 64
# A term in more than this share of the passages picks no candidates when a rarer one is
# in the question (it still weighs in the rank). Measured: docs/BENCHMARKS.md.
COMMON_SHARE = 0.1

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


def fts5_phrase(word: str) -> str:
    """A term as an FTS5 string: quoted, so the tokenizer stems it and nothing is syntax."""
    return '"' + word.replace('"', '""') + '"'


def fts5_query(words: list[str], rare: list[str] | None = None) -> str:
    """SQLite FTS5: the terms OR'd; with `rare` (some of them), only passages with one of
    those match, every term still counting in BM25 (the rare ones twice: their phrases are
    in the query twice)."""
    every = " OR ".join(map(fts5_phrase, words))
    if rare is None:
        return every
    return f"({' OR '.join(map(fts5_phrase, rare))}) AND ({every})"


def websearch_query(words: list[str]) -> str:
    """PostgreSQL `websearch_to_tsquery`: the terms OR'd (`plainto_tsquery` would AND)."""
    return " or ".join(words)


def candidates(docs: dict[str, int], total: int) -> list[str] | None:
    """The terms whose passages are ranked: the rare ones, or None (all terms) when none
    is. `docs`: each term's passage count; `total`: all passages. A term in no passage is
    not rare: it would gate out everything. The backends rank all terms' passages too when
    the rare ones' are fewer than the search asks for (statistics may count other routes)."""
    rare = [word for word, count in docs.items() if 0 < count <= COMMON_SHARE * total]
    return rare if rare and len(rare) < len(docs) else None


def idf(docs: int, total: int) -> float:
    """BM25's inverse document frequency, never negative: ~0 for a term in every passage,
    8.6 for one in 1 of 8,000."""
    return math.log(1 + (total - docs + 0.5) / (docs + 0.5))
