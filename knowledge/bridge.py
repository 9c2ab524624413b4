"""Cross-lingual BM25: a question's words translated into a knowledge base's other language
through the multilingual embedding model.

BM25 matches words, so a Spanish question scores nothing lexical against an English runbook
and the dense signal alone has to find it: cross-lingual questions were the benchmark's
weakest group. A multilingual embedding model places single words too: "vacaciones" lies
next to "vacation" (cosine 0.92), "portátil" next to "laptop" (0.88), "impresora" next to
"printers" (0.85), while unrelated neighbours stay below 0.8.

So each knowledge base keeps the vectors of its vocabulary (the content words of its chunks,
each with the languages of the chunks it appears in). A question's content words are embedded
in the same call as the question; each is translated into its closest words (at most
TRANSLATIONS, cosine >= MIN_SIMILARITY) among the knowledge base's words of every other
language. Those words are stemmed in their language and scored by BM25 as a question of their
own; the retriever counts that score at TRANSLATED_WEIGHT beside the original one (the larger
wins), so a passage in the question's own language that matches its words still ranks first.

The constants were chosen on the benchmark's tuning set (bench/retrieval.py). Building a
bridge embeds each word of the vocabulary once (about 1 ms a word with USE on one core);
a reload after a re-ingest, or a second knowledge base, embeds only the words that the
bridges already loaded lack.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Collection, Sequence

import numpy as np

from knowledge.base import Embedder
from knowledge.chunking import indexed_text
from knowledge.lexical import analyze, content_words, text_language
from knowledge.ranking import FloatArray
from knowledge.store import StoredChunk

MIN_SIMILARITY = 0.8
TRANSLATIONS = 2  # closest words kept per question word and language
TRANSLATED_WEIGHT = 0.5
# The most frequent words of a knowledge base that are kept (2 KB each with USE's 512
# dimensions): rarer words are mostly names, codes and typos, which need no translation.
MAX_VOCABULARY = 20_000
_BATCH = 256  # words per embedding call while a bridge is built


class TermBridge:
    """One knowledge base's vocabulary, by language, with a vector per word."""

    def __init__(self, words: dict[str, list[str]], vectors: dict[str, FloatArray]) -> None:
        """words: language -> its words; vectors: language -> one row per word."""
        self.words = words
        self.vectors = vectors
        self._known = {
            w: v for lang in words for w, v in zip(words[lang], vectors[lang], strict=True)
        }

    def vector_of(self, word: str) -> FloatArray | None:
        return self._known.get(word)

    def __len__(self) -> int:
        return len(self._known)

    def translate(
        self, words: Sequence[str], vectors: FloatArray, query_language: str
    ) -> dict[str, list[str]]:
        """The question's words (one vector per word) in each other language of this
        knowledge base, as that language's BM25 terms; a language with none is left out."""
        terms: dict[str, list[str]] = {}
        if not words:
            return terms
        for language, matrix in self.vectors.items():
            if language == query_language or not len(matrix):
                continue
            similarity = vectors @ matrix.T  # question words x vocabulary
            n = min(TRANSLATIONS, similarity.shape[1])
            best = np.argpartition(-similarity, n - 1, axis=1)[:, :n]
            chosen = [
                self.words[language][int(j)]
                for i in range(len(words))
                for j in best[i]
                if similarity[i, j] >= MIN_SIMILARITY
            ]
            if chosen:
                terms[language] = analyze(" ".join(chosen), language)
        return terms


def vocabulary(chunks: Sequence[StoredChunk], languages: Collection[str]) -> dict[str, list[str]]:
    """language -> its content words (at most MAX_VOCABULARY in all, the most frequent)."""
    frequency: Counter[str] = Counter()
    used_in: dict[str, set[str]] = {}
    for chunk in chunks:
        language = text_language(chunk.text)
        if language not in languages:
            continue
        words = content_words(indexed_text(chunk.title, chunk.section, chunk.text))
        frequency.update(words)
        for word in words:
            used_in.setdefault(word, set()).add(language)
    kept = sorted(w for w, _ in frequency.most_common(MAX_VOCABULARY))
    by_language: dict[str, list[str]] = {}
    for word in kept:
        for language in sorted(used_in[word]):
            by_language.setdefault(language, []).append(word)
    return by_language


async def build_bridge(
    chunks: Sequence[StoredChunk],
    embedder: Embedder,
    languages: Collection[str],
    known: Sequence[TermBridge] = (),
) -> TermBridge | None:
    """The bridge of these chunks, or None when they are in fewer than two of `languages`
    (the languages the embedding model maps into one space): nothing to translate between.
    A word one of the `known` bridges has (the knowledge base's previous version, the other
    knowledge bases loaded) keeps its vector rather than being embedded again."""
    words = await asyncio.to_thread(vocabulary, chunks, languages)
    if len(words) < 2:
        return None
    found: dict[str, FloatArray] = {}
    missing: list[str] = []
    for word in sorted({w for ws in words.values() for w in ws}):
        vector = next((v for b in known if (v := b.vector_of(word)) is not None), None)
        if vector is None:
            missing.append(word)
        else:
            found[word] = vector
    for start in range(0, len(missing), _BATCH):
        batch = missing[start : start + _BATCH]
        vectors = await embedder.embed(batch)
        found.update(zip(batch, np.asarray(vectors, dtype=np.float32), strict=True))
    matrices = {
        lang: np.stack([found[w] for w in ws]).astype(np.float32, copy=False)
        for lang, ws in words.items()
    }
    return TermBridge(words, matrices)
