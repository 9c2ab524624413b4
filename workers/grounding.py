"""Grounded answers: passages from the channel's knowledge bases, the instructions that keep
the model to them, the sources under the answer, and an honest "not covered".

The passages go into the system message, numbered; the model is asked to answer only from
them and to cite them as [1], [2]. Passages below the relevance threshold never reach the
model: when none is left, the thread is told the documents do not cover the question and
who can help, without a model call. Passages on the topic may still not answer the question
(a "near miss" that a score cannot tell); the model then replies with NOT_COVERED alone, and
the thread gets the same "not covered" reply.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from knowledge.base import Passage

# What the model replies, alone, when the passages do not answer the question.
NOT_COVERED = "NOT_COVERED"
GROUNDING_NOTE = (
    "Answer only from the numbered passages below; they come from the company's own "
    "documents. Refer to the passages you use as [1], [2] and so on. Never guess and never "
    "add facts from elsewhere. If the passages do not contain the answer, reply with exactly "
    f"{NOT_COVERED} and nothing else."
)
_CITATION = re.compile(r"\[(\d{1,2})\]")
# What may surround the marker and still leave it the whole answer: whitespace, Markdown
# emphasis or code, brackets, quotes, a trailing period.
_AROUND_MARKER = " \t\r\n`*_[](){}<>\"'."
SHORT_FOLLOW_UP_WORDS = 6


@dataclass(frozen=True, slots=True)
class Grounding:
    """The passages one question is answered from (none: not covered)."""

    kbs: tuple[str, ...]
    passages: tuple[Passage, ...]

    @property
    def covered(self) -> bool:
        return bool(self.passages)

    def without_last(self) -> Grounding:
        """The least relevant passage dropped (to fit the context)."""
        return Grounding(self.kbs, self.passages[:-1])

    def best_cut(self, chars: int) -> Grounding:
        """The best passage alone, cut to at most `chars` characters: at the last whitespace
        when there is one near the end (a word is not split), else right there."""
        best = self.passages[0]
        text = best.text[: max(chars, 0)]
        if len(text) < len(best.text):
            space = max(text.rfind(c) for c in " \n\t")
            if space >= len(text) * 0.8:
                text = text[:space]
            text = text.rstrip() + " …"
        return Grounding(self.kbs, (replace(best, text=text),))

    def system_block(self) -> str:
        numbered = (
            f"[{n}] {_heading(p)}\n{p.text.strip()}" for n, p in enumerate(self.passages, 1)
        )
        return GROUNDING_NOTE + "\n\n" + "\n\n".join(numbered)

    def sources(self, answer: str) -> str:
        """The sources line under an answer: the passages it cites, else all it was given."""
        cited = {int(n) for n in _CITATION.findall(answer)}
        shown = [(n, p) for n, p in enumerate(self.passages, 1) if not cited or n in cited] or list(
            enumerate(self.passages, 1)
        )
        items = "; ".join(f"[{n}] {_source(p)}" for n, p in shown)
        return f"\n\n**Sources:** {items}"


def retrieval_query(question: str, earlier_questions: Sequence[str]) -> str:
    """What is searched: the question, plus the one before it in the thread when it is a
    short follow-up ("and for part-timers?"), so it still finds its topic. Longer questions
    stand alone: an earlier topic would make a new one look covered."""
    previous = earlier_questions[-1:] if len(question.split()) < SHORT_FOLLOW_UP_WORDS else []
    return "\n".join([*previous, question])


def is_not_covered(text: str, *, partial: bool = False) -> bool:
    """Whether an answer is the NOT_COVERED marker alone (in any case, perhaps in backticks,
    asterisks, brackets or quotes, or with a period). partial: `text` is the start of an
    answer still streaming; whether it could still become the marker.

    An answer that mentions the marker among other words is an answer, not the marker."""
    marker = NOT_COVERED.casefold()
    if text.strip(_AROUND_MARKER).casefold() == marker:
        return True
    return partial and marker.startswith(text.lstrip(_AROUND_MARKER).casefold())


def not_covered_message(kbs: Sequence[str], handoff: str) -> str:
    names = ", ".join(f"`{kb}`" for kb in kbs)
    who = f"Please ask {handoff}." if handoff else "A person on your helpdesk can help."
    return (
        f":mag: I couldn't find this in the documents I answer from here ({names}), so I "
        f"won't guess. {who}"
    )


_LINK_TEXT = str.maketrans({"[": "(", "]": ")", "\\": "/", "`": "'"})


def _source(passage: Passage) -> str:
    """A link to the source where its knowledge base has a link base, else its title and
    file. In a link's text, a bracket would end it early, a backslash escape its end and a
    backtick start code that Slack reads before the link."""
    if passage.url:
        text = _heading(passage).translate(_LINK_TEXT)
        return f"[{text}]({passage.url})"
    return f"{_heading(passage)} (`{passage.source}`)"


def _heading(passage: Passage) -> str:
    if passage.section and passage.section != passage.title:
        return f"{passage.title} — {passage.section}"
    return passage.title
