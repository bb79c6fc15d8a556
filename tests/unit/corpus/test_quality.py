"""Quality filter: every Gopher rule drops a crafted document with its reason and keeps another."""

import polars as pl
import pytest

from tasks.corpus.quality import QualityConfig, quality_features, quality_filter

# 61 words, mean length ~4.7, stop words the/and/of/to/with/that: passes every rule.
GOOD = (
    "The committee met on Tuesday morning to review the budget and the plans for the new library. "
    "Members agreed that the project should begin in spring, with construction lasting about two years. "  # noqa: E501 (data)
    "Several residents spoke in favour of the proposal, and a few raised concerns about parking. "
    "The final vote is expected next month, after a public hearing at the town hall."
)


def make_docs(*texts: str) -> pl.DataFrame:
    n = len(texts)
    return pl.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(n)],
            "source": ["news"] * n,
            "domain": ["news"] * n,
            "url": [None] * n,
            "text": list(texts),
            "factual": [True] * n,
            "extra": list(range(n)),  # an unrelated column that must pass through
        },
        schema_overrides={
            "doc_id": pl.String,
            "source": pl.String,
            "domain": pl.String,
            "url": pl.String,
            "text": pl.String,
            "factual": pl.Boolean,
            "extra": pl.Int64,
        },
    )


def reasons(texts: list[str], cfg: QualityConfig | None = None) -> list[str | None]:
    """The reason per input document (None = kept), checking row accounting on the way."""
    df = make_docs(*texts)
    result = quality_filter(df, cfg or QualityConfig())
    assert result.kept.height + result.excluded.height == df.height
    assert result.kept.columns == df.columns
    assert result.excluded.columns == [*df.columns, "reason", "detail"]
    by_id = dict(zip(result.excluded["doc_id"], result.excluded["reason"]))
    return [by_id.get(f"d{i}") for i in range(len(texts))]


def lines(*parts: str) -> str:
    return "\n".join(parts)


def test_good_document_is_kept_and_features_are_hand_computed():
    assert reasons([GOOD]) == [None]
    text = "The cat... and #the dog.\n\nThe cat... and #the dog.\n12 34"
    f = quality_features(make_docs(text)).row(0, named=True)
    # words: the cat and the dog the cat and the dog 12 34 = 12; letters in 10 of them.
    assert f["words"] == 12 and f["alpha_words_frac"] == pytest.approx(10 / 12)
    assert f["mean_word_length"] == pytest.approx(34 / 12)  # 3+3+3+3+3 twice, plus 2+2
    assert f["hash_ratio"] == pytest.approx(2 / 12) and f["ellipsis_ratio"] == pytest.approx(2 / 12)
    assert f["lines"] == 3 and f["stop_words"] == 2  # blank line ignored; distinct: the, and
    # The second "The cat... and #the dog." (24 chars) repeats the first: 1 of 3 lines.
    assert f["dup_lines_frac"] == pytest.approx(1 / 3)
    assert f["dup_line_chars_frac"] == pytest.approx(24 / 56)


@pytest.mark.parametrize(
    "reason, text",
    [
        (
            "quality_min_words",
            "The black cat slept quietly beside the warm fireplace with the dog.",
        ),
        ("quality_max_words", "the dog and the cat " * 20_001),
        ("quality_mean_word_length", "to be or it is an as of at by " * 6),
        ("quality_mean_word_length", "internationalization characteristically " * 30),
        ("quality_symbol_ratio", GOOD + " # # # # # # # #"),
        ("quality_symbol_ratio", GOOD + " wait… wait… wait… wait… wait… wait… wait… wait…"),
        ("quality_bullet_lines", lines(*[f"- item {i}: " + GOOD[:60] for i in range(10)])),
        ("quality_ellipsis_lines", lines(GOOD[:150] + "...", GOOD[150:250], GOOD[250:] + "…")),
        ("quality_alpha_words", GOOD + " 2017" * 20),
        (
            "quality_stop_words",
            "Quick brown foxes jump over lazy dogs in green fields near rivers. " * 6,
        ),
        (
            "quality_dup_lines",
            lines(*["Subscribe now."] * 5, GOOD, "Two.", "Three.", "Four.", "Five.", "Six."),
        ),
        (
            "quality_dup_line_chars",
            lines(GOOD, GOOD[:200], GOOD[:200], *[f"Line {i}." for i in range(7)]),
        ),
    ],
)
def test_each_rule_drops_its_document(reason, text):
    assert reasons([GOOD, text]) == [None, reason]


def test_near_misses_are_kept():
    kept = [
        " ".join(GOOD.split()[:50]),  # exactly 50 words: min_words is inclusive
        GOOD + " # # # # # #",  # 6 '#' per 61 words < 0.1
        lines(*[f"- item {i}: " + GOOD[:60] for i in range(9)], GOOD),  # 9 of 10 lines: not > 0.9
        lines(
            GOOD[:150] + "...", GOOD[150:250], GOOD[250:300], GOOD[300:]
        ),  # 1 of 4 ellipsis lines
        GOOD + " 2017" * 15,  # 61 of 76 words with a letter = 0.80
        lines(
            *["Subscribe now."] * 4, GOOD, *[f"Line {i}." for i in range(6)]
        ),  # 3 of 11 lines repeat
    ]
    assert reasons(kept) == [None] * len(kept)


def test_first_failing_rule_wins():
    # Too short AND full of '#' AND no stop words: min_words comes first.
    assert reasons(["#one #two #three"]) == ["quality_min_words"]


def test_zero_threshold_applies_and_none_disables():
    one_hash = GOOD + " #"
    assert reasons([GOOD, one_hash], QualityConfig(max_symbol_word_ratio=0.0)) == [
        None,
        "quality_symbol_ratio",
    ]
    short = "The black cat slept quietly beside the warm fireplace with the dog."
    assert reasons([short], QualityConfig(min_words=None)) == [None]


def test_detail_explains_the_rule():
    df = make_docs("The black cat slept quietly beside the warm fireplace with the dog.")
    assert quality_filter(df, QualityConfig()).excluded["detail"].to_list() == ["words=12 < min 50"]


def test_empty_frame_and_blank_text():
    result = quality_filter(make_docs(), QualityConfig())
    assert result.kept.height == 0 and result.excluded.height == 0
    assert reasons(["   \n  "]) == ["quality_min_words"]
    assert reasons(["   \n  "], QualityConfig(min_words=None, min_stop_words=None)) == [None]
