import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a model hub

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from tasks.judges.toxicity import (
    DETOXIFY_CLASSES,
    DetoxifyScorer,
    ProfanityCheckScorer,
    ToxicityConfig,
    document_scores,
    histogram_png,
    make_scorer,
    mean_per_document,
    measure_toxicity,
    sample_documents,
    score_documents,
    split_lines,
    top_examples,
    write_tiny_detoxify_checkpoint,
)


class LengthScorer:
    """Fake scorer: a line's score is its length / 100, so means are easy to compute by hand."""

    name = "length"

    def __init__(self):
        self.calls: list[int] = []

    def score_lines(self, lines):
        self.calls.append(len(lines))
        return np.array([min(len(s), 100) / 100 for s in lines], dtype=np.float32)


class KeywordScorer:
    name = "keyword"

    def score_lines(self, lines):
        return np.array([1.0 if "BAD" in s else 0.0 for s in lines], dtype=np.float32)


@pytest.fixture(scope="module")
def profanity():
    return ProfanityCheckScorer()


def docs_frame(n: int, sources=("news", "wiki")) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "doc_id": [f"d{i:05d}" for i in range(n)],
            "source": [sources[i % len(sources)] for i in range(n)],
            "text": [f"line one of doc {i}\nline two" for i in range(n)],
        }
    )


# ---------------------------------------------------------------- embedded scorer


def test_profanity_scorer_ranks_profane_above_neutral(profanity):
    neutral = "The council approved the new budget for the public library on Tuesday."
    profane = "shut up you fucking idiot, you are a worthless piece of shit"
    scores = profanity.score_lines([neutral, profane])
    assert scores.dtype == np.float32
    assert scores[1] > 0.9 and scores[0] < 0.1


def test_profanity_scorer_matches_predict_prob(profanity):
    from profanity_check import predict_prob

    lines = ["what a lovely day", "you stupid bitch", "Parliament met at noon.", ""]
    np.testing.assert_allclose(profanity.score_lines(lines), predict_prob(lines), atol=1e-6)
    assert profanity.score_lines([]).shape == (0,)


# ---------------------------------------------------------------- document scores


def test_document_score_is_mean_of_its_line_scores_scored_one_by_one(profanity):
    texts = [
        "A calm report about the weather.\nyou fucking moron\n\n   \nThe sun will shine.",
        "Just one neutral line.",
        "\n \n",  # no scorable line -> 0.0
        "damn it all to hell\nshit happens\nThe end.",
    ]
    got = document_scores(texts, profanity, batch_size=2, min_line_chars=1)  # batches cross docs
    expected = []
    for text in texts:
        lines = [s.strip() for s in text.splitlines() if s.strip()]
        one_by_one = [float(profanity.score_lines([line])[0]) for line in lines]
        expected.append(np.mean(one_by_one) if lines else 0.0)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got.dtype == np.float64


def test_empty_documents_between_others_keep_their_own_zero():
    # reduceat over a zero-length run would return the next document's line score instead.
    texts = ["", "aaaaaaaaaa\naaaaaaaaaaaaaaaaaaaa", "\n\n", "", "aaaaa", ""]
    scorer = LengthScorer()
    scores, n_lines = score_documents(texts, scorer, batch_size=2)
    # by hand: doc1 = mean(0.10, 0.20) = 0.15; doc4 = 0.05; all others have no line -> 0.0
    np.testing.assert_allclose(scores, [0.0, 0.15, 0.0, 0.0, 0.05, 0.0], atol=1e-7)
    assert n_lines.tolist() == [0, 2, 0, 0, 1, 0]
    assert scorer.calls == [2, 1]  # 3 lines flattened across documents, batches of 2


def test_min_line_chars_skips_short_lines():
    lines, n_lines = split_lines(["ab\nabcd\n  abc  \n", "x"], min_line_chars=3)
    assert lines == ["abcd", "abc"] and n_lines.tolist() == [2, 0]


def test_mean_per_document_without_lines():
    assert mean_per_document(np.zeros(0, np.float32), np.zeros(3, np.int64)).tolist() == [0.0] * 3


# ---------------------------------------------------------------- sampling and measurement


def test_sampling_is_seeded_deterministic_and_ten_percent():
    df = docs_frame(1000)
    a = sample_documents(df, 0.10, seed=7)
    b = sample_documents(df, 0.10, seed=7)
    shuffled = sample_documents(df.sample(fraction=1.0, shuffle=True, seed=1), 0.10, seed=7)
    other = sample_documents(df, 0.10, seed=8)
    assert a.height == 100
    assert a["doc_id"].to_list() == b["doc_id"].to_list()
    assert set(shuffled["doc_id"]) == set(a["doc_id"])  # the draw depends on ids, not row order
    assert set(other["doc_id"]) != set(a["doc_id"])
    assert a["doc_id"].to_list() == sorted(a["doc_id"].to_list())  # input order kept
    assert sample_documents(docs_frame(3), 0.10, seed=0).height == 1  # at least one document
    assert sample_documents(docs_frame(0), 0.10, seed=0).height == 0


def test_measure_toxicity_scores_frame_and_stats():
    df = pl.DataFrame(
        {
            "doc_id": ["a", "b", "c", "d", "e"],
            "source": ["news", "news", "web", "web", "web"],
            "text": ["fine\nBAD", "fine", "BAD\nBAD\nfine", "\n", "BAD"],
        }
    )
    cfg = ToxicityConfig(sample_frac=1.0, threshold=0.5)
    scores, stats = measure_toxicity(df, cfg, KeywordScorer())
    assert scores.columns == ["doc_id", "source", "n_lines", "score", "toxic"]
    assert scores.schema["score"] == pl.Float64 and scores.schema["toxic"] == pl.Boolean
    # by hand: a = 1/2, b = 0, c = 2/3, d = no line -> 0, e = 1
    np.testing.assert_allclose(scores["score"].to_numpy(), [0.5, 0.0, 2 / 3, 0.0, 1.0])
    assert scores["toxic"].to_list() == [True, False, True, False, True]  # 0.5 counts (>=)
    assert stats["sampled_docs"] == 5 and stats["lines_scored"] == 7
    assert stats["docs_without_lines"] == 1
    assert stats["share_toxic"] == pytest.approx(3 / 5)
    assert stats["share_toxic_news"] == pytest.approx(1 / 2)
    assert stats["share_toxic_web"] == pytest.approx(2 / 3)
    assert stats["score_p50"] == pytest.approx(0.5)

    top = top_examples(scores, df, k=2)
    assert top["doc_id"].to_list() == ["e", "c"]
    assert top.columns == ["doc_id", "source", "score", "text"]


def test_measure_toxicity_names_missing_columns():
    with pytest.raises(ValueError, match=r"lacks columns \['source'\]"):
        df = pl.DataFrame({"doc_id": ["a"], "text": ["x"]})
        measure_toxicity(df, ToxicityConfig(), KeywordScorer())


def test_top_examples_truncates_text():
    df = pl.DataFrame({"doc_id": ["a"], "source": ["s"], "text": ["x" * 2000]})
    scores = pl.DataFrame({"doc_id": ["a"], "source": ["s"], "score": [0.9]})
    assert len(top_examples(scores, df, k=5)["text"][0]) == 500


def test_histogram_png_is_written(tmp_path):
    rng = np.random.default_rng(0)
    scores = rng.beta(0.5, 8.0, size=500)
    path = histogram_png(scores, tmp_path / "plots" / "tox.png", threshold=0.5)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(path.parent.glob(".*.tmp"))
    histogram_png(np.zeros(0), tmp_path / "empty.png", threshold=0.5)  # no documents: no crash


def test_config_rejects_unknown_keys_and_detoxify_without_checkpoint():
    with pytest.raises(ValidationError):
        ToxicityConfig(sample_fraction=0.2)
    with pytest.raises(ValidationError, match="detoxify_checkpoint"):
        ToxicityConfig(backend="detoxify")
    assert isinstance(make_scorer(ToxicityConfig()), ProfanityCheckScorer)


# ---------------------------------------------------------------- Detoxify backend


@pytest.fixture(scope="module")
def tiny_detoxify(tmp_path_factory):
    return write_tiny_detoxify_checkpoint(tmp_path_factory.mktemp("detoxify"), seed=0)


def direct_forward(model_dir, checkpoint, lines, max_length=64):
    """sigmoid(logits) of the same BERT, loaded without Detoxify."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    model = BertForSequenceClassification(BertConfig.from_pretrained(model_dir)).eval()
    model.load_state_dict(torch.load(checkpoint, weights_only=False)["state_dict"])
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    assert tokenizer.tokenize("the stupid cat") == ["the", "stupid", "cat"]  # vocab.txt was read
    rows = []
    with torch.no_grad():
        for line in lines:  # one at a time: no padding involved
            enc = tokenizer(line, return_tensors="pt", truncation=True, max_length=max_length)
            rows.append(torch.sigmoid(model(**enc).logits)[0].numpy())
    return np.stack(rows)


LINES = [
    "you are a stupid idiot",
    "the news report said the city was nice",
    "i love my dog",
    "damn",
    "they hate the ugly car and the fool who said it " * 6,  # > 64 tokens: must be truncated
]


def test_detoxify_scorer_equals_direct_forward_pass(tiny_detoxify):
    checkpoint, model_dir = tiny_detoxify
    scorer = DetoxifyScorer(checkpoint, model_dir, label="toxicity", batch_size=2)
    got = scorer.score_lines(LINES)
    expected = direct_forward(model_dir, checkpoint, LINES)
    np.testing.assert_allclose(got, expected[:, 0], atol=1e-5)
    assert got.std() > 0.05  # the comparison is not between near-constant outputs
    insult = DetoxifyScorer(checkpoint, None, label="insult").score_lines(LINES)
    np.testing.assert_allclose(insult, expected[:, DETOXIFY_CLASSES.index("insult")], atol=1e-5)


def test_detoxify_checkpoint_naming_a_hub_model_loads_offline(tiny_detoxify, tmp_path):
    """Released checkpoints name "bert-base-uncased"; the config folder is a 2-label config."""
    import torch

    checkpoint, model_dir = tiny_detoxify
    loaded = torch.load(checkpoint, weights_only=False)
    loaded["config"]["arch"]["args"]["model_type"] = "bert-base-uncased"
    hub_ckpt = tmp_path / "cache" / "checkpoints" / "toxic_original-c1212f89.ckpt"
    hub_ckpt.parent.mkdir(parents=True)
    torch.save(loaded, hub_ckpt)
    stock = tmp_path / "bert-base-uncased"
    stock.mkdir()
    shutil.copy(model_dir / "vocab.txt", stock)
    config = json.loads((model_dir / "config.json").read_text())
    config.pop("id2label"), config.pop("label2id")
    (stock / "config.json").write_text(json.dumps(config))

    cfg = ToxicityConfig(
        backend="detoxify", detoxify_checkpoint=tmp_path / "cache", detoxify_config_dir=stock
    )
    scorer = make_scorer(cfg)  # the torch hub cache folder, resolved to the "original" file
    assert scorer.checkpoint == hub_ckpt
    expected = direct_forward(model_dir, checkpoint, LINES)[:, 0]
    np.testing.assert_allclose(scorer.score_lines(LINES), expected, atol=1e-5)

    with pytest.raises(FileNotFoundError, match="bert-base-uncased.*detoxify_config_dir"):
        DetoxifyScorer(hub_ckpt, None)


def test_detoxify_missing_checkpoint_is_a_clear_error(tmp_path, tiny_detoxify):
    missing = tmp_path / "nope.ckpt"
    message = r"not found: .*nope\.ckpt.*Provide a Detoxify checkpoint"
    with pytest.raises(FileNotFoundError, match=message):
        DetoxifyScorer(missing, None)
    with pytest.raises(FileNotFoundError, match="no .ckpt files"):
        DetoxifyScorer(tmp_path, None)  # an empty cache folder
    with pytest.raises(ValueError, match="choose one of"):
        DetoxifyScorer(tiny_detoxify[0], None, label="sarcasm")
