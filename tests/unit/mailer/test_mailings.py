"""Mailings' texts without I/O: Markdown, escaping, placeholders, source tags, footers."""

from __future__ import annotations

from groundswell_mailer.domain import mailings as rules
from groundswell_mailer.domain.messages import Campaign, Links
from groundswell_runtime.organisation import Organisation

LINKS = Links("https://sign.example", "https://share.example", "https://mail.example")
CAMPAIGN = Campaign(
    Organisation(name="Keep Our NHS Public", postal_address="1 High St, Leeds LS1 1AA"), 72
)


def mailing(body: str, subject: str = "Dear {first_name}") -> rules.Mailing:
    return rules.Mailing.render(
        id=7,
        subject=subject,
        body_markdown=body,
        category="news",
        source="mail-7",
        cta_label="Sign the petition",
        petition_slug="contact-tracing",
        petition_title="Local <contact> tracing",
        first_name_fallback="friend",
        links=LINKS,
    )


def test_petition_links_carry_the_mailings_source_and_others_do_not() -> None:
    assert (
        rules.tag_link("/p/x?source=old&a=1", LINKS.public_base_url, "m1")
        == "https://sign.example/p/x?a=1&source=m1"
    )
    assert rules.tag_link("https://elsewhere.example/p/x", LINKS.public_base_url, "m1") == (
        "https://elsewhere.example/p/x"
    )
    composed = rules.compose_mailing(
        mailing("Please [sign](/p/contact-tracing) and [read](https://news.example/a)."),
        "Ada",
        LINKS,
        "tok" * 8,
        CAMPAIGN,
    )
    for part in (composed.html, composed.text):
        assert "https://sign.example/p/contact-tracing?source=mail-7" in part
        assert "https://news.example/a" in part
        assert "news.example/a?source" not in part


def test_names_and_raw_html_are_escaped_and_placeholders_filled() -> None:
    composed = rules.compose_mailing(
        mailing("Hello {first_name}, <script>alert(1)</script> **thanks**"),
        "<b>Eve</b>",
        LINKS,
        "tok" * 8,
        CAMPAIGN,
    )
    assert "&lt;b&gt;Eve&lt;/b&gt;" in composed.html
    assert "<b>Eve</b>" not in composed.html
    assert "<script>" not in composed.html
    assert "&lt;script&gt;" in composed.html
    assert "<strong>thanks</strong>" in composed.html
    assert composed.subject == "Dear <b>Eve</b>"  # a header, not HTML: kept, one line
    assert "Hello <b>Eve</b>," in composed.text


def test_an_empty_first_name_falls_back_and_javascript_links_are_refused() -> None:
    composed = rules.compose_mailing(
        mailing("Hi {first_name}! [x](javascript:alert(1))"), "", LINKS, "tok" * 8, CAMPAIGN
    )
    assert "Hi friend!" in composed.html
    assert 'href="javascript' not in composed.html


def test_footer_has_address_privacy_preferences_and_one_click_unsubscribe() -> None:
    composed = rules.compose_mailing(mailing("Body"), "Ada", LINKS, "tok" * 8, CAMPAIGN)
    for part in (composed.html, composed.text):
        assert "1 High St, Leeds LS1 1AA" in part
        assert "https://sign.example/privacy" in part
        assert "https://mail.example/preferences/" + "tok" * 8 in part
        assert "https://mail.example/unsubscribe/" + "tok" * 8 in part
    assert ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click") in composed.headers


def test_unknown_placeholders_are_named() -> None:
    assert rules.unknown_placeholders("Dear {firstname}", "{first_name} {petition_url}") == [
        "firstname"
    ]


def test_bounces_are_told_from_other_failures() -> None:
    assert rules.progress_state("failed", False, "550 recipient: no such user") == "bounced"
    assert rules.progress_state("failed", False, "421 connect: busy") == "failed"
    assert rules.progress_state("queued", True, None) == "waiting"
