"""Emails filled in from a stencil are exactly what rendering them in full gives."""

from __future__ import annotations

import itertools
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from groundswell_contracts.events import EmailKind
from groundswell_mailer.domain import messages
from groundswell_mailer.domain.messages import Campaign, EmailContent, Links, compose
from groundswell_mailer.domain.mime import MessageWriter
from groundswell_mailer.domain.stencils import Stencils
from groundswell_runtime.organisation import Organisation
from jinja2 import Template

LINKS = Links("https://sign.example/", "https://share.example", "https://mail.example")
CAMPAIGN = Campaign(
    organisation=Organisation(
        name="Friends of the <Park> & Co",
        postal_address="1 Example Street, Exampletown",
        reply_to="team@park.example",
    ),
    confirmation_ttl_hours=72,
)
WRITER = MessageWriter("Groundswell <hi@gs.example>")

NAMES = ["Zoë", "Ann", ' <b>O\'Brien</b> & "Co" ', "Tab\there\x07", "", "李", "=3D=\n"]
TITLES = ["Save the <Park> & pond", "Plain title", "“Quoted” " * 12]
TOKENS = ["abc123", "tok_-9", "wd/1", "ct+1", "a b", "", None]


def contents() -> list[tuple[EmailKind, EmailContent, str | None]]:
    cases: list[tuple[EmailKind, EmailContent, str | None]] = []
    for i, (name, title, token) in enumerate(itertools.product(NAMES, TITLES, TOKENS)):
        share = token or "sc1"
        plain = f"t{i}"
        cases.append(
            ("thank_you", EmailContent(name, title, "slug-1", share, withdraw_token=token), plain)
        )
        cases.append(("already_signed", EmailContent(name, title, "slug-1", share), token))
        cases.append(
            (
                "confirmation",
                EmailContent(name, title, "slug-1", share, confirmation_token=token or plain),
                None,
            )
        )
        cases.append(
            (
                "privacy_verification",
                EmailContent(
                    "",
                    "",
                    "",
                    "",
                    verification_token=token or plain,
                    privacy_kind="erasure" if i % 2 else "access",
                ),
                None,
            )
        )
    return cases


def test_a_filled_stencil_is_the_fully_rendered_email() -> None:
    stencils = Stencils(LINKS, CAMPAIGN)
    checked = 0
    for kind, content, token in contents():
        try:
            expected = compose(kind, content, LINKS, token, campaign=CAMPAIGN)
        except ValueError:
            with pytest.raises(ValueError):
                stencils.compose(kind, content, token)
            continue
        assert stencils.compose(kind, content, token) == expected
        checked += 1
    assert checked > 300
    # The common case took the fast way: one shape per kind and petition, not per email.
    assert 0 < len(stencils._shapes) < 100
    assert all(shape is not None for shape in stencils._shapes.values())


def test_an_email_that_cannot_be_written_is_refused_as_in_full() -> None:
    stencils = Stencils(LINKS, CAMPAIGN)
    content = EmailContent("Zoë", "T", "s", "c")  # no confirmation token
    with pytest.raises(ValueError, match="confirmation token"):
        stencils.compose("confirmation", content, None)
    with pytest.raises(ValueError, match="unsubscribe token"):
        stencils.compose("thank_you", content, None)


def test_a_template_that_transforms_a_value_is_rendered_in_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A campaign edits a template so the name is shouted and put into a link: the
    # stencil's probe sees that the markers do not stand for the values, and that shape
    # is rendered in full every time.
    source = "Hi {{ first_name|upper }}! https://x.example/?n={{ first_name|urlencode }}\n"
    monkeypatch.setitem(messages._TEMPLATES, "already_signed.txt", Template(source))
    stencils = Stencils(LINKS, CAMPAIGN)
    for name in ("zoë", "ann o'hara"):
        content = EmailContent(name, "Title", "slug", "code1")
        filled = stencils.compose("already_signed", content, "tok1")
        assert filled == compose("already_signed", content, LINKS, "tok1", campaign=CAMPAIGN)
        assert filled.text.startswith(f"Hi {name.upper()}!")
    assert list(stencils._shapes.values()) == [None]


def test_the_message_written_from_a_stencil_parses_with_every_header_and_both_parts() -> None:
    stencils = Stencils(LINKS, CAMPAIGN)
    for i, name in enumerate(["Zoë", "Ann <b>&"]):
        content = EmailContent(name, "Save the “Park”", "save", f"code{i}", withdraw_token="wd1")
        composed = stencils.compose("thank_you", content, f"tok_{i}")
        raw = WRITER.write(composed, recipient="ann@example.com", message_id=f"<{i}@gs.example>")
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        assert message.defects == []
        assert message.get_content_type() == "multipart/alternative"
        parts = list(message.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        assert all(p.defects == [] for p in parts)
        text = str(parts[0].get_content()).replace("\r\n", "\n")
        html = str(parts[1].get_content()).replace("\r\n", "\n")
        assert text == composed.text and html == composed.html
        assert f"Thank you, {name}!" in text
        assert f"Thank you, {name.replace('<', '&lt;').replace('>', '&gt;')}" in html
        assert f"https://share.example/s/code{i}" in text and f"/s/code{i}" in html
        assert message["Subject"] == "Thank you for signing “Save the “Park””"
        assert message["Message-ID"] == f"<{i}@gs.example>"
        assert message["Reply-To"] == "team@park.example"
        assert message["List-Unsubscribe"] == f"<https://mail.example/unsubscribe/tok_{i}>"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
