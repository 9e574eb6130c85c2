ALTER TABLE usage_records ADD KEY ix_usage_records_created (created_at);
DROP TABLE usage_minutely;
