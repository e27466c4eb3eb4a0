"""Groundswell mailer: turns signature events into emails, exactly once per email."""
