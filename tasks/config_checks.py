"""Checks `load_config` runs after the types: the input files a preset names exist, and
source names are unique. Each problem names its key, so a mistake fails at flow entry in one
message instead of as a traceback inside a task an hour later.

Relative input paths resolve against the folder of the preset file (configs/ for a named
preset), also when given with `--set`; the error shows the resolved path.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.data.catalog import CatalogError, load_catalog
from tasks.pretrain.base_config import check_base_model

if TYPE_CHECKING:
    from tasks.config import RecipeConfig

# Keys (dotted, `*` = every list item) whose value is an input file or folder the user names.
INPUT_PATHS = (
    "data.user_sources.*.path",
    "sft.sources.user.*.path",
    "reward.collection.label_files.*.path",
    "sft.sources.tasks.facts_path",
    "sft.sources.donotanswer.responses_path",
    "sft.sources.borderline.path",
    "sft.sources.borderline_families.path",
    "corpus.toxicity.detoxify_checkpoint",
    "corpus.toxicity.detoxify_config_dir",
    "base_model.path",
)


def resolve_input_paths(raw: dict, base: Path) -> None:
    """Make every relative input path in the raw (unvalidated) config absolute against `base`,
    in place. Values of the wrong type are left for validation to report."""
    for pattern in INPUT_PATHS:
        for _, node, field in _matches(raw, pattern.split(".")):
            value = node[field]
            if isinstance(value, str) and value:
                path = Path(value).expanduser()
                node[field] = str(path if path.is_absolute() else base / path)


def input_problems(cfg: RecipeConfig) -> list[str]:
    """Missing input files and clashing source names, one line each with the key named."""
    raw = cfg.model_dump(mode="json")
    problems = [
        p
        for pattern in INPUT_PATHS
        for key, node, field in _matches(raw, pattern.split("."))
        if (p := _missing(key, node, field))
    ]
    return problems + _duplicate_names(cfg) + _base_model_problems(cfg)


def _base_model_problems(cfg: RecipeConfig) -> list[str]:
    """A base model that is missing or not a Llama fails here, naming what was found."""
    base = cfg.base_model
    if base is None or (base.path is not None and not Path(base.path).exists()):
        return []  # none, or already reported as a missing input path
    archive_file = None
    if base.archive is not None:
        try:
            spec = load_catalog(cfg.data.catalog).archive(base.archive)
        except CatalogError as exc:
            return [f"base_model.archive: {exc}"]
        archive_file = Path(cfg.data.cache_dir) / spec.archive
    # messages that already name their key ("base_model.path: ...") keep it; the others name
    # a file, so say which setting led to it
    return [
        p if p.startswith("base_model") else f"base_model: {p}"
        for p in check_base_model(base, archive_file)
    ]


def _matches(node: Any, parts: list[str], key: str = "") -> Iterator[tuple[str, dict, str]]:
    """(dotted key, the dict holding the value, field name) for each present, non-null match."""
    head, rest = parts[0], parts[1:]
    if head == "*":
        items = enumerate(node) if isinstance(node, list) else ()
    else:
        items = [(head, node[head])] if isinstance(node, dict) and head in node else ()
    for name, child in items:
        where = f"{key}.{name}" if key else str(name)
        if rest:
            yield from _matches(child, rest, where)
        elif child is not None:
            yield where, node, str(name)


def _missing(key: str, node: dict, field: str) -> str | None:
    value = str(node[field])
    if key.startswith("corpus.toxicity.") and node.get("backend") != "detoxify":
        return None  # only read by the Detoxify backend
    if key.startswith("data.user_sources.") and glob.has_magic(value):
        if not glob.glob(value):
            return (
                f"{key}: {value} matches no file "
                "(relative paths resolve against the preset's folder)"
            )
        return None
    path = Path(value)
    if not path.exists():
        return f"{key}: {path} does not exist (relative paths resolve against the preset's folder)"
    if key.startswith("data.user_sources.") and path.is_dir() and node.get("member") is None:
        return (
            f"{key}: {path} is a folder; set `member` to a glob such as '*.txt' to say which "
            f"files to read"
        )
    if key.startswith(("sft.", "reward.")) and not path.is_file():
        return f"{key}: {path} is not a file"
    return None


def _duplicate_names(cfg: RecipeConfig) -> list[str]:
    """Source names prefix document ids and rows' `source`, and key the cache of user files:
    two sources with one name would mix or hide each other."""
    problems: list[str] = []
    try:
        catalog = load_catalog(cfg.data.catalog).select(cfg.data.sources)
        taken = {s.name: f"a catalog source ({cfg.data.catalog})" for s in catalog}
    except CatalogError as exc:
        problems.append(f"data.catalog / data.sources: {exc}")
        taken = {}
    problems += _clashes("data.user_sources", [s.name for s in cfg.data.user_sources], taken)
    builtin = {
        name: "a built-in SFT source"
        for name in type(cfg.sft.sources).model_fields
        if name != "user"
    }
    problems += _clashes("sft.sources.user", [u.name for u in cfg.sft.sources.user], builtin)
    problems += _clashes(
        "reward.collection.label_files", [f.name for f in cfg.reward.collection.label_files], {}
    )
    return problems


def _clashes(key: str, names: list[str], taken: dict[str, str]) -> list[str]:
    taken = dict(taken)
    out = []
    for i, name in enumerate(names):
        if name in taken:
            out.append(
                f"{key}.{i}.name: {name!r} is already the name of {taken[name]}; "
                f"source names must be unique, rename this one"
            )
        else:
            taken[name] = f"{key}.{i}"
    return out
