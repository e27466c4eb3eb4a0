"""Applying events and publishing counts through ports; faust and Kafka stay in adapters."""
