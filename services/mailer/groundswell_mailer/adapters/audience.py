"""Who gets a mailing: an audience's filters and the mailing rule, as one SQL query.

The rule (stated in domain/mailings.py) is `PEOPLE`: one row per mailbox matching the
filters, with `allowed`. The organisers' API counts it for a draft and mailings.py makes
a mailing's copies from it when it is sent; kept on its own so the rule is written once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

# One row per mailbox matching the audience's filters, with `allowed`: the mailing rule.
# $1 category, $2 petitions signed (any of), $3 petitions not signed, $4 areas.
PEOPLE = """
WITH rows AS (
  SELECT s.*, (s.confirmed OR st.confirmed_at IS NOT NULL)
              AND st.withdrawn_at IS NULL AS live
  FROM mailer.supporters s LEFT JOIN mailer.supporter_states st USING (signature_id)
), people AS (
  SELECT address_key,
    bool_or(live AND contact_consent) AS consent,
    bool_and(CASE WHEN $1 = 'news' THEN wants_news ELSE wants_updates END) AS wants,
    bool_or(unsubscribed_at IS NOT NULL) AS unsubscribed,
    bool_or(live AND petition_id = ANY($2::uuid[])) AS signed_wanted,
    bool_or(petition_id = ANY($3::uuid[])) AS signed_excluded,
    bool_or(live AND postcode_area = ANY($4::text[])) AS in_area,
    bool_or(live) AS any_live,
    (array_agg(signature_id ORDER BY live DESC, created_at DESC))[1] AS signature_id,
    (array_agg(petition_id ORDER BY live DESC, created_at DESC))[1] AS petition_id,
    (array_agg(recipient ORDER BY live DESC, created_at DESC))[1] AS recipient,
    (array_agg(first_name ORDER BY live DESC, created_at DESC))[1] AS first_name
  FROM rows GROUP BY address_key
)
SELECT p.*, r.address_key IS NOT NULL AS has_recipient,
  (r.unsubscribed_at IS NULL AND NOT p.unsubscribed AND coalesce(p.wants, p.consent))
    AS allowed
FROM people p LEFT JOIN mailer.recipients r USING (address_key)
WHERE p.any_live AND NOT p.signed_excluded
  AND (cardinality($2::uuid[]) = 0 OR p.signed_wanted)
  AND (cardinality($4::text[]) = 0 OR p.in_area)
"""


@dataclass(frozen=True)
class Audience:
    signed: list[UUID]
    not_signed: list[UUID]
    areas: list[str]

    def args(self, category: str) -> tuple[Any, ...]:
        return (category, self.signed, self.not_signed, [a.upper() for a in self.areas])


async def audience_size(
    conn: asyncpg.Connection, category: str, audience: Audience
) -> tuple[int, int]:
    """(would get it, match the filters but said no or never said yes)."""
    row = await conn.fetchrow(
        f"SELECT count(*) FILTER (WHERE allowed) AS yes, count(*) FILTER (WHERE NOT allowed) "
        f"AS no FROM ({PEOPLE}) AS a",
        *audience.args(category),
    )
    assert row is not None
    return int(row["yes"]), int(row["no"])


def audience_of(row: asyncpg.Record) -> Audience:
    data = json.loads(row["audience"])
    return Audience(
        signed=[UUID(i) for i in data.get("signed_ids", [])],
        not_signed=[UUID(i) for i in data.get("not_signed_ids", [])],
        areas=list(data.get("areas", [])),
    )
