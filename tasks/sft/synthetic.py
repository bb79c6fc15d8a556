"""Synthetic task dialogues whose answers code can check (helpfulness data for SFT). Pure code.

Four kinds, each its own `category`: arithmetic, counting, conversion and facts (countries from
`data/facts.yaml`). A dialogue asks 1..max_turns questions of one kind; `reference` is the bare
answer to the last one ("42", "Paris"). Generation is seeded per kind, so changing the count of
one kind leaves the others' dialogues unchanged. `tasks.judges.answers.check_answer` is the rule
later stages use to judge whether a model's answer is right.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from tasks.records import assign_split
from tasks.sft.sources import dialogue_row

FACTS_PATH = Path(__file__).parent / "data" / "facts.yaml"
KINDS = ("arithmetic", "counting", "conversion", "facts")
QA = tuple[str, str, str]  # (question, answer, reference)


class TaskDialoguesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    arithmetic: int = Field(200, ge=0)  # dialogues per kind
    counting: int = Field(200, ge=0)
    conversion: int = Field(200, ge=0)
    facts: int = Field(200, ge=0)
    max_turns: int = Field(3, ge=1)  # question/answer exchanges per dialogue: 1..max_turns
    heldout_frac: float = Field(0.1, ge=0, le=1)
    facts_path: Path | None = None  # None = tasks/sft/data/facts.yaml


def generate_task_dialogues(
    cfg: TaskDialoguesConfig, seed: int
) -> tuple[list[dict], dict[str, float]]:
    """-> (rows, stats). Same config and seed, same rows. Split by dialogue id."""
    facts = load_facts(cfg.facts_path or FACTS_PATH)
    makers: dict[str, Callable[[random.Random], QA]] = {
        "arithmetic": _arithmetic,
        "counting": _counting,
        "conversion": _conversion,
        "facts": partial(_fact, facts=facts),
    }
    rows, stats = [], Counter()
    for kind in KINDS:
        rng = random.Random(f"{seed}:{kind}")
        for i in range(getattr(cfg, kind)):
            turns, reference = [], ""
            for _ in range(rng.randint(1, cfg.max_turns)):
                question, answer, reference = makers[kind](rng)
                turns += [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            dialogue_id = f"tasks:{kind}:{i}"
            rows.append(
                dialogue_row(
                    dialogue_id=dialogue_id,
                    source="tasks",
                    category=kind,
                    turns=turns,
                    split=assign_split(dialogue_id, cfg.heldout_frac),
                    location=f"generator:{kind}:seed={seed}",
                    reference=reference,
                )
            )
            stats[f"dialogues_{kind}"] += 1
            stats[f"exchanges_{kind}"] += len(turns) // 2
    stats.update(
        dialogues=len(rows),
        train=sum(r["split"] == "train" for r in rows),
        heldout=sum(r["split"] == "heldout" for r in rows),
    )
    return rows, dict(stats)


class Country(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    capital: str = Field(min_length=1)
    continent: str = Field(min_length=1)
    currency: str | None = None


def load_facts(path: Path) -> list[Country]:
    """The facts file -> countries; raises ValueError naming the file on a malformed entry."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        countries = [Country(**c) for c in data["countries"]]
    except Exception as e:  # noqa: BLE001 - any malformed entry: say which file
        raise ValueError(
            f"{path}: expected 'countries: [{{name, capital, continent, currency}}]': {e}"
        ) from e
    if not countries:
        raise ValueError(f"{path} lists no countries")
    return countries


# ---------------------------------------------------------------------------------------------
# One question/answer pair per call. Answers state the reference in a few natural phrasings.

_OPS = {
    "plus": ("+", lambda a, b: a + b),
    "minus": ("-", lambda a, b: a - b),
    "times": ("×", lambda a, b: a * b),
}


def _arithmetic(rng: random.Random) -> QA:
    word = rng.choice(list(_OPS))
    symbol, fn = _OPS[word]
    r = a = b = 0
    while r in (a, b):  # an answer that only echoes an operand must not pass check_answer
        if word == "times":
            a, b = rng.randint(2, 12), rng.randint(2, 20)
        else:
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            if word == "minus" and b > a:
                a, b = b, a  # keep results non-negative
        r = fn(a, b)
    question = rng.choice(
        [
            f"What is {a} {word} {b}?",
            f"How much is {a} {word} {b}?",
            f"Can you calculate {a} {symbol} {b}?",
            f"What's {a} {symbol} {b}?",
        ]
    )
    answer = rng.choice(
        [
            f"{a} {word} {b} is {r}.",
            f"{a} {symbol} {b} = {r}.",
            f"The answer is {r}.",
            f"That's {r}.",
        ]
    )
    return question, answer, str(r)


_WORDS = (
    "apple",
    "banana",
    "elephant",
    "library",
    "mountain",
    "keyboard",
    "umbrella",
    "penguin",
    "balloon",
    "committee",
    "bookkeeper",
    "mississippi",
    "strawberry",
    "coffee",
    "pepper",
    "window",
    "giraffe",
    "success",
    "address",
    "butterfly",
    "necessary",
    "rhythm",
    "tomato",
    "chocolate",
    "bicycle",
    "parallel",
    "grammar",
    "dinosaur",
    "lemonade",
    "sunflower",
)
_ITEMS = (
    "apples",
    "pencils",
    "a lamp",
    "two chairs",
    "milk",
    "bread",
    "a notebook",
    "scissors",
    "a hammer",
    "socks",
    "a kettle",
    "rice",
    "eggs",
    "a candle",
    "tape",
    "a towel",
)


def _counting(rng: random.Random) -> QA:
    task = rng.choice(["letters", "occurrences", "items"])
    if task == "letters":
        w = rng.choice(_WORDS)
        n = len(w)
        question = rng.choice(
            [f'How many letters are in the word "{w}"?', f'Count the letters in "{w}".']
        )
        answer = rng.choice([f'The word "{w}" has {n} letters.', f'"{w}" has {n} letters.'])
    elif task == "occurrences":
        w = rng.choice(_WORDS)
        c = rng.choice(sorted(set(w)))
        n = w.count(c)
        question = rng.choice(
            [
                f'How many times does the letter "{c}" appear in "{w}"?',
                f'How many "{c}"s are there in the word "{w}"?',
            ]
        )
        times = "time" if n == 1 else "times"
        answer = rng.choice(
            [
                f'The letter "{c}" appears {n} {times} in "{w}".',
                f'There {"is" if n == 1 else "are"} {n} "{c}" in "{w}".',
            ]
        )
    else:
        items = rng.sample(_ITEMS, rng.randint(2, 8))
        n = len(items)
        question = rng.choice(
            [
                f"How many items are on this list: {', '.join(items)}?",
                f"I need to buy {', '.join(items)}. How many things is that?",
            ]
        )
        answer = rng.choice([f"There are {n} items on the list.", f"That's {n} items."])
    return question, answer, str(n)


# (from unit, to unit, factor): `to` = `from` x factor; the reverse direction divides exactly
_UNITS = (
    ("kilometer", "meter", 1000),
    ("meter", "centimeter", 100),
    ("kilogram", "gram", 1000),
    ("hour", "minute", 60),
    ("minute", "second", 60),
)


def _conversion(rng: random.Random) -> QA:
    big, small, factor = rng.choice(_UNITS)
    n = rng.randint(1, 20)
    if rng.random() < 0.5:
        src, dst, value, result = big, small, n, n * factor
    else:
        src, dst, value, result = small, big, n * factor, n
    s, d = _plural(src, value), _plural(dst, result)
    question = rng.choice(
        [
            f"How many {dst}s are in {value} {s}?",
            f"Convert {value} {s} to {dst}s.",
            f"What is {value} {s} in {dst}s?",
        ]
    )
    answer = rng.choice(
        [
            f"{value} {s} is {result} {d}.",
            f"That's {result} {d}.",
            f"{value} {s} equals {result} {d}.",
        ]
    )
    return question, answer, str(result)


def _plural(unit: str, n: int) -> str:
    return unit if n == 1 else unit + "s"


def _fact(rng: random.Random, facts: list[Country]) -> QA:
    c = rng.choice(facts)
    name, title = c.name, c.name[0].upper() + c.name[1:]
    attribute = rng.choice(["capital", "continent"] + (["currency"] if c.currency else []))
    if attribute == "capital":
        question = rng.choice(
            [f"What is the capital of {name}?", f"Which city is the capital of {name}?"]
        )
        answer = rng.choice(
            [
                f"The capital of {name} is {c.capital}.",
                f"{c.capital} is the capital of {name}.",
                f"It's {c.capital}.",
            ]
        )
        return question, answer, c.capital
    if attribute == "continent":
        question = rng.choice([f"Which continent is {name} in?", f"On what continent is {name}?"])
        answer = rng.choice(
            [
                f"{title} is in {c.continent}.",
                f"{title} is on the continent of {c.continent}.",
                f"It's in {c.continent}.",
            ]
        )
        return question, answer, c.continent
    question = rng.choice([f"What currency is used in {name}?", f"What is the currency of {name}?"])
    answer = rng.choice(
        [f"{title} uses the {c.currency}.", f"The currency of {name} is the {c.currency}."]
    )
    return question, answer, c.currency
