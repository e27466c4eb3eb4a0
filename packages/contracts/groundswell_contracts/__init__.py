"""The contract every Groundswell service shares: topics, events, wire format."""
