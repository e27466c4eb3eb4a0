"""Each email's texts rendered once per petition and kind, then filled in per recipient.

Rendering both Jinja templates was the largest part of the mailer's own CPU per email,
yet in a surge nearly every email of a petition is the same text around a few personal
values: the first name and the tokens in the links (share code, withdraw, confirmation,
privacy request, unsubscribe). `Stencils.compose` renders an email once per *shape*
(kind, petition title and slug, privacy request kind, which values are present) with
markers in place of those values, cuts the result at the markers, and for each email
joins the pieces with the recipient's values. `domain.messages.compose` stays the
definition of what an email says; this is only a faster way to the same result.

Why the result is the same, byte for byte:

- A marker is letters and digits only (a random core, then the value's name), so no
  step between a value and the text changes it: `one_line`, `quote(safe='')`,
  `urlencode` (quote_plus), HTML autoescape all leave such strings as they are. The
  same holds for a token made of `[A-Za-z0-9_-]` (what `secrets.token_urlsafe` makes),
  so a token is put in as it is, wherever its marker stood. Any other token (or an
  empty one: a template may test it) is rendered the slow way.
- The first name is free text, which every template shows as it is in the plain part
  and escaped in the HTML part: it is put in as `one_line(name)`, escaped in the HTML.
- A template that used a value any other way (a filter, a URL with the name in it, a
  test on it) would break that. So each shape is checked once, when it is made: a probe
  email with awkward values (markup, quotes, accents in the name) is rendered both ways;
  unless they agree exactly, and the markers' core is found nowhere but in whole
  markers, the shape is rendered the slow way for every email.

A shape holds no personal data: the petition's texts and markers only (the probe's
values are made up).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, replace
from typing import Final

from groundswell_contracts.events import EmailKind
from markupsafe import escape

from groundswell_mailer.domain.messages import (
    Campaign,
    ComposedEmail,
    EmailContent,
    Links,
    compose,
    one_line,
)

# Values that pass every encoding step unchanged (RFC 3986 unreserved, minus "." and "~",
# which `quote_plus` keeps too but which would not be worth the doubt).
_PLAIN_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_TOKENS: Final = ("share_code", "withdraw_token", "confirmation_token", "verification_token")
_MAX_SHAPES = 1024  # a few per petition and kind; bounded all the same

_Parts = tuple[str, ...]  # literal, name, literal, name, ..., literal


@dataclass(frozen=True)
class _Shape:
    subject: _Parts
    text: _Parts
    html: _Parts
    headers: tuple[tuple[str, _Parts], ...]


@dataclass(frozen=True)
class _Key:
    kind: EmailKind
    petition_title: str
    petition_slug: str
    privacy_kind: str | None
    present: tuple[bool, ...]  # which of _TOKENS, then the unsubscribe token, are given


class Stencils:
    """The shapes of one dispatcher's emails (its links and campaign are fixed)."""

    def __init__(self, links: Links, campaign: Campaign) -> None:
        self._links = links
        self._campaign = campaign
        core = f"gs{secrets.token_hex(8)}"
        self._core = core
        self._marker = {name: f"{core}x{name.replace('_', '')}x" for name in _NAMES}
        self._split = re.compile(f"{core}x({'|'.join(n.replace('_', '') for n in _NAMES)})x")
        self._shapes: dict[_Key, _Shape | None] = {}  # None: rendered the slow way

    def compose(
        self, kind: EmailKind, content: EmailContent, unsubscribe_token: str | None
    ) -> ComposedEmail:
        """What `messages.compose(kind, content, links, unsubscribe_token, campaign)`
        returns (and the same ValueError for an email that cannot be written)."""
        values = _values(content, unsubscribe_token)
        if values is None:
            return self._slow(kind, content, unsubscribe_token)
        key = _Key(
            kind,
            content.petition_title,
            content.petition_slug,
            content.privacy_kind,
            (*(getattr(content, n) is not None for n in _TOKENS), unsubscribe_token is not None),
        )
        try:
            shape = self._shapes[key]
        except KeyError:
            shape = self._make(key, content, unsubscribe_token)
        if shape is None:
            return self._slow(kind, content, unsubscribe_token)
        return _fill(shape, values)

    def _slow(
        self, kind: EmailKind, content: EmailContent, unsubscribe_token: str | None
    ) -> ComposedEmail:
        return compose(kind, content, self._links, unsubscribe_token, campaign=self._campaign)

    def _make(
        self, key: _Key, content: EmailContent, unsubscribe_token: str | None
    ) -> _Shape | None:
        marked = _with_tokens(content, {n: self._marker[n] for n in _TOKENS})
        marked = replace(marked, first_name=self._marker["first_name"])
        marked_unsubscribe = self._marker["unsubscribe"] if unsubscribe_token is not None else None
        # Raises ValueError for an email that cannot be written, as the slow way would.
        rendered = self._slow(key.kind, marked, marked_unsubscribe)
        shape: _Shape | None = _Shape(
            subject=self._cut(rendered.subject),
            text=self._cut(rendered.text),
            html=self._cut(rendered.html),
            headers=tuple((name, self._cut(value)) for name, value in rendered.headers),
        )
        if not self._agrees(shape, key, content, unsubscribe_token):
            shape = None
        if len(self._shapes) >= _MAX_SHAPES:
            self._shapes.pop(next(iter(self._shapes)))  # the oldest shape
        self._shapes[key] = shape
        return shape

    def _cut(self, rendered: str) -> _Parts:
        return tuple(self._split.split(rendered))

    def _agrees(
        self, shape: _Shape | None, key: _Key, content: EmailContent, unsubscribe_token: str | None
    ) -> bool:
        """The probe: the shape filled in and the slow way agree on awkward values."""
        if shape is None:
            return False
        literals = [
            *shape.subject[::2],
            *shape.text[::2],
            *shape.html[::2],
            *(p for _, parts in shape.headers for p in parts[::2]),
        ]
        if any(self._core in literal for literal in literals):
            return False  # a marker was changed on its way into the text
        probe = _with_tokens(content, {n: f"Pr0be-{n}_x" for n in _TOKENS})
        probe = replace(probe, first_name=' Zoë <b>O\'Brien</b> & "Co"\x07 ')
        probe_unsubscribe = "Pr0be-unsub_x" if unsubscribe_token is not None else None
        values = _values(probe, probe_unsubscribe)
        expected = self._slow(key.kind, probe, probe_unsubscribe)
        return values is not None and _fill(shape, values) == expected


_NAMES: Final = ("first_name", *_TOKENS, "unsubscribe")


def _with_tokens(content: EmailContent, tokens: dict[str, str]) -> EmailContent:
    """`content` with each token that is present replaced (absent ones stay None)."""
    changes = {n: tokens[n] for n in _TOKENS if getattr(content, n) is not None}
    return replace(content, **changes)


def _values(content: EmailContent, unsubscribe_token: str | None) -> dict[str, str] | None:
    """What goes in place of each marker, per part; None when a value is not plain."""
    tokens = [getattr(content, n) for n in _TOKENS] + [unsubscribe_token]
    if any(t is not None and not _PLAIN_TOKEN.fullmatch(t) for t in tokens):
        return None
    name = one_line(content.first_name)
    if not name:
        return None  # a template may say something else to a nameless signer
    values = {
        n.replace("_", ""): t
        for n, t in zip((*_TOKENS, "unsubscribe"), tokens, strict=True)
        if t is not None
    }
    values["firstname"] = name
    values["firstname.html"] = str(escape(name))
    return values


def _join(parts: _Parts, values: dict[str, str], html: bool = False) -> str:
    if len(parts) == 1:
        return parts[0]
    out = [parts[0]]
    for i in range(1, len(parts), 2):
        name = parts[i]
        out.append(values[f"{name}.html"] if html and name == "firstname" else values[name])
        out.append(parts[i + 1])
    return "".join(out)


def _fill(shape: _Shape, values: dict[str, str]) -> ComposedEmail:
    return ComposedEmail(
        subject=_join(shape.subject, values),
        text=_join(shape.text, values),
        html=_join(shape.html, values, html=True),
        headers=tuple((name, _join(parts, values)) for name, parts in shape.headers),
    )
