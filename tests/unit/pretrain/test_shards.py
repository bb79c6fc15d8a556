import numpy as np
import polars as pl
import pytest

from tasks.pretrain.shards import (
    ShardConfig,
    build_token_shards,
    is_validation,
    load_shards,
    repeats,
    token_dtype,
    write_shards,
)
from tasks.tokenizer.train import TokenizerConfig, train_tokenizer

WORDS = (
    "the river runs past the old mill and the town keeps its water clean while the "
    "council meets on monday to talk about 12 new bridges"
).split()


@pytest.fixture(scope="module")
def corpus_and_model(tmp_path_factory):
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=40)) for _ in range(300)]
    df = pl.DataFrame(
        {
            "doc_id": [f"s:{i}" for i in range(300)],
            "source": ["wiki" if i % 3 == 0 else "fortunes" for i in range(300)],
            "text": texts,
            "sample_weight": [2.0 if i % 3 == 0 else 1.0 for i in range(300)],
        }
    )
    model, _ = train_tokenizer(
        texts,
        TokenizerConfig(vocab_size=300, sample_bytes=10**6),
        tmp_path_factory.mktemp("tok") / "tok.model",
    )
    return df, model


def test_split_is_by_document_and_stable():
    ids = pl.Series([f"d{i}" for i in range(5000)])
    val = is_validation(ids, 0.1, seed=3)
    assert 0.08 < val.mean() < 0.12
    assert (is_validation(ids[:100], 0.1, seed=3) == val[:100]).all()  # growth-stable
    assert not (is_validation(ids, 0.1, seed=4) == val).all()


def test_repeats_match_weights_on_average():
    rng = np.random.default_rng(0)
    reps = repeats(np.full(20000, 1.5), rng)
    assert set(np.unique(reps)) == {1, 2} and abs(reps.mean() - 1.5) < 0.02


def test_shards_join_documents_with_bos_eos_and_apply_weights(corpus_and_model, tmp_path):
    df, model = corpus_and_model
    shards = build_token_shards(df, model, ShardConfig(val_frac=0.1, seed=1))
    assert shards.train.dtype == np.uint16 == token_dtype(300)
    # every document starts with BOS (1) and ends with EOS (2)
    assert shards.train[0] == 1 and shards.train[-1] == 2
    assert (shards.train == 1).sum() == (shards.train == 2).sum()
    n_val_docs = int(shards.stats["docs_val"])
    assert (shards.val == 1).sum() == n_val_docs > 0
    # wiki has weight 2: twice its unweighted share of training tokens
    assert shards.stats["train_tokens_wiki"] / shards.stats[
        "train_tokens_fortunes"
    ] == pytest.approx(2 * 100 / 200, rel=0.15)
    unweighted = build_token_shards(
        df, model, ShardConfig(val_frac=0.1, seed=1, apply_weights=False)
    )
    assert unweighted.train.size == unweighted.stats["tokens_unweighted"]
    assert (unweighted.val == shards.val).all()  # the split does not depend on the weights

    manifest = write_shards(shards, tmp_path / "shards", {"tokenizer_sha256": "x"})
    train, val, meta = load_shards(manifest)
    assert np.array_equal(train, shards.train) and np.array_equal(val, shards.val)
    assert meta["tokenizer_sha256"] == "x" and meta["train_tokens"] == shards.train.size


def test_missing_manifest_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="--rerun"):
        load_shards(tmp_path / "nope" / "manifest.json")
