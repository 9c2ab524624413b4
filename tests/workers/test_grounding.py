from __future__ import annotations

from knowledge.base import Passage
from workers.grounding import Grounding, not_covered_message, retrieval_query


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


def test_not_covered_names_the_knowledge_bases_and_who_to_ask() -> None:
    text = not_covered_message(["hr-policies"], "#hr-humans")
    assert "`hr-policies`" in text
    assert "Please ask #hr-humans." in text
    assert "helpdesk can help" in not_covered_message(["hr-policies"], "")
    assert Grounding(("hr-policies",), ()).covered is False
