"""The invariants, checked after every fault once the stack is quiet again.

The facts come from `facts.collect`; the `check_*` functions are pure: facts and what the
run did in, verdicts out. Every check looks at the whole run so far, so a violation stays
visible in later rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from groundswell_stack.chaos.facts import Facts
from groundswell_stack.chaos.faults import CONSUMERS_OF, Excuses
from groundswell_stack.chaos.load import CONNECTION_FAILED, NO_ANSWER, Outcome

# A copy the sink took this long before a kill (mailer or sink) may go out again: the
# mailer had not recorded it yet (docs/reliability.md, "The duplicate window"). And a
# little after: the sink may still be reading what a mailer wrote just before it died
# (a restarted mailer needs longer than that to start sending).
DUPLICATE_BEFORE_SECONDS = 2.0
DUPLICATE_AFTER_SECONDS = 1.0
SIGNED_KINDS = frozenset({"sign", "duplicate", "probe", "bounce"})


@dataclass
class Verdict:
    name: str
    ok: bool
    detail: str


@dataclass
class Window:
    name: str
    start: float
    end: float
    excuses: Excuses


# --- the checks (pure) ---------------------------------------------------------------


def _examples(items: Iterable[Any], n: int = 3) -> str:
    listed = list(items)
    shown = ", ".join(str(i) for i in listed[:n])
    return shown + (f" (+{len(listed) - n} more)" if len(listed) > n else "")


def check_acknowledged(facts: Facts, outcomes: Sequence[Outcome]) -> Verdict:
    """Every 202 is a row; every confirmation and withdrawal answered 200 took effect."""
    by_key = {(r["slug"], r["email"]): r for r in facts.signatures}
    by_email = {r["email"]: r for r in facts.signatures}
    accepted = [o for o in outcomes if o.kind in SIGNED_KINDS and o.status == 202]
    missing = [o.address for o in accepted if (o.slug, o.address.lower()) not in by_key]
    confirmed = [o for o in outcomes if o.kind == "confirm" and o.status == 200]
    unconfirmed = [
        o.address
        for o in confirmed
        if not (r := by_email.get(o.address.lower())) or not r["confirmed"]
    ]
    withdrawn = [o for o in outcomes if o.kind == "withdraw" and o.status == 200]
    kept = [
        o.address for o in withdrawn if not (r := by_email.get(o.address.lower())) or not r["void"]
    ]
    bad = missing + unconfirmed + kept
    detail = f"{len(accepted)} 202s, {len(confirmed)} confirmations, {len(withdrawn)} withdrawals"
    if bad:
        detail += (
            f"; {len(missing)} 202s not stored, {len(unconfirmed)} confirmations and "
            f"{len(kept)} withdrawals without effect: {_examples(bad)}"
        )
    return Verdict("202 in PostgreSQL", not bad, detail)


def check_counts(facts: Facts) -> Verdict:
    wrong = []
    for slug, (count, tally) in facts.counts.items():
        for figure in ("signatures", "pending"):
            if count.get(figure) != tally.get(figure):
                wrong.append(
                    f"{slug} {figure}: API {count.get(figure)}, PostgreSQL {tally[figure]}"
                )
    total = sum(t["signatures"] for _, t in facts.counts.values())
    detail = (
        "; ".join(wrong) if wrong else f"{total} counted, equal on {len(facts.counts)} petitions"
    )
    return Verdict("count = PostgreSQL", not wrong, detail)


def expected_status(row: asyncpg.Record) -> str:
    if row["void"]:
        return "void"
    return "counted" if row["initial_status"] == "signed" or row["confirmed"] else "pending"


def check_sharing(facts: Facts) -> Verdict:
    """Sharing has every signer's link, in the signature's state, and every referral."""
    codes = {r["share_code"]: r for r in facts.signatures}
    problems = []
    for row in facts.signatures:
        if row["initial_status"] == "fraudulent":
            continue
        link = facts.share_links.get(row["share_code"])
        if link is None:
            problems.append(f"no link for {row['id']}")
        elif link["signature_id"] != row["id"] or link["status"] != expected_status(row):
            problems.append(f"link {row['id']}: {link['status']}, expected {expected_status(row)}")
        referrer = codes.get(row["ref"]) if row["ref"] else None
        if referrer is not None and referrer["petition_id"] == row["petition_id"]:
            referral = facts.referrals.get(row["id"])
            if referral is None:
                problems.append(f"no referral for {row['id']}")
            elif referral["status"] != expected_status(row):
                problems.append(f"referral {row['id']}: {referral['status']}")
    referred = sum(1 for r in facts.signatures if r["id"] in facts.referrals)
    detail = f"{len(facts.signatures)} signers, {referred} referrals"
    if problems:
        detail += f"; {len(problems)} wrong: {_examples(problems)}"
    return Verdict("sharing knows every signer", not problems, detail)


def _excused_duplicate(first: float, kills: Sequence[float]) -> bool:
    return any(k - DUPLICATE_BEFORE_SECONDS <= first <= k + DUPLICATE_AFTER_SECONDS for k in kills)


def check_mail(
    facts: Facts,
    delivered: Sequence[dict[str, Any]],
    kills: Sequence[float],
    bounces: Sequence[str],
) -> Verdict:
    """One thank-you per counted signature (none for the never counted), one confirmation
    per pending one; a second copy only if the first went out just before a kill."""
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for d in delivered:
        times[(d["to"].lower(), d["kind"])].append(d["t"])
    bounced = {b.lower() for b in bounces}
    missing, extra, excused = [], [], 0
    for row in facts.signatures:
        email = row["email"]
        counted = row["initial_status"] == "signed" or row["confirmed"]
        wants = {
            # (fewest, most) copies
            "thank_you": (0, 0)
            if email in bounced or not counted
            else ((0, 1) if row["void"] else (1, 1)),
            "confirmation": (1, 1) if row["initial_status"] == "pending" else (0, 0),
        }
        for kind, (fewest, most) in wants.items():
            got = sorted(times.get((email, kind), []))
            if len(got) < fewest:
                missing.append(f"{kind} for {row['id']}")
            elif len(got) > most:
                if most == 1 and _excused_duplicate(got[0], kills):
                    excused += len(got) - most
                else:
                    extra.append(f"{len(got)} x {kind} for {row['id']}")
    ok = not missing and not extra
    thanks = sum(1 for d in delivered if d["kind"] == "thank_you")
    detail = f"{thanks} thank-yous; {excused} duplicates inside a kill window"
    if not ok:
        detail += (
            f"; {len(missing)} missing, {len(extra)} unexplained: {_examples(missing + extra)}"
        )
    return Verdict("one thank-you each", ok, detail)


def check_bounces(
    facts: Facts,
    refused: Sequence[dict[str, Any]],
    delivered: Sequence[dict[str, Any]],
    bounces: Sequence[str],
) -> Verdict:
    """The address answered 451, 451, 550: retried, then given up, never delivered."""
    problems = []
    for address in bounces:
        codes = [r["code"] for r in refused if r["to"].lower() == address.lower()]
        thanks = [
            e
            for e in facts.bounce_emails
            if e["email"] == address.lower() and e["kind"] == "thank_you"
        ]
        sent = [d for d in delivered if d["to"].lower() == address.lower()]
        if codes[:3] != ["451", "451", "550"] or len(codes) != 3:
            problems.append(f"sink answered {codes}")
        if [(e["status"], e["attempts"]) for e in thanks] != [("failed", 3)]:
            problems.append(f"mailer has {[(e['status'], e['attempts']) for e in thanks]}")
        if sent:
            problems.append(f"{len(sent)} delivered")
    detail = (
        "; ".join(problems) or f"{len(bounces)} address(es): 451, 451, 550, failed after 3 attempts"
    )
    return Verdict("451/550 handled", not problems, detail)


def check_dead_letters(
    facts: Facts, poisons: Sequence[tuple[str, str, float]], broker_lost_at: float
) -> Verdict:
    """Every dead letter is one of our poison records; each reached every consumer."""
    unexplained: list[str] = []
    seen: dict[tuple[str, str], int] = defaultdict(int)
    markers = {marker for _, marker, _ in poisons}
    for topic, value in facts.dead_letters:
        text = value.decode(errors="replace")
        hit = next((m for m in markers if m in text), None)
        if hit is None:
            unexplained.append(f"{topic}: {text[:80]!r}")
        else:
            seen[(topic, hit)] += 1
    missing = []
    for topic, marker, at in poisons:
        if at < broker_lost_at:
            continue  # the broker that held its dead letters is gone
        for consumer in CONSUMERS_OF.get(topic, ()):
            if not seen.get((f"{consumer}.dlq", marker)):
                missing.append(f"{consumer} did not dead-letter the poison on {topic}")
    ok = not unexplained and not missing
    detail = f"{len(facts.dead_letters)} dead letters, {len(unexplained)} unexplained"
    if missing:
        detail += "; " + _examples(missing)
    if unexplained:
        detail += ": " + _examples(unexplained)
    return Verdict("every DLQ entry explained", ok, detail)


def _excused(outcome: Outcome, windows: Sequence[Window]) -> bool:
    for w in windows:
        # Under way at any moment of the fault or the recovery after it.
        if outcome.ended < w.start or outcome.started > w.end:
            continue
        if outcome.status in (CONNECTION_FAILED, NO_ANSWER) and outcome.kind in w.excuses.refused:
            return True
        if outcome.status == 503 and outcome.retry_after and outcome.kind in w.excuses.unavailable:
            return True
    return False


def _shed(o: Outcome) -> bool:
    return o.status == 503 and o.retry_after


def check_http(outcomes: Sequence[Outcome], windows: Sequence[Window]) -> list[Verdict]:
    """No 5xx and no failed connection, except what a fault excuses while it lasts.

    A 503 with Retry-After outside any fault is signing shedding load (its write queue
    too long or too old for the machine): reported as its own verdict, so that it is
    told apart from an error, but never excused.
    """
    failed = [o for o in outcomes if o.status >= 500 or o.status in (CONNECTION_FAILED, NO_ANSWER)]
    unexcused = [o for o in failed if not _excused(o, windows)]
    errors = [o for o in unexcused if not _shed(o)]
    shed = [o for o in unexcused if _shed(o)]
    excused = len(failed) - len(unexcused)
    return [
        Verdict(
            "no 5xx outside faults",
            not errors,
            f"{len(outcomes)} requests, {excused} failures excused" + _described(errors, windows),
        ),
        Verdict(
            "no 503 shed outside faults",
            not shed,
            f"{len(shed)} answered 503 + Retry-After outside faults" + _described(shed, windows),
        ),
    ]


def _described(outcomes: Sequence[Outcome], windows: Sequence[Window]) -> str:
    if not outcomes:
        return ""
    kinds: dict[str, list[float]] = defaultdict(list)
    for o in outcomes:
        what = f"{o.kind} {o.status or o.error}{' +Retry-After' if o.retry_after else ''}"
        kinds[what].append(o.started)
    return "; " + "; ".join(
        f"{len(at)} x {what} ({_when(min(at), windows)} to {_when(max(at), windows)})"
        for what, at in sorted(kinds.items())
    )


def _when(t: float, windows: Sequence[Window]) -> str:
    """A moment relative to the latest fault before it."""
    before = [w for w in windows if w.start <= t]
    if not before:
        return "before the first fault"
    w = before[-1]
    where = f"{t - w.start:+.1f} s from '{w.name}'"
    return where + (f", {t - w.end:.1f} s after its recovery" if t > w.end else "")


def status_summary(outcomes: Sequence[Outcome]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for o in outcomes:
        counts[str(o.status) if o.status > 0 else (o.error or "no answer")] += 1
    return ", ".join(f"{k}: {n}" for k, n in sorted(counts.items()))
