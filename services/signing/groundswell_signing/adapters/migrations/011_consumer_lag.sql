-- How far behind each watched consumer group is, in seconds, as the relay last read it
-- (groundswell_runtime.consumer_lag): signing's admission refuses new signatures while
-- the ones it accepted wait there (service_layer/backlog.py). One row per group, written
-- a few times a second by whichever relay publishes; a NULL or an old row means "cannot
-- tell", and signing then goes by its outbox alone.
CREATE TABLE consumer_lag (
    consumer     text PRIMARY KEY,
    seconds      float8,
    measured_at  timestamptz NOT NULL DEFAULT now()
);
