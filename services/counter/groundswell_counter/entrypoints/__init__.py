"""The worker (faust agents and timers) and the HTTP app it serves."""
