from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from groundswell_signing.domain.signatures import (
    SignatureError,
    SignatureInput,
    canonical_email,
    check_email,
    check_name,
    check_postcode,
    validate_signature,
)


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("Jane.Doe@Gmail.com", "janedoe@gmail.com"),
        ("jane.doe+petition@googlemail.com", "janedoe@gmail.com"),
        ("Jane.Doe+x@example.org", "jane.doe@example.org"),
        ("UPPER@EXAMPLE.ORG", "upper@example.org"),
    ],
)
def test_canonical_email(typed: str, canonical: str) -> None:
    assert canonical_email(typed) == canonical


@pytest.mark.parametrize(
    ("raw", "normalised", "area"),
    [("sw1a1aa", "SW1A 1AA", "SW"), (" ox1  2jd ", "OX1 2JD", "OX"), ("M1 1AE", "M1 1AE", "M")],
)
def test_uk_postcodes_normalise(raw: str, normalised: str, area: str) -> None:
    assert check_postcode(raw, "GB") == (normalised, area)


@pytest.mark.parametrize("raw", ["", "12345", "SW1A", "ABC 123"])
def test_bad_uk_postcodes(raw: str) -> None:
    with pytest.raises(ValueError, match="postcode"):
        check_postcode(raw, "GB")


def test_other_countries_postcodes_are_free_text() -> None:
    assert check_postcode("75001", "FR") == ("75001", None)
    assert check_postcode(None, "US") == (None, None)


@pytest.mark.parametrize(
    "name",
    [
        "=SUM(A1)",
        "+44",
        "-1",
        "@here",
        "visit http://x.io",
        "www.spam.com",
        "x" * 101,
        "  ",
        "a\u202eb",
    ],
)
def test_names_refused(name: str) -> None:
    with pytest.raises(ValueError):
        check_name(name)


def test_names_trimmed_and_collapsed() -> None:
    assert check_name("  Ada   Lovelace ") == "Ada Lovelace"
    assert check_name("Dr. J. R. Smith-Jones") == "Dr. J. R. Smith-Jones"


def test_every_bad_field_reported_together() -> None:
    with pytest.raises(SignatureError) as caught:
        validate_signature(
            SignatureInput(
                name="=x", email="bad", postcode="nope", country="ZZ", contact_consent=True
            )
        )
    assert set(caught.value.errors) == {"name", "email", "country"}


def test_valid_signature() -> None:
    valid = validate_signature(
        SignatureInput(
            name="Ada Lovelace",
            email="Ada.L+x@gmail.com",
            postcode="ox1 2jd",
            country="gb",
            contact_consent=False,
            ref=" abc_123 ",
            source="",
        )
    )
    assert valid.email == "Ada.L+x@gmail.com" and valid.email_canonical == "adal@gmail.com"
    assert (valid.postcode, valid.postcode_area, valid.country) == ("OX1 2JD", "OX", "GB")
    assert valid.ref == "abc_123" and valid.source is None


def _library_verdict(typed: str) -> tuple[str, str] | str:
    """What email_validator alone says, in `check_email`'s terms (its check before)."""
    if len(typed.strip()) > 254:
        return "Email must be 254 characters or fewer"
    try:
        parsed = validate_email(typed.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        return f"Enter a valid email address ({exc})"
    return canonical_email(parsed.normalized), parsed.domain.lower()


def _verdict(typed: str) -> tuple[str, str] | str:
    try:
        _, canonical, domain = check_email(typed)
    except ValueError as exc:
        return str(exc)
    return canonical, domain


_LOCALS = [
    "john",
    "John.Smith",
    "j.o.h.n",
    "a+tag",
    "x_y-z",
    "o'brien",
    "{weird}|~`^",
    "a" * 64,
    "a" * 65,
    ".lead",
    "trail.",
    "dou..ble",
    "",
    "sp ace",
    '"quoted"',
    "ünïcode",
    "Postmaster",
    "a@b",
    "tab\tbed",
    "semi;colon",
    "ABUSE",
]
_DOMAINS = [
    "example.org",
    "Gmail.COM",
    "googlemail.com",
    "sub.domain.co.uk",
    "x.io",
    "a-b.com",
    "-lead.com",
    "trail-.com",
    "no_underscore.com",
    "localhost",
    "host.local",
    "site.test",
    "a.invalid",
    "xn--bcher-kva.de",
    "bücher.de",
    "1.2.3.4",
    "[127.0.0.1]",
    "num.123",
    "a." + "b" * 63 + ".com",
    "a." + "b" * 64 + ".com",
    "dot.",
    ".dot.com",
    "two..dots.com",
    "single",
    "UPPER.CASE.ORG",
    "x" * 250 + ".com",
    "example.onion",
    "corp.internal",
]


@pytest.mark.parametrize("local", _LOCALS)
def test_plain_addresses_get_exactly_the_libraries_verdict(local: str) -> None:
    for domain in _DOMAINS:
        for typed in (f"{local}@{domain}", f"  {local}@{domain} "):
            assert _verdict(typed) == _library_verdict(typed), typed
