from __future__ import annotations

import pytest
from groundswell_signing.domain.signatures import (
    SignatureError,
    SignatureInput,
    canonical_email,
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
