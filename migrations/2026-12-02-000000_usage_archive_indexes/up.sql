-- The archive writer's cost per row is mostly index maintenance. The ids the relay makes
-- (request ids `req_<hex>`, key ids, instance ids) are ASCII: with a binary collation every
-- index compare and the unique check on request_id is a byte compare, not a Unicode
-- collation. No query reads usage_records by account or by usage_date (reports read
-- usage_daily); the per-key queries (recent usage, the rebuild's rate-window and Opus-week
-- sums) filter a key and order or range on created_at.
ALTER TABLE usage_records
  MODIFY request_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  MODIFY instance_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NULL,
  MODIFY api_key_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  DROP KEY ix_usage_records_account_date,
  DROP KEY ix_usage_records_key_date,
  ADD KEY ix_usage_records_key_created (api_key_id, created_at);
