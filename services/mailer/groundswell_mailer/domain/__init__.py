"""Mailer rules with no I/O: who gets what, when to retry, what an email says."""
