"""What drives the mailer: the HTTP app, the signature-event handler, the send loop."""
