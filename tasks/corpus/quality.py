"""Gopher-style quality rules (Rae et al. 2021, App. A.1.1), vectorised; no Prefect or MLflow.

Per-document features are computed once (`quality_features`); each rule is a named threshold and
a document is dropped with the FIRST failing rule, in this fixed order (reason `quality_<rule>`):

  1. min_words             fewer than `min_words` words
  2. max_words             more than `max_words` words
  3. mean_word_length      mean word length outside [min_mean_word_length, max_mean_word_length]
  4. symbol_ratio          '#' per word or ellipses per word above `max_symbol_word_ratio`
  5. bullet_lines          fraction of lines starting with a bullet above `max_bullet_lines_frac`
  6. ellipsis_lines        fraction of lines ending in an ellipsis above `max_ellipsis_lines_frac`
  7. alpha_words           fraction of words with a letter below `min_alpha_words_frac`
  8. stop_words            fewer than `min_stop_words` distinct stop words
  9. dup_lines             fraction of lines that repeat an earlier line above `max_dup_lines_frac`
 10. dup_line_chars        fraction of characters in repeated lines above `max_dup_line_chars_frac`

A threshold of None disables its rule; every other value (0.0 included) is applied.
Words are the whitespace-separated tokens of the text with punctuation and symbols removed
(tokens made only of punctuation are not words), compared lowercased with the stop words.
Lines are the non-blank lines of the text.
"""

from __future__ import annotations

from typing import NamedTuple

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from tasks.corpus.base import TEXT, FilterResult, split_by_reason

# The stop words Gopher requires at least two of (Rae et al. 2021, App. A.1.1).
GOPHER_STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]
BULLETS = ("•", "-", "*", "‣", "◦", "▪", "●")
ELLIPSES = ("...", "…")


class QualityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # All defaults are Gopher's (Rae et al. 2021, App. A.1.1 and Table A1).
    min_words: int | None = Field(50, ge=0)  # "fewer than 50 or more than 100,000 words"
    max_words: int | None = Field(100_000, ge=0)
    min_mean_word_length: float | None = Field(3.0, ge=0)  # "mean word length outside 3 to 10"
    max_mean_word_length: float | None = Field(10.0, ge=0)
    max_symbol_word_ratio: float | None = Field(0.1, ge=0)  # '#' or ellipsis "greater than 0.1"
    max_bullet_lines_frac: float | None = Field(0.9, ge=0, le=1)  # "more than 90% ... bullet"
    max_ellipsis_lines_frac: float | None = Field(0.3, ge=0, le=1)  # "more than 30% ... ellipsis"
    min_alpha_words_frac: float | None = Field(0.8, ge=0, le=1)  # "80% ... alphabetic character"
    min_stop_words: int | None = Field(2, ge=0)  # "at least two of the following English words"
    max_dup_lines_frac: float | None = Field(0.3, ge=0, le=1)  # Table A1: duplicate line fraction
    max_dup_line_chars_frac: float | None = Field(0.2, ge=0, le=1)  # Table A1: dup. line chars
    stop_words: list[str] = Field(default_factory=lambda: list(GOPHER_STOP_WORDS))


def _word_tokens(texts: pl.Series) -> pl.Series:
    """Lowercased words per text: punctuation and symbols removed, split on whitespace.

    Removing punctuation over the whole text before splitting is 3x faster than stripping
    each token; a token made only of punctuation becomes '' and is not a word.
    """
    return (
        texts.str.to_lowercase()
        .str.replace_all(r"[^\w\s]+", "")
        .str.replace_all(r"\s\s+|[^\S ]", " ")  # only runs and non-space whitespace: fewer matches
        .str.split(" ")
    )


def _word_stats(doc: pl.Series, texts: pl.Series, stop_words: list[str]) -> pl.DataFrame:
    """Per doc (only docs with words): words, word_chars, alpha_words, stop_words (distinct)."""
    tok = pl.col("tok")
    return (
        pl.DataFrame({"doc": doc, "tok": _word_tokens(texts)})
        .explode("tok")
        .filter(tok != "")
        .group_by("doc")
        .agg(
            pl.len().alias("words"),
            tok.str.len_chars().sum().alias("word_chars"),
            tok.str.contains(r"\p{Alphabetic}").sum().alias("alpha_words"),
            tok.filter(tok.is_in(stop_words)).n_unique().alias("stop_words"),
        )
    )


def _line_stats(doc: pl.Series, texts: pl.Series) -> pl.DataFrame:
    """Per doc (only docs with non-blank lines): lines, bullet_lines, ellipsis_lines, dup_lines,
    dup_line_chars. A line counts as a duplicate from its second occurrence on, as in Gopher."""
    line = pl.col("line")
    lines = (
        pl.DataFrame({"doc": doc, "line": texts.str.split("\n")})
        .explode("line")
        .with_columns(line.str.strip_chars())
        .filter(line != "")
    )
    shape = lines.group_by("doc").agg(
        pl.len().alias("lines"),
        pl.any_horizontal([line.str.starts_with(b) for b in BULLETS]).sum().alias("bullet_lines"),
        pl.any_horizontal([line.str.ends_with(e) for e in ELLIPSES]).sum().alias("ellipsis_lines"),
    )
    repeats = (
        lines.group_by("doc", "line")
        .agg(pl.len().alias("k"))
        .filter(pl.col("k") > 1)
        .group_by("doc")
        .agg(
            (pl.col("k") - 1).sum().alias("dup_lines"),
            ((pl.col("k") - 1) * line.str.len_chars()).sum().alias("dup_line_chars"),
        )
    )
    return shape.join(repeats, on="doc", how="left")


def quality_features(df: pl.DataFrame, stop_words: list[str] | None = None) -> pl.DataFrame:
    """One row per document (frame order) with every feature the rules use.

    Columns: words, mean_word_length, hash_ratio, ellipsis_ratio, lines, bullet_lines_frac,
    ellipsis_lines_frac, alpha_words_frac, stop_words, dup_lines_frac, dup_line_chars_frac.
    Ratios over zero words or lines are null (a null never fails a rule; `min_words` catches them).
    """
    stop_words = [w.lower() for w in (GOPHER_STOP_WORDS if stop_words is None else stop_words)]
    texts = df[TEXT]
    doc = pl.int_range(df.height, dtype=pl.UInt32, eager=True).alias("doc")
    per_doc = (
        pl.DataFrame(
            {
                "doc": doc,
                "chars": texts.str.len_chars(),
                "hashes": texts.str.count_matches("#", literal=True),
                "ellipses": sum(texts.str.count_matches(e, literal=True) for e in ELLIPSES),
            }
        )
        .join(_word_stats(doc, texts, stop_words), on="doc", how="left")
        .join(_line_stats(doc, texts), on="doc", how="left")
        .sort("doc")
        .fill_null(0)
    )

    def ratio(num: str, den: str) -> pl.Expr:
        return pl.when(pl.col(den) > 0).then(pl.col(num) / pl.col(den))

    return per_doc.select(
        pl.col("words").cast(pl.Int64),
        ratio("word_chars", "words").alias("mean_word_length"),
        ratio("hashes", "words").alias("hash_ratio"),
        ratio("ellipses", "words").alias("ellipsis_ratio"),
        pl.col("lines").cast(pl.Int64),
        ratio("bullet_lines", "lines").alias("bullet_lines_frac"),
        ratio("ellipsis_lines", "lines").alias("ellipsis_lines_frac"),
        ratio("alpha_words", "words").alias("alpha_words_frac"),
        pl.col("stop_words").cast(pl.Int64),
        ratio("dup_lines", "lines").alias("dup_lines_frac"),
        ratio("dup_line_chars", "chars").alias("dup_line_chars_frac"),
    )


class Rule(NamedTuple):
    name: str  # the reason code is quality_<name>
    fails: pl.Expr | None  # true where a document breaks the rule; None = rule disabled
    detail: pl.Expr  # the explanation stored next to the reason


def _below(feature: str, limit: float | None) -> pl.Expr | None:
    return None if limit is None else pl.col(feature) < limit


def _above(feature: str, limit: float | None) -> pl.Expr | None:
    return None if limit is None else pl.col(feature) > limit


def _either(a: pl.Expr | None, b: pl.Expr | None) -> pl.Expr | None:
    return b if a is None else a if b is None else a | b


def _rules(cfg: QualityConfig) -> list[Rule]:
    """The rules in the documented order, thresholds compared with `is None`, never truthiness."""
    v = lambda name: pl.col(name).round(3)  # noqa: E731 - a feature value as shown in details
    lim = lambda limit: pl.lit(str(limit))  # noqa: E731 - "None" for a disabled bound, never null
    rules = [
        Rule(
            "min_words",
            _below("words", cfg.min_words),
            pl.format("words={} < min {}", "words", lim(cfg.min_words)),
        ),
        Rule(
            "max_words",
            _above("words", cfg.max_words),
            pl.format("words={} > max {}", "words", lim(cfg.max_words)),
        ),
        Rule(
            "mean_word_length",
            _either(
                _below("mean_word_length", cfg.min_mean_word_length),
                _above("mean_word_length", cfg.max_mean_word_length),
            ),
            pl.format(
                "mean word length={} outside [{}, {}]",
                v("mean_word_length"),
                lim(cfg.min_mean_word_length),
                lim(cfg.max_mean_word_length),
            ),
        ),
        Rule(
            "symbol_ratio",
            _either(
                _above("hash_ratio", cfg.max_symbol_word_ratio),
                _above("ellipsis_ratio", cfg.max_symbol_word_ratio),
            ),
            pl.format(
                "'#' per word={}, ellipses per word={}, max {}",
                v("hash_ratio"),
                v("ellipsis_ratio"),
                lim(cfg.max_symbol_word_ratio),
            ),
        ),
        Rule(
            "bullet_lines",
            _above("bullet_lines_frac", cfg.max_bullet_lines_frac),
            pl.format(
                "bullet lines={} > max {}", v("bullet_lines_frac"), lim(cfg.max_bullet_lines_frac)
            ),
        ),
        Rule(
            "ellipsis_lines",
            _above("ellipsis_lines_frac", cfg.max_ellipsis_lines_frac),
            pl.format(
                "lines ending in an ellipsis={} > max {}",
                v("ellipsis_lines_frac"),
                lim(cfg.max_ellipsis_lines_frac),
            ),
        ),
        Rule(
            "alpha_words",
            _below("alpha_words_frac", cfg.min_alpha_words_frac),
            pl.format(
                "words with a letter={} < min {}",
                v("alpha_words_frac"),
                lim(cfg.min_alpha_words_frac),
            ),
        ),
        Rule(
            "stop_words",
            _below("stop_words", cfg.min_stop_words),
            pl.format("distinct stop words={} < min {}", "stop_words", lim(cfg.min_stop_words)),
        ),
        Rule(
            "dup_lines",
            _above("dup_lines_frac", cfg.max_dup_lines_frac),
            pl.format(
                "duplicate lines={} > max {}", v("dup_lines_frac"), lim(cfg.max_dup_lines_frac)
            ),
        ),
        Rule(
            "dup_line_chars",
            _above("dup_line_chars_frac", cfg.max_dup_line_chars_frac),
            pl.format(
                "chars in duplicate lines={} > max {}",
                v("dup_line_chars_frac"),
                lim(cfg.max_dup_line_chars_frac),
            ),
        ),
    ]
    return [rule for rule in rules if rule.fails is not None]


def quality_filter(df: pl.DataFrame, cfg: QualityConfig) -> FilterResult:
    """Drop documents that fail a Gopher rule; `reason` is the first failing rule (order above)."""
    features = quality_features(df, cfg.stop_words)
    reason, detail = pl.lit(None, pl.String), pl.lit(None, pl.String)
    for rule in reversed(_rules(cfg)):  # built inside out, so the first failing rule wins
        fails = rule.fails.fill_null(False)  # a null feature (no words, no lines) breaks no rule
        reason = pl.when(fails).then(pl.lit(f"quality_{rule.name}")).otherwise(reason)
        detail = pl.when(fails).then(rule.detail).otherwise(detail)
    tags = features.select(reason.alias("reason"), detail.alias("detail"))
    result = split_by_reason(df, pl.lit(tags["reason"]), pl.lit(tags["detail"]))
    return result.check(df.height, "quality")
