-- How far behind each watched consumer group is, in seconds, as each relay last read it
-- (groundswell_runtime.consumer_lag): signing's admission refuses new signatures while
-- the ones it accepted wait there (service_layer/backlog.py). A relay knows only what it
-- published itself, and several may take turns (one per `serve` worker), so each writes
-- its own row a few times a second and admission takes the worst of the recent ones; a
-- NULL or an old row means "cannot tell". Rows of relays gone are pruned by the others.
CREATE TABLE consumer_lag (
    consumer     text NOT NULL,
    relay        text NOT NULL,
    seconds      float8,
    measured_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, relay)
);
