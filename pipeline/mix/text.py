"""The words of a training turn: each annotation row as a (question, answer) pair the model is trained on."""

from __future__ import annotations

from schemas import mixture
from schemas.sampling import GROUNDING_ANSWER

CAPTION_QUESTION = "Describe what happens in this video clip."
SUMMARY_QUESTION = "Describe this video in detail."
GROUNDING_QUESTION = 'When does this event happen in the video: "{query}"? Give its start and end in seconds.'
MC_INSTRUCTION = "Only give the best option."
LETTERS = "ABCDEFGHIJ"


def caption_turn(row: dict) -> tuple[str, str]:
    question = CAPTION_QUESTION if row["level"] == "clip" else SUMMARY_QUESTION
    return question, row["text"].strip()


def qa_turn(row: dict) -> tuple[str, str] | None:
    """Open QA as is; multiple choice with lettered options and the letter plus the option as the answer.
    None for an mc row whose answer is not among its options (the annotators never write one)."""
    if row["form"] != "mc":
        return row["question"].strip(), row["answer"].strip()
    options = list(row["options"] or [])
    if row["answer"] not in options or len(options) > len(LETTERS):
        return None
    lines = [f"({LETTERS[i]}) {opt}" for i, opt in enumerate(options)]
    question = "\n".join([row["question"].strip(), "Options:", *lines, MC_INSTRUCTION])
    k = options.index(row["answer"])
    return question, f"({LETTERS[k]}) {row['answer']}"


def grounding_turn(row: dict) -> tuple[str, str]:
    return (GROUNDING_QUESTION.format(query=row["query"].strip()),
            GROUNDING_ANSWER.format(s=row["start_s"], e=row["end_s"]))


def task_of(table: str, row: dict) -> str:
    if table == "captions":
        return mixture.CAPTION_TASK if row["level"] == "clip" else mixture.SUMMARY_TASK
    if table == "qa":
        return row["family"]
    return mixture.GROUNDING_TASK


def turn_of(table: str, row: dict) -> tuple[str, str] | None:
    if table == "captions":
        return caption_turn(row)
    if table == "qa":
        return qa_turn(row)
    return grounding_turn(row)
