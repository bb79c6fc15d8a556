"""Exact and near (MinHash-LSH) dedup: duplicates dropped, distinct docs kept, earliest kept."""

import numpy as np
import polars as pl
import pytest

from tasks.corpus.dedup import (
    DedupConfig,
    exact_dedup,
    lsh_bands,
    minhash_signatures,
    near_dedup,
    normalize_text,
)

VOCAB = (
    "river stone market winter garden letter engine doctor window silver island forest "
    "pencil harbor candle mirror ladder basket planet tunnel meadow violin rocket castle "
    "bridge camera desert jacket kettle lemon magnet needle orange pillow quartz saddle"
).split()


def make_docs(*texts: str) -> pl.DataFrame:
    n = len(texts)
    return pl.DataFrame(
        {
            "doc_id": [f"news:{i}" for i in range(n)],
            "source": ["news"] * n,
            "text": list(texts),
            "extra": list(range(n)),
        },
        schema_overrides={
            "doc_id": pl.String,
            "source": pl.String,
            "text": pl.String,
            "extra": pl.Int64,
        },
    )


def random_text(seed: int, n_words: int = 300) -> str:
    return " ".join(np.random.default_rng(seed).choice(VOCAB, n_words))


def with_changes(text: str, positions: list[int]) -> str:
    words = text.split()
    for p in positions:
        words[p] = "CHANGED"
    return " ".join(words)


def shingles(text: str, k: int = 5) -> set[tuple[str, ...]]:
    words = normalize_text(pl.Series([text]))[0].split(" ")
    return {tuple(words[i : i + k]) for i in range(max(len(words) - k + 1, 1))}


def excluded(result) -> dict[str, tuple[str, str]]:
    return {
        d: (r, x) for d, r, x in result.excluded.select("doc_id", "reason", "detail").iter_rows()
    }


def test_normalize_text():
    got = normalize_text(pl.Series(["  Hello,\tＷORLD!!  it's\n\nme… ", ""])).to_list()
    assert got == ["hello world its me", ""]  # NFKC folds the full-width W


def test_exact_dedup_keeps_first_occurrence_of_normalised_text():
    df = make_docs(
        "Hello, World!", "A different document.", "hello   WORLD", "HELLO world.", "Ｈello world"
    )
    result = exact_dedup(df, DedupConfig())
    assert result.kept["doc_id"].to_list() == ["news:0", "news:1"]
    assert result.kept.columns == df.columns
    assert excluded(result) == {
        f"news:{i}": ("dedup_exact", "duplicate of news:0") for i in (2, 3, 4)
    }
    assert result.stats["dropped_dedup_exact"] == 3


def test_exact_dedup_can_be_switched_off():
    df = make_docs("same", "same")
    assert exact_dedup(df, DedupConfig(exact=False)).kept.height == 2


def test_near_duplicate_is_dropped_distinct_kept_earliest_kept():
    original = random_text(0)
    near = with_changes(original, [40, 150, 260])  # 3 of 300 words: Jaccard ~ 281/311 = 0.90
    df = make_docs(original, random_text(1), near, with_changes(original, [10, 20]))
    result = near_dedup(df, DedupConfig())
    assert result.kept.height + result.excluded.height == df.height
    assert result.kept["doc_id"].to_list() == ["news:0", "news:1"]
    found = excluded(result)
    assert set(found) == {"news:2", "news:3"}
    for reason, detail in found.values():
        assert reason == "dedup_near" and detail.startswith("duplicate of news:0 (jaccard~0.")
    assert result.stats["near_clusters"] == 1


def test_near_dedup_keeps_the_earliest_whichever_variant_it_is():
    original = random_text(2)
    df = make_docs(with_changes(original, [5]), random_text(3), original)
    assert near_dedup(df, DedupConfig()).kept["doc_id"].to_list() == ["news:0", "news:1"]


def test_far_apart_versions_are_both_kept():
    original = random_text(4)
    far = with_changes(original, list(range(0, 300, 10)))  # every 10th word: Jaccard ~ 0.2
    assert near_dedup(make_docs(original, far), DedupConfig()).kept.height == 2


def test_signature_jaccard_estimate_close_to_true_jaccard():
    cfg = DedupConfig(num_perm=256)
    errors = []
    for seed in range(20):  # 20 crafted pairs, 10 changed words of 300 each
        a = random_text(seed)
        b = with_changes(a, list(range(0, 300, 30)))
        true = len(shingles(a) & shingles(b)) / len(shingles(a) | shingles(b))
        assert 0.6 < true < 0.8  # pairs near the threshold, where the estimate matters
        sig = minhash_signatures([a, b], cfg)
        assert sig.shape == (2, 256) and sig.dtype == np.uint32
        errors.append((sig[0] == sig[1]).mean() - true)
    # Standard error at 256 permutations is sqrt(J(1-J)/256) ~ 0.028: unbiased, binomial spread.
    assert abs(np.mean(errors)) < 0.015
    assert np.mean(np.abs(errors)) < 0.035 and np.max(np.abs(errors)) < 0.1


def test_signatures_are_deterministic_and_short_docs_get_one_shingle():
    cfg = DedupConfig()
    texts = ["hello world", "Hello, world!", "hello there", ""]
    sig = minhash_signatures(texts, cfg)
    assert (sig == minhash_signatures(texts, cfg)).all()
    assert (sig[0] == sig[1]).all()  # same words after normalisation
    assert (sig[0] == sig[2]).mean() < 0.1  # one shingle each, different
    assert minhash_signatures(["just two"], cfg).shape == (
        1,
        cfg.num_perm,
    )  # < one shingle of words
    short = near_dedup(make_docs("hello world", "hello there", "Hello world!"), cfg)
    assert short.kept["doc_id"].to_list() == ["news:0", "news:1"]


def test_signature_uses_word_order():
    sig = minhash_signatures(["a b c d e f", "f e d c b a"], DedupConfig())
    assert (sig[0] == sig[1]).mean() < 0.1


def test_lsh_bands_put_the_s_curve_at_the_threshold():
    for threshold in (0.5, 0.7, 0.8, 0.9):
        bands, rows = lsh_bands(threshold, 128)
        assert bands * rows <= 128
        assert (1 / bands) ** (1 / rows) == pytest.approx(threshold, abs=0.02)


def test_near_dedup_chain_cluster_keeps_only_its_first_doc():
    # a ~ b and b ~ c but a !~ c: union-find puts all three in a's cluster; only a is kept.
    a = random_text(6)
    b = with_changes(a, [40, 100, 160, 220])
    c = with_changes(b, [70, 130, 190, 250])
    sig = minhash_signatures([a, b, c], DedupConfig())
    jaccard = lambda i, j: (sig[i] == sig[j]).mean()  # noqa: E731
    assert jaccard(0, 1) >= 0.8 and jaccard(1, 2) >= 0.8 and jaccard(0, 2) < 0.8  # the premise
    result = near_dedup(make_docs(a, b, c), DedupConfig())
    assert result.kept["doc_id"].to_list() == ["news:0"]
    assert excluded(result)["news:2"][1].startswith("duplicate of news:0")


def test_near_dedup_small_inputs_and_switch():
    assert near_dedup(make_docs(), DedupConfig()).kept.height == 0
    assert near_dedup(make_docs("only one"), DedupConfig()).kept.height == 1
    same = random_text(7)
    assert near_dedup(make_docs(same, same), DedupConfig(near=False)).kept.height == 2
