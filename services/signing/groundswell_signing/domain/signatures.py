"""Rules for what a signature may contain, and how emails compare.

Everything here is pure: the HTTP layer turns `SignatureError`s into 422s that
name each field, the service layer stores what `validate_signature` returns.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from email_validator import EmailNotValidError, validate_email

from groundswell_signing.domain.countries import ISO_COUNTRY_CODES

NAME_MAX = 100
EMAIL_MAX = 254
POSTCODE_MAX = 16
CODE_MAX = 64

# A cell starting with one of these runs as a formula when a CSV is opened in a spreadsheet.
FORMULA_PREFIXES = ("=", "+", "-", "@")
_URL = re.compile(
    r"(https?://|www\.|\b[a-z0-9-]+\.(com|net|org|io|co|uk|ru|info|biz|xyz|ly|me|app)\b)",
    re.IGNORECASE,
)
# Outward code + inward code; see the UK government's postcode format.
_UK_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?)([0-9][A-Z]{2})$")
_CODE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
# The everyday address: an unquoted ASCII local part (RFC 5322 atext in dot-separated
# runs) and an ASCII host name with no A-label. For these `check_email` validates the
# local part itself and the domain once per domain; anything else takes the full path.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_PLAIN_DOMAIN = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
_LOCAL_MAX = 64  # RFC 5321, as email_validator enforces it

T = TypeVar("T")


class SignatureError(ValueError):
    """One or more fields are unacceptable; `errors` maps field name to a message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


# Named tuples, not frozen dataclasses: both are made for every signing request, and a
# frozen dataclass sets each field through `object.__setattr__` (1.1 against 0.3 us).
class SignatureInput(NamedTuple):
    name: str
    email: str
    postcode: str | None
    country: str
    contact_consent: bool
    ref: str | None = None
    source: str | None = None
    ref_channel: str | None = None
    leaderboard_consent: bool = False


class ValidSignature(NamedTuple):
    name: str
    email: str  # as typed (trimmed): what we write to
    email_canonical: str  # what we compare: one signature per person
    email_domain: str
    postcode: str | None
    postcode_area: str | None
    country: str
    contact_consent: bool
    ref: str | None
    source: str | None
    ref_channel: str | None
    leaderboard_consent: bool = False


def reject_control_characters(text: str, *, allow_newlines: bool) -> str:
    """Also refuses lone surrogates (`"\\ud800"` in JSON): they are not text, cannot be
    encoded as UTF-8, and PostgreSQL would refuse them with a 500 after validation."""
    if text.isprintable():
        return text  # no character of a category "C" (Cc, Cs among them): the common case
    allowed = {"\n", "\r", "\t"} if allow_newlines else set()
    if any(unicodedata.category(ch) == "Cs" for ch in text):
        raise ValueError("must be valid Unicode text (it contains a lone surrogate)")
    if any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in text):
        raise ValueError("must not contain control characters")
    return text


def check_name(raw: str) -> str:
    name = unicodedata.normalize("NFC", " ".join(raw.split()))
    if not name:
        raise ValueError("Enter your name")
    if len(name) > NAME_MAX:
        raise ValueError(f"Name must be {NAME_MAX} characters or fewer")
    if name.startswith(FORMULA_PREFIXES):
        raise ValueError("Name must not start with = + - or @")
    if _URL.search(name):
        raise ValueError("Name must not contain a web address")
    # A printable string has no character of a category "C" at all (the common case,
    # spared the walk through the string).
    if not name.isprintable() and any(
        unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in name
    ):
        raise ValueError("Name contains characters that are not allowed")
    return name


def check_email(raw: str) -> tuple[str, str, str]:
    """Returns (as typed, canonical, domain).

    email_validator decides, as it always has; it cost a tenth of a signing request
    (issue 7), mostly on the domain, which a surge repeats thousands of times. So a
    plain address (`_PLAIN_LOCAL`, `_PLAIN_DOMAIN`: the local part's rules are then
    exactly those two patterns and the length) has its domain validated once per
    domain; the result is the same, which tests/unit/signing checks against the
    library address by address.
    """
    typed = raw.strip()
    if len(typed) > EMAIL_MAX:
        raise ValueError(f"Email must be {EMAIL_MAX} characters or fewer")
    local, _, domain = typed.rpartition("@")
    domain = domain.lower()
    try:
        if (
            len(local) <= _LOCAL_MAX
            and _PLAIN_LOCAL.fullmatch(local)
            and _PLAIN_DOMAIN.fullmatch(domain)
            and "xn--" not in domain
        ):
            domain = _valid_domain(domain)
            return typed, canonical_email(f"{local}@{domain}"), domain
        parsed = validate_email(typed, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"Enter a valid email address ({exc})") from None
    return typed, canonical_email(parsed.normalized), parsed.domain.lower()


@functools.lru_cache(maxsize=4096)
def _valid_domain(domain: str) -> str:
    """The normalised form of a plain domain; raises `EmailNotValidError` (not cached)."""
    return str(validate_email(f"a@{domain}", check_deliverability=False).domain)


def canonical_email(address: str) -> str:
    """The form two addresses of one mailbox share: case, +tags, and Gmail's dots."""
    local, _, domain = address.strip().lower().rpartition("@")
    local = local.split("+", 1)[0]
    if domain in _GMAIL_DOMAINS:
        local = local.replace(".", "")
        domain = "gmail.com"
    return f"{local}@{domain}"


def check_postcode(raw: str | None, country: str) -> tuple[str | None, str | None]:
    """Returns (normalised postcode, area). UK postcodes are required and checked."""
    text = " ".join((raw or "").split()).upper()
    reject_control_characters(text, allow_newlines=False)
    if country == "GB":
        if not text:
            raise ValueError("Enter your postcode")
        match = _UK_POSTCODE.match(text.replace(" ", ""))
        if not match:
            raise ValueError("Enter a valid UK postcode, like SW1A 1AA")
        outward, inward = match.groups()
        area = re.match(r"[A-Z]+", outward)
        return f"{outward} {inward}", area.group(0) if area else None
    if len(text) > POSTCODE_MAX:
        raise ValueError(f"Postcode must be {POSTCODE_MAX} characters or fewer")
    return (text or None), None


def check_country(raw: str) -> str:
    code = raw.strip().upper()
    if code not in ISO_COUNTRY_CODES:
        raise ValueError("Choose a country (a two-letter ISO code such as GB)")
    return code


def check_code(raw: str | None, what: str) -> str | None:
    if raw is None or raw.strip() == "":
        return None
    if not _CODE.match(raw.strip()):
        raise ValueError(f"{what} may use letters, digits, - and _ only (up to {CODE_MAX})")
    return raw.strip()


def validate_signature(data: SignatureInput) -> ValidSignature:
    """Checks every field, collecting every problem, so a person can fix them all at once."""
    errors: dict[str, str] = {}

    def attempt(field: str, check: Callable[[], T]) -> T | None:
        try:
            return check()
        except ValueError as exc:
            errors[field] = str(exc)
            return None

    name = attempt("name", lambda: check_name(data.name))
    email = attempt("email", lambda: check_email(data.email))
    country = attempt("country", lambda: check_country(data.country))
    postcode = attempt("postcode", lambda: check_postcode(data.postcode, country or ""))
    ref = attempt("ref", lambda: check_code(data.ref, "Share code"))
    source = attempt("source", lambda: check_code(data.source, "Source"))
    ref_channel = attempt("ref_channel", lambda: check_code(data.ref_channel, "Share channel"))
    if errors or name is None or email is None or country is None or postcode is None:
        raise SignatureError(errors)
    return ValidSignature(
        name=name,
        email=email[0],
        email_canonical=email[1],
        email_domain=email[2],
        postcode=postcode[0],
        postcode_area=postcode[1],
        country=country,
        contact_consent=data.contact_consent,
        ref=ref,
        source=source,
        ref_channel=ref_channel,
        leaderboard_consent=data.leaderboard_consent,
    )


def first_name(name: str) -> str:
    return name.split(" ", 1)[0]
