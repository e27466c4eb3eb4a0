"""SQL for petitions and signatures. Functions take a connection so callers own the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
from groundswell_contracts.events import BaseEvent
from groundswell_runtime.outbox import outbox_row

from groundswell_signing.domain.petitions import SLUG, Petition
from groundswell_signing.domain.rate_limits import Hit

SCHEMA = "signing"

_PETITION_COLUMNS = (
    "id, slug, title, target, body, goal, requires_confirmation, organiser_email, closes_at, "
    "status, version, created_at, milestones, auto_raise_goal, cors_origins"
)


def _petition(row: asyncpg.Record) -> Petition:
    fields: dict[str, Any] = dict(row)
    return Petition(**fields)


async def get_petition(
    conn: asyncpg.Connection, slug: str, *, for_update: bool = False
) -> Petition | None:
    if not SLUG.match(slug):
        return None  # no such petition can exist; and PostgreSQL rejects some bytes (NUL)
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_PETITION_COLUMNS} FROM signing.petitions WHERE slug = $1{lock}", slug
    )
    return _petition(row) if row else None


async def list_petitions(conn: asyncpg.Connection) -> list[Petition]:
    rows = await conn.fetch(
        f"SELECT {_PETITION_COLUMNS} FROM signing.petitions ORDER BY created_at"
    )
    return [_petition(r) for r in rows]


async def insert_petition(conn: asyncpg.Connection, fields: dict[str, Any]) -> Petition | None:
    """None when the slug is taken."""
    columns = ", ".join(fields)
    placeholders = ", ".join(f"${i}" for i in range(1, len(fields) + 1))
    row = await conn.fetchrow(
        f"INSERT INTO signing.petitions ({columns}) VALUES ({placeholders}) "
        f"ON CONFLICT (slug) DO NOTHING RETURNING {_PETITION_COLUMNS}",
        *fields.values(),
    )
    return _petition(row) if row else None


async def update_petition(
    conn: asyncpg.Connection, petition_id: uuid.UUID, changes: dict[str, Any]
) -> Petition:
    assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
    row = await conn.fetchrow(
        f"UPDATE signing.petitions SET {assignments}, version = version + 1, updated_at = now() "
        f"WHERE id = $1 RETURNING {_PETITION_COLUMNS}",
        petition_id,
        *changes.values(),
    )
    assert row is not None
    return _petition(row)


async def prune_rate_counters(pool: asyncpg.Pool, now: int) -> int:
    """Delete the counters of rate windows that ended before `now` (epoch seconds);
    returns how many. One statement, so one sequential scan (window_end has no index:
    migration 007): in batches each batch would scan again. Nobody else touches an ended
    window's row, and the table is unlogged, so a large delete holds up no one."""
    status = await pool.execute("DELETE FROM signing.rate_counters WHERE window_end < $1", now)
    return int(status.split()[-1])


# A lag written this long ago or more is not believed: its relay stopped writing.
CONSUMER_LAG_FRESH_SECONDS = 3


async def record_consumer_lag(
    pool: asyncpg.Pool, consumer: str, relay: str, seconds: float | None
) -> None:
    """`relay`'s latest reading of `consumer`'s lag (None: cannot tell), and the rows of
    relays that stopped writing a minute ago gone. Not waited for on disk: a reading lost
    in a crash is replaced within a second."""
    await pool.execute(
        "WITH gone AS (DELETE FROM signing.consumer_lag "
        " WHERE measured_at < clock_timestamp() - interval '1 minute') "
        "INSERT INTO signing.consumer_lag (consumer, relay, seconds, measured_at) "
        "SELECT $1, $2, $3, clock_timestamp() "
        "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS unflushed "
        "ON CONFLICT (consumer, relay) DO UPDATE "
        "SET seconds = excluded.seconds, measured_at = excluded.measured_at",
        consumer,
        relay,
        seconds,
    )


async def read_backlog(conn: asyncpg.Connection) -> tuple[int | None, float, float]:
    """(the oldest unpublished outbox row's id, its age in seconds, the worst recent lag
    any relay read of the watched consumers, in seconds), both 0 when there is nothing;
    one round trip."""
    row = await conn.fetchrow(
        "SELECT oldest.id, "
        "coalesce(extract(epoch FROM clock_timestamp() - oldest.created_at)::float8, 0) AS age, "
        "(SELECT coalesce(max(seconds), 0) FROM signing.consumer_lag "
        f" WHERE measured_at > clock_timestamp() - interval '{CONSUMER_LAG_FRESH_SECONDS} s') "
        "AS lag "
        "FROM (SELECT 1) AS one LEFT JOIN LATERAL "
        "(SELECT id, created_at FROM signing.outbox ORDER BY id LIMIT 1) AS oldest ON true"
    )
    assert row is not None
    return row["id"], float(row["age"]), float(row["lag"])


# The columns an attempt's row (a dict) gives, those of the record type
# `signature_attempt` (migration 010); the table's defaults fill the others.
SIGNATURE_COLUMNS = (
    "id",
    "petition_id",
    "name",
    "email",
    "email_canonical",
    "email_domain",
    "postcode",
    "postcode_area",
    "country",
    "contact_consent",
    "consent_wording_version",
    "consent_at",
    "source",
    "ref",
    "ref_channel",
    "share_code",
    "initial_status",
    "confirmation_token_hash",
    "confirmation_expires_at",
    "withdraw_token_hash",
    "ip",
    "created_at",
    "data_key",
    "leaderboard_consent",
)
# For the connections that run `write_signatures`: its parts are CTEs and arrays, which
# the planner cannot count (it guesses 1-10 rows each), so it joined them by nested
# loops, one pass over a CTE for each row of another: measured at 1,000 signatures/s,
# batches of a few hundred took 0.4-0.8 s, nearly all in two such joins. Without nested
# loops the same joins are hashed. Only statements that need no index lookup inside a
# join run on those connections.
WRITER_SETTINGS = {"enable_nestloop": "off"}
_STORED = {  # the address goes as text (migration 010); and what a row over a limit is
    # stored with when the campaign flags instead
    "ip": "a.ip::inet",
    "initial_status": "CASE WHEN a.over_limit THEN 'fraudulent' ELSE a.initial_status END",
    "confirmation_token_hash": "CASE WHEN a.over_limit THEN NULL "
    "ELSE a.confirmation_token_hash END",
    "confirmation_expires_at": "CASE WHEN a.over_limit THEN NULL "
    "ELSE a.confirmation_expires_at END",
}
# One statement, so one implicit transaction and one round trip for a whole batch. Its
# parameters are three arrays of records (migrations 008 and 010 say why): the attempts
# (`signature_attempt`: the columns an attempt gives; the others take the table's
# defaults), their rate-limit hits and their outbox events. Its parts, in
# order: the attempts; which of their petitions take signatures (as committed: the cache
# may lag); the rate counters, counting only open petitions' attempts, one atomic upsert
# each, locked in key order so concurrent batches cannot deadlock on them: first the
# networks' own (which keep their window's first attempt), then the others, without the
# per-petition hits of an attempt that is its network window's first; each hit's ordinal
# in its window (`domain/rate_limits.py` says why this is exact, and why a per-petition
# ordinal counts the network window's first attempt when it was on the same petition
# and in the same window; `RateCounters` there is the same rule in Python, and a test
# holds the two to each other); the signatures admitted (or, flagging, all of them,
# over-limit ones as fraudulent), in (petition, canonical email) order so concurrent
# batches take the unique index's locks in one order; the outbox rows of the signatures
# actually inserted (the unique constraint decides duplicates, also within the batch),
# in the variant for the status it was stored with (a flagged row's events are those of
# a fraudulent one). Data-modifying CTEs always run to completion. The relay is woken
# after the commit, not by a NOTIFY in it (`groundswell_runtime.outbox.RelayWakeup` says
# why).
WRITE_SIGNATURES = f"""
WITH attempt AS (
    SELECT a.*, a.ordinality AS n
    FROM unnest($1::signing.signature_attempt[]) WITH ORDINALITY AS a
), open AS (
    SELECT id FROM signing.petitions  -- by the primary key, not a join: see WRITER_SETTINGS
    WHERE id = ANY(ARRAY(SELECT DISTINCT petition_id FROM attempt)) AND status = 'open'
        AND (closes_at IS NULL OR closes_at > $2)
), hit AS (
    SELECT h.*, a.petition_id FROM unnest($3::signing.counter_hit[])
        WITH ORDINALITY AS h(attempt, key, window_start, window_end, lim, kind, at, n)
    JOIN attempt a ON a.n = h.attempt
    WHERE a.petition_id IN (SELECT id FROM open)
), network AS (
    INSERT INTO signing.rate_counters AS c
        (key, window_start, window_end, hits, first_petition, first_at)
    SELECT key, window_start, max(window_end), count(*)::int,
        (array_agg(petition_id ORDER BY n))[1], (array_agg(at ORDER BY n))[1]
    FROM hit WHERE kind = 'network'
    GROUP BY key, window_start ORDER BY key, window_start
    ON CONFLICT (key, window_start) DO UPDATE SET hits = c.hits + EXCLUDED.hits
    RETURNING key, window_start, hits, first_petition, first_at
), network_ordinal AS (
    SELECT h.attempt, h.lim, h.window_end, c.first_petition, c.first_at,
        c.hits - count(*) OVER w + row_number() OVER (w ORDER BY h.n) AS ordinal
    FROM hit h JOIN network c USING (key, window_start)
    WHERE h.kind = 'network'
    WINDOW w AS (PARTITION BY h.key, h.window_start)
), later AS (
    SELECT h.*, h.kind = 'petition' AND o.first_petition = h.petition_id
            AND o.first_at >= h.window_start AND o.first_at < h.window_end AS after_first
    FROM hit h LEFT JOIN network_ordinal o ON o.attempt = h.attempt
    WHERE h.kind = 'plain' OR h.kind = 'petition' AND o.ordinal IS DISTINCT FROM 1
), counted AS (
    INSERT INTO signing.rate_counters AS c (key, window_start, window_end, hits)
    SELECT key, window_start, max(window_end), count(*)::int FROM later
    GROUP BY key, window_start ORDER BY key, window_start
    ON CONFLICT (key, window_start) DO UPDATE SET hits = c.hits + EXCLUDED.hits
    RETURNING key, window_start, hits
), ordinal AS (
    SELECT attempt, lim, window_end, ordinal FROM network_ordinal
    UNION ALL
    SELECT h.attempt, h.lim, h.window_end, 1  -- a network window's first attempt
    FROM hit h JOIN network_ordinal o ON o.attempt = h.attempt AND o.ordinal = 1
    WHERE h.kind = 'petition'
    UNION ALL
    SELECT h.attempt, h.lim, h.window_end,
        c.hits - count(*) OVER w + row_number() OVER (w ORDER BY h.n)
            + CASE WHEN h.after_first THEN 1 ELSE 0 END
    FROM later h JOIN counted c USING (key, window_start)
    WINDOW w AS (PARTITION BY h.key, h.window_start)
), refused AS (
    SELECT attempt, max(window_end) AS until FROM ordinal
    WHERE ordinal > lim GROUP BY attempt
), admitted AS (
    SELECT a.*, r.attempt IS NOT NULL AS over_limit
    FROM attempt a LEFT JOIN refused r ON r.attempt = a.n
    WHERE a.petition_id IN (SELECT id FROM open) AND ($4 OR r.attempt IS NULL)
), inserted AS (
    INSERT INTO signing.signatures ({", ".join(SIGNATURE_COLUMNS)})
    SELECT {", ".join(_STORED.get(c, f"a.{c}") for c in SIGNATURE_COLUMNS)}
    FROM admitted a ORDER BY a.petition_id, a.email_canonical
    ON CONFLICT ON CONSTRAINT one_signature_per_person DO NOTHING
    RETURNING id, initial_status = 'fraudulent' AS fraudulent
), published AS (
    INSERT INTO signing.outbox
        (event_id, event_type, topic, message_key, payload, correlation_id)
    SELECT e.event_id, e.event_type, e.topic, e.message_key, e.payload, e.correlation_id
    FROM unnest($5::signing.signature_event[])
        WITH ORDINALITY
        AS e(signature_id, fraudulent, event_id, event_type, topic, message_key, payload,
            correlation_id, n)
    JOIN inserted i ON i.id = e.signature_id AND i.fraudulent = e.fraudulent
    ORDER BY e.n
)
SELECT a.n, a.petition_id IN (SELECT id FROM open) AS open, r.until,
    a.id IN (SELECT id FROM inserted) AS inserted
FROM attempt a LEFT JOIN refused r ON r.attempt = a.n
ORDER BY a.n
"""


@dataclass(frozen=True)
class SignatureBatch:
    """What `WRITE_SIGNATURES` writes. `rows` hold `SIGNATURE_COLUMNS`; `events` are
    (signature id, for the row stored as fraudulent?, event, correlation id): built before
    anyone knows which rows go in, each goes out only if its signature is inserted with
    that status."""

    rows: Sequence[Mapping[str, Any]]
    hits: Sequence[Sequence[Hit]]
    now: datetime
    flag_over_limit: bool
    events: Sequence[tuple[uuid.UUID, bool, BaseEvent, str | None]]

    def arguments(self) -> list[Any]:
        """The statement's parameters: the rows, the hits (each with the ordinal of the
        attempt it belongs to) and the events, as arrays of records."""
        return [
            self.rows,  # asyncpg makes each mapping a `signature_attempt` by name
            self.now,
            [(n, *hit) for n, attempt in enumerate(self.hits, 1) for hit in attempt],
            self.flag_over_limit,
            [
                (signature_id, fraudulent, *outbox_row(event, cid))
                for signature_id, fraudulent, event, cid in self.events
            ],
        ]


class Written(NamedTuple):
    """What became of one attempt of a batch (a named tuple: one a signature)."""

    open: bool  # its petition took signatures
    over_limit_until: int | None  # over a rate limit: when the window that refused it ends
    inserted: bool  # stored as a new signature (else a duplicate, or not stored at all)


async def write_signatures(conn: asyncpg.Connection, batch: SignatureBatch) -> list[Written]:
    """Write a batch of signatures in ONE statement (its own transaction, so not within a
    caller's): the rate counters, the signatures, and the outbox events of those inserted.
    One `Written` per row, in order."""
    written = await conn.fetch(WRITE_SIGNATURES, *batch.arguments())
    return [Written(r["open"], r["until"], r["inserted"]) for r in written]


async def signatures_by_people(
    conn: asyncpg.Connection, people: list[tuple[uuid.UUID, str]]
) -> dict[tuple[uuid.UUID, str], asyncpg.Record]:
    """The stored signature of each (petition, canonical email). No join, so it runs well
    on the writer's connections too (`WRITER_SETTINGS`): the unique index is scanned for
    every pair of the two lists, and pairs nobody asked for are dropped here."""
    if not people:
        return {}
    rows = await conn.fetch(
        "SELECT id, petition_id, email_canonical, share_code, data_key "
        "FROM signing.signatures "
        "WHERE petition_id = ANY($1::uuid[]) AND email_canonical = ANY($2::text[])",
        list({p for p, _ in people}),
        list({e for _, e in people}),
    )
    wanted = set(people)
    return {key: r for r in rows if (key := (r["petition_id"], r["email_canonical"])) in wanted}


async def confirm_by_token(
    conn: asyncpg.Connection, token_hash: bytes, now: datetime
) -> asyncpg.Record | None:
    # Clearing the hash makes the token single-use. A closed petition takes no more
    # confirmations: its count was final when it closed.
    return await conn.fetchrow(
        "UPDATE signing.signatures s SET confirmed_at = $2, confirmation_token_hash = NULL, "
        "replay_token_hash = NULL "
        "FROM signing.petitions p "
        "WHERE (s.confirmation_token_hash = $1 OR s.replay_token_hash = $1) "
        "AND s.confirmation_expires_at > $2 "
        "AND s.withdrawn_at IS NULL AND s.invalidated_at IS NULL AND p.id = s.petition_id "
        "AND p.status = 'open' AND (p.closes_at IS NULL OR p.closes_at > $2) "
        "RETURNING s.id, s.petition_id, s.share_code, p.slug, p.title",
        token_hash,
        now,
    )


async def pending_by_token(conn: asyncpg.Connection, token_hash: bytes, now: datetime) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT true FROM signing.signatures "
            "WHERE (confirmation_token_hash = $1 OR replay_token_hash = $1) "
            "AND confirmation_expires_at > $2 AND withdrawn_at IS NULL AND invalidated_at IS NULL",
            token_hash,
            now,
        )
    )


async def withdraw_by_token(
    conn: asyncpg.Connection, token_hash: bytes, now: datetime
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "UPDATE signing.signatures s SET withdrawn_at = $2, confirmation_token_hash = NULL, "
        "replay_token_hash = NULL "
        "FROM signing.petitions p "
        "WHERE s.withdraw_token_hash = $1 AND s.withdrawn_at IS NULL AND p.id = s.petition_id "
        "RETURNING s.id, s.petition_id, p.slug, p.title",
        token_hash,
        now,
    )


async def withdrawable_by_token(
    conn: asyncpg.Connection, token_hash: bytes
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT p.slug, p.title FROM signing.signatures s JOIN signing.petitions p "
        "ON p.id = s.petition_id WHERE s.withdraw_token_hash = $1 AND s.withdrawn_at IS NULL",
        token_hash,
    )


async def invalidate(
    conn: asyncpg.Connection,
    petition_id: uuid.UUID,
    reason: str,
    *,
    ip_network: str | None,
    email_domain: str | None,
    postcode: str | None,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
) -> list[uuid.UUID]:
    rows = await conn.fetch(
        "UPDATE signing.signatures SET invalidated_at = $2, invalidation_reason = $3 "
        "WHERE petition_id = $1 AND invalidated_at IS NULL AND withdrawn_at IS NULL "
        "AND ($4::cidr IS NULL OR ip <<= $4::cidr) "
        "AND ($5::text IS NULL OR email_domain = lower($5)) "
        "AND ($6::text IS NULL OR replace(postcode, ' ', '') = replace(upper($6), ' ', '')) "
        "AND ($7::timestamptz IS NULL OR created_at >= $7) "
        "AND ($8::timestamptz IS NULL OR created_at < $8) "
        "RETURNING id",
        petition_id,
        now,
        reason,
        ip_network,
        email_domain,
        postcode,
        since,
        until,
    )
    return [r["id"] for r in rows]


async def export_rows(conn: asyncpg.Connection, petition_id: uuid.UUID) -> list[asyncpg.Record]:
    """Counted signatures only: what the target should receive."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT name, postcode, country, coalesce(confirmed_at, created_at) AS signed_at "
        "FROM signing.signatures WHERE petition_id = $1 AND withdrawn_at IS NULL "
        "AND invalidated_at IS NULL AND initial_status <> 'fraudulent' "
        "AND (initial_status = 'signed' OR confirmed_at IS NOT NULL) ORDER BY created_at",
        petition_id,
    )
    return rows


async def tally(conn: asyncpg.Connection, petition_id: uuid.UUID) -> dict[str, int]:
    """What the counter should show for a petition, computed from the source of truth."""
    row = await conn.fetchrow(
        "SELECT "
        "count(*) FILTER (WHERE live AND (initial_status = 'signed' OR confirmed_at IS NOT NULL)) "
        "  AS signatures, "
        "count(*) FILTER (WHERE live AND initial_status = 'pending' AND confirmed_at IS NULL) "
        "  AS pending "
        "FROM (SELECT *, withdrawn_at IS NULL AND invalidated_at IS NULL "
        "      AND initial_status <> 'fraudulent' AS live "
        "      FROM signing.signatures WHERE petition_id = $1) s",
        petition_id,
    )
    assert row is not None
    return {"signatures": int(row["signatures"]), "pending": int(row["pending"])}


async def set_replay_tokens(
    conn: asyncpg.Connection, token_hashes: list[tuple[uuid.UUID, bytes]]
) -> None:
    await conn.executemany(
        "UPDATE signing.signatures SET replay_token_hash = $2 WHERE id = $1", token_hashes
    )


async def history_rows(conn: asyncpg.Connection, petition_id: uuid.UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT s.*, p.slug, p.title FROM signing.signatures s JOIN signing.petitions p "
        "ON p.id = s.petition_id WHERE s.petition_id = $1 ORDER BY s.created_at, s.id",
        petition_id,
    )
    return rows
