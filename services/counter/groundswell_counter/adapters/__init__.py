"""Where the counter meets Kafka and faust."""
