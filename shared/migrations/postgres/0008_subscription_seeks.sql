-- How often a subscription was seeked: a replica that fetches from a partition with
-- positions read before the last seek reads them again.
ALTER TABLE subscriptions ADD COLUMN seeks BIGINT NOT NULL DEFAULT 0;
