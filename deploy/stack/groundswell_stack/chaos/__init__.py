"""`groundswell-stack chaos`: the stack as `make up` runs it, under load, while faults hit it.

`driver` runs the cycles (load, one fault at a random moment, recovery, drain, checks);
`faults` says how each fault is made and where errors are allowed; `checks` holds the
invariants, read from PostgreSQL, the services, the SMTP sink's log and the broker;
`report` prints the table and writes the chaos section of docs/reliability.md.
"""
