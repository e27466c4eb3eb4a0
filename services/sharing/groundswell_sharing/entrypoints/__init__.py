"""What drives the sharing service: the HTTP app and the event handler."""
