"""The counter: per-petition signature counts from the event stream, served over HTTP."""
