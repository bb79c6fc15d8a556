"""Weight averaging of the last RLHF rounds (`rlhf.average_last`): the final RLHF policy as the
uniform mean of the weights of the last N round models.

Why (issue 15): on the 8.5M-parameter demo each round moves the policy along one line between
answering and refusing, and which way is mostly the draw (V2 of one run violates on 14.6 % of
the held-out adversarial prompts and refuses 10.6 % of the borderline ones; V3 of the same run
0 % and 40.6 %). The rounds start from one SFT model and fine-tune it with small steps, so their
weights stay close enough that their mean is a working model between them, which keeps less of
either extreme. The README ("Helpful and safe: what was measured") has the measurements.

`average_weights` is pure code; `average_step` is the cached task that writes the folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from prefect.logging import get_run_logger

from tasks.caching import cached_task
from tasks.hashing import parts_key, sha256_of
from tasks.results import StepOutput
from tasks.training.checkpoint import CONFIG_FILE, MODEL_FILE, read_config
from tasks.training.model_io import write_model_folder


def _model_config(folder: Path) -> dict:
    config = read_config(folder)
    if "model" not in config:
        raise ValueError(
            f"{folder / CONFIG_FILE}: no `model` entry; averaging takes the project's model "
            "folders (the rounds' outputs), not Hugging Face exports"
        )
    return config["model"]


def average_weights(model_dirs: list[Path]) -> dict[str, torch.Tensor]:
    """The uniform mean of the weights in `model_dirs` (each a model folder: model.safetensors
    + config.json), computed in float32 and stored in each tensor's own dtype.

    Raises ValueError when fewer than two folders are given, or when a folder's model config or
    weights (names, shapes, dtypes) differ from the first folder's; the message names the
    folder and what differs."""
    from safetensors.torch import load_file

    if len(model_dirs) < 2:
        raise ValueError(f"averaging needs at least two model folders, got {len(model_dirs)}")
    first = Path(model_dirs[0])
    config = _model_config(first)
    weights = load_file(str(first / MODEL_FILE))
    dtypes = {k: v.dtype for k, v in weights.items()}
    total = {k: v.float() for k, v in weights.items()}
    for d in model_dirs[1:]:
        d = Path(d)
        if _model_config(d) != config:
            raise ValueError(
                f"{d / CONFIG_FILE}: model config differs from {first / CONFIG_FILE}; only "
                "models of one architecture can be averaged"
            )
        weights = load_file(str(d / MODEL_FILE))
        if weights.keys() != total.keys():
            raise ValueError(
                f"{d / MODEL_FILE}: tensor names differ from {first / MODEL_FILE} "
                f"(only here: {sorted(weights.keys() - total.keys())[:5]}, missing: "
                f"{sorted(total.keys() - weights.keys())[:5]})"
            )
        for k, v in weights.items():
            if v.shape != total[k].shape or v.dtype != dtypes[k]:
                raise ValueError(
                    f"{d / MODEL_FILE}: tensor {k} is {v.dtype} {tuple(v.shape)}, "
                    f"{dtypes[k]} {tuple(total[k].shape)} in {first / MODEL_FILE}"
                )
            total[k] += v.float()
    n = len(model_dirs)
    return {k: (v / n).to(dtypes[k]).contiguous() for k, v in total.items()}


@cached_task("average_rounds")
def average_step(model_dirs: list[str], labels: list[str], run_dir: str) -> StepOutput:
    """The mean of the round models `model_dirs` (named `labels`, e.g. rlhf-v2, rlhf-v3) as a
    model folder under artifacts/rlhf/avg-<key>/model, written atomically file by file; the
    config is the last model's, with `averaged_from` (labels and folders) added."""
    key = parts_key(*(sha256_of(Path(d) / MODEL_FILE) for d in model_dirs))
    folder = Path(run_dir) / "artifacts" / "rlhf" / f"avg-{key}" / "model"
    averaged = average_weights([Path(d) for d in model_dirs])
    config = read_config(Path(model_dirs[-1]))
    config["averaged_from"] = [{"version": v, "model_dir": d} for v, d in zip(labels, model_dirs)]
    write_model_folder(folder, averaged, config)
    get_run_logger().info("RLHF: %s averaged into %s", " + ".join(labels), folder)
    return StepOutput(
        stats={"average.models": float(len(model_dirs))}, models={"model": str(folder)}
    )
