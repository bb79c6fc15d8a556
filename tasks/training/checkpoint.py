"""Checkpoint folders, written atomically, enough to resume a run bit for bit.

    <out_dir>/checkpoints/
        latest                    the name of the newest complete checkpoint (written last)
        step-00000200/
            model.safetensors     weights (a tied output matrix once, under its embedding name)
            optimizer.pt          torch engine: AdamW + LambdaLR state
            deepspeed/            DeepSpeed engine instead: its per-rank ZeRO partitions
            rng-rank0.pt          torch / numpy / python RNG state of each rank
            config.json           the resolved train config and model config
            trainer_state.json    step (= the data position, see data.py) and the loss history

A checkpoint is written into `.tmp-step-...`, fsynced, renamed into place, and only then does
`latest` point at it, so a process killed at any moment leaves the previous checkpoint intact.
Everything this module and the torch engine write loads with `torch.load(weights_only=True)`.
DeepSpeed's own files load through DeepSpeed (which unpickles them in full).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from tasks.io import atomic_write_bytes, fsync_path

LATEST = "latest"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "trainer_state.json"
RNG_FILE = "rng-rank{rank}.pt"
TMP_PREFIX = ".tmp-"


@dataclass
class TrainerState:
    step: int = 0  # optimizer steps done; batches are a function of it (data.py)
    history: dict[str, list[list[float]]] = field(default_factory=lambda: {"train": [], "val": []})


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(
    ckpt_dir: Path, engine, state: TrainerState, config: dict, keep: int = 0
) -> Path:
    """Write checkpoint `state.step` with every rank of `engine`; returns its folder.

    Collective: every rank calls it (ZeRO partitions are per rank); rank 0 renames and points
    `latest` at it, then keeps the newest `keep` checkpoints (0 = all).
    """
    ckpt_dir = Path(ckpt_dir)
    final = ckpt_dir / checkpoint_name(state.step)
    tmp = ckpt_dir / f"{TMP_PREFIX}{final.name}"
    if engine.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a process killed while saving
        tmp.mkdir(parents=True)
    engine.barrier()
    engine.save(tmp)
    torch.save(rng_state(), tmp / RNG_FILE.format(rank=engine.rank))
    engine.barrier()
    if engine.rank == 0:
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))
        (tmp / STATE_FILE).write_text(json.dumps({"step": state.step, "history": state.history}))
        _fsync_tree(tmp)
        if final.exists():  # a newer-than-latest folder from a run killed before `latest` moved
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_path(ckpt_dir)
        atomic_write_bytes(ckpt_dir / LATEST, final.name.encode())
        prune_checkpoints(ckpt_dir, keep)
    engine.barrier()
    return final


def load_checkpoint(folder: Path, engine) -> TrainerState:
    """Restore the engine (weights, optimizer, schedule) and this rank's RNG -> step, history."""
    folder = Path(folder)
    engine.load(folder)
    rng_file = folder / RNG_FILE.format(rank=engine.rank)
    if not rng_file.exists():  # resumed on more ranks than saved it
        rng_file = folder / RNG_FILE.format(rank=0)
    set_rng_state(torch.load(rng_file, weights_only=True))
    saved = json.loads((folder / STATE_FILE).read_text())
    return TrainerState(step=int(saved["step"]), history=saved["history"])


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The folder `latest` names, or None when no checkpoint was completed."""
    pointer = Path(ckpt_dir) / LATEST
    if not pointer.exists():
        return None
    folder = Path(ckpt_dir) / pointer.read_text().strip()
    if not (folder / STATE_FILE).exists():
        raise FileNotFoundError(
            f"{pointer} names {folder.name}, which is missing or incomplete; "
            "delete the pointer to start over or restore the folder"
        )
    return folder


def read_config(folder: Path) -> dict:
    """The resolved {"train": ..., "model": ...} config stored in a checkpoint."""
    return json.loads((Path(folder) / CONFIG_FILE).read_text())


def prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` step folders (never the one `latest` names), and
    temp folders left by killed saves."""
    for stale in Path(ckpt_dir).glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    latest = latest_checkpoint(ckpt_dir)
    folders = sorted(p for p in Path(ckpt_dir).glob("step-*") if p.is_dir())
    doomed = folders[:-keep] if keep else []
    for folder in doomed:
        if folder != latest:
            shutil.rmtree(folder)


# --- weights -------------------------------------------------------------------------------


def save_weights(
    model: nn.Module | None, path: Path, state: dict[str, torch.Tensor] | None = None
) -> None:
    """Weights as safetensors (`state`, or the model's state dict); a tensor shared by two names
    (tied embeddings) is stored once."""
    from safetensors.torch import save_file

    state = model.state_dict() if state is None else state
    seen: set[int] = set()
    unique = {}
    for name, tensor in state.items():
        if tensor.numel() and tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        unique[name] = tensor.detach().cpu().contiguous()
    save_file(unique, str(path), metadata={"format": "pt"})


def load_weights(model: nn.Module, path: Path) -> None:
    """Load safetensors weights into `model` (cast to its dtype); tied names may be absent."""
    from safetensors.torch import load_file

    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    tied = (
        {"output.weight"}
        if getattr(getattr(model, "config", None), "tie_embeddings", False)
        else set()
    )
    if set(missing) - tied or unexpected:
        raise ValueError(
            f"{path}: weights do not fit the model: missing {sorted(set(missing) - tied)}, "
            f"unexpected {sorted(unexpected)}"
        )


# --- RNG state in weights_only-loadable form (tensors, numbers, strings, lists) -------------


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(Path(root))
