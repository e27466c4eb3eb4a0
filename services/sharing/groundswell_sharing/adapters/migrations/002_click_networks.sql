-- Clicks are told apart per network (IPv4 address, IPv6 /64) per day, no longer per
-- (IP, user agent): visitor_hash is now an HMAC of (day, network). site_hash is the
-- same for an IPv6 /48 (NULL for IPv4); both feed the hourly budget of counted clicks.
ALTER TABLE clicks ADD COLUMN site_hash text;
CREATE INDEX clicks_network_recent ON clicks (visitor_hash, clicked_at);
CREATE INDEX clicks_site_recent ON clicks (site_hash, clicked_at) WHERE site_hash IS NOT NULL;

-- Clicks on a code sharing has not heard of yet: signing issued the link, but its
-- SignatureCreated is still on the way. Moved into clicks when the event arrives;
-- forgotten after a day if it never does. Same personal data as clicks: none.
CREATE TABLE pending_clicks (
    share_code   text        NOT NULL,
    channel      text        NOT NULL,
    visitor_hash text        NOT NULL,
    site_hash    text,
    clicked_on   date        NOT NULL,
    clicked_at   timestamptz NOT NULL,
    PRIMARY KEY (share_code, visitor_hash, clicked_on)
);
CREATE INDEX pending_clicks_network ON pending_clicks (visitor_hash, clicked_at);
CREATE INDEX pending_clicks_site ON pending_clicks (site_hash, clicked_at)
    WHERE site_hash IS NOT NULL;
CREATE INDEX pending_clicks_age ON pending_clicks (clicked_at);
