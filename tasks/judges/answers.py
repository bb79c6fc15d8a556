"""Answer checks against a known reference (task dialogues, TruthfulQA-style facts)."""

from __future__ import annotations

import re
import unicodedata


NUMERIC_KINDS = ("arithmetic", "counting", "conversion")


def check_answer(category: str, reference: str, answer: str) -> bool:
    """Does `answer` state `reference` as a whole number or whole word(s)?

    Both sides are compared case-folded, accents removed ("Brasilia" matches "Brasília") and
    whitespace collapsed. Numeric references (the arithmetic, counting and conversion kinds, or
    any reference that is a number) must appear as a number of their own: not inside a longer
    number, after a minus sign or before a decimal part ("142", "4", "-42", "42.5" all fail for
    "42"); thousands separators in the answer are ignored ("1,000" = "1000"). Other references
    must appear with no letter or digit touching either end. Number words ("forty-two") do not
    count, and an answer that states several candidates passes if one of them is the reference.
    """
    ref, text = _fold(reference), _fold(answer)
    if not ref:
        raise ValueError("check_answer needs a non-blank reference")
    if category in NUMERIC_KINDS or re.fullmatch(r"-?\d+(\.\d+)?", ref):
        text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)
        return re.search(rf"(?<![\w.\-]){re.escape(ref)}(?!\w|[.,]\d)", text) is not None
    return re.search(rf"(?<!\w){re.escape(ref)}(?!\w)", text) is not None


def _fold(s: str) -> str:
    s = "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))
    return " ".join(s.casefold().split())
