"""Anthropic HH-RLHF transcripts ("\n\nHuman: ...\n\nAssistant: ...") as chat turns."""

from __future__ import annotations

import re

_HH_MARKER = re.compile(r"\n\n(Human|Assistant):")


def parse_hh_transcript(text: str) -> list[dict]:
    """ "\\n\\nHuman: ...\\n\\nAssistant: ..." -> turns [{"role", "content"}], content stripped.

    A marker counts only after a blank line, so content may hold single and double newlines.
    Raises ValueError when the text does not start with Human, two turns of one speaker follow
    each other, a turn is empty, or the transcript ends with Human.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("transcript is empty")
    parts = _HH_MARKER.split("\n\n" + text.lstrip("\n"))
    if parts[0].strip():
        raise ValueError(f"transcript must start with 'Human:', found {parts[0].strip()[:40]!r}")
    turns = []
    for i in range(1, len(parts), 2):
        speaker, content = parts[i], parts[i + 1].strip()
        n = len(turns) + 1
        if n == 1 and speaker != "Human":
            raise ValueError("transcript must start with 'Human:', found 'Assistant:'")
        if (speaker == "Human") != (len(turns) % 2 == 0):
            raise ValueError(f"turn {n}: two {speaker} turns in a row")
        if not content:
            raise ValueError(f"turn {n} ({speaker}) is empty")
        turns.append({"role": "user" if speaker == "Human" else "assistant", "content": content})
    if len(turns) % 2:
        raise ValueError("transcript ends with a Human turn; it needs a final Assistant answer")
    return turns
