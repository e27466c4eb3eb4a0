"""Plumbing shared by the Groundswell services (no business rules live here)."""
