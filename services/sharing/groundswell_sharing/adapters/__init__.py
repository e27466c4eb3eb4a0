"""PostgreSQL: the sharing service's schema."""
