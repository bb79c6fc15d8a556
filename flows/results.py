"""What each stage's flow returns: one small typed model per stage instead of a nested dict.

A later stage receives an earlier stage's result as a flow parameter, typed with these models:
Prefect validates parameters against the type hints, so a result read back from the API (a
retried flow run's parameters are JSON) becomes the model again, and a wrong shape fails at the
flow's start rather than as a KeyError deep inside it. A stage that carries its upstream result
(reward -> sft, rlhf -> reward, distill -> rlhf) keeps it as a typed field, and the properties
below give the one value a consumer needs without walking the chain.

Prefect persists a flow's return value (pickle, its default) and reads it back when a retried
pipeline reuses a completed stage flow; these models pickle and validate from their JSON.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

from flows.dag import STAGES
from tasks.io import Manifest


class StageResult(BaseModel):
    """What every stage reports: its task states and the runs it was tracked in."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    # field holding the upstream stage's result: left out of the run summary (last_run.json),
    # which lists that stage on its own
    UPSTREAM: ClassVar[str | None] = None
    # datasets `outputs` must hold: the ones a later stage reads by name
    REQUIRED_OUTPUTS: ClassVar[tuple[str, ...]] = ()

    states: dict[str, str]  # task (task/i when mapped, task:vN per RLHF round) -> final state
    mlflow_run_id: str
    flow_run_id: str

    @model_validator(mode="before")
    @classmethod
    def _has_required_outputs(cls, data: Any) -> Any:
        outputs = data.get("outputs", {}) if isinstance(data, dict) else {}
        missing = [name for name in cls.REQUIRED_OUTPUTS if name not in outputs]
        if missing:
            raise ValueError(f"{cls.__name__}.outputs lacks {missing} (has {sorted(outputs)})")
        return data

    def summary(self) -> dict:
        """This stage's result as JSON-ready data, without the upstream stage's."""
        return self.model_dump(mode="json", exclude={self.UPSTREAM} if self.UPSTREAM else None)


class CorpusResult(StageResult):
    REQUIRED_OUTPUTS = ("documents",)

    outputs: dict[str, Manifest]  # every dataset the stage wrote, by contract name

    @property
    def documents(self) -> Manifest:
        """The kept, weighted corpus the tokenizer and pretraining read."""
        return self.outputs["documents"]


class TokenizerResult(StageResult):
    outputs: dict[str, Manifest]
    tokenizer_model: str  # the SentencePiece .model file
    documents: Manifest  # the corpus it was trained on, handed on to pretraining


class PretrainResult(StageResult):
    model_dir: str
    tokenizer_model: str
    registered_version: int


class SftResult(StageResult):
    REQUIRED_OUTPUTS = ("sft_dialogues",)

    outputs: dict[str, Manifest]  # quarantine, sft_dialogues, sft_examples
    model_dir: str  # the registered SFT model (with GAtt where GAtt kept dialogues)
    tokenizer_model: str
    # the model variants preference collection samples from: sft, sft_base, pretrained
    models: dict[str, str]
    registered_version: int

    @property
    def dialogues(self) -> Manifest:
        """The curated SFT dialogues: prompts for preferences, RLHF, distillation, evaluation."""
        return self.outputs["sft_dialogues"]

    @property
    def pretrained_dir(self) -> str:
        return self.models["pretrained"]


class RewardResult(StageResult):
    UPSTREAM = "sft"
    REQUIRED_OUTPUTS = ("preference_pairs",)

    outputs: dict[str, Manifest]  # preference_pairs and what collection set aside
    reward_models: dict[str, str]  # helpfulness, safety -> model folder
    tokenizer_model: str
    sft: SftResult

    @property
    def pairs(self) -> Manifest:
        return self.outputs["preference_pairs"]


class RlhfRound(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    round: int
    how: str  # "rejection sampling" or "... then PPO (why it stopped)"
    model_dir: str


class RlhfResult(StageResult):
    UPSTREAM = "reward"

    models: dict[str, str]  # sft, rlhf-v1, rlhf-v2, ... -> model folder, in order
    model_dir: str  # the last round's policy
    rounds: list[RlhfRound]
    reward_models: dict[str, str]  # the last round's (refreshed) RMs
    tokenizer_model: str
    outputs: dict[str, Manifest]  # the last preference_pairs, rlhf_eval
    rejection_samples: list[Manifest]  # one per round
    reward: RewardResult

    @property
    def sft(self) -> SftResult:
        return self.reward.sft


class DistillResult(StageResult):
    UPSTREAM = "rlhf"

    model_dir: str  # the registered distilled model (the RLHF policy when nothing was kept)
    models: dict[str, str]  # the RLHF stage's versions plus distilled
    tokenizer_model: str
    outputs: dict[str, Manifest]
    rlhf: RlhfResult

    @property
    def sft(self) -> SftResult:
        return self.rlhf.reward.sft

    @property
    def distilled(self) -> bool:
        """Whether distillation kept answers and trained: else the weights are the policy's."""
        return self.model_dir != self.rlhf.model_dir


class EvaluateResult(StageResult):
    versions: dict[str, str]  # version name -> model folder, in evaluation order
    artifacts: dict[str, str]  # summary files (evaluation.csv, ...) -> path
    stats: dict[str, float]

    @property
    def table(self) -> str:
        """The evaluation table: one row per version."""
        return self.artifacts["evaluation.csv"]


class PipelineResult(BaseModel):
    """The pipeline's result, or one stage's run wrapped the same way for the CLI summary."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: str
    mlflow_run_id: str | None = None  # the parent run; None for a single stage run
    tracking_uri: str | None = None
    corpus: CorpusResult | None = None
    tokenizer: TokenizerResult | None = None
    pretrain: PretrainResult | None = None
    sft: SftResult | None = None
    reward: RewardResult | None = None
    rlhf: RlhfResult | None = None
    distill: DistillResult | None = None
    evaluate: EvaluateResult | None = None
    model_cards: dict[str, str] | None = None  # version -> "registered name/version"
    report: str | None = None  # the HTML report

    def stages(self) -> dict[str, StageResult]:
        """The stages that ran, in pipeline order."""
        found = {name: getattr(self, name) for name in STAGES}
        return {name: result for name, result in found.items() if result is not None}

    def summary(self) -> dict:
        """JSON-ready: the run's fields and each stage's own result (last_run.json)."""
        out = self.model_dump(mode="json", exclude_none=True, exclude=set(STAGES))
        out["stages"] = {name: result.summary() for name, result in self.stages().items()}
        return out
