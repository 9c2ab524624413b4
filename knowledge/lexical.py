"""Words for BM25, in English and Spanish, and an approximate token count.

The default embedding model knows English only; BM25 over stemmed words is what lets a
Spanish question find a Spanish passage. Each text is given a language by counting its
English and Spanish stop words (ties: English), stop words of both languages are dropped,
the rest is stemmed with that language's Snowball stemmer, and accents are removed after
stemming so that "días" and "dias" meet.
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import cache, lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

# Tokens as subword tokenizers roughly count them: a word is one token per started run of six
# letters or digits, each punctuation mark one. About 1.2 tokens per English word and 1.4 per
# Spanish one, within ~15% of Llama 3's and MiniLM's tokenizers on prose; no tokenizer has to
# be loaded to chunk a document.
_TOKEN_PIECE = re.compile(r"\w{1,6}|[^\w\s]")
_WORD = re.compile(r"\w+")

# The languages whose stop words and stemmers this module has (text_language tells them apart).
LANGUAGES = frozenset(("en", "es"))

# BM25 (Lucene's variant) parameters: the usual ones.
K1 = 1.2
B = 0.75

# Question words and fillers that the stop word lists lack ("how many", "puedo").
_EXTRA_STOP = {
    "en": "can could do does did how many much what which who whom whose when where why "
    "would should may might must please need want know tell get",
    "es": "puedo puede pueden podemos debo debe deben tengo tiene tienen hay hace hacer "
    "cuanto cuanta cuantos cuantas que quien quienes cual cuales como donde cuando necesito "
    "quiero saber favor",
}

_DETECT_ONLY = {"a", "no", "me", "he", "o", "y"}  # too ambiguous to decide a language


def estimate_tokens(text: str) -> int:
    """Approximate model tokens of `text` (see _TOKEN_PIECE)."""
    return len(_TOKEN_PIECE.findall(text))


@lru_cache(maxsize=65536)
def _plain_word(word: str) -> str:
    return strip_accents(word)


def strip_accents(text: str) -> str:
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@cache
def _stop_words() -> dict[str, frozenset[str]]:
    """Accent-free stop words of "en", "es" and "any" (either)."""
    from bm25s.stopwords import STOPWORDS_EN_PLUS, STOPWORDS_SPANISH

    lists = {"en": STOPWORDS_EN_PLUS, "es": STOPWORDS_SPANISH}
    words = {
        lang: frozenset(strip_accents(w) for w in (*words, *_EXTRA_STOP[lang].split()))
        for lang, words in lists.items()
    }
    words["any"] = words["en"] | words["es"]
    return words


_local = threading.local()  # Snowball stemmers are not thread-safe: one per thread


def _stemmer(lang: str) -> Any:
    stemmers: dict[str, Any] | None = getattr(_local, "stemmers", None)
    if stemmers is None:
        stemmers = _local.stemmers = {}
    if lang not in stemmers:
        import Stemmer

        stemmers[lang] = Stemmer.Stemmer("spanish" if lang == "es" else "english")
    return stemmers[lang]


def _stop_counts(words: Sequence[str]) -> tuple[int, int]:
    stop = _stop_words()
    en = es = 0
    for word in words:
        plain = _plain_word(word)
        if plain in _DETECT_ONLY:
            continue
        en += plain in stop["en"]
        es += plain in stop["es"]
    return en, es


def detect_language(words: Sequence[str]) -> str:
    """ "es" or "en", by which language's stop words `words` (lower-case) use more."""
    en, es = _stop_counts(words)
    return "es" if es > en else "en"


def text_language(text: str) -> str:
    return detect_language(_WORD.findall(text.lower()))


_CONTENT_WORD = re.compile(r"[^\W\d_]{3,}")


def content_words(text: str) -> list[str]:
    """The distinct lower-case words of `text` that carry meaning: three letters or more, no
    digits, no stop word of either language; in order of first use."""
    stop = _stop_words()["any"]
    words = _CONTENT_WORD.findall(text.lower())
    return list(dict.fromkeys(w for w in words if _plain_word(w) not in stop))


def analyze(text: str, language: str | None = None) -> list[str]:
    """BM25 terms of a text: stemmed, accent-free, without stop words."""
    words = _WORD.findall(text.lower())
    lang = language or detect_language(words)
    stop = _stop_words()["any"]
    kept = [w for w in words if _plain_word(w) not in stop]
    stems: list[str] = _stemmer(lang).stemWords(kept)
    return [_plain_word(s) for s in stems]


class LexicalIndex:
    """BM25 over a list of documents' terms, with scores in [0, 1].

    A raw BM25 score grows with the query's length and rarity, so it cannot be compared
    across questions. It is divided by what a document of average length that contains each
    query term once would score: 1.0 means "every term of the question is here", and a term
    the corpus lacks counts with the idf of a term no document has, pulling the score down.
    """

    def __init__(self, documents: Sequence[Sequence[str]]) -> None:
        import bm25s

        self._n = len(documents)
        self._df: Counter[str] = Counter()
        for terms in documents:
            self._df.update(set(terms))
        self._bm25: Any = None
        if self._n:
            self._bm25 = bm25s.BM25(k1=K1, b=B, method="lucene")
            # bm25s cannot index an empty document: give such one a term no query has.
            corpus = [list(terms) or ["\x00"] for terms in documents]
            self._bm25.index(corpus, show_progress=False)

    def __len__(self) -> int:
        return self._n

    def query_terms(self, text: str) -> list[str]:
        """The question's terms. A question without a stop word ("dias trasladados") does not
        tell its language: stem it both ways and keep the one the corpus knows better."""
        words = _WORD.findall(text.lower())
        en, es = _stop_counts(words)
        if en or es:
            return analyze(text, "es" if es > en else "en")
        english, spanish = analyze(text, "en"), analyze(text, "es")
        known_en = sum(t in self._df for t in english)
        known_es = sum(t in self._df for t in spanish)
        return spanish if known_es > known_en else english

    def idf(self, term: str) -> float:
        df = self._df.get(term, 0)
        return math.log(1 + (self._n - df + 0.5) / (df + 0.5))

    def scores(self, query_terms: Sequence[str]) -> npt.NDArray[np.float32]:
        """Normalized scores of every document for these (analyzed) query terms."""
        unique = list(dict.fromkeys(query_terms))
        if not self._n or not unique:
            return np.zeros(self._n, dtype=np.float32)
        known = [t for t in unique if t in self._df]
        if not known:
            return np.zeros(self._n, dtype=np.float32)
        reference = sum(self.idf(t) for t in unique) / (K1 + 1)
        raw = np.asarray(self._bm25.get_scores(known), dtype=np.float32)
        return np.asarray(np.minimum(raw / np.float32(reference), 1.0), dtype=np.float32)
