-- The clusters an API token is limited to; NULL: every cluster. Not a
-- foreign key: an array cannot be one, and a deleted cluster left in a
-- scope only keeps answering 404.
ALTER TABLE api_tokens ADD COLUMN clusters uuid[];
