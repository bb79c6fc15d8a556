"""PII filter: blocklists and density drop documents; kept texts are redacted exactly."""

import polars as pl
import pytest
from pydantic import ValidationError

from tasks.corpus.pii import PATTERNS, PiiConfig, pii_counts, pii_filter, redact_pii

ALL = ["email", "phone", "ip", "handle"]
# 45 words, no PII.
PROSE = "The council approved the new budget after a long debate about schools and roads. " * 3


def make_docs(
    texts: list[str], sources: list[str] | None = None, urls: list[str | None] | None = None
) -> pl.DataFrame:
    n = len(texts)
    return pl.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(n)],
            "source": sources or ["web"] * n,
            "url": urls or [None] * n,
            "text": texts,
            "extra": list(range(n)),
        },
        schema_overrides={
            "doc_id": pl.String,
            "source": pl.String,
            "url": pl.String,
            "text": pl.String,
        },
    )


def reasons(result, n: int) -> list[str | None]:
    assert result.kept.height + result.excluded.height == n
    by_id = dict(zip(result.excluded["doc_id"], result.excluded["reason"]))
    return [by_id.get(f"d{i}") for i in range(n)]


def test_redaction_exact_output():
    text = (
        "Mail jane.doe@example.com or call (555) 123-4567 / +44 20 7946 0958; "
        "server 192.168.0.12; thanks @jane_doe and @bob!"
    )
    assert redact_pii(pl.Series([text]), ALL)[0] == (
        "Mail <EMAIL> or call <PHONE> / <PHONE>; server <IP>; thanks <HANDLE> and <HANDLE>!"
    )


def test_counts_per_type_and_no_false_hits():
    texts = pl.Series(
        [
            "a@b.org, c.d@e.co.uk; 555-123-4567, 555.123.4567; 10.0.0.1; @x @y_z",
            # Years, counts, ranges, ISBNs, long ids, bad IPs and emails are not PII:
            "In 2017 there were 3,824 cases (2008-2014) among 1,234,567 people; ISBN 978-3-16-148410-0; "  # noqa: E501 (data)
            "order 12345678901; version 10.0.0.256; user@localhost; https://medium.com/@writer",
        ]
    )
    counts = pii_counts(texts, ALL)
    assert counts.row(0, named=True) == {"email": 2, "ip": 1, "phone": 2, "handle": 2}
    assert counts.row(1, named=True) == {"email": 0, "ip": 0, "phone": 0, "handle": 0}


def test_kept_documents_are_redacted_and_counted():
    df = make_docs(
        [PROSE + " Contact press@city.gov or 555-201-3344.", PROSE + " Follow @citycouncil."]
    )
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
    urls = [
        None,
        "https://www.spokeo.com/John-Smith",
        "http://SPOKEO.com./x",
        "spokeo.com/p/1",
        "https://notspokeo.com/a",
        "https://spokeo.com.evil.net/",
        None,
    ]
    df = make_docs([PROSE] * 7, sources=["people_db"] + ["web"] * 6, urls=urls)
    result = pii_filter(
        df, PiiConfig(blocklist_sources=["people_db"], blocklist_domains=["spokeo.com"])
    )
    assert reasons(result, 7) == [
        "pii_blocklisted_source",
        *["pii_blocklisted_domain"] * 3,
        None,
        None,
        None,
    ]
    details = dict(zip(result.excluded["doc_id"], result.excluded["detail"]))
    assert details["d0"] == "source 'people_db' is blocklisted"
    assert details["d1"] == "host 'www.spokeo.com' is in blocklisted domain 'spokeo.com'"
    assert result.stats["dropped_pii_blocklisted_domain"] == 3


def test_density_drops_contact_lists_but_not_prose_or_short_texts():
    listing = "Ann 555-201-3344 ann@x.org Bob 555-201-5566 bob@x.org Cy 555-201-7788 cy@x.org"  # 6 in 9 words  # noqa: E501 (data)
    few = "Call 555-201-3344 now"  # one match: under density_min_matches
    handles = "@a @b @c @d thanks all"  # handles do not count towards density
    result = pii_filter(
        make_docs([listing, few, handles, PROSE + " a@b.org c@d.org e@f.org"]), PiiConfig()
    )
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


# Phone numbers as people write them, labelled by hand: (text, the phone numbers in it). The
# negatives are the look-alikes a phone pattern must leave alone.
PHONE_CASES = [
    # E.164 / international
    ("Call our London office on +44 20 7946 0958 during the week.", ["+44 20 7946 0958"]),
    ("Text +44 7700 900123 or +447700900123 for updates.", ["+44 7700 900123", "+447700900123"]),
    ("US support: +1 415 555 2671; fax +1-202-555-0143.", ["+1 415 555 2671", "+1-202-555-0143"]),
    (
        "Paris: +33 1 42 68 53 00, mobile +33 6 12 34 56 78.",
        ["+33 1 42 68 53 00", "+33 6 12 34 56 78"],
    ),
    ("Berlin +49 30 901820 or +49 (0)30 1234 5678.", ["+49 30 901820", "+49 (0)30 1234 5678"]),
    ("Rome +39 06 6988 4857, Madrid +34 912 345 678.", ["+39 06 6988 4857", "+34 912 345 678"]),
    (
        "Dublin +353 1 234 5678 and Amsterdam +31 20 123 4567.",
        ["+353 1 234 5678", "+31 20 123 4567"],
    ),
    ("Reach him at +14155552671 after six.", ["+14155552671"]),
    # UK national
    ("Ring 020 7946 0958 to book.", ["020 7946 0958"]),
    ("Manchester office: 0161 496 0000.", ["0161 496 0000"]),
    (
        "The helpline 0300 123 4567 is free; so is 0800 123 4567.",
        ["0300 123 4567", "0800 123 4567"],
    ),
    ("Council tax queries: 0345 6789 012 (Mon-Fri).", ["0345 6789 012"]),
    ("Her number was 01632 960000, his 07700 900123.", ["01632 960000", "07700 900123"]),
    ("Mobile 07700 900 123 or 07700900123.", ["07700 900 123", "07700900123"]),
    ("Call (020) 7946 0958 or (01632) 960 000.", ["(020) 7946 0958", "(01632) 960 000"]),
    ("Sheffield 0114-496-0123.", ["0114-496-0123"]),
    # US / NANP
    ("Call (415) 555-2671 or 415-555-2671.", ["(415) 555-2671", "415-555-2671"]),
    ("Dial 415.555.2671 or 415 555 2671 now.", ["415.555.2671", "415 555 2671"]),
    ("Toll free 1-800-555-0199.", ["1-800-555-0199"]),
    # EU national
    ("Appelez le 01 42 68 53 00 ou le 06.12.34.56.78.", ["01 42 68 53 00", "06.12.34.56.78"]),
    (
        "Rufen Sie 030 12345678 oder 0171 1234567 an, Fax 089/1234567.",
        ["030 12345678", "0171 1234567", "089/1234567"],
    ),
    ("Chiamare lo 06 6988 4857 o lo 02 1234 5678.", ["06 6988 4857", "02 1234 5678"]),
    ("Phone 01 234 5678 in Dublin or 020 123 4567 in Amsterdam.", ["01 234 5678", "020 123 4567"]),
    (
        "From abroad dial 0044 20 7946 0958 or 0049 30 901820.",
        ["0044 20 7946 0958", "0049 30 901820"],
    ),
    ("tel: 020-7946-0958, cell (415)555-2671.", ["020-7946-0958", "(415)555-2671"]),
    ("UK: +44 (0) 161 496 0000.", ["+44 (0) 161 496 0000"]),
    # Not phone numbers: years, ranges, counts, prices, ISBNs, dates, times, ids, versions
    ("Between 1999 2000 2001 and 2008-2014 there were 3,824 cases among 1,234,567 people.", []),
    ("It cost $1,299.99, or £0.99 a month, €12.50 with tax; 0.5 0.25 0.125 of it was fees.", []),
    (
        "ISBN 978-3-16-148410-0, ISBN 0-306-40615-2, ISBN 0306406152, ISBN-13: 978-0-306-40615-7.",
        [],
    ),
    ("Dates: 2023-01-15, 15.01.2023, 01/15/2023, 01.02.2023, 2023/01/15 and 15 01 2023.", []),
    ("Open 10:30-11:45, 09.00-17.00; the score was 3-1 and 2-2.", []),
    ("Order 12345678901 shipped; version 10.0.0.256; build 2023.01.15.1.", []),
    ("Population 1 234 567, area 12 345 678 m2, GDP 123 456 789 thousand.", []),
    ("At 51.5074 -0.1278 the postcode SW1A 1AA; pi is 3.14159 26535 89793.", []),
    ("Account 12-34-56 12345678; invoice 2023-00123; case 0123/2023.", []),
    ("Chapter 3, pages 120-145, lines 10 20 30; room 0.21.", []),
    ("In 2019 he ran 100 200 and 400 metre races; record 9.58 seconds.", []),
    ("Temperatures +12 -3 +4 degrees; the vote was 52-48; a 2-1 win.", []),
    ("IBAN GB29 NWBK 6016 1331 9268 19; card 4111 1111 1111 1111; SSN 078-05-1120.", []),
    ("ZIP 02134-1234; lot 0001; serial 00012345; 10,000-20,000 visitors.", []),
    ("Winning numbers: 04 11 23 38 45.", []),
    ("The 2020 census counted 331,449,281 people; 2010: 308,745,538.", []),
]


def test_phone_formats_precision_and_recall_on_a_labelled_set(record_property):
    found = pl.Series([t for t, _ in PHONE_CASES]).str.extract_all(PATTERNS["phone"]).to_list()
    tp = fp = fn = 0
    misses = []
    for (text, want), got in zip(PHONE_CASES, found):
        got = got or []
        tp += sum(g in want for g in got)
        fp += sum(g not in want for g in got)
        fn += sum(w not in got for w in want)
        misses += [f"extra {g!r}" for g in got if g not in want] + [
            f"missed {w!r}" for w in want if w not in got
        ]
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    record_property("phone_precision", precision)
    record_property("phone_recall", recall)
    print(
        f"phone numbers: precision {precision:.3f}, recall {recall:.3f} "
        f"({tp} found, {fp} false, {fn} missed: {misses})"
    )
    assert tp + fn == 45  # every labelled number counted
    assert precision >= 0.95 and recall >= 0.95, misses


def test_uk_numbers_are_redacted_in_kept_documents():
    text = PROSE + " Ring 0161 496 0000 or 0345 6789 012, mobile 07700 900123."
    result = pii_filter(make_docs([text]), PiiConfig())
    assert result.kept["text"][0] == PROSE + " Ring <PHONE> or <PHONE>, mobile <PHONE>."
    assert result.stats["pii_redacted_phone"] == 3
