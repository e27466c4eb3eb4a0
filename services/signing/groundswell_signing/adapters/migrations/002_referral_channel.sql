-- Where the share link that brought this signer was shared (email, whatsapp, ...).
ALTER TABLE signatures ADD COLUMN ref_channel text;
