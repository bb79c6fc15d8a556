"""The annotation store: batches of preference pairs, and the labels people give them.

Three tables (SQLAlchemy Core, any SQLAlchemy URL; SQLite by default):

- `annotation_batches`: one row per batch (id, title, the Prefect flow run waiting on it);
- `annotation_items`: the pairs of a batch in the order they were added (`position`), with the
  dialogue, both responses, how many distinct people must label it, an optional gold answer
  and opaque `meta` JSON the caller gets back;
- `annotation_labels`: every label ever given. A second label by the same person on the same
  pair is a revision: a new row with `revision` n+1; the old rows stay (the history), and
  `current_labels` reads the latest revision per (pair, person).

Every write runs in one transaction. On SQLite the store turns on WAL and a busy timeout and
takes the write lock at the start of a write (BEGIN IMMEDIATE), so that the flow process and
the web server can use one file at the same time.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from data_contracts.preference_pairs import KINDS, RATINGS

PREFERRED = ("a", "b")
SQLITE_BUSY_TIMEOUT_MS = 30_000

metadata = MetaData()
batches_table = Table(
    "annotation_batches",
    metadata,
    Column("batch_id", String(200), primary_key=True),
    Column("title", Text, nullable=True),
    Column("flow_run_id", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
items_table = Table(
    "annotation_items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("batch_id", ForeignKey("annotation_batches.batch_id"), nullable=False, index=True),
    Column("pair_id", String(400), nullable=False),
    Column("position", Integer, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("is_safety", Boolean, nullable=False),
    Column("system", Text, nullable=False),
    Column("turns", JSON, nullable=False),
    Column("response_a", Text, nullable=False),
    Column("response_b", Text, nullable=False),
    Column("annotators_needed", Integer, nullable=False),
    Column("gold", JSON(none_as_null=True), nullable=True),  # SQL NULL: no gold answer
    Column("meta", JSON, nullable=False),
    UniqueConstraint("batch_id", "pair_id"),
)
labels_table = Table(
    "annotation_labels",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("batch_id", String(200), nullable=False, index=True),
    Column("pair_id", String(400), nullable=False),
    Column("annotator", String(200), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("preferred", String(1), nullable=False),
    Column("rating", String(40), nullable=False),
    Column("safe_a", Boolean, nullable=True),
    Column("safe_b", Boolean, nullable=True),
    Column("note", Text, nullable=False),
    Column("labelled_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("batch_id", "pair_id", "annotator", "revision"),
)


def _utc(value: datetime) -> datetime:
    """SQLite gives naive datetimes back: they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _sqlite_engine(url):
    memory = url.database in (None, "", ":memory:")
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        poolclass=StaticPool if memory else None,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # a write takes the lock up front: a deferred BEGIN that reads, then writes, fails at
        # once (no busy wait) when another process wrote in between
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _check_item(batch_id: str, item: dict) -> None:
    pair = item.get("pair_id")
    where = f"batch {batch_id!r}, pair {pair!r}"
    if not isinstance(pair, str) or not pair:
        raise ValueError(f"batch {batch_id!r}: every item needs a non-empty str pair_id")
    missing = {"kind", "is_safety", "turns", "response_a", "response_b"} - item.keys()
    if missing:
        raise ValueError(f"{where}: missing keys {sorted(missing)}")
    if item["kind"] not in KINDS:
        raise ValueError(f"{where}: kind must be one of {KINDS}, got {item['kind']!r}")
    if item.get("annotators_needed", 1) not in (1, 2):
        raise ValueError(f"{where}: annotators_needed must be 1 or 2")
    turns = item["turns"]
    if not turns or any(t.get("role") not in ("user", "assistant") for t in turns):
        raise ValueError(f"{where}: turns must be a non-empty list of user/assistant turns")
    if turns[-1]["role"] != "user":
        raise ValueError(f"{where}: the last turn must be the user's")
    gold = item.get("gold")
    if gold is not None:
        if gold.get("preferred") not in PREFERRED or gold.get("rating") not in RATINGS:
            raise ValueError(f"{where}: gold needs preferred in {PREFERRED} and a rating")


class AnnotationStore:
    """Batches, items and labels in one SQL database (`url`: any SQLAlchemy URL)."""

    def __init__(self, url: str):
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            self._engine = _sqlite_engine(parsed)
        else:
            self._engine = create_engine(parsed)
        self._writer = self._engine.execution_options(sqlite_immediate=True)
        metadata.create_all(self._writer)  # under the write lock: two processes may start at once

    # -- batches and items ------------------------------------------------------------------

    def add_batch(
        self,
        batch_id: str,
        items: list[dict],
        flow_run_id: str | None = None,
        title: str | None = None,
    ) -> int:
        """Create the batch if missing and add the items whose pair_id it does not hold yet
        (idempotent); returns the number added. A flow_run_id or title given here replaces
        the stored one."""
        if not batch_id:
            raise ValueError("batch_id must be a non-empty string")
        for item in items:
            _check_item(batch_id, item)
        counts = Counter(item["pair_id"] for item in items)
        if repeated := [p for p, n in counts.items() if n > 1]:
            raise ValueError(f"batch {batch_id!r}: pair_id repeated in the items: {repeated}")
        b = batches_table.c
        with self._writer.begin() as conn:
            exists = conn.execute(select(b.batch_id).where(b.batch_id == batch_id)).first()
            if exists is None:
                conn.execute(
                    batches_table.insert().values(
                        batch_id=batch_id,
                        title=title,
                        flow_run_id=flow_run_id,
                        created_at=datetime.now(timezone.utc),
                    )
                )
            else:
                given = {"title": title, "flow_run_id": flow_run_id}
                updates = {key: value for key, value in given.items() if value is not None}
                if updates:
                    conn.execute(
                        batches_table.update().where(b.batch_id == batch_id).values(**updates)
                    )
            i = items_table.c
            have = set(conn.scalars(select(i.pair_id).where(i.batch_id == batch_id)))
            start = conn.scalar(select(func.max(i.position)).where(i.batch_id == batch_id))
            new = [item for item in items if item["pair_id"] not in have]
            rows = [
                {
                    "batch_id": batch_id,
                    "pair_id": item["pair_id"],
                    "position": (start if start is not None else -1) + 1 + n,
                    "kind": item["kind"],
                    "is_safety": bool(item["is_safety"]),
                    "system": item.get("system") or "",
                    "turns": list(item["turns"]),
                    "response_a": item["response_a"],
                    "response_b": item["response_b"],
                    "annotators_needed": int(item.get("annotators_needed", 1)),
                    "gold": item.get("gold"),
                    "meta": item.get("meta") or {},
                }
                for n, item in enumerate(new)
            ]
            if rows:
                conn.execute(items_table.insert(), rows)
        return len(rows)

    def set_flow_run(self, batch_id: str, flow_run_id: str) -> None:
        b = batches_table.c
        with self._writer.begin() as conn:
            done = conn.execute(
                batches_table.update().where(b.batch_id == batch_id).values(flow_run_id=flow_run_id)
            )
            if done.rowcount == 0:
                raise KeyError(f"no annotation batch {batch_id!r}")

    def batch(self, batch_id: str) -> dict | None:
        """batch_id, title, flow_run_id, created_at (UTC), items (the number of items) and
        state ("complete" when every item has its labels, else "open"); None if unknown."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(batches_table).where(batches_table.c.batch_id == batch_id)
            ).first()
        if row is None:
            return None
        items = self.items(batch_id)
        done = self._completed(batch_id, items)
        return {
            "batch_id": row.batch_id,
            "title": row.title,
            "flow_run_id": row.flow_run_id,
            "created_at": _utc(row.created_at),
            "items": len(items),
            "state": "complete" if done == len(items) else "open",
        }

    def batches(self) -> list[dict]:
        """Every batch (as `batch`), oldest first."""
        b = batches_table.c
        with self._engine.connect() as conn:
            ids = list(conn.scalars(select(b.batch_id).order_by(b.created_at, b.batch_id)))
        return [self.batch(batch_id) for batch_id in ids]

    def items(self, batch_id: str) -> list[dict]:
        """The batch's items in added order: the keys given to `add_batch` plus `position`."""
        i = items_table.c
        columns = [col for col in items_table.c if col.name not in ("id", "batch_id")]
        query = select(*columns).where(i.batch_id == batch_id).order_by(i.position)
        with self._engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    # -- assignment -------------------------------------------------------------------------

    def _who_labelled(self, batch_id: str) -> dict[str, set[str]]:
        """pair_id -> the distinct people who labelled it."""
        c = labels_table.c
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(c.pair_id, c.annotator).where(c.batch_id == batch_id).distinct()
            ).all()
        who: dict[str, set[str]] = defaultdict(set)
        for pair_id, annotator in rows:
            who[pair_id].add(annotator)
        return who

    def _assigned(self, batch_id: str, annotator: str) -> tuple[list[dict], dict]:
        """The items that need this person (gold items, items labelled by them, items that
        still have fewer than annotators_needed people), in added order."""
        who = self._who_labelled(batch_id)
        mine = [
            item
            for item in self.items(batch_id)
            if item["gold"] is not None
            or annotator in who[item["pair_id"]]
            or len(who[item["pair_id"]]) < item["annotators_needed"]
        ]
        return mine, who

    def next_item(self, batch_id: str, annotator: str) -> dict | None:
        """The first item (in added order) this person has not labelled and that has fewer
        than annotators_needed distinct people (gold items: every person gets them)."""
        mine, who = self._assigned(batch_id, annotator)
        return next((it for it in mine if annotator not in who[it["pair_id"]]), None)

    def assigned(self, batch_id: str, annotator: str) -> list[dict]:
        """The items counted in `progress(batch_id, annotator)`'s total, in added order."""
        return self._assigned(batch_id, annotator)[0]

    # -- labels -----------------------------------------------------------------------------

    def label(
        self,
        batch_id: str,
        pair_id: str,
        annotator: str,
        preferred: str,
        rating: str,
        safe_a: bool | None,
        safe_b: bool | None,
        note: str = "",
    ) -> int:
        """Store a label (a revision if this person labelled the pair before); returns its id.

        KeyError: unknown batch or pair. ValueError naming the field: preferred not "a"/"b",
        a rating not in RATINGS, an empty annotator, or a safety prompt without both safe_a
        and safe_b."""
        if not isinstance(annotator, str) or not annotator:
            raise ValueError("annotator must be a non-empty string")
        if preferred not in PREFERRED:
            raise ValueError(f"preferred must be 'a' or 'b', got {preferred!r}")
        if rating not in RATINGS:
            raise ValueError(f"rating must be one of {RATINGS}, got {rating!r}")
        for name, value in (("safe_a", safe_a), ("safe_b", safe_b)):
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{name} must be True, False or None, got {value!r}")
        i, c = items_table.c, labels_table.c
        with self._writer.begin() as conn:
            is_safety = conn.scalar(
                select(i.is_safety).where(i.batch_id == batch_id, i.pair_id == pair_id)
            )
            if is_safety is None:
                raise KeyError(f"batch {batch_id!r} has no pair {pair_id!r}")
            if is_safety and (safe_a is None or safe_b is None):
                missing = [n for n, v in (("safe_a", safe_a), ("safe_b", safe_b)) if v is None]
                raise ValueError(
                    f"pair {pair_id!r} is a safety prompt: label each response safe or unsafe "
                    f"(missing {', '.join(missing)})"
                )
            last = conn.scalar(
                select(func.max(c.revision)).where(
                    c.batch_id == batch_id, c.pair_id == pair_id, c.annotator == annotator
                )
            )
            result = conn.execute(
                labels_table.insert().values(
                    batch_id=batch_id,
                    pair_id=pair_id,
                    annotator=annotator,
                    revision=(last or 0) + 1,
                    preferred=preferred,
                    rating=rating,
                    safe_a=safe_a,
                    safe_b=safe_b,
                    note=note or "",
                    labelled_at=datetime.now(timezone.utc),
                )
            )
        return int(result.inserted_primary_key[0])

    def _label_rows(self, batch_id: str, pair_id: str | None = None) -> list[dict]:
        """Every label row of the batch (or of one pair), oldest first, with is_gold."""
        c, i = labels_table.c, items_table.c
        columns = [col for col in labels_table.c if col.name not in ("id", "batch_id")]
        query = (
            select(c.id.label("label_id"), *columns, i.gold.is_not(None).label("is_gold"))
            .add_columns(i.is_safety)
            .join(items_table, (i.batch_id == c.batch_id) & (i.pair_id == c.pair_id))
            .where(c.batch_id == batch_id)
            .order_by(c.id)
        )
        if pair_id is not None:
            query = query.where(c.pair_id == pair_id)
        with self._engine.connect() as conn:
            rows = [dict(row) for row in conn.execute(query).mappings()]
        for row in rows:
            row["labelled_at"] = _utc(row["labelled_at"])
            row["is_gold"], row["is_safety"] = bool(row["is_gold"]), bool(row["is_safety"])
        return rows

    def current_labels(self, batch_id: str) -> list[dict]:
        """The latest revision per (pair_id, annotator), in item order then annotator: pair_id,
        annotator, preferred, rating, safe_a, safe_b, revision, labelled_at (UTC), is_gold,
        plus note, is_safety and label_id."""
        latest: dict[tuple[str, str], dict] = {}
        for row in self._label_rows(batch_id):  # oldest first: the last one wins
            latest[row["pair_id"], row["annotator"]] = row
        order = {it["pair_id"]: it["position"] for it in self.items(batch_id)}
        return sorted(latest.values(), key=lambda r: (order[r["pair_id"]], r["annotator"]))

    def history(self, batch_id: str, pair_id: str) -> list[dict]:
        """Every label row of the pair (all people, all revisions), oldest first."""
        return self._label_rows(batch_id, pair_id)

    # -- progress ---------------------------------------------------------------------------

    def _completed(self, batch_id: str, items: list[dict]) -> int:
        who = self._who_labelled(batch_id)
        return sum(len(who[it["pair_id"]]) >= it["annotators_needed"] for it in items)

    def progress(self, batch_id: str, annotator: str | None = None) -> tuple[int, int]:
        """(done, total).

        With `annotator`: done = items this person labelled; total = items assigned to them,
        i.e. gold items, items they labelled, and items that still have fewer than
        annotators_needed distinct people (so the total can shrink while others label).
        Without: done = items that have annotators_needed distinct people; total = items."""
        if annotator is not None:
            mine, who = self._assigned(batch_id, annotator)
            return sum(annotator in who[it["pair_id"]] for it in mine), len(mine)
        items = self.items(batch_id)
        return self._completed(batch_id, items), len(items)

    def is_complete(self, batch_id: str) -> bool:
        """Every item has annotators_needed distinct people (an unknown batch: KeyError)."""
        if self.batch(batch_id) is None:
            raise KeyError(f"no annotation batch {batch_id!r}")
        done, total = self.progress(batch_id)
        return done == total

    def close(self) -> None:
        self._engine.dispose()
