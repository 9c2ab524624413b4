"""BM25 terms in English and Spanish, normalized scores, and the hybrid calibration."""

from __future__ import annotations

import numpy as np
import pytest

from knowledge.base import DEFAULT_MIN_SCORE
from knowledge.lexical import LexicalIndex, analyze, detect_language, text_language
from knowledge.ranking import MINILM, USE, Calibration, calibration_for
from knowledge.use_embedder import MODEL_ID as USE_MODEL_ID


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


@pytest.mark.parametrize("calibration", [MINILM, USE])
def test_the_hybrid_score_is_calibrated_around_one_half(calibration: Calibration) -> None:
    assert calibration.weight("es", ("en",)) == calibration.dense_weight_other
    assert calibration.weight("en", ("en",)) == calibration.dense_weight
    cosine = np.array([0.9, 0.2, 0.2, 0.9], dtype=np.float32)
    lexical = np.array([1.0, 0.0, 1.0, 0.0], dtype=np.float32)
    scores = calibration.scores(cosine, lexical, background=0.1, weight=calibration.dense_weight)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] > 0.95  # both signals agree: relevant
    assert scores[1] < DEFAULT_MIN_SCORE / 2  # neither: clearly not covered
    assert scores[0] > scores[3] > scores[2]  # the dense signal weighs more in English
    # For a language the model does not know, BM25 decides most.
    other = calibration.scores(
        cosine, lexical, background=0.1, weight=calibration.dense_weight_other
    )
    assert other[2] > other[3]
    # The background (the knowledge base's average similarity) is not evidence.
    dense = calibration.dense_weight
    assert calibration.scores(cosine, lexical, background=0.5, weight=dense)[3] < scores[3]


def test_each_embedder_gets_its_own_calibration() -> None:
    assert calibration_for(USE_MODEL_ID) is USE
    assert calibration_for("sentence-transformers/all-MiniLM-L6-v2") is MINILM
    assert calibration_for("tei:http://127.0.0.1:8081") is MINILM
