"""What a Prefect task returns: manifests of the datasets it wrote, stats, artifact paths.

Small and JSON-serialisable, so it is cheap to persist and cache, and a cached run can still
log the same metrics and artifacts to its new MLflow run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tasks.io import Manifest, atomic_write_bytes


class StepOutput(BaseModel):
    # NaN and infinite stats (a loss before the first step, an empty mean) persist as NaN and
    # Infinity, which read back; the default (null) would make the record invalid and the task rerun
    model_config = ConfigDict(ser_json_inf_nan="constants")

    outputs: dict[str, Manifest] = Field(default_factory=dict)
    stats: dict[str, float] = Field(default_factory=dict)
    files: dict[str, str] = Field(
        default_factory=dict
    )  # name -> file, logged as an MLflow artifact
    models: dict[str, str] = Field(
        default_factory=dict
    )  # name -> model folder (registered, not logged)
    notes: dict[str, str] = Field(
        default_factory=dict
    )  # short facts for the flow (why PPO stopped)

    def __getitem__(self, name: str) -> Manifest:
        return self.outputs[name]


def write_artifact(data: bytes, run_dir: Path, stage: str, name: str) -> Path:
    """Store bytes at artifacts/<stage>/<sha16>/<name> (content-addressed, atomic)."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    return atomic_write_bytes(Path(run_dir) / "artifacts" / stage / digest / name, data)
