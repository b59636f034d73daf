-- The documents each search index holds, as of its last settled commit, and the room
-- reserved for writes not settled yet (a crash between the two is settled when the index
-- next opens, against the count its files hold).
ALTER TABLE search_indexes ADD COLUMN documents BIGINT NOT NULL DEFAULT 0;
ALTER TABLE search_indexes ADD COLUMN pending BIGINT NOT NULL DEFAULT 0;
