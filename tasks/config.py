"""Recipe configuration: one pydantic model per stage, presets in configs/*.yaml.

`load_config("tiny")` reads configs/tiny.yaml, applies `key.path=value` overrides and
validates everything up front, so a typo fails at flow entry with the file and the key
named, not an hour into a run. Unknown keys are rejected everywhere (extra="forbid"), types
are strict (a bool is not a number, "30" in a YAML file is not an int), the input files a preset
names must exist, and source names must be unique (tasks/config_checks.py).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.config_checks import input_problems, resolve_input_paths
from tasks.corpus.dedup import DedupConfig
from tasks.corpus.demographics import DemographicsConfig
from tasks.corpus.pii import PiiConfig
from tasks.corpus.quality import QualityConfig
from tasks.corpus.sampling import SamplingConfig
from tasks.data.catalog import SourceSpec
from tasks.distill.config import DistillConfig
from tasks.evaluate.config import EvaluateConfig
from tasks.judges.toxicity import ToxicityConfig
from tasks.pretrain.base_config import BaseModelConfig
from tasks.pretrain.shards import ShardConfig
from tasks.promotion import PromotionConfig
from tasks.reward.config import RewardConfig
from tasks.rlhf.config import RlhfConfig
from tasks.runtime import PROJECT_ROOT, RUN_DIR_ENV
from tasks.sft.config import SftConfig
from tasks.tokenizer.train import TokenizerConfig
from tasks.training.config import TrainConfig

CONFIG_DIR = PROJECT_ROOT / "configs"


class ConfigError(ValueError):
    pass


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(StrictModel):
    """Which sources feed the corpus and where their packages are cached."""

    catalog: Path = Path("configs/catalog.yaml")
    cache_dir: Path = Path(".cache/embedded")
    sources: list[str] | None = None  # catalog names; None = every source in the catalog
    max_docs_per_source: int | None = Field(None, gt=0)  # a seeded slice (tiny preset)
    user_sources: list[SourceSpec] = []  # a user's own JSONL/Parquet/CSV/.txt folders


class ParallelConfig(StrictModel):
    """How the per-document steps (PII, quality) are mapped over shards of the corpus.

    Results do not depend on these settings (shards are contiguous row ranges, merged back in
    order); only where and how fast the work runs does.
    """

    shards: int = Field(1, ge=1)
    runner: Literal["threads", "dask"] = "threads"
    workers: int = Field(2, ge=1)  # threads, or Dask LocalCluster workers
    dask_address: str | None = None  # tcp://scheduler:8786 of a real cluster; None = LocalCluster
    dask_processes: bool = False  # LocalCluster workers as processes (polars releases the GIL)


class CorpusConfig(StrictModel):
    """Corpus stage: PII -> quality -> exact/near dedup -> weights; toxicity and demographics
    measured, not filtered."""

    parallel: ParallelConfig = ParallelConfig()
    dedup: DedupConfig = DedupConfig()
    pii: PiiConfig = PiiConfig()
    quality: QualityConfig = QualityConfig()
    sampling: SamplingConfig = SamplingConfig()
    toxicity: ToxicityConfig = ToxicityConfig()
    demographics: DemographicsConfig = DemographicsConfig()


class PretrainConfig(StrictModel):
    """Pretraining stage (RECIPE.md §3): a named model size, token shards, the training loop."""

    model: Literal["tiny", "demo", "llama2_7b", "llama2_70b"] = "demo"  # models/llama.py SIZES
    model_overrides: dict[str, int | float | bool] = {}  # e.g. {n_layers: 4}; vocab from tokenizer
    shards: ShardConfig = ShardConfig()
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(max_steps=600, warmup_steps=60))
    sample_prompts: list[str] = ["The", "Once upon a time", "The government said", "To be, or not"]
    registered_model: str = "llama2-recipe-pretrained"  # MLflow model registry name

    def model_config_dict(self) -> dict:
        from models.llama import SIZES

        return {**SIZES[self.model]().to_dict(), **self.model_overrides}


class RecipeConfig(StrictModel):
    preset: str
    seed: int = 1234
    run_dir: Path = Path("runs")  # Prefect home, MLflow store and datasets live here
    threads: int = Field(2, gt=0)  # torch / polars threads: set explicitly (2-core machines)
    data: DataConfig = DataConfig()
    corpus: CorpusConfig = CorpusConfig()
    # a pretrained model SFT starts from instead of pretraining one (tasks/pretrain/base_config.py)
    base_model: BaseModelConfig | None = None
    tokenizer: TokenizerConfig = TokenizerConfig()
    pretrain: PretrainConfig = PretrainConfig()
    sft: SftConfig = SftConfig()
    reward: RewardConfig = RewardConfig()
    rlhf: RlhfConfig = RlhfConfig()
    distill: DistillConfig = DistillConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    # the gate after evaluation: thresholds, then `candidate` / `champion` (tasks/promotion.py)
    promotion: PromotionConfig = PromotionConfig()

    def resolved(self) -> "RecipeConfig":
        """Relative paths become absolute (against the project root); env overrides apply."""
        run_dir = Path(os.environ.get(RUN_DIR_ENV) or self.run_dir)
        data = self.data.model_copy(
            update={"catalog": _abs(self.data.catalog), "cache_dir": _abs(self.data.cache_dir)}
        )
        return self.model_copy(update={"run_dir": _abs(run_dir), "data": data})

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"


def load_config(preset: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RecipeConfig:
    """Load a preset by name (configs/<name>.yaml) or path, apply `a.b.c=value` overrides."""
    path = Path(preset)
    if not path.suffix:
        path = CONFIG_DIR / f"{preset}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if p.stem != "catalog")
        raise ConfigError(f"no preset '{preset}' ({path} does not exist); known presets: {known}")
    try:
        raw = yaml.load(path.read_text(), Loader=_Loader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    raw.setdefault("preset", path.stem)
    for item in overrides:
        _apply_override(raw, item)
    # Input files named relative to the preset resolve against its folder, wherever the
    # process runs (a Prefect worker's working directory is not the user's shell's).
    resolve_input_paths(raw, path.parent.resolve())
    try:
        # JSON mode, strict: what a YAML file can say (str -> Path, int -> float, a list ->
        # tuple) is accepted; lax coercions (true -> 1, "30" -> 30, 2.0 -> 2) are not.
        cfg = RecipeConfig.model_validate_json(json.dumps(raw, default=str), strict=True)
    except ValidationError as exc:
        raise ConfigError(_explain(path, exc)) from None
    cfg = cfg.resolved()
    problems = input_problems(cfg)
    if problems:
        raise ConfigError(
            "\n".join(
                [
                    f"{path}: invalid configuration ({len(problems)} problem(s)):",
                    *(f"  - {p}" for p in problems),
                ]
            )
        )
    return cfg


def flatten(cfg: BaseModel | dict, prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"corpus.quality.min_words": 50, ...} for MLflow params."""
    data = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _apply_override(raw: dict, item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override '{item}' must look like section.key=value")
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{item}': '{part}' is not a section")
    node[parts[-1]] = yaml.load(value, Loader=_Loader)


class _Loader(yaml.SafeLoader):
    """PyYAML reads `1e-3` as a string (YAML 1.1 wants `1.0e-3`); YAML 1.2 and every user read
    it as a number, and the strict config models would reject the string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _explain(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid configuration ({exc.error_count()} problem(s)):"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"  - {where}: unknown key (check the spelling against tasks/config.py)")
        else:
            lines.append(f"  - {where}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def _abs(path: Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()
