-- The bytes each search index's files took after its last settled commit; the project's
-- `index_bytes` gauge is their sum.
ALTER TABLE search_indexes ADD COLUMN bytes BIGINT NOT NULL DEFAULT 0;
