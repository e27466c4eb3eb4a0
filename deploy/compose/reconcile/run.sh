#!/bin/sh
# Compare the counter's figures with PostgreSQL's every RECONCILE_INTERVAL seconds and
# leave the result where node_exporter's textfile collector reads it (Prometheus then
# alerts on groundswell_reconcile_drifts). Exit 1 (drift) and 3 (cannot connect) are
# results, not reasons to stop: the next run tries again.
set -u
interval="${RECONCILE_INTERVAL:-60}"
out="${RECONCILE_METRICS_FILE:-/textfile/reconcile.prom}"
while true; do
    groundswell-stack reconcile \
        --signing-url "${SIGNING_URL:-http://signing:8001}" \
        --counter-url "${COUNTER_URL:-http://counter:8002}" \
        --metrics-file "$out" || true
    sleep "$interval"
done
