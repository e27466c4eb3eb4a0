"""Pure counting rules: no faust, no Kafka, no I/O."""
