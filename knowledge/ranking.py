"""The hybrid score: dense similarity and BM25, calibrated into one relevance in [0, 1].

    evidence = w * dense + (1 - w) * lexical
    score = 1 / (1 + exp(-(evidence - MIDPOINT) / SCALE))

- lexical: BM25 divided by what a document holding every question term once would score,
  capped at 1 (knowledge.lexical.LexicalIndex).
- dense: the cosine similarity above the question's background, over DENSE_SPAN, in [0, 1].
  The background is the question's similarity to the knowledge base's average chunk (its
  centroid): an English-only model finds any two Spanish texts alike (cosine 0.3 to 0.5), and
  any two texts of one company's HR corpus share words; only what stands above that says
  "this chunk answers it". A small knowledge base's centroid is mostly its few chunks, so the
  background is shrunk towards 0 by n / (n + CENTROID_SHRINK).
- w: DENSE_WEIGHT when the question is in a language the embedding model knows
  (PARLEY_EMBEDDINGS_LANGUAGES; the packaged MiniLM knows English), DENSE_WEIGHT_OTHER
  otherwise, where BM25 has to carry the decision.
- The logistic step puts the boundary between "covered" and "not covered" at 0.5
  (DEFAULT_MIN_SCORE) and spreads the scores away from it, so that a threshold reads as a
  probability-like confidence rather than a raw mixture.

The constants were fitted on a sample of 31 answerable and 16 unanswerable English and
Spanish questions over 17 chunks: every answer in the top 3 and 46 of 47 "covered / not
covered" decisions right at DEFAULT_MIN_SCORE, with a margin of about 0.05 around it.
The retrieval benchmark measures them on the labeled corpus.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import numpy.typing as npt

DENSE_SPAN = 0.6
MIDPOINT = 0.38
SCALE = 0.08
DENSE_WEIGHT = 0.7
DENSE_WEIGHT_OTHER = 0.25
CENTROID_SHRINK = 20.0

FloatArray = npt.NDArray[np.float32]


def dense_weight(query_language: str, model_languages: Collection[str]) -> float:
    return DENSE_WEIGHT if query_language in model_languages else DENSE_WEIGHT_OTHER


def background(query: FloatArray, centroid: FloatArray | None, count: int) -> float:
    """What the question scores against an average chunk of this knowledge base."""
    if centroid is None or count == 0:
        return 0.0
    return float(query @ centroid) * count / (count + CENTROID_SHRINK)


def hybrid_scores(
    cosine: FloatArray, lexical: FloatArray, *, background: float, weight: float
) -> FloatArray:
    dense = np.clip((cosine - np.float32(background)) / np.float32(DENSE_SPAN), 0.0, 1.0)
    evidence = np.float32(weight) * dense + np.float32(1.0 - weight) * np.clip(lexical, 0, 1)
    scores = 1.0 / (1.0 + np.exp(-(evidence - np.float32(MIDPOINT)) / np.float32(SCALE)))
    return np.asarray(scores, dtype=np.float32)
