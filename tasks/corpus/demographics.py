"""Demographic representation in the corpus: pronouns and identity terms (paper §4.1, Table 9).

Llama 2 measured, not filtered, how often pronouns and identity terms occur in its pretraining
data: Table 9a gives the share of documents with She / He / unspecified / 1st / 2nd person
pronouns, as a percentage of documents that contain any pronoun; Table 9b the share of
documents mentioning terms on five axes from HolisticBias (Smith et al. 2022): religion, gender
and sex, nationality, race and ethnicity, sexual orientation.

Matching is lowercase, whole words (`\\b` boundaries), one regex pass over the corpus. Like the
paper's counts it cannot tell senses apart ("white" paint, "straight" line, "us" for U.S.).
No Prefect or MLflow imports.
"""

from __future__ import annotations

import re

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.corpus.base import TEXT

PRONOUN_AXIS = "pronouns"
ANY = "(any)"  # the row counting documents that mention any term of the axis

# Table 9a's pronoun groups.
PRONOUNS: dict[str, list[str]] = {
    "she": ["she", "her", "hers", "herself"],
    "he": ["he", "him", "his", "himself"],
    "unspecified": ["they", "them", "their", "theirs", "theirself", "themself", "themselves"],
    "1st_person": ["i", "me", "my", "mine", "myself", "we", "us", "our", "ours", "ourselves"],
    "2nd_person": ["you", "your", "yours", "yourself", "yourselves"],
}
# Table 9b's axes; a representative subset of each axis's HolisticBias descriptor terms.
IDENTITY_TERMS: dict[str, list[str]] = {
    "religion": [
        "christian",
        "catholic",
        "protestant",
        "evangelical",
        "mormon",
        "orthodox",
        "jewish",
        "muslim",
        "islamic",
        "hindu",
        "buddhist",
        "sikh",
        "jain",
        "atheist",
        "agnostic",
        "religious",
        "spiritual",
    ],
    "gender_and_sex": [
        "female",
        "male",
        "feminine",
        "masculine",
        "transgender",
        "trans",
        "nonbinary",
        "non-binary",
        "cisgender",
        "intersex",
        "androgynous",
        "genderqueer",
    ],
    "nationality": [
        "american",
        "indian",
        "chinese",
        "korean",
        "mexican",
        "japanese",
        "british",
        "french",
        "german",
        "russian",
        "canadian",
        "australian",
        "vietnamese",
        "filipino",
        "cuban",
        "irish",
        "italian",
        "brazilian",
        "nigerian",
        "pakistani",
    ],
    "race_and_ethnicity": [
        "european",
        "african",
        "asian",
        "white",
        "black",
        "hispanic",
        "latino",
        "latina",
        "latinx",
        "arab",
        "caucasian",
        "indigenous",
        "native american",
        "african american",
        "pacific islander",
        "alaska native",
    ],
    "sexual_orientation": [
        "gay",
        "lesbian",
        "straight",
        "heterosexual",
        "homosexual",
        "bisexual",
        "asexual",
        "pansexual",
        "queer",
        "lgbt",
        "lgbtq",
    ],
}


class DemographicsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # More terms per axis (an existing axis or a new one), matched like the built-in ones.
    extra_terms: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("extra_terms")
    @classmethod
    def _clean(cls, extra: dict[str, list[str]]) -> dict[str, list[str]]:
        if PRONOUN_AXIS in extra:
            raise ValueError(
                f"extra_terms cannot extend '{PRONOUN_AXIS}': its groups are the paper's"
            )
        cleaned = {
            axis: [t.strip().lower() for t in terms if t.strip()] for axis, terms in extra.items()
        }
        empty = [axis for axis, terms in cleaned.items() if not terms]
        if empty:
            raise ValueError(f"extra_terms axes without terms: {empty}")
        return cleaned


def term_table(cfg: DemographicsConfig) -> pl.DataFrame:
    """(axis, label, term): the label is the pronoun group or the term itself."""
    rows = [(PRONOUN_AXIS, group, t) for group, terms in PRONOUNS.items() for t in terms]
    identity = {axis: list(terms) for axis, terms in IDENTITY_TERMS.items()}
    for axis, terms in cfg.extra_terms.items():
        identity[axis] = list(dict.fromkeys(identity.get(axis, []) + terms))
    rows += [(axis, t, t) for axis, terms in identity.items() for t in terms]
    return pl.DataFrame(rows, schema=["axis", "label", "term"], orient="row")


def _mentions(texts: pl.Series, terms: list[str]) -> pl.DataFrame:
    """Distinct (doc, term) pairs: one regex pass, longest terms first ('african american')."""
    longest_first = sorted(set(terms), key=len, reverse=True)
    alternation = "|".join(re.escape(t).replace(r"\ ", r"\s+") for t in longest_first)
    found = texts.str.to_lowercase().str.extract_all(rf"\b(?:{alternation})\b")
    return (
        pl.DataFrame({"doc": pl.int_range(texts.len(), dtype=pl.UInt32, eager=True), "term": found})
        .explode("term")
        .drop_nulls("term")
        .with_columns(pl.col("term").str.replace_all(r"\s+", " "))
        .unique()
    )


def _rows(table: pl.DataFrame) -> pl.DataFrame:
    """(axis, label) of every output row: per axis its (any) row, then groups/terms in order."""
    rows: list[tuple[str, str]] = []
    for (axis,), group in table.group_by("axis", maintain_order=True):
        rows += [(axis, ANY), *dict.fromkeys((axis, label) for label in group["label"])]
    return pl.DataFrame(rows, schema=["axis", "label"], orient="row")


def demographic_representation(
    df: pl.DataFrame, cfg: DemographicsConfig
) -> tuple[pl.DataFrame, dict[str, float]]:
    """Documents mentioning each pronoun group and identity term: (table, stats).

    Table columns: axis, term, docs (int), pct_docs (float, percent). Pronoun groups' pct_docs
    is relative to documents with any pronoun (Table 9a); identity terms' and every axis's
    `(any)` row is relative to all documents (Table 9b).
    Stats: `pronoun_pct_docs_<group>`, `pronoun_pct_docs_any` and `identity_pct_docs_<axis>`.
    """
    table = term_table(cfg)
    mentions = _mentions(df[TEXT], table["term"].to_list()).join(table, on="term")
    by_label = (
        mentions.select("doc", "axis", "label").unique().group_by("axis", "label").len("docs")
    )
    by_axis = mentions.select("doc", "axis").unique().group_by("axis").len("docs")
    docs = pl.concat([by_label, by_axis.select("axis", pl.lit(ANY).alias("label"), "docs")])

    any_pronoun = by_axis.filter(pl.col("axis") == PRONOUN_AXIS)["docs"].sum()
    is_group = (pl.col("axis") == PRONOUN_AXIS) & (pl.col("label") != ANY)
    denominator = pl.when(is_group).then(pl.lit(any_pronoun)).otherwise(pl.lit(df.height))
    out = (
        _rows(table)
        .join(docs, on=["axis", "label"], how="left", maintain_order="left")
        .with_columns(pl.col("docs").fill_null(0).cast(pl.Int64))
        .select(
            "axis",
            pl.col("label").alias("term"),
            "docs",
            pl.when(denominator > 0)
            .then(100.0 * pl.col("docs") / denominator)
            .otherwise(0.0)
            .cast(pl.Float64)
            .alias("pct_docs"),
        )
    )
    stats: dict[str, float] = {}
    for axis, term, _, pct in out.iter_rows():
        if axis == PRONOUN_AXIS:
            stats[f"pronoun_pct_docs_{'any' if term == ANY else term}"] = pct
        elif term == ANY:
            stats[f"identity_pct_docs_{axis}"] = pct
    return out, stats
