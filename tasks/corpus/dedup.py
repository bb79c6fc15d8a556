"""Exact and near-duplicate removal (MinHash + LSH), vectorised; no Prefect or MLflow imports.

Both filters keep the FIRST occurrence in frame order and drop later copies with reason
`dedup_exact` or `dedup_near`. Texts are compared after `normalize_text`: NFKC, lowercase,
punctuation removed, whitespace collapsed.

Near dedup, step by step (all numpy/polars over the whole corpus, no per-document loops):
1. words: the normalised text split on spaces, exploded, hashed with polars' `.hash()`;
2. shingles: each window of `shingle_words` consecutive words is combined into one 32-bit hash
   (a document shorter than the window gives one shingle of all its words);
3. signatures: per permutation `h_p(x) = a_p * x + b_p mod 2**32` and `np.minimum.reduceat` over
   document offsets; P(sig_A[p] == sig_B[p]) = Jaccard(A, B) (Broder 1997);
4. LSH: the signature is cut into `bands` x `rows`; documents sharing a band are candidates.
   (bands, rows) is chosen so the S-curve threshold (1/bands)**(1/rows) is near the target;
5. candidates are verified with the signature-estimated Jaccard >= `jaccard_threshold`, and
   verified pairs are merged into clusters (union-find); each cluster keeps its earliest doc.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from tasks.corpus.base import DOC_ID, TEXT, FilterResult, split_by_reason

# A bucket with many members (boilerplate) is compared against its first members only, which
# keeps the number of candidate pairs linear in the corpus size.
MAX_BUCKET_PARTNERS = 16
CHUNK_SHINGLES = 1 << 16  # shingles per MinHash block: keeps the working set in the CPU cache


class DedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exact: bool = True
    near: bool = True
    # Jaccard over word 5-gram shingles >= 0.8 is a near duplicate: Gopher (Rae et al. 2021,
    # App. A.1.1) removes documents over 0.8 MinHash Jaccard; Lee et al. 2022 use 5-grams, 0.8.
    jaccard_threshold: float = Field(0.8, gt=0.0, le=1.0)
    # 128 permutations: the estimate's standard error is sqrt(J(1-J)/128) ~ 0.035 at J = 0.8
    # (datasketch's default size).
    num_perm: int = Field(128, ge=2)
    shingle_words: int = Field(5, ge=1)  # space-tokenised 5-grams (Lee et al. 2022)
    seed: int = 0


# ---------------------------------------------------------------------------- normalisation


def _nfkc(texts: pl.Series) -> pl.Series:
    """NFKC only where a text has non-ASCII characters (the identity on ASCII; 4x faster)."""
    idx = texts.str.contains(r"[^\x00-\x7F]").arg_true()
    if idx.len() == 0:
        return texts
    return texts.clone().scatter(idx, texts.gather(idx).str.normalize("NFKC"))


def normalize_text(texts: pl.Series) -> pl.Series:
    """NFKC, lowercase, punctuation and symbols removed, whitespace collapsed to one space."""
    return (
        _nfkc(texts)
        .str.to_lowercase()
        .str.replace_all(r"[^\w\s]+", "")
        .str.replace_all(r"\s\s+|[^\S ]", " ")  # only runs and non-space whitespace: fewer matches
        .str.strip_chars()
    )


# ---------------------------------------------------------------------------- exact


def exact_dedup(df: pl.DataFrame, cfg: DedupConfig) -> FilterResult:
    """Drop documents whose normalised text equals an earlier document's (`dedup_exact`)."""
    if not cfg.exact:
        none = pl.lit(None, pl.String)
        return split_by_reason(df, none, none).check(df.height, "dedup_exact")
    key = normalize_text(df[TEXT])
    first_id = pl.DataFrame({"key": key, "id": df[DOC_ID]}).select(pl.col("id").first().over("key"))
    first_id = first_id.to_series()
    is_dup = ~key.is_first_distinct()
    reason = pl.when(pl.lit(is_dup)).then(pl.lit("dedup_exact"))
    detail = pl.when(pl.lit(is_dup)).then(pl.format("duplicate of {}", pl.lit(first_id)))
    return split_by_reason(df, reason, detail).check(df.height, "dedup_exact")


# ---------------------------------------------------------------------------- MinHash


def _word_hashes(texts: pl.Series, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat uint64 hash of every word, words per document); an empty text counts one word ''."""
    words = normalize_text(texts).str.split(" ")
    lengths = words.list.len().to_numpy().astype(np.int64)
    return words.explode().hash(seed).to_numpy(), lengths


def _shingle_hashes(
    word_hashes: np.ndarray, lengths: np.ndarray, k: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Combine each window of k consecutive words into one uint32: (flat hashes, shingles per doc).

    hash = high 32 bits of sum_j word[i + j] * m_j (mod 2**64), m_j random odd: order-sensitive.
    A document with n < k words gives one shingle of its n words.
    """
    mult = np.random.default_rng(seed).integers(1, 2**63, size=k, dtype=np.uint64) * 2 + 1
    n_words = len(word_hashes)
    acc = word_hashes * mult[0]  # window starting at every flat word position, across doc ends
    for j in range(1, min(k, n_words)):
        acc[: n_words - j] += word_hashes[j:] * mult[j]
    starts = np.cumsum(lengths) - lengths
    short = np.flatnonzero(lengths < k)
    if short.size:  # a short doc's window would run into the next doc: sum its own words only
        n = lengths[short]
        j = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        terms = word_hashes[np.repeat(starts[short], n) + j] * mult[j]
        acc[starts[short]] = np.add.reduceat(terms, np.cumsum(n) - n)
    local = np.arange(n_words) - np.repeat(starts, lengths)  # word index inside its document
    is_start = local <= np.repeat(np.maximum(lengths - k, 0), lengths)
    return (acc[is_start] >> np.uint64(32)).astype(np.uint32), np.maximum(lengths - k + 1, 1)


def _minhash(shingles: np.ndarray, counts: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """(n_docs, num_perm) uint32: per permutation the minimum of a_p * x + b_p mod 2**32."""
    rng = np.random.default_rng(seed + 1)
    a = (rng.integers(0, 2**32, num_perm, dtype=np.uint64) | 1).astype(np.uint32)  # odd: bijective
    b = rng.integers(0, 2**32, num_perm, dtype=np.uint64).astype(np.uint32)
    offsets = np.cumsum(counts) - counts
    sig_t = np.empty((num_perm, len(counts)), dtype=np.uint32)  # filled row by row (contiguous)
    # Blocks of whole documents, ~CHUNK_SHINGLES each, so every permutation runs in cache.
    bounds = np.searchsorted(offsets, np.arange(0, len(shingles), CHUNK_SHINGLES))
    bounds = np.unique(np.append(bounds, len(counts)))
    for d0, d1 in zip(bounds[:-1], bounds[1:]):
        s0, s1 = offsets[d0], offsets[d1 - 1] + counts[d1 - 1]
        x, starts = shingles[s0:s1], offsets[d0:d1] - s0
        tmp = np.empty_like(x)
        for p in range(num_perm):
            np.multiply(x, a[p], out=tmp)
            tmp += b[p]
            sig_t[p, d0:d1] = np.minimum.reduceat(tmp, starts)
    return sig_t.T


def minhash_signatures(texts: pl.Series | list[str], cfg: DedupConfig) -> np.ndarray:
    """MinHash signatures (n_docs, num_perm) uint32 of word `shingle_words`-gram shingles."""
    texts = pl.Series(TEXT, texts, dtype=pl.String) if isinstance(texts, list) else texts
    if texts.len() == 0:
        return np.empty((0, cfg.num_perm), dtype=np.uint32)
    words, lengths = _word_hashes(texts, cfg.seed)
    shingles, counts = _shingle_hashes(words, lengths, cfg.shingle_words, cfg.seed)
    return _minhash(shingles, counts, cfg.num_perm, cfg.seed)


# ---------------------------------------------------------------------------- LSH + clusters


def lsh_bands(threshold: float, num_perm: int, tolerance: float = 0.02) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm and S-curve threshold (1/bands)**(1/rows) near
    `threshold`: among options within `tolerance` the one using the most permutations (the
    steepest S-curve, fewest misses just above the threshold), else the nearest option."""
    options = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]

    def gap(br: tuple[int, int]) -> float:
        return abs((1 / br[0]) ** (1 / br[1]) - threshold)

    close = [br for br in options if gap(br) <= tolerance]
    if not close:
        return min(options, key=gap)
    return min(close, key=lambda br: (-br[0] * br[1], gap(br)))


def _candidate_pairs(
    sig: np.ndarray, bands: int, rows: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of documents that share at least one band (deduplicated)."""
    n = sig.shape[0]
    mult = np.random.default_rng(seed + 2).integers(1, 2**63, size=rows, dtype=np.uint64) * 2 + 1
    keys = np.stack(  # (bands, n): one 64-bit key per band, a random linear hash of its rows
        [
            (sig[:, b * rows : (b + 1) * rows].astype(np.uint64) * mult).sum(axis=1)
            for b in range(bands)
        ]
    )
    band = np.repeat(np.arange(bands), n)
    docs = np.tile(np.arange(n), bands)
    keys = keys.ravel()
    order = np.lexsort((docs, keys, band))
    band, keys, docs = band[order], keys[order], docs[order]
    new_group = np.ones(len(docs), dtype=bool)
    new_group[1:] = (band[1:] != band[:-1]) | (keys[1:] != keys[:-1])
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(docs)), 0))
    # Each member pairs with the (at most MAX_BUCKET_PARTNERS) earliest members of its bucket.
    n_partners = np.minimum(np.arange(len(docs)) - group_start, MAX_BUCKET_PARTNERS)
    member = np.repeat(np.arange(len(docs)), n_partners)
    nth = np.arange(len(member)) - np.repeat(np.cumsum(n_partners) - n_partners, n_partners)
    pair = np.unique(docs[group_start[member] + nth].astype(np.int64) * n + docs[member])
    return pair // n, pair % n


def _signature_jaccard(sig: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Fraction of equal signature entries for each pair (i[k], j[k])."""
    out = np.empty(len(i), dtype=np.float64)
    for s in range(0, len(i), 8192):
        out[s : s + 8192] = (sig[i[s : s + 8192]] == sig[j[s : s + 8192]]).mean(axis=1)
    return out


def _cluster_roots(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Union-find over edges (i, j), vectorised: each node's root is its cluster's smallest index.

    Min-label propagation along edges with pointer jumping (path compression) until stable.
    """
    root = np.arange(n)
    while True:
        low = np.minimum(root[i], root[j])
        before = root.copy()
        np.minimum.at(root, i, low)
        np.minimum.at(root, j, low)
        root = root[root]
        if np.array_equal(root, before):
            return root


def near_dedup(df: pl.DataFrame, cfg: DedupConfig) -> FilterResult:
    """Drop documents in a MinHash-LSH cluster after its earliest document (`dedup_near`)."""
    no_reason = pl.lit(None, pl.String)
    if not cfg.near or df.height < 2:
        return split_by_reason(df, no_reason, no_reason).check(df.height, "dedup_near")
    sig = minhash_signatures(df[TEXT], cfg)
    bands, rows = lsh_bands(cfg.jaccard_threshold, cfg.num_perm)
    i, j = _candidate_pairs(sig, bands, rows, cfg.seed)
    keep_edge = _signature_jaccard(sig, i, j) >= cfg.jaccard_threshold
    root = _cluster_roots(df.height, i[keep_edge], j[keep_edge])
    dropped = root != np.arange(df.height)
    est = np.full(df.height, np.nan)
    est[dropped] = _signature_jaccard(sig, np.flatnonzero(dropped), root[dropped])
    root_id = df[DOC_ID].gather(root)
    reason = pl.when(pl.lit(dropped)).then(pl.lit("dedup_near"))
    detail = pl.when(pl.lit(dropped)).then(
        pl.format("duplicate of {} (jaccard~{})", pl.lit(root_id), pl.lit(est).round(2))
    )
    result = split_by_reason(df, reason, detail).check(df.height, "dedup_near")
    result.stats |= {
        "near_bands": float(bands),
        "near_rows": float(rows),
        "near_candidate_pairs": float(len(i)),
        "near_verified_pairs": float(keep_edge.sum()),
        "near_clusters": float(len(np.unique(root[dropped]))),
    }
    return result
