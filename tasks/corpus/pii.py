"""Personal information: drop sites known for it, drop PII-dense documents, redact the rest.

Llama 2 removed "data from certain sites known to contain a high volume of personal information
about private individuals" (Touvron et al. 2023, §2.1). The paper names no list or rule, so this
module makes three documented choices, applied in this order (reason `pii_<rule>`):

  1. blocklisted_source   the document's `source` is in `blocklist_sources`
  2. blocklisted_domain   the url's host is a blocklisted domain or one of its subdomains
  3. density              at least `density_min_matches` matches of `density_types` and more
                          than `max_density` matches per word (a contact list, not an article)

Kept documents have every match of the `redact` types replaced by <EMAIL>, <PHONE>, <IP> or
<HANDLE>. All matching is polars regex (Rust `regex`: no look-around, so boundaries are
written as ASCII `\\b` or as an explicit preceding character that the replacement puts back).
"""

from __future__ import annotations

import re
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from tasks.corpus.base import SOURCE, TEXT, FilterResult, split_by_reason

PiiType = Literal["email", "phone", "ip", "handle"]

_B = r"(?-u:\b)"  # ASCII word boundary: keeps the regex on the fast DFA engine
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_S = r"[ .-]"  # a separator between digit groups
# Phone numbers as people write them, each format a fixed shape of digit groups, so years
# ("2017"), counts ("3,824"), ranges ("2008-2014"), prices, dates and ISBNs never match: a
# national number starts with its trunk 0, a NANP number needs the 3-3-4 groups with separators,
# an international one its "+" or "00" prefix. Measured on a labelled set in tests/unit/corpus/
# test_pii.py; a known false positive is five two-digit numbers after a 0 ("04 11 23 38 45").
_PHONE_FORMATS = [
    # E.164 and the 00 prefix: +44 20 7946 0958, +447700900123, +49 (0)30 1234 5678, 0044 20 ...
    rf"(?:\+[0-9]{{1,3}}[ .-]?|{_B}00[1-9][0-9]{{0,2}}{_S})\(?[0-9]{{1,4}}\)?(?:[ .-]?[0-9]{{2,4}}){{2,4}}{_B}",  # noqa: E501 (data)
    # NANP (US, Canada): (415) 555-2671, 415.555.2671, 1-800-555-0199
    rf"(?:\([0-9]{{3}}\) ?|{_B}(?:1{_S})?[0-9]{{3}}{_S})[0-9]{{3}}{_S}[0-9]{{4}}{_B}",
    # National numbers with a trunk 0 (UK, DE, FR, IT, IE, NL, ...):
    rf"\(0[0-9]{{2,4}}\) ?[0-9]{{3,4}}{_S}?[0-9]{{3,4}}{_B}",  # (020) 7946 0958, (01632) 960 000
    rf"{_B}0[0-9]{{2}}{_S}[0-9]{{4}}{_S}[0-9]{{4}}{_B}",  # 020 7946 0958 (UK), 089 1234 5678 (DE)
    rf"{_B}0[0-9]{{3}}{_S}[0-9]{{3}}{_S}[0-9]{{4}}{_B}",  # 0161 496 0000, 0300 123 4567
    rf"{_B}0[0-9]{{3}}{_S}[0-9]{{4}}{_S}[0-9]{{3}}{_B}",  # 0345 6789 012
    rf"{_B}0[0-9]{{4}}{_S}[0-9]{{3}}{_S}?[0-9]{{3}}{_B}",  # 01632 960000, 07700 900 123
    rf"{_B}07[0-9]{{9}}{_B}",  # 07700900123 (a UK mobile, unseparated)
    rf"{_B}0[1-9](?:{_S}[0-9]{{2}}){{4}}{_B}",  # 01 42 68 53 00 (FR)
    rf"{_B}0[1-9][0-9]{{1,3}}[ /-][0-9]{{5,8}}{_B}",  # 030 12345678, 089/1234567 (DE)
    rf"{_B}0[1-9]{_S}[0-9]{{3,4}}{_S}[0-9]{{4}}{_B}",  # 06 6988 4857 (IT), 01 234 5678 (IE)
]
# Redaction order matters: emails before handles (no '@' left), IPs before phones.
PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "ip": rf"{_B}(?:{_OCTET}\.){{3}}{_OCTET}{_B}",
    "phone": "|".join(_PHONE_FORMATS),
    # A handle is '@' + 1-15 word chars (Twitter's limit) after the start or a character that
    # cannot precede an '@' inside an email or url path; group 1 keeps that character.
    "handle": r"(^|[^A-Za-z0-9_.@/])@[A-Za-z0-9_]{1,15}" + _B,
}
PLACEHOLDERS = {"email": "<EMAIL>", "ip": "<IP>", "phone": "<PHONE>", "handle": "${1}<HANDLE>"}
# [scheme://][user@]host[:port][/...]; group 1 is the host.
_HOST = r"^(?:[A-Za-z][A-Za-z0-9+.-]*://)?(?:[^@/?#]*@)?([^/:?#\s]+)"

# People-search and background-check sites, the archetype of "sites known to contain a high
# volume of personal information about private individuals" (the paper gives no list).
PEOPLE_SEARCH_DOMAINS = [
    "spokeo.com",
    "whitepages.com",
    "mylife.com",
    "intelius.com",
    "beenverified.com",
    "truepeoplesearch.com",
    "fastpeoplesearch.com",
    "peekyou.com",
    "radaris.com",
    "pipl.com",
    "instantcheckmate.com",
    "peoplefinders.com",
    "truthfinder.com",
    "zabasearch.com",
    "ussearch.com",
    "thatsthem.com",
    "familytreenow.com",
    "411.com",
    "addresses.com",
    "spytox.com",
]


class PiiConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    blocklist_sources: list[str] = Field(default_factory=list)  # whole sources to leave out
    blocklist_domains: list[str] = Field(default_factory=lambda: list(PEOPLE_SEARCH_DOMAINS))
    # More than one match per 10 words is a directory or contact list, not prose: a news story
    # with a contact address has ~0.002; a "name, phone, email" listing has 0.3+.
    max_density: float | None = Field(0.1, ge=0)
    # Short texts ("call 555-123-4567") reach any density with one match: require a few.
    density_min_matches: int = Field(3, ge=1)
    # Contact details count towards density; @handles are redacted but not counted (a tweet
    # thanking four accounts is conversation, not a directory of private individuals).
    density_types: list[PiiType] = Field(default_factory=lambda: ["email", "phone", "ip"])
    redact: list[PiiType] = Field(default_factory=lambda: ["email", "phone", "ip", "handle"])


def _host(url: pl.Expr) -> pl.Expr:
    return url.str.extract(_HOST, 1).str.to_lowercase().str.strip_chars_end(".")


def _domain_regex(domains: list[str]) -> str:
    """Matches a host equal to a domain or ending in '.<domain>'; group 1 is the domain."""
    names = sorted({d.lower().strip().strip(".") for d in domains if d.strip()})
    return r"(?:^|\.)(" + "|".join(re.escape(d) for d in names) + r")$"


def pii_counts(texts: pl.Series, types: list[str]) -> pl.DataFrame:
    """Matches per document for each PII type, columns `<type>` (UInt32), in frame order."""
    return pl.DataFrame(
        {t: texts.str.count_matches(PATTERNS[t]) for t in PATTERNS if t in types},
        height=texts.len(),
    )


def redact_pii(texts: pl.Series, types: list[str]) -> pl.Series:
    """Replace every match of the given types by its placeholder (emails first, handles last)."""
    for t in PATTERNS:
        if t in types:
            texts = texts.str.replace_all(PATTERNS[t], PLACEHOLDERS[t])
    return texts


def _density(texts: pl.Series, counts: pl.DataFrame, cfg: PiiConfig) -> tuple[pl.Series, pl.Series]:
    """(too_dense, detail) per document; words are counted only where matches reach the minimum."""
    n = texts.len()
    counted = [t for t in cfg.density_types if t in counts.columns]
    if cfg.max_density is None or not counted:
        return pl.repeat(False, n, eager=True), pl.repeat("", n, eager=True)
    total = counts.select(pl.sum_horizontal(counted)).to_series()
    idx = (total >= cfg.density_min_matches).arg_true()
    words = pl.zeros(n, pl.UInt32, eager=True)
    words = words.scatter(idx, texts.gather(idx).str.count_matches(r"\S+"))
    density = pl.col("pii") / pl.col("words")
    out = pl.DataFrame({"pii": total, "words": words}).select(
        ((pl.col("pii") >= cfg.density_min_matches) & (density > cfg.max_density)).alias("dense"),
        pl.format(
            "pii matches={} in words={} ({} > max {})",
            "pii",
            "words",
            density.round(3),
            pl.lit(cfg.max_density),
        ).alias("detail"),
    )
    return out["dense"], out["detail"]


def pii_filter(df: pl.DataFrame, cfg: PiiConfig) -> FilterResult:
    """Drop blocklisted sources/domains and PII-dense documents, then redact the kept texts."""
    counts = pii_counts(df[TEXT], [*cfg.redact, *cfg.density_types])
    dense, dense_detail = _density(df[TEXT], counts, cfg)
    blocked_source = pl.col(SOURCE).is_in(cfg.blocklist_sources)
    host = _host(pl.col("url")) if "url" in df.columns else pl.lit(None, pl.String)
    blocked_domain = pl.lit(None, pl.String)
    if cfg.blocklist_domains:
        blocked_domain = host.str.extract(_domain_regex(cfg.blocklist_domains), 1)
    reason = (
        pl.when(blocked_source)
        .then(pl.lit("pii_blocklisted_source"))
        .when(blocked_domain.is_not_null())
        .then(pl.lit("pii_blocklisted_domain"))
        .when(pl.lit(dense))
        .then(pl.lit("pii_density"))
    )
    detail = (
        pl.when(blocked_source)
        .then(pl.format("source '{}' is blocklisted", pl.col(SOURCE)))
        .when(blocked_domain.is_not_null())
        .then(pl.format("host '{}' is in blocklisted domain '{}'", host, blocked_domain))
        .when(pl.lit(dense))
        .then(pl.lit(dense_detail))
    )
    # Carry the counts through the split so the kept rows' counts are known without a rescan.
    redacted = [t for t in counts.columns if t in cfg.redact]
    tagged = df.with_columns(counts.select(pl.col(redacted).name.prefix("__pii_")))
    result = split_by_reason(tagged, reason, detail).check(df.height, "pii")
    kept_counts = result.kept.select(pl.col(f"__pii_{t}") for t in redacted)
    # Only texts with a match are rewritten: most documents have none.
    has_pii = kept_counts.select(pl.sum_horizontal(pl.all()) > 0).to_series() if redacted else None
    texts = result.kept[TEXT]
    if has_pii is not None and has_pii.any():
        idx = has_pii.arg_true()
        texts = texts.scatter(idx, redact_pii(texts.gather(idx), redacted))
    result.kept = result.kept.drop(kept_counts.columns).with_columns(texts.alias(TEXT))
    result.excluded = result.excluded.drop(kept_counts.columns)
    for t in PATTERNS:
        found = kept_counts[f"__pii_{t}"].sum() if t in redacted else 0
        result.stats[f"pii_redacted_{t}"] = float(found)
    return result
