"""PII filter: blocklists and density drop documents; kept texts are redacted exactly."""

import polars as pl
import pytest
from pydantic import ValidationError

from tasks.corpus.pii import PiiConfig, pii_counts, pii_filter, redact_pii

ALL = ["email", "phone", "ip", "handle"]
# 45 words, no PII.
PROSE = "The council approved the new budget after a long debate about schools and roads. " * 3


def make_docs(texts: list[str], sources: list[str] | None = None,
              urls: list[str | None] | None = None) -> pl.DataFrame:
    n = len(texts)
    return pl.DataFrame(
        {"doc_id": [f"d{i}" for i in range(n)], "source": sources or ["web"] * n,
         "url": urls or [None] * n, "text": texts, "extra": list(range(n))},
        schema_overrides={"doc_id": pl.String, "source": pl.String, "url": pl.String, "text": pl.String},
    )


def reasons(result, n: int) -> list[str | None]:
    assert result.kept.height + result.excluded.height == n
    by_id = dict(zip(result.excluded["doc_id"], result.excluded["reason"]))
    return [by_id.get(f"d{i}") for i in range(n)]


def test_redaction_exact_output():
    text = ("Mail jane.doe@example.com or call (555) 123-4567 / +44 20 7946 0958; "
            "server 192.168.0.12; thanks @jane_doe and @bob!")
    assert redact_pii(pl.Series([text]), ALL)[0] == (
        "Mail <EMAIL> or call <PHONE> / <PHONE>; server <IP>; thanks <HANDLE> and <HANDLE>!"
    )


def test_counts_per_type_and_no_false_hits():
    texts = pl.Series([
        "a@b.org, c.d@e.co.uk; 555-123-4567, 555.123.4567; 10.0.0.1; @x @y_z",
        # Years, counts, ranges, ISBNs, long ids, bad IPs and emails are not PII:
        "In 2017 there were 3,824 cases (2008-2014) among 1,234,567 people; ISBN 978-3-16-148410-0; "
        "order 12345678901; version 10.0.0.256; user@localhost; https://medium.com/@writer",
    ])
    counts = pii_counts(texts, ALL)
    assert counts.row(0, named=True) == {"email": 2, "ip": 1, "phone": 2, "handle": 2}
    assert counts.row(1, named=True) == {"email": 0, "ip": 0, "phone": 0, "handle": 0}


def test_kept_documents_are_redacted_and_counted():
    df = make_docs([PROSE + " Contact press@city.gov or 555-201-3344.", PROSE + " Follow @citycouncil."])
    original = df.clone()
    result = pii_filter(df, PiiConfig())
    assert df.equals(original)  # the input frame is not modified
    assert reasons(result, 2) == [None, None]
    assert result.kept["text"].to_list() == [
        PROSE + " Contact <EMAIL> or <PHONE>.",
        PROSE + " Follow <HANDLE>.",
    ]
    assert result.kept.columns == df.columns and result.kept["extra"].to_list() == [0, 1]
    redacted = {k: result.stats[f"pii_redacted_{k}"] for k in ALL}
    assert redacted == {"email": 1, "phone": 1, "ip": 0, "handle": 1}


def test_only_configured_types_are_redacted():
    df = make_docs([PROSE + " Mail a@b.com, follow @bob."])
    result = pii_filter(df, PiiConfig(redact=["email"]))
    assert result.kept["text"][0] == PROSE + " Mail <EMAIL>, follow @bob."
    assert result.stats["pii_redacted_handle"] == 0


def test_blocklisted_source_and_domain_with_subdomains():
    urls = [None, "https://www.spokeo.com/John-Smith", "http://SPOKEO.com./x", "spokeo.com/p/1",
            "https://notspokeo.com/a", "https://spokeo.com.evil.net/", None]
    df = make_docs([PROSE] * 7, sources=["people_db"] + ["web"] * 6, urls=urls)
    result = pii_filter(df, PiiConfig(blocklist_sources=["people_db"], blocklist_domains=["spokeo.com"]))
    assert reasons(result, 7) == ["pii_blocklisted_source", *["pii_blocklisted_domain"] * 3, None, None, None]
    details = dict(zip(result.excluded["doc_id"], result.excluded["detail"]))
    assert details["d0"] == "source 'people_db' is blocklisted"
    assert details["d1"] == "host 'www.spokeo.com' is in blocklisted domain 'spokeo.com'"
    assert result.stats["dropped_pii_blocklisted_domain"] == 3


def test_density_drops_contact_lists_but_not_prose_or_short_texts():
    listing = "Ann 555-201-3344 ann@x.org Bob 555-201-5566 bob@x.org Cy 555-201-7788 cy@x.org"  # 6 in 9 words
    few = "Call 555-201-3344 now"  # one match: under density_min_matches
    handles = "@a @b @c @d thanks all"  # handles do not count towards density
    result = pii_filter(make_docs([listing, few, handles, PROSE + " a@b.org c@d.org e@f.org"]), PiiConfig())
    assert reasons(result, 4) == ["pii_density", None, None, None]
    assert result.excluded["detail"][0] == "pii matches=6 in words=9 (0.667 > max 0.1)"
    # A zero threshold still applies: three emails in 48 words exceed 0.0.
    zero = pii_filter(make_docs([PROSE + " a@b.org c@d.org e@f.org"]), PiiConfig(max_density=0.0))
    assert reasons(zero, 1) == ["pii_density"]
    assert reasons(pii_filter(make_docs([listing]), PiiConfig(max_density=None)), 1) == [None]


def test_config_rejects_unknown_types_and_fields():
    with pytest.raises(ValidationError):
        PiiConfig(redact=["ssn"])
    with pytest.raises(ValidationError):
        PiiConfig(max_densty=0.1)
