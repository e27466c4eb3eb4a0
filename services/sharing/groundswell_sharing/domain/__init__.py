"""Sharing rules with no I/O: channels, visitors, redirects, the viral coefficient."""
