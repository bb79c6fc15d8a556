import polars as pl
import pytest
import sentencepiece as spm
from pydantic import ValidationError

from tasks.tokenizer.train import (
    TokenizerConfig,
    evaluate_tokenizer,
    sample_training_text,
    train_tokenizer,
)

PARAGRAPHS = [
    "The city council met on Tuesday to discuss the 2024 budget, which rose by 3.5 percent to "
    "$12,480,000. Members argued about roads, schools and the new public library.",
    "In 1969, Apollo 11 landed on the Moon. Neil Armstrong and Buzz Aldrin spent about 21 hours "
    "on the surface, while Michael Collins orbited above in the command module.",
    "She ordered a café au lait and a croissant, then read a naïve little novel about a "
    'façade in Zürich. The waiter smiled: "Voilà, madame!"',
    "Tokyo (東京) is the capital of Japan; Kyoto (京都) was the capital for over a thousand "
    "years. Many visitors love the food 🍣 and the trains 🚄.",
    "def add(a, b):\n    return a + b\n\nprint(add(40, 2))  # prints 42",
    "Rain fell all night.  The river rose 7 feet, and by 6:30 a.m. the bridge on Route 9 was "
    "closed.\n\nResidents were told to stay home until further notice.",
    "Researchers measured 1,024 samples at 37 degrees; the error was below 0.01 in 98% of them. "
    "Further work will test the method on larger data sets in 2025.",
    "A fox jumped over the lazy dog, and the dog, being lazy, did not move at all. The fox "
    "laughed, the dog yawned, and the farmer went back to sleep.",
]


def corpus(repeats: int = 6) -> list[str]:
    # Vary the numbers per repeat so digits are frequent but not memorised as whole strings.
    return [
        p.replace("2024", str(2000 + r)).replace("42", str(40 + r))
        for r in range(repeats)
        for p in PARAGRAPHS
    ]


def small_config(**overrides) -> TokenizerConfig:
    base = {"vocab_size": 400, "sample_bytes": 1_000_000, "num_threads": 1}
    return TokenizerConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    path, stats = train_tokenizer(corpus(), small_config(), out)
    return path, stats, spm.SentencePieceProcessor(model_file=str(path))


def test_special_ids_are_the_papers(trained):
    _, stats, sp = trained
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (0, 1, 2, -1)
    assert [sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert sp.vocab_size() == 400 and stats["vocab_size"] == 400
    assert stats["training_bytes"] > 4000 and stats["lines_skipped_too_long"] == 0


def test_digits_are_split(trained):
    sp = trained[2]
    assert sp.encode("12345", out_type=str) == ["▁", "1", "2", "3", "4", "5"]
    pieces = sp.encode("in 2024 we", out_type=str)
    multi_digit = [p for p in pieces if len(p.strip("▁")) > 1 and p.strip("▁").isdigit()]
    assert "2" in pieces and not multi_digit


@pytest.mark.parametrize(
    "text",
    [
        "Hello   world,  three spaces\tand a tab",
        "  leading spaces and trailing ones  ",
        "line one\n\nline three\r\nwindows line\n",
        "naïve café 東京 and emoji 🦙🔥 and unseen script: Ωμέγα ქართული",
        "\nstarts with a newline",
        "",
    ],
)
def test_round_trip_is_exact(trained, text):
    sp = trained[2]
    ids = sp.encode(text)
    assert sp.decode(ids) == text
    assert sp.unk_id() not in ids  # byte fallback: nothing becomes <unk>


def test_newline_and_unseen_characters_fall_back_to_bytes(trained):
    sp = trained[2]
    assert sp.encode("a\nb", out_type=str).count("<0x0A>") == 1  # as in the Llama 2 tokenizer
    assert "<0xE1>" in sp.encode("ქ", out_type=str)  # Georgian never appears in training


def test_evaluate_reports_bytes_per_token_and_round_trips(trained):
    path = trained[0]
    df = pl.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(6)],
            "source": ["news", "news", "news", "code", "code", "mixed"],
            "text": [*PARAGRAPHS[:3], PARAGRAPHS[4], "x  =  1\n\n\ty = 2", "日本語 🦙  ok\n"],
        }
    )
    table, stats = evaluate_tokenizer(path, df, max_docs_per_source=2)
    assert table.columns == [
        "source",
        "docs",
        "bytes",
        "tokens",
        "bytes_per_token",
        "roundtrip_failures",
    ]
    assert table["source"].to_list() == ["news", "code", "mixed"]
    assert table["docs"].to_list() == [2, 2, 1]
    news = table.row(0, named=True)
    assert news["bytes"] == len((PARAGRAPHS[0] + PARAGRAPHS[1]).encode())
    assert news["bytes_per_token"] > 1.5  # English compresses
    assert stats["roundtrip_failures"] == 0 and stats["unk_tokens"] == 0
    assert stats["digits_split"] == 1.0 and stats["docs_evaluated"] == 5
    assert stats["bytes_per_token"] > 1.0


def test_training_is_deterministic(trained, tmp_path):
    path_a, _, sp_a = trained
    path_b, _ = train_tokenizer(corpus(), small_config(), tmp_path / "again.model")
    assert path_b.read_bytes() == path_a.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind
    path_c, _ = train_tokenizer(corpus(), small_config(seed=1), tmp_path / "c.model")
    sp_c = spm.SentencePieceProcessor(model_file=str(path_c))
    vocab = [sp_a.id_to_piece(i) for i in range(sp_a.vocab_size())]
    assert vocab == [sp_c.id_to_piece(i) for i in range(sp_c.vocab_size())]  # BPE: no sampling


def test_vocab_too_large_for_the_text_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="Lower tokenizer.vocab_size or raise sample_bytes"):
        train_tokenizer(PARAGRAPHS[:2], small_config(vocab_size=5000), tmp_path / "t.model")
    with pytest.raises(ValueError, match="no non-blank line"):
        train_tokenizer(["", " \n "], small_config(), tmp_path / "t.model")


def test_config_is_strict():
    with pytest.raises(ValidationError):
        TokenizerConfig(vocab=1000)
    with pytest.raises(ValidationError):
        TokenizerConfig(pad_id=0)  # fixed by the paper


def docs(n: int, source: str, size: int, weight: float | None = None) -> pl.DataFrame:
    df = pl.DataFrame(
        {
            "doc_id": [f"{source}{i}" for i in range(n)],
            "source": [source] * n,
            "text": [f"{source} {i} " + "x" * (size - len(f"{source} {i} ")) for i in range(n)],
        }
    )
    return df if weight is None else df.with_columns(pl.lit(weight).alias("sample_weight"))


def test_sample_is_seeded_and_within_budget():
    df = pl.concat([docs(200, "a", 100), docs(200, "b", 100)])
    cfg = small_config(sample_bytes=5_000)
    first, again = sample_training_text(df, cfg), sample_training_text(df, cfg)
    assert first == again and len(first) == 50  # 50 documents of 100 bytes fill 5,000 bytes
    assert sample_training_text(df, small_config(sample_bytes=5_000, seed=1)) != first
    one = sample_training_text(docs(1, "big", 10_000), cfg)
    assert len(one) == 1 and len(one[0].encode()) == 5_000  # an oversized document is cut


def test_sample_follows_sample_weight():
    df = pl.concat(
        [
            docs(300, "up", 100, weight=3.0),
            docs(300, "plain", 100, weight=1.0),
            docs(300, "off", 100, weight=0.0),
        ]
    )
    sample = sample_training_text(df, small_config(sample_bytes=40_000))
    up = sum(t.startswith("up ") for t in sample)
    plain = sum(t.startswith("plain ") for t in sample)
    assert not any(t.startswith("off ") for t in sample)
    assert 2.3 < up / plain < 3.9  # expected 3 : 1 of 400 draws
    with pytest.raises(ValueError, match="sample_weight"):
        sample_training_text(docs(3, "neg", 100, weight=-1.0), small_config())
