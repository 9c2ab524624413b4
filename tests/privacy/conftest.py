"""One analyzer for the whole test session (loading spaCy takes a while)."""

from __future__ import annotations

import pytest

from bench.redaction import PATTERNS
from privacy.analyzer import PersonalDataAnalyzer, get_analyzer


@pytest.fixture(scope="session")
def analyzer() -> PersonalDataAnalyzer:
    return get_analyzer(patterns=PATTERNS)
