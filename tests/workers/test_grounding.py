from __future__ import annotations

from dataclasses import replace

import pytest

from bots.slack.mrkdwn import to_mrkdwn
from knowledge.base import Passage, source_link
from workers.grounding import (
    GROUNDING_NOTE,
    NOT_COVERED,
    Grounding,
    is_not_covered,
    not_covered_message,
    retrieval_query,
)


def _passage(n: int, section: str = "Carry-over") -> Passage:
    return Passage(
        kb="hr-policies",
        chunk_id=f"c{n}",
        text=f"passage text {n}",
        title="Vacation policy",
        section=section,
        source=f"vacation-{n}.md",
        score=0.9 - n / 10,
    )


def test_short_follow_ups_carry_the_previous_question_and_new_topics_stand_alone() -> None:
    earlier = ["How many vacation days carry over?"]
    assert retrieval_query("and for part-timers?", earlier) == (
        "How many vacation days carry over?\nand for part-timers?"
    )
    new_topic = "What band plays at the summer barbecue?"
    assert retrieval_query(new_topic, earlier) == new_topic
    assert retrieval_query("and interns?", []) == "and interns?"


def test_passages_are_numbered_for_the_model_and_cited_under_the_answer() -> None:
    grounding = Grounding(("hr-policies",), (_passage(1), _passage(2, "Entitlement")))
    block = grounding.system_block()
    assert block.startswith("Answer only from the numbered passages")
    assert "[1] Vacation policy — Carry-over\npassage text 1" in block
    assert "[2] Vacation policy — Entitlement\npassage text 2" in block
    # Only the passages the answer cites; all of them when it cites none.
    assert grounding.sources("Five days [2].") == (
        "\n\n**Sources:** [2] Vacation policy — Entitlement (`vacation-2.md`)"
    )
    assert grounding.sources("Five days.").count("[") == 2
    assert grounding.sources("See [7].").count("[") == 2, "an invented number cites nothing"
    assert grounding.without_last().passages == (_passage(1),)


def test_sources_of_a_published_knowledge_base_are_links_in_slack_and_teams() -> None:
    url = source_link("https://wiki.acme.example/Team_(HR)", "vacation policy.md")
    assert url == "https://wiki.acme.example/Team_%28HR%29/vacation%20policy.md"
    linked = replace(_passage(1, "Carry-over [2026] for `sudo` users C:\\"), url=url)
    line = Grounding(("hr-policies",), (linked, _passage(2))).sources("Five days [1][2].")
    assert line == (
        "\n\n**Sources:** [1] [Vacation policy — Carry-over (2026) for 'sudo' users C:/]"
        f"({url}); [2] Vacation policy — Carry-over (`vacation-2.md`)"
    )
    # Slack shows it as a link too; Teams renders the Markdown as it is.
    assert f"<{url}|Vacation policy — Carry-over (2026) for 'sudo' users C:/>" in to_mrkdwn(line)


@pytest.mark.parametrize(
    ("text", "chars", "kept"),
    [
        ("Up to five unused days carry over to March", 30, "Up to five unused days carry …"),
        ("Up to five unused days carry\nover to March", 33, "Up to five unused days carry …"),
        ("休暇の繰り越しは五日までです。三月末まで使えます", 10, "休暇の繰り越しは五日 …"),
        ("I unusually-long-hyphenated-words", 12, "I unusually- …"),
        ("Short enough", 40, "Short enough"),
    ],
)
def test_the_best_passage_is_cut_at_a_word_near_the_end_or_right_there(
    text: str, chars: int, kept: str
) -> None:
    grounding = Grounding(("hr-policies",), (replace(_passage(1), text=text), _passage(2)))
    (cut,) = grounding.best_cut(chars).passages
    assert cut.text == kept
    assert len(cut.text) <= chars + 2
    assert (cut.title, cut.source) == ("Vacation policy", "vacation-1.md")


def test_not_covered_names_the_knowledge_bases_and_who_to_ask() -> None:
    text = not_covered_message(["hr-policies"], "#hr-humans")
    assert "`hr-policies`" in text
    assert "Please ask #hr-humans." in text
    assert "helpdesk can help" in not_covered_message(["hr-policies"], "")
    assert Grounding(("hr-policies",), ()).covered is False


def test_the_model_is_told_to_answer_with_the_marker_alone_when_the_passages_do_not() -> None:
    assert f"reply with exactly {NOT_COVERED} and nothing else" in GROUNDING_NOTE
    assert "never guess" in GROUNDING_NOTE.lower()
    assert "[1], [2]" in GROUNDING_NOTE


@pytest.mark.parametrize(
    "answer",
    [
        "NOT_COVERED",
        "  \n NOT_COVERED",
        "NOT_COVERED.",
        "not_covered",
        "Not_Covered.\n",
        "`NOT_COVERED`",
        "**NOT_COVERED**",
        "[NOT_COVERED]",
        "(NOT_COVERED).",
        '"NOT_COVERED"',
    ],
)
def test_the_marker_is_recognized_with_the_wrapping_models_put_around_it(answer: str) -> None:
    assert is_not_covered(answer)
    assert is_not_covered(answer, partial=True)


@pytest.mark.parametrize(
    "answer",
    [
        "NOT_COVERED is not what I'd say: interns get 10 days [1].",
        "Interns get 10 days [1]. (Otherwise I would have said NOT_COVERED.)",
        "Up to 5 unused days carry over to next year [1].",
        "Not covered.",  # a real answer ("is dental covered?"), not the marker
        "NOT_COVERED_YET",
        "",
    ],
)
def test_an_answer_that_is_more_than_the_marker_is_an_answer(answer: str) -> None:
    assert not is_not_covered(answer)


def test_a_streaming_answer_is_held_only_while_it_could_still_become_the_marker() -> None:
    # Every prefix of the marker (and of its wrapped forms) could still become it.
    for wrapped in ("NOT_COVERED", "**NOT_COVERED.**", " `not_covered`"):
        for end in range(len(wrapped) + 1):
            assert is_not_covered(wrapped[:end], partial=True), wrapped[:end]
    assert not is_not_covered("NOT_", partial=False)
    # As soon as the text leaves the marker's path, it shows.
    for start in ("Up", "No,", "Not ", "NOT_COVERED is", "**Five", "[1", "NOT_COVEREDX"):
        assert not is_not_covered(start, partial=True), start
