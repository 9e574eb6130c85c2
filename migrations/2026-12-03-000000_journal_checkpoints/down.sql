ALTER TABLE usage_records ADD KEY ix_usage_records_journal (instance_id, journal_seq);
DROP TABLE journal_checkpoints;
