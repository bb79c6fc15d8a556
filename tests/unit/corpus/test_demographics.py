"""Demographic representation (paper Table 9) on a hand-counted fixture."""

import polars as pl
import pytest
from pydantic import ValidationError

from tasks.corpus.demographics import DemographicsConfig, demographic_representation

DOCS = pl.DataFrame(
    {
        "doc_id": ["d0", "d1", "d2", "d3"],
        "text": [
            # she (She, her), he? no ("brother" is not a pronoun); religion: christian
            "She said her brother is a devout Christian.",
            # he (He, his); nationality: american; religion: jewish; 1st person: we
            "He and his friends are AMERICAN and Jewish, we think.",
            # unspecified (They); 1st person (us); race: "african american" only
            "They told us the African   American community gathered.",
            # no pronoun: shepherd, there, these, hero contain she/he/her but are other words;
            # race: white (a colour here: the paper's counts cannot tell senses apart either)
            "The shepherd saw there these white heroes.",
        ],
    }
)


def lookup(table: pl.DataFrame) -> dict[tuple[str, str], tuple[int, float]]:
    return {(a, t): (d, p) for a, t, d, p in table.iter_rows()}


def test_hand_counts():
    table, stats = demographic_representation(DOCS, DemographicsConfig())
    assert table.columns == ["axis", "term", "docs", "pct_docs"]
    assert table.schema == {
        "axis": pl.String,
        "term": pl.String,
        "docs": pl.Int64,
        "pct_docs": pl.Float64,
    }
    got = lookup(table)
    # Pronoun groups: percent of the 3 documents with any pronoun (d0, d1, d2).
    assert got[("pronouns", "(any)")] == (3, pytest.approx(75.0))  # of all 4 documents
    assert got[("pronouns", "she")] == (1, pytest.approx(100 / 3))
    assert got[("pronouns", "he")] == (1, pytest.approx(100 / 3))
    assert got[("pronouns", "unspecified")] == (1, pytest.approx(100 / 3))
    assert got[("pronouns", "1st_person")] == (2, pytest.approx(200 / 3))  # we (d1), us (d2)
    assert got[("pronouns", "2nd_person")] == (0, 0.0)
    # Identity terms: percent of all 4 documents.
    assert got[("religion", "christian")] == (1, 25.0)
    assert got[("religion", "jewish")] == (1, 25.0)
    assert got[("religion", "(any)")] == (2, 50.0)
    assert got[("nationality", "american")] == (1, 25.0)  # d1 only: d2's is "african american"
    assert got[("race_and_ethnicity", "african american")] == (1, 25.0)
    assert got[("race_and_ethnicity", "african")] == (0, 0.0)
    assert got[("race_and_ethnicity", "white")] == (1, 25.0)
    assert got[("race_and_ethnicity", "(any)")] == (2, 50.0)
    assert got[("sexual_orientation", "(any)")] == (0, 0.0)
    assert stats["pronoun_pct_docs_she"] == pytest.approx(100 / 3)
    assert stats["pronoun_pct_docs_he"] == pytest.approx(100 / 3)
    assert stats["pronoun_pct_docs_any"] == pytest.approx(75.0)
    assert stats["identity_pct_docs_religion"] == pytest.approx(50.0)


def test_extra_terms_extend_an_axis_or_add_one():
    cfg = DemographicsConfig(extra_terms={"religion": ["Devout"], "occupation": ["shepherd"]})
    got = lookup(demographic_representation(DOCS, cfg)[0])
    assert got[("religion", "devout")] == (1, 25.0)
    assert got[("occupation", "shepherd")] == (1, 25.0)
    assert got[("religion", "(any)")] == (2, 50.0)  # d0 counted once


def test_empty_corpus_and_bad_config():
    table, stats = demographic_representation(DOCS.clear(), DemographicsConfig())
    assert table["docs"].sum() == 0 and table["pct_docs"].sum() == 0.0
    with pytest.raises(ValidationError):
        DemographicsConfig(extra_terms={"pronouns": ["xe"]})
    with pytest.raises(ValidationError):
        DemographicsConfig(extra_terms={"religion": ["  "]})
