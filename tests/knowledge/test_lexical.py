"""BM25 terms in English and Spanish, normalized scores, and the hybrid calibration."""

from __future__ import annotations

import numpy as np

from knowledge.lexical import LexicalIndex, analyze, detect_language, text_language
from knowledge.ranking import DENSE_WEIGHT, DENSE_WEIGHT_OTHER, dense_weight, hybrid_scores


def test_languages_are_told_apart_by_their_stop_words() -> None:
    assert text_language("How many vacation days can I carry over?") == "en"
    assert text_language("¿Cuántos días de vacaciones puedo trasladar al año siguiente?") == "es"
    assert detect_language(["vpn"]) == "en"  # no evidence: English


def test_terms_are_stemmed_per_language_without_stop_words_or_accents() -> None:
    assert analyze("How many vacation days can I carry over?") == ["vacat", "day", "carri"]
    assert analyze("¿Cuántos días de vacaciones puedo trasladar?") == [
        "dias", "vacacion", "traslad",
    ]  # fmt: skip
    # Different forms of a Spanish word meet at one stem; accents do not matter.
    assert analyze("Los días trasladados caducan") == analyze("los dias trasladar caduca")


def test_scores_are_normalized_and_missing_terms_pull_them_down() -> None:
    docs = [
        "Employees may carry over up to five unused vacation days.",
        "Los empleados pueden trasladar hasta cinco días de vacaciones.",
        "Para conectarse a la VPN abra el cliente GlobalProtect.",
    ]
    index = LexicalIndex([analyze(d) for d in docs])
    english = index.scores(analyze("How many vacation days can I carry over?"))
    spanish = index.scores(analyze("¿Cuántos días de vacaciones puedo trasladar?"))
    assert int(np.argmax(english)) == 0
    assert english[1] == 0.0
    assert int(np.argmax(spanish)) == 1
    assert spanish[0] == 0.0
    assert all(0.0 <= s <= 1.0 for s in [*english, *spanish])
    assert english[0] > 0.8
    assert spanish[1] > 0.8
    # The same question with a word no document has scores lower.
    partial = index.scores(analyze("How many vacation days can an intern carry over?"))
    assert 0.0 < partial[0] < english[0]
    assert not index.scores(analyze("pets in the office")).any()
    assert not LexicalIndex([]).scores(["x"]).size


def test_the_hybrid_score_is_calibrated_around_one_half() -> None:
    weight = dense_weight("es", ("en",))
    assert weight == DENSE_WEIGHT_OTHER
    assert dense_weight("en", ("en",)) == DENSE_WEIGHT
    cosine = np.array([0.9, 0.2, 0.2, 0.9], dtype=np.float32)
    lexical = np.array([1.0, 0.0, 1.0, 0.0], dtype=np.float32)
    scores = hybrid_scores(cosine, lexical, background=0.1, weight=DENSE_WEIGHT)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] > 0.95  # both signals agree: relevant
    assert scores[1] < 0.05  # neither: not covered
    assert scores[0] > scores[3] > scores[2]  # the dense signal weighs more in English
    # For a language the model does not know, BM25 decides most.
    other = hybrid_scores(cosine, lexical, background=0.1, weight=DENSE_WEIGHT_OTHER)
    assert other[2] > other[3]
    # The background (the knowledge base's average similarity) is not evidence.
    assert hybrid_scores(cosine, lexical, background=0.5, weight=DENSE_WEIGHT)[3] < scores[3]
