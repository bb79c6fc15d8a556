"""Chat with a trained model: load it from a model folder, answer dialogues in batches.

`make_answer_fn` is the bridge between the pure Ghost Attention / evaluation code (which sees
only an `AnswerFn`) and the model: it renders each context in the Llama 2 chat format, runs
the batched KV-cache generator, and decodes the answer. A context that leaves no room for
`max_new_tokens` in the model's window gets None, so callers can stop that conversation and
report how far it got. `make_answer_status_fn` also says per answer whether it ended at EOS or
was cut off at `max_new_tokens`, so a cut-off answer is never scored as a complete one.
"""

from __future__ import annotations

import torch

from models.generation import ended_at_eos, generate
from models.llama import Llama
from tasks.chat.format import answer_prefix_tokens, prompt_tokens
from tasks.chat.tokenizer import Tokenizer

Context = tuple[str, list[dict]]  # (system prompt, turns ending with a user turn)


def make_answer_status_fn(
    model: Llama,
    processor: Tokenizer,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    batch_size: int = 32,
    prefix: str = "",
):
    """fn(contexts, seed) -> (answers, ended): the model's answer to each context's last user
    turn, and whether it stopped at EOS (False: cut off at `max_new_tokens`). Both are None for
    a context whose prompt plus `max_new_tokens` does not fit the model's max_seq_len. With
    `prefix`, every answer starts with it (the model continues from its tokens) and the answer
    text includes it; `max_new_tokens` counts the continuation."""
    window = model.config.max_seq_len
    eos = processor.eos_id()

    def answer(contexts: list[Context], seed: int) -> tuple[list[str | None], list[bool | None]]:
        given = [answer_prefix_tokens(processor, s, t, prefix) for s, t in contexts]
        prompts = [
            prompt_tokens(processor, system, turns) + head
            for (system, turns), head in zip(contexts, given)
        ]
        fits = [i for i, p in enumerate(prompts) if len(p) + max_new_tokens <= window]
        out: list[str | None] = [None] * len(contexts)
        ended: list[bool | None] = [None] * len(contexts)
        for start in range(0, len(fits), batch_size):
            batch = fits[start : start + batch_size]
            new = generate(
                model,
                [prompts[i] for i in batch],
                max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                eos_id=eos,
                pad_id=0,
                seed=seed + start,
            )
            for i, tokens, done in zip(batch, new, ended_at_eos(new, eos)):
                out[i] = processor.decode(given[i] + [t for t in tokens if t != eos]).strip()
                ended[i] = done
        return out, ended

    return answer


def make_answer_fn(
    model: Llama,
    processor: Tokenizer,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    batch_size: int = 32,
):
    """AnswerFn(contexts, seed) -> the model's answer to each context's last user turn, or None
    when the prompt plus `max_new_tokens` does not fit the model's max_seq_len. The answers of
    `make_answer_status_fn`, without the ended flags."""
    with_status = make_answer_status_fn(
        model, processor, max_new_tokens, temperature, top_p, batch_size
    )

    def answer(contexts: list[Context], seed: int) -> list[str | None]:
        return with_status(contexts, seed)[0]

    return answer


def cutoff_share(ended: list[bool | None]) -> float | None:
    """The share of answers cut off at max_new_tokens among those generated (None entries, the
    prompts that did not fit, do not count); None when no answer was generated."""
    known = [e for e in ended if e is not None]
    return sum(not e for e in known) / len(known) if known else None


def sample_chats(
    model: Llama,
    processor: Tokenizer,
    chats: list[dict],
    max_new_tokens: int,
    seed: int,
) -> str:
    """Markdown with one greedy answer per chat ({"title", "system", "user"}), for MLflow."""
    torch.manual_seed(seed)
    answer = make_answer_fn(model, processor, max_new_tokens, temperature=0.0, top_p=1.0)
    answers = answer([(c["system"], [{"role": "user", "content": c["user"]}]) for c in chats], seed)
    lines = ["# Sample chats (greedy)", ""]
    for chat, text in zip(chats, answers):
        lines += [f"## {chat['title']}", ""]
        if chat["system"]:
            lines += [f"**System:** {chat['system']}", ""]
        lines += [
            f"**User:** {chat['user']}",
            "",
            f"**Assistant:** {text if text is not None else '(prompt too long)'}",
            "",
        ]
    return "\n".join(lines)


def generation_batches(
    prompt_lengths: list[int], window: int, max_new_tokens: int, batch_size: int = 32
) -> list[tuple[int, list[int]]]:
    """The batches `make_answer_status_fn` generates, as (start, context indices): the contexts
    whose prompt plus `max_new_tokens` fits `window`, in input order, cut into `batch_size`
    chunks; the batch at `start` samples with seed + start. Sharded answering
    (tasks/chat/sharded.py) hands whole batches to the ranks, so every batch has the rows (the
    padding) and the seed it has in one process. Keep in step with make_answer_status_fn."""
    fits = [i for i, n in enumerate(prompt_lengths) if n + max_new_tokens <= window]
    return [(start, fits[start : start + batch_size]) for start in range(0, len(fits), batch_size)]
