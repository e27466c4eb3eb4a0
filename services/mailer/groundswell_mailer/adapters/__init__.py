"""PostgreSQL and SMTP: the mailer's side effects."""
