"""The Llama 2 chat format (paper §3.1), prompt-loss masking and packing: pure code, no Prefect or
MLflow.

One turn is `<s>[INST] {user} [/INST] {answer} </s>`; the first turn carries the system prompt
as `<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {answer} </s>` (none when system
is ""). `<s>`/`</s>` are the tokenizer's BOS/EOS ids, never text. Each turn is encoded like
Meta's reference `chat_completion`: [bos] + encode("[INST] {user} [/INST]") + encode("{answer} ")
+ [eos]; SentencePiece's dummy prefix supplies the space before the answer, so the split
encoding equals the joint one and decoding a turn reproduces its rendered text.

Labels are unshifted (`labels[i] = tokens[i]` for a target, IGNORE_INDEX elsewhere; the model
shifts): "we zero-out the loss on tokens from the user prompt" (§3.1), so only answers and their
`</s>` are targets. `MaskStrategy.LAST_TURN` trains the last answer only (Ghost Attention, §3.3).

Packing (§3.1: "all the prompts and answers from the training set are concatenated" to fill the
sequence): examples go whole into bins of exactly `seq_len` tokens, laid back to back with one
trailing pad so that `TokenBatches(..., order="epochs")` window k is bin k plus the first token
of bin k+1. That extra token is a target of window k, which is harmless because it is always a
`<s>` (label IGNORE) or the final pad, both with loss mask 0; `pack_examples` checks this.

Attention: by default plain causal attention over the whole bin, as plain concatenation in the
paper, so an example can attend to the earlier examples in its bin. The labels are unaffected
(each example starts with <s> and ends with </s>, and only its own answers are targets).
`Packed.segments` numbers the examples of the whole array (a separator belongs to the example
before it; each run of pads is a segment of its own): with it the training loop can attend
block-diagonally, each example to itself only, with positions restarting at 0 per example
(`models.llama.segment_layout`), so that a packed example is seen exactly as it would be alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from models.llama import IGNORE_INDEX

B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
BOS_TEXT, EOS_TEXT = "<s>", "</s>"  # how render_chat shows the BOS/EOS ids; never encoded


class MaskStrategy(str, Enum):
    ALL_ASSISTANT = "all_assistant"  # loss on every assistant answer (+ its </s>)
    LAST_TURN = "last_turn"  # loss on the last answer only; earlier turns get 0 loss (GAtt, §3.3)


def _turn_texts(system: str, turns: list[dict]) -> list[tuple[str, str | None]]:
    """Validated (prompt_text, answer_text) per turn pair; answer_text is None for a final user
    turn. prompt_text = "[INST] {user} [/INST]" (with the system block in the first),
    answer_text = "{answer} ". Raises ValueError on empty, blank or misordered turns."""
    if not turns:
        raise ValueError("dialogue has no turns; it needs user/assistant turns starting with user")
    for i, turn in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        role, content = turn.get("role"), turn.get("content")
        if role != expected:
            raise ValueError(
                f"turn {i} has role {role!r}, expected {expected!r}: turns must alternate "
                "user/assistant, starting with user"
            )
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"turn {i} ({role}) has blank or non-string content {content!r}")
    out: list[tuple[str, str | None]] = []
    for i in range(0, len(turns), 2):
        user = turns[i]["content"].strip()
        if i == 0 and system:
            user = f"{B_SYS}{system}{E_SYS}{user}"
        answer = turns[i + 1]["content"].strip() + " " if i + 1 < len(turns) else None
        out.append((f"{B_INST} {user} {E_INST}", answer))
    return out


def render_chat(system: str, turns: list[dict]) -> str:
    """The dialogue as text, `<s>`/`</s>` written literally (for reading and tests, not encoding).

    Ends with "[/INST]" when the last turn is the user's (a generation prompt).
    """
    parts = []
    for prompt, answer in _turn_texts(system, turns):
        closed = "" if answer is None else f" {answer}{EOS_TEXT}"
        parts.append(f"{BOS_TEXT}{prompt}{closed}")
    return "".join(parts)


def _encode_turns(
    processor, system: str, turns: list[dict]
) -> list[tuple[list[int], list[int] | None]]:
    """Per turn pair: ([bos] + encode(prompt_text), encode(answer_text) + [eos] or None)."""
    bos, eos = processor.bos_id(), processor.eos_id()
    return [
        (
            [bos, *processor.encode(prompt)],
            None if answer is None else [*processor.encode_answer(prompt, answer), eos],
        )
        for prompt, answer in _turn_texts(system, turns)
    ]


def tokenize_dialogue(
    processor, system: str, turns: list[dict], strategy: MaskStrategy | str
) -> tuple[list[int], list[int]]:
    """(tokens, labels) of a training dialogue (ending with the assistant), both of length T.

    Per turn: [bos] + encode(prompt_text) + encode(answer_text) + [eos]. labels[i] = tokens[i]
    where token i is a target (the answer tokens and that turn's </s>; all turns for
    ALL_ASSISTANT, the last one for LAST_TURN), IGNORE_INDEX elsewhere (bos, prompt tokens).
    `processor` is a tasks.chat.tokenizer.Tokenizer.
    """
    try:
        strategy = MaskStrategy(strategy)
    except ValueError:
        raise ValueError(
            f"unknown mask strategy {strategy!r}; use one of {[s.value for s in MaskStrategy]}"
        ) from None
    if len(turns) % 2:
        raise ValueError(f"a training dialogue must end with the assistant; got {len(turns)} turns")
    encoded = _encode_turns(processor, system, turns)
    tokens: list[int] = []
    labels: list[int] = []
    for i, (prompt, answer) in enumerate(encoded):
        trained = strategy is MaskStrategy.ALL_ASSISTANT or i == len(encoded) - 1
        tokens += prompt + answer
        labels += [IGNORE_INDEX] * len(prompt)
        labels += answer if trained else [IGNORE_INDEX] * len(answer)
    return tokens, labels


def answer_tokens(processor, text: str, ended: bool, *, trailing_space: bool = True) -> list[int]:
    """The tokens of an answer after its prompt, as the reward models score it: "{text} " the
    way SFT encodes an answer, then EOS only when the answer `ended` (a cut-off answer did not
    end; scoring it with an EOS would pass it off as complete). `trailing_space=False` encodes
    the stripped text alone (the per-round table's KL, kept as it was measured)."""
    body = f"{text.strip()} " if trailing_space else text.strip()
    return [*processor.encode_answer(E_INST, body), *([processor.eos_id()] if ended else [])]


def prompt_tokens(processor, system: str, turns: list[dict], prefix: str = "") -> list[int]:
    """Tokens of a dialogue ending with the user's turn, ready for generation.

    The earlier complete turns exactly as tokenize_dialogue encodes them, then [bos] +
    encode("[INST] {user} [/INST]") of the last turn: the model continues with the answer.
    With `prefix`, the answer's first words follow (`answer_prefix_tokens`) and the model
    continues from them.
    """
    if len(turns) % 2 == 0:
        raise ValueError(f"a generation prompt must end with a user turn; got {len(turns)} turns")
    tokens: list[int] = []
    for prompt, answer in _encode_turns(processor, system, turns):
        tokens += prompt + (answer or [])
    return tokens + answer_prefix_tokens(processor, system, turns, prefix)


def answer_prefix_tokens(processor, system: str, turns: list[dict], prefix: str) -> list[int]:
    """The tokens of `prefix` as the start of the answer to the last user turn, as a training
    answer that begins with it encodes them (no EOS); [] for a blank prefix."""
    if not prefix.strip():
        return []
    last_prompt = _turn_texts(system, turns)[-1][0]
    return processor.encode_answer(last_prompt, prefix.strip())


def example_loss_mask(labels: Sequence[int]) -> np.ndarray:
    """(T,) uint8: 1 where labels[i] is a target (not IGNORE_INDEX): TokenBatches' loss_mask."""
    return (np.asarray(labels, dtype=np.int64) != IGNORE_INDEX).astype(np.uint8)


@dataclass(frozen=True)
class Packed:
    tokens: np.ndarray  # (n_bins * seq_len + 1,) int32: bins back to back, then one pad token
    loss_mask: np.ndarray  # same shape, uint8: 1 where the token is a training target
    segments: np.ndarray  # same shape, int32: which example (or pad run) each token belongs to
    stats: dict  # examples, bins, seq_len, fill (share of non-pad positions), target_tokens, ...


def _check_example(i: int, tokens: Sequence[int], labels: Sequence[int], seq_len: int) -> None:
    if len(tokens) != len(labels) or not tokens:
        raise ValueError(
            f"example {i}: {len(tokens)} tokens and {len(labels)} labels; "
            "need the same non-zero length"
        )
    if len(tokens) > seq_len:
        raise ValueError(
            f"example {i} has {len(tokens)} tokens > seq_len {seq_len}; "
            "exclude over-long examples before packing"
        )
    t, lab = np.asarray(tokens), np.asarray(labels)
    if ((lab != IGNORE_INDEX) & (lab != t)).any():
        raise ValueError(f"example {i}: labels must equal tokens or be IGNORE_INDEX (unshifted)")
    if lab[0] != IGNORE_INDEX:  # it may start a bin, where no window trains on it
        raise ValueError(f"example {i}: its first token (<s>) must not be a target")


def _first_fit(lengths: np.ndarray, seq_len: int, n_sep: int) -> list[list[int]]:
    """Bins of example indices, each placed in the first bin with room (separators included)."""
    room = np.empty(len(lengths), dtype=np.int64)  # per open bin: room for one more example
    bins: list[list[int]] = []
    for i, n in enumerate(lengths):
        fits = np.flatnonzero(room[: len(bins)] >= n)
        if len(fits):
            b = int(fits[0])
            bins[b].append(i)
            room[b] -= n + n_sep
        else:
            bins.append([i])
            room[len(bins) - 1] = seq_len - n - n_sep
    return bins


def pack_examples(
    examples: list[tuple[list[int], list[int]]],
    seq_len: int,
    pad_id: int,
    separator: Sequence[int] = (),
    seed: int = 0,
) -> Packed:
    """Pack (tokens, labels) examples whole into bins of exactly `seq_len` tokens.

    Seeded shuffle, then first fit. Inside a bin, `separator` ids go between consecutive
    examples (loss 0); the rest of the bin is `pad_id` (loss 0). Returns Packed whose tokens
    are (n_bins * seq_len + 1,) so that TokenBatches(order="epochs") reads one bin per window.
    """
    if not examples:
        raise ValueError("pack_examples: no examples to pack")
    separator = [int(s) for s in separator]
    for i, (tokens, labels) in enumerate(examples):
        _check_example(i, tokens, labels, seq_len)
    order = np.random.default_rng(seed).permutation(len(examples))
    lengths = np.array([len(examples[i][0]) for i in order], dtype=np.int64)
    bins = _first_fit(lengths, seq_len, len(separator))

    out_tokens = np.full(len(bins) * seq_len + 1, pad_id, dtype=np.int32)
    out_mask = np.zeros(len(out_tokens), dtype=np.uint8)
    # Segment ids: one per example, the separator after it included; each bin's trailing pads
    # (and the final pad) get a fresh one. Consecutive, so a change of id is a segment start.
    out_segments = np.empty(len(out_tokens), dtype=np.int32)
    sep = np.asarray(separator, dtype=np.int32)
    n_sep = segment = 0
    for b, members in enumerate(bins):
        pos = b * seq_len
        for k, j in enumerate(members):
            if k:  # separator between examples, mask stays 0
                out_tokens[pos : pos + len(sep)] = sep
                out_segments[pos : pos + len(sep)] = segment - 1
                pos += len(sep)
                n_sep += len(sep)
            tokens, labels = examples[order[j]]
            out_tokens[pos : pos + len(tokens)] = tokens
            out_mask[pos : pos + len(tokens)] = example_loss_mask(labels)
            out_segments[pos : pos + len(tokens)] = segment
            segment += 1
            pos += len(tokens)
        assert pos <= (b + 1) * seq_len, f"bin {b} overflows: {pos - b * seq_len} > {seq_len}"
        out_segments[pos : (b + 1) * seq_len] = segment  # this bin's pads (none if it is full)
        segment += 1
    out_segments[-1] = segment  # the trailing pad
    # Window k's last target is the first token of bin k+1 (or the final pad): never trained.
    assert not out_mask[::seq_len].any(), "a bin starts with a target token"

    example_tokens = int(lengths.sum())
    stats = {
        "examples": len(examples),
        "bins": len(bins),
        "seq_len": seq_len,
        "fill": (example_tokens + n_sep) / (len(bins) * seq_len),
        "target_tokens": int(out_mask.sum()),
        "example_tokens": example_tokens,
        "separator_tokens": n_sep,
        "pad_tokens": len(bins) * seq_len - example_tokens - n_sep,
        "max_examples_per_bin": max(len(m) for m in bins),
    }
    return Packed(tokens=out_tokens, loss_mask=out_mask, segments=out_segments, stats=stats)
