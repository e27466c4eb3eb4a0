"""The open-loop load: people signing, signing again, confirming, withdrawing and
clicking share links, at a fixed rate whatever the stack is going through.

Request i is started at t0 + i/rate without waiting for earlier answers (open loop: a
stalled server cannot slow the load down). Tokens and share codes come from the mail the
sink received, as a signer's would; each request names a random client address
(X-Forwarded-For, the stack trusts 127.0.0.1 as its proxy) so per-network limits see
many visitors. Every answer is kept for the checks: what, when, and how it ended.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groundswell_stack.chaos.client import request

CONNECTION_FAILED = 0
NO_ANSWER = -1
# Shares of the load (the rest signs anew); a kind with nothing to act on signs instead.
MIX = {"duplicate": 0.05, "confirm": 0.10, "withdraw": 0.03, "click": 0.12}
REF_SHARE = 0.25  # new signatures that come through a clicked share link
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@dataclass
class Outcome:
    kind: str
    started: float  # wall clock, so windows from other processes' logs line up
    ended: float
    status: int  # HTTP status, CONNECTION_FAILED or NO_ANSWER
    retry_after: bool
    error: str
    slug: str
    address: str  # the signer's address (sign, confirm, withdraw) or the share code (click)


@dataclass
class MailLog:
    """The sink's JSON lines, read as they grow."""

    path: Path
    offset: int = 0
    delivered: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    confirm_links: deque[tuple[str, str]] = field(default_factory=deque)
    withdraw_links: deque[tuple[str, str]] = field(default_factory=deque)
    share_codes: deque[tuple[str, str]] = field(default_factory=deque)

    def read(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # a line being written is read next time
        self.offset += end
        for raw in chunk[:end].splitlines():
            line = json.loads(raw)
            if line["event"] == "refused":
                self.refused.append(line)
                continue
            self.delivered.append(line)
            to = line["to"].lower()
            if not to.startswith("signer-"):
                continue  # the probes' and bounces' links are not the load's to follow
            if line["kind"] == "confirmation" and "confirm" in line:
                self.confirm_links.append((to, line["confirm"]))
            if line["kind"] == "thank_you":
                if "withdraw" in line:
                    self.withdraw_links.append((to, line["withdraw"]))
                if "share" in line:
                    self.share_codes.append((to, line["share"]))

    def delivered_to(self, address: str, kind: str) -> int:
        address = address.lower()
        return sum(1 for d in self.delivered if d["to"].lower() == address and d["kind"] == kind)


class Load:
    def __init__(
        self,
        signing: str,
        sharing: str,
        slugs: list[str],
        mail: MailLog,
        run_id: str,
        rate: float,
        seed: int,
    ) -> None:
        self.signing = signing
        self.sharing = sharing
        self.slugs = slugs
        self.mail = mail
        self.run_id = run_id
        self.rate = rate
        self.random = random.Random(seed)  # noqa: S311  (a repeatable mix, not secrets)
        self.outcomes: list[Outcome] = []
        self.slug_of: dict[str, str] = {}  # address -> petition slug
        self.accepted: list[str] = []  # addresses that got a 202 (for duplicates)
        self.clicked: dict[str, list[str]] = {s: [] for s in slugs}  # slug -> codes clicked
        self._serial = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: asyncio.Task[None] | None = None

    # --- running --------------------------------------------------------------------

    def start(self) -> None:
        self._running = asyncio.create_task(self._open_loop())

    async def stop(self) -> None:
        """Stop starting requests; wait for those under way to end."""
        if self._running is not None:
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)
            self._running = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.stop()

    async def _open_loop(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        i = 0
        while True:
            # Behind schedule (a busy machine), the late requests go at once, but the loop
            # still yields so their answers are read meanwhile.
            await asyncio.sleep(max(0.0, t0 + i / self.rate - loop.time()))
            if i % 20 == 0:
                self.mail.read()
            task = asyncio.create_task(self._one())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            i += 1

    async def _one(self) -> None:
        draw = self.random.random()
        for kind, share in MIX.items():
            if draw < share:
                if await self._act(kind):
                    return
                break
            draw -= share
        await self.sign(self._new_address(), self.random.choice(self.slugs))

    async def _act(self, kind: str) -> bool:
        mail = self.mail
        if kind == "duplicate" and self.accepted:
            address = self.random.choice(self.accepted)
            await self.sign(address, self.slug_of[address], kind="duplicate")
            return True
        if kind == "confirm" and mail.confirm_links:
            address, token = mail.confirm_links.popleft()
            await self._form(f"/confirm/{token}", "confirm", address)
            return True
        if kind == "withdraw" and mail.withdraw_links:
            address, token = mail.withdraw_links.popleft()
            await self._form(f"/withdraw/{token}", "withdraw", address)
            return True
        if kind == "click" and mail.share_codes:
            address, code = mail.share_codes.popleft()
            await self._click(code, self.slug_of.get(address, ""))
            return True
        return False

    # --- requests -------------------------------------------------------------------

    def _new_address(self, prefix: str = "signer") -> str:
        self._serial += 1
        return f"{prefix}-{self.run_id}-{self._serial}@example.org"

    def _client_address(self) -> dict[str, str]:
        r = self.random.randrange
        return {"X-Forwarded-For": f"10.{r(256)}.{r(256)}.{r(1, 255)}"}

    async def sign(self, address: str, slug: str, kind: str = "sign") -> Outcome:
        body: dict[str, Any] = {
            "name": "Chaos Signer",
            "email": address,
            "postcode": "OX1 2JD",
            "contact_consent": True,
            "source": "chaos",
        }
        codes = self.clicked.get(slug)
        if kind == "sign" and codes and self.random.random() < REF_SHARE:
            body |= {"ref": self.random.choice(codes), "ref_channel": "whatsapp"}
        self.slug_of.setdefault(address, slug)
        outcome = await self._request(
            kind,
            slug,
            address,
            "POST",
            f"{self.signing}/api/petitions/{slug}/signatures",
            json_body=body,
            headers=self._client_address(),
        )
        if outcome.status == 202 and kind == "sign":
            self.accepted.append(address)
        return outcome

    async def probe(self, slug: str) -> tuple[str, Outcome]:
        address = self._new_address("probe")
        return address, await self.sign(address, slug, kind="probe")

    async def _form(self, path: str, kind: str, address: str) -> None:
        await self._request(
            kind,
            self.slug_of.get(address, ""),
            address,
            "POST",
            f"{self.signing}{path}",
            form={},
            # A form posted from our own page, as a browser says so.
            headers={"Origin": self.signing, **self._client_address()},
        )

    async def _click(self, code: str, slug: str) -> None:
        outcome = await self._request(
            "click",
            slug,
            code,
            "GET",
            f"{self.sharing}/s/{code}?c=whatsapp",
            headers=self._client_address(),
        )
        if outcome.status == 302 and slug in self.clicked:
            self.clicked[slug].append(code)

    async def _request(
        self, kind: str, slug: str, address: str, method: str, url: str, **kwargs: Any
    ) -> Outcome:
        started = time.time()
        status, retry_after, error = NO_ANSWER, False, ""
        kwargs["headers"] = {"User-Agent": BROWSER, **kwargs.get("headers", {})}
        try:
            answer = await request(method, url, **kwargs)
            status = answer.status
            retry_after = "retry-after" in answer.headers
        except TimeoutError as exc:
            error = type(exc).__name__
        except OSError as exc:
            status, error = CONNECTION_FAILED, type(exc).__name__
        outcome = Outcome(kind, started, time.time(), status, retry_after, error, slug, address)
        self.outcomes.append(outcome)
        return outcome
