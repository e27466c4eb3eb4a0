"""Groundswell sharing: per-signer share links, clicks, referrals and their stats."""
