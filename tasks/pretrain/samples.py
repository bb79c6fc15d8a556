"""Sample generations during training: a few fixed prompts, seeded, decoded to text."""

from __future__ import annotations

from pathlib import Path

import torch

from models.generation import generate
from tasks.chat.tokenizer import load_tokenizer


def make_sample_fn(
    tokenizer_model: Path,
    prompts: list[str],
    max_new_tokens: int = 48,
    temperature: float = 0.8,
    top_p: float = 0.9,
    seed: int = 0,
):
    """(model, step) -> text with one completion per prompt, for the training loop to log."""
    processor = load_tokenizer(tokenizer_model)
    encoded = [[processor.bos_id(), *processor.encode(p)] for p in prompts]

    def sample(model: torch.nn.Module, step: int) -> str:
        was_training = model.training
        model.eval()
        try:
            outs = generate(
                model,
                encoded,
                max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                eos_id=processor.eos_id(),
                pad_id=0,
                seed=seed,
            )
        finally:
            model.train(was_training)
        lines = [f"# step {step} (temperature {temperature}, top-p {top_p})"]
        for prompt, new in zip(prompts, outs):
            lines.append(f"{prompt} >>> {processor.decode(new)}")
        return "\n\n".join(lines) + "\n"

    return sample
