"""A signature's secrets, drawn at once: the shapes of the separate draws, never shared."""

from __future__ import annotations

import string
import uuid

from groundswell_contracts.sealed import DATA_KEY_BYTES, new_data_key
from groundswell_signing.domain.tokens import new_share_code, new_signature_secrets, new_token


def test_one_draw_gives_what_the_separate_draws_give() -> None:
    drawn = new_signature_secrets()
    assert isinstance(drawn.id, uuid.UUID) and drawn.id.version == 4
    assert len(drawn.confirmation_token) == len(new_token())
    assert len(drawn.withdraw_token) == len(new_token())
    assert len(drawn.share_code) == len(new_share_code())
    assert len(drawn.data_key) == len(new_data_key()) == DATA_KEY_BYTES
    for token in (drawn.confirmation_token, drawn.withdraw_token, drawn.share_code):
        # url-safe base64 without padding, as `secrets.token_urlsafe` makes
        assert set(token) <= set(string.ascii_letters + string.digits + "-_")


def test_no_piece_repeats_within_a_draw_or_across_draws() -> None:
    draws = [new_signature_secrets() for _ in range(1_000)]
    pieces = [p for d in draws for p in (d.id.hex, d.confirmation_token, d.withdraw_token)]
    assert len(set(pieces)) == len(pieces)
    assert len({d.data_key for d in draws}) == len(draws)
    assert len({d.share_code for d in draws}) == len(draws)  # 48 bits: no clash in 1,000
