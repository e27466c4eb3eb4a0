"""Countries: ISO 3166-1 alpha-2 codes and the names a drop-down shows, from pycountry
(Debian's iso-codes data, kept up to date upstream) rather than a hand-kept list."""

from __future__ import annotations

import unicodedata
from typing import Any

import pycountry

# Officially assigned codes; the API accepts exactly these.
ISO_COUNTRY_CODES = frozenset(country.alpha_2 for country in pycountry.countries)


def _display_name(country: Any) -> str:
    # "South Korea" rather than "Korea, Republic of", where ISO gives a common name.
    return str(getattr(country, "common_name", None) or country.name)


def _sort_key(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


# (code, name), sorted by name, for the petition form's drop-down.
COUNTRY_CHOICES: tuple[tuple[str, str], ...] = tuple(
    sorted(
        ((str(c.alpha_2), _display_name(c)) for c in pycountry.countries),
        # "Åland Islands" among the A's, not after "Zimbabwe".
        key=lambda choice: _sort_key(choice[1]),
    )
)
