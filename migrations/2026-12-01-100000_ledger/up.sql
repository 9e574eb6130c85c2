-- The usage ledger: each archive row names the journal it came from (instance id + sequence
-- number), so a rebuild of the Redis counters knows where each instance's journal stood; and
-- the upstream's own request id, so an operator can quote it to Anthropic.
ALTER TABLE usage_records
  ADD COLUMN instance_id CHAR(36) NULL AFTER request_id,
  ADD COLUMN journal_seq BIGINT NULL AFTER instance_id,
  ADD COLUMN upstream_request_id VARCHAR(128) NULL AFTER journal_seq,
  ADD KEY ix_usage_records_journal (instance_id, journal_seq);
