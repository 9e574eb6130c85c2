ALTER TABLE usage_records
  DROP KEY ix_usage_records_key_created,
  ADD KEY ix_usage_records_key_date (api_key_id, usage_date),
  ADD KEY ix_usage_records_account_date (account_id, usage_date),
  MODIFY api_key_id CHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
  MODIFY instance_id CHAR(36) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NULL,
  MODIFY request_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL;
