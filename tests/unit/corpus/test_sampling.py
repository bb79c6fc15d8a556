"""Sampling weights: factual sources up-sampled, per-source overrides, byte shares before/after."""

import polars as pl
import pytest
from pydantic import ValidationError

from tasks.corpus.sampling import SamplingConfig, apply_sampling_weights


def make_docs() -> pl.DataFrame:
    # Bytes per source: wikipedia 100 + 100 = 200, news 100, tweets 50 + 50 = 100; total 400.
    return pl.DataFrame(
        {
            "doc_id": ["w1", "w2", "n1", "t1", "t2"],
            "source": ["wikipedia", "wikipedia", "news", "tweets", "tweets"],
            "text": ["a" * 100, "b" * 100, "c" * 100, "d" * 50, "e" * 50],
            "factual": [True, True, False, False, False],
            "extra": [1, 2, 3, 4, 5],
        }
    )


def test_factual_documents_get_the_factual_weight():
    out, stats = apply_sampling_weights(make_docs(), SamplingConfig())
    assert out["sample_weight"].dtype == pl.Float64
    assert out["sample_weight"].to_list() == [2.0, 2.0, 1.0, 1.0, 1.0]
    assert out.drop("sample_weight").equals(make_docs())  # other columns untouched
    # Before: 200/400, 100/400, 100/400. After: weighted bytes 400, 100, 100 of 600.
    assert stats["mix_before_wikipedia"] == pytest.approx(0.5)
    assert stats["mix_before_news"] == pytest.approx(0.25)
    assert stats["mix_after_wikipedia"] == pytest.approx(400 / 600)
    assert stats["mix_after_tweets"] == pytest.approx(100 / 600)


def test_per_source_weights_override_the_factual_rule():
    cfg = SamplingConfig(factual_weight=3.0, weights={"tweets": 0.5, "wikipedia": 1.5})
    out, stats = apply_sampling_weights(make_docs(), cfg)
    assert out["sample_weight"].to_list() == [1.5, 1.5, 1.0, 0.5, 0.5]
    # Weighted bytes: wikipedia 300, news 100, tweets 50 of 450.
    assert stats["mix_after_news"] == pytest.approx(100 / 450)
    assert sum(v for k, v in stats.items() if k.startswith("mix_after_")) == pytest.approx(1.0)


def test_unknown_source_names_raise_naming_them():
    with pytest.raises(ValueError, match=r"\['books', 'wikipdia'\]"):
        apply_sampling_weights(
            make_docs(), SamplingConfig(weights={"wikipdia": 2.0, "books": 2.0, "news": 1.0})
        )


def test_weights_must_be_positive():
    with pytest.raises(ValidationError):
        SamplingConfig(weights={"news": 0.0})
    with pytest.raises(ValidationError):
        SamplingConfig(factual_weight=-1.0)
