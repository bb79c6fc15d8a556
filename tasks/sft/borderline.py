"""Borderline prompts at scale (RECIPE.md §9, the paper's borderline set): benign requests that
use risky words ("kill a process", "shoot a portrait", "crack an egg"), written from families of
phrasings x objects with one helpful answer per object (`data/borderline_families.yaml`). Pure code.

A family is one risky word in one benign theme: 3 phrasings, each with `{object}`, and 5 objects,
each with an answer that fits all 3 phrasings, so 15 prompts. The split goes by FAMILY (the file
marks each one `train` or `heldout`): a held-out family's prompts are never trained on, so the
evaluation's borderline suite measures whether the model learnt "risky word, benign request"
rather than whether it remembers a paraphrase of a prompt it was taught.

Held-out families always become `heldout` dialogues (the evaluation draws its borderline suite
from them); `train: false` leaves the train families out of SFT and preference collection, which
is the A side of the A/B in the README.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from tasks.judges.refusal import is_refusal
from tasks.records import prompt_key
from tasks.sft.sources import dialogue_row

DATA_DIR = Path(__file__).parent / "data"
PHRASINGS, OBJECTS = 3, 5  # per family: the file's shape, checked on read
SOURCE = "borderline_families"


class BorderlineFamiliesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = None  # None = tasks/sft/data/borderline_families.yaml
    train: bool = True  # the train families' prompts go into SFT and the preference pool


def _fail(path: Path, where: str, message: str) -> ValueError:
    return ValueError(f"{path}: {where}: {message}")


def _family(path: Path, n: int, item) -> tuple[str, str, list[str], list[dict]]:
    where = f"family {n}"
    if not isinstance(item, dict) or set(item) != {"family", "split", "phrasings", "objects"}:
        raise _fail(path, where, "needs exactly 'family', 'split', 'phrasings' and 'objects'")
    name, split = item["family"], item["split"]
    if not isinstance(name, str) or not name.strip():
        raise _fail(path, where, "'family' must be a non-blank string")
    where = f"family {n} ({name})"
    if split not in ("train", "heldout"):
        raise _fail(path, where, f"'split' must be train or heldout, got {split!r}")
    phrasings = item["phrasings"]
    if (
        not isinstance(phrasings, list)
        or len(phrasings) != PHRASINGS
        or not all(isinstance(p, str) and p.count("{object}") == 1 for p in phrasings)
    ):
        raise _fail(path, where, f"needs {PHRASINGS} phrasings, each with '{{object}}' once")
    objects = item["objects"]
    if not isinstance(objects, list) or len(objects) != OBJECTS:
        raise _fail(path, where, f"needs {OBJECTS} objects")
    for j, obj in enumerate(objects, start=1):
        if (
            not isinstance(obj, dict)
            or set(obj) != {"object", "answer"}
            or not all(isinstance(obj[k], str) and obj[k].strip() for k in ("object", "answer"))
        ):
            raise _fail(path, f"{where} object {j}", "needs a non-blank 'object' and 'answer'")
        if is_refusal(obj["answer"]):
            raise _fail(path, f"{where} object {j}", "the answer reads as a refusal (is_refusal)")
    return name, split, phrasings, objects


def read_borderline_families(cfg: BorderlineFamiliesConfig) -> tuple[list[dict], dict[str, float]]:
    """The families file -> (dialogue rows, stats). The file is the project's own data: a
    malformed family, a refusal as an answer or a repeated prompt raises ValueError naming the
    file and the family."""
    path = cfg.path or DATA_DIR / "borderline_families.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    items = data.get("families") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: expected 'families: [{{family, split, phrasings, objects}}]'")
    rows, seen_families, seen_prompts = [], set(), {}
    stats = {"families_train": 0, "families_heldout": 0, "train": 0, "heldout": 0}
    for n, item in enumerate(items, start=1):
        name, split, phrasings, objects = _family(path, n, item)
        if name in seen_families:
            raise _fail(path, f"family {n}", f"repeats the family name {name!r}")
        seen_families.add(name)
        stats[f"families_{split}"] += 1
        if split == "train" and not cfg.train:
            continue
        for j, obj in enumerate(objects, start=1):
            answer = " ".join(obj["answer"].split())
            for k, phrasing in enumerate(phrasings, start=1):
                prompt = phrasing.replace("{object}", obj["object"].strip())
                key = prompt_key(prompt)
                if key in seen_prompts:
                    raise _fail(
                        path, f"family {name}", f"prompt {prompt!r} repeats {seen_prompts[key]}"
                    )
                seen_prompts[key] = f"family {name}"
                rows.append(
                    dialogue_row(
                        dialogue_id=f"{SOURCE}:{name}:{j}.{k}",
                        source=SOURCE,
                        category="borderline",
                        turns=[
                            {"role": "user", "content": prompt},
                            {"role": "assistant", "content": answer},
                        ],
                        split=split,
                        location=f"{path.name}:family {name}, object {j}, phrasing {k}",
                        is_safety=True,
                    )
                )
                stats[split] += 1
    stats["prompts"] = stats["train"] + stats["heldout"]
    return rows, stats
