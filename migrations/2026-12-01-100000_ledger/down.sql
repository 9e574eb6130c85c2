ALTER TABLE usage_records
  DROP KEY ix_usage_records_journal,
  DROP COLUMN upstream_request_id,
  DROP COLUMN journal_seq,
  DROP COLUMN instance_id;
