"""Realistic signing requests, built up front as raw HTTP/1.1 bytes.

Every request carries a UK-looking name, a unique email address at a common provider,
a valid-format UK postcode (sometimes typed in lower case or without the space) and a
client address of its own (`X-Forwarded-For`), so the per-address limits never bite.
About 5% are a second signature by someone who already signed in the same step (the
address re-typed with different capitals: the same person), some carry a share code of
an earlier signer (`ref`, with the channel it was shared through) and some a campaign
`source`. The plan is deterministic for a seed.
"""

from __future__ import annotations

import json
import random
import unicodedata
from dataclasses import dataclass, field


def words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST_NAMES = words(
    "Ada Alice Amara Amelia Aisha Ben Bethan Callum Charlotte Chloe Connor Daniel Dylan "
    "Eleanor Emily Ewan Fatima Finn Freya George Grace Hannah Harry Isla Jack James "
    "Jessica Joshua Kai Lily Lucy Mohammed Molly Nia Noah Oliver Olivia Oluwaseun Oscar "
    "Priya Rhys Ruby Samuel Seán Siân Sophie Thomas Tom Zara Zoë Łukasz Niamh Rory Aoife "
    "Kiran Yusuf"
)
SURNAMES = words(
    "Smith Jones Williams Taylor Brown Davies Evans Wilson Thomas Johnson Roberts "
    "Robinson Thompson Wright Walker White Edwards Hughes Green Hall Lewis Harris Clarke "
    "Patel Jackson Wood Turner Martin Cooper Hill Ward Morris Moore Clark Lee King Baker "
    "Harrison Morgan Allen James Scott Phillips Watson Davis Parker Price Bennett Young "
    "Griffiths Mitchell Kelly Cook Carter Richardson Bailey Collins Bell Shah Begum Khan "
    "Ali O'Brien MacLeod Nowak Okafor Adeyemi Ní-Bhriain"
)
DOMAINS = words(
    "gmail.com gmail.com gmail.com outlook.com hotmail.co.uk yahoo.co.uk btinternet.com "
    "icloud.com sky.com live.co.uk protonmail.com virginmedia.com"
)
# Real postcode areas, weighted towards the big cities as a viral petition would be.
AREAS = words(
    "AB B B B BA BD BH BL BN BR BS BS CB CF CH CM CO CR CT CV DE DN E E E EC EH EH EX G G "
    "GL GU HA HP HU IP KT L L LE LS LS M M M ME MK N N NE NG NN NR NW OX PL PO RG S SE SE "
    "SK SO SW SW TN W WC YO"
)
INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # the letters the inward code may use
SOURCES = ("newsletter", "facebook-ad", "instagram", "partner-site", "twitter", "sms")
CHANNELS = ("whatsapp", "email", "facebook", "x", "copy")
OTHER_COUNTRIES = ("IE", "FR", "DE", "US", "ES")
# First octets of public-looking IPv4 ranges (UK ISPs' blocks among them).
FIRST_OCTETS = (81, 86, 90, 92, 94, 109, 176, 212)

DUPLICATE_SHARE = 0.05
REF_SHARE = 0.10
SOURCE_SHARE = 0.20


def ascii_fold(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def client_address(n: int) -> str:
    """The n-th client address of the run: unique, public-looking, every 20th IPv6.

    Each IPv6 client gets a /48 of its own: limits apply per /64 network and per /48
    site, and real clients of a surge come from many sites.
    """
    if n % 20 == 19:
        return f"2a02:{(n >> 16) & 0xFFFF:x}:{n & 0xFFFF:x}:1::1"
    octet = FIRST_OCTETS[n % len(FIRST_OCTETS)]
    rest = n // len(FIRST_OCTETS)
    return f"{octet}.{(rest >> 16) & 0xFF}.{(rest >> 8) & 0xFF}.{rest & 0xFF}"


@dataclass
class Person:
    email_id: int
    name: str
    email: str
    postcode: str | None
    country: str


@dataclass
class Planned:
    """One request: the bytes to send and what the analysis needs to know of it."""

    raw: bytes
    petition: int
    email_id: int
    duplicate: bool


@dataclass
class Planner:
    host: str
    slugs: list[str]
    weights: list[float]
    seed: int = 7
    share_codes: list[str] = field(default_factory=list)
    _rng: random.Random = field(init=False)
    _next_email: int = 0
    _next_address: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def person(self) -> Person:
        rng = self._rng
        first, last = rng.choice(FIRST_NAMES), rng.choice(SURNAMES)
        n = self._next_email
        self._next_email += 1
        domain = rng.choice(DOMAINS)
        local = f"{ascii_fold(first)}.{ascii_fold(last)}{n}"
        country = "GB" if rng.random() < 0.97 else rng.choice(OTHER_COUNTRIES)
        return Person(n, f"{first} {last}", f"{local}@{domain}", self.postcode(country), country)

    def postcode(self, country: str) -> str | None:
        if country != "GB":
            return None
        rng = self._rng
        area = rng.choice(AREAS)
        district = rng.randint(1, 20 if len(area) == 2 else 9)
        inward = f"{rng.randint(0, 9)}{rng.choice(INWARD_LETTERS)}{rng.choice(INWARD_LETTERS)}"
        style = rng.random()
        if style < 0.1:
            return f"{area}{district}{inward}".lower()
        if style < 0.15:
            return f"{area}{district}{inward}"
        return f"{area}{district} {inward}"

    def body(self, person: Person, *, duplicate: bool) -> dict[str, object]:
        rng = self._rng
        email = person.email
        if duplicate:
            # The same mailbox typed again: capitals differ, the person does not.
            local, _, domain = email.partition("@")
            email = f"{local.capitalize()}@{domain.upper()}"
        body: dict[str, object] = {
            "name": person.name,
            "email": email,
            "postcode": person.postcode,
            "country": person.country,
            "contact_consent": rng.random() < 0.4,
        }
        if self.share_codes and rng.random() < REF_SHARE:
            body["ref"] = rng.choice(self.share_codes)
            body["ref_channel"] = rng.choice(CHANNELS)
        if rng.random() < SOURCE_SHARE:
            body["source"] = rng.choice(SOURCES)
        return body

    def request(self, slug: str, body: dict[str, object]) -> bytes:
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        address = client_address(self._next_address)
        self._next_address += 1
        head = (
            f"POST /api/petitions/{slug}/signatures HTTP/1.1\r\n"
            f"Host: {self.host}\r\n"
            "User-Agent: groundswell-bench\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            f"X-Forwarded-For: {address}\r\n"
            "\r\n"
        )
        return head.encode() + payload

    def plan(self, n: int) -> list[Planned]:
        """n requests: ~5% repeat someone who signed at least 100 requests earlier."""
        rng = self._rng
        planned: list[Planned] = []
        signers: list[tuple[int, Person]] = []  # (petition, person) not yet repeated
        for i in range(n):
            if i > 100 and signers and rng.random() < DUPLICATE_SHARE:
                # Only people from well before, so the first signature is in normally.
                pick = rng.randrange(max(1, len(signers) - 100))
                petition, person = signers.pop(pick)
                raw = self.request(self.slugs[petition], self.body(person, duplicate=True))
                planned.append(Planned(raw, petition, person.email_id, True))
                continue
            petition = rng.choices(range(len(self.slugs)), self.weights)[0]
            person = self.person()
            signers.append((petition, person))
            raw = self.request(self.slugs[petition], self.body(person, duplicate=False))
            planned.append(Planned(raw, petition, person.email_id, False))
        return planned
