"""Safety preprompts for context distillation (RECIPE.md §9, paper §4.2.4). Pure code.

An adversarial prompt is answered with a safety preprompt in front of it; the model is then
fine-tuned on that answer with the preprompt taken away, so it learns to answer safely without
being told to. Two kinds of preprompt, both in `data/preprompts.yaml` (the project's wording):

- "generic": a template such as "You are a {adj1} and {adj2} assistant. ..." filled with two
  different adjectives (responsible, respectful, wise, ...); any prompt can get one.
- "template": an answer template for one risk category (illicit_criminal, hateful_harmful,
  unqualified_advice) that describes how a good answer to that kind of request looks:
  acknowledge, decline the harmful part, redirect to a safe resource.

`choose_preprompt` picks one per prompt from a hash of (seed, prompt id), so the choice for a
prompt never depends on which other prompts are in the batch or on their order.
"""

from __future__ import annotations

import functools
import hashlib
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from tasks.chat.prompt import RISK_CATEGORIES

DATA_DIR = Path(__file__).parent / "data"
PREPROMPTS_PATH = DATA_DIR / "preprompts.yaml"
TEMPLATE_FIELDS = frozenset({"adj1", "adj2"})

PrepromptKind = Literal["generic", "template"]


@dataclass(frozen=True)
class Preprompts:
    """The preprompt set: generic templates with their adjectives, answer templates per category."""

    generic_templates: tuple[str, ...]
    adjectives: tuple[str, ...]
    answer_templates: dict[str, tuple[str, ...]]

    def generic(self, template: int, adj1: str, adj2: str) -> str:
        """Generic template number `template` filled with the two adjectives."""
        return self.generic_templates[template].format(adj1=adj1, adj2=adj2)

    def all_generic(self) -> list[str]:
        """Every generic preprompt this set can produce (template x ordered adjective pair)."""
        return [
            self.generic(t, a, b)
            for t in range(len(self.generic_templates))
            for a in self.adjectives
            for b in self.adjectives
            if a != b
        ]


def _fold(text: str) -> str:
    return " ".join(text.split())


def _texts(value, where: str, path: Path) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(t, str) and t.strip() for t in value)
    ):
        raise ValueError(f"{path}: {where} must be a non-empty list of non-blank strings")
    return tuple(_fold(t) for t in value)


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def read_preprompts(path: Path) -> Preprompts:
    """Read and check a preprompt file: generic templates use exactly {adj1} and {adj2}, there are
    at least two different adjectives, and every risk category (and no other) has templates."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("generic"), dict):
        raise ValueError(
            f"{path}: expected 'generic: {{adjectives, templates}}' and "
            "'answer_templates: {category: [...]}'"
        )
    generic = data["generic"]
    templates = _texts(generic.get("templates"), "generic.templates", path)
    for n, template in enumerate(templates, start=1):
        try:
            fields = _fields(template)
        except ValueError as e:
            raise ValueError(f"{path}: generic template {n} is not a valid template: {e}") from None
        if fields != TEMPLATE_FIELDS:
            raise ValueError(
                f"{path}: generic template {n} must use exactly {{adj1}} and "
                f"{{adj2}}, uses {sorted(fields)}"
            )
    adjectives = _texts(generic.get("adjectives"), "generic.adjectives", path)
    if len(set(adjectives)) != len(adjectives) or len(adjectives) < 2:
        raise ValueError(f"{path}: generic.adjectives must be at least two different words")
    answers = data.get("answer_templates")
    if not isinstance(answers, dict) or set(answers) != set(RISK_CATEGORIES):
        found = sorted(answers) if isinstance(answers, dict) else answers
        raise ValueError(
            f"{path}: answer_templates must have exactly the categories "
            f"{list(RISK_CATEGORIES)}, found {found}"
        )
    return Preprompts(
        generic_templates=templates,
        adjectives=adjectives,
        answer_templates={
            c: _texts(answers[c], f"answer_templates.{c}", path) for c in RISK_CATEGORIES
        },
    )


@functools.cache
def load_preprompts(path: Path | None = None) -> Preprompts:
    """The project's preprompt set (`data/preprompts.yaml`) or the one at `path`; read once."""
    return read_preprompts(path or PREPROMPTS_PATH)


def _draws(prompt_id: str, seed: int) -> tuple[float, int, int, int]:
    """Four independent draws from sha256(seed, prompt id): a uniform in [0, 1) and three ints."""
    digest = hashlib.sha256(f"{seed}\x00{prompt_id}".encode("utf-8")).digest()
    u, a, b, c = (int.from_bytes(digest[i : i + 8], "big") for i in range(0, 32, 8))
    return u / 2**64, a, b, c


def choose_preprompt(
    prompt_id: str,
    risk_category: str | None,
    seed: int,
    template_share: float,
    *,
    preprompts: Preprompts | None = None,
) -> tuple[PrepromptKind, str]:
    """(kind, text) of the preprompt for one prompt.

    A prompt with a risk category gets that category's answer template when the first hash
    draw u (uniform in [0, 1)) is below `template_share`, and a generic preprompt otherwise; a
    prompt without one (None) always gets a generic preprompt. The same (prompt id, seed) always
    gives the same result, and raising `template_share` only moves prompts from generic to
    template, never back. Raises ValueError for an unknown category or a share outside [0, 1].
    """
    if not 0.0 <= template_share <= 1.0:
        raise ValueError(f"template_share must be in [0, 1], got {template_share}")
    if risk_category is not None and risk_category not in RISK_CATEGORIES:
        raise ValueError(f"risk_category {risk_category!r} is not one of {RISK_CATEGORIES}")
    pp = preprompts or load_preprompts()
    u, a, b, c = _draws(prompt_id, seed)
    if risk_category is not None and u < template_share:
        options = pp.answer_templates[risk_category]
        return "template", options[a % len(options)]
    n = len(pp.adjectives)
    first = b % n
    second = (first + 1 + c % (n - 1)) % n  # any adjective but the first
    return "generic", pp.generic(
        a % len(pp.generic_templates), pp.adjectives[first], pp.adjectives[second]
    )


def with_preprompt(system: str | None, preprompt: str) -> str:
    """The system prompt the answer is generated under: the preprompt, a blank line, then the
    existing system prompt (or the preprompt alone when there is none).

    The preprompt goes first, as a prefix, so the generation context differs from the training
    context (the original `system`) only by that prefix, and the dialogue's own instructions
    (for example a Ghost Attention persona) stay next to the user turn. Surrounding whitespace of
    both parts is dropped; a blank preprompt raises ValueError.
    """
    preprompt = preprompt.strip() if isinstance(preprompt, str) else ""
    if not preprompt:
        raise ValueError("the preprompt is blank")
    system = (system or "").strip()
    return f"{preprompt}\n\n{system}" if system else preprompt
