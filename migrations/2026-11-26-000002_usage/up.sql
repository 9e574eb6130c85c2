-- Usage archive: one row per relayed request (request_id makes replays idempotent),
-- and daily roll-ups recomputed from the archive for the days a batch touched.
CREATE TABLE usage_records (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  request_id VARCHAR(64) NOT NULL,
  api_key_id CHAR(36) NOT NULL,
  account_id VARCHAR(64) NOT NULL DEFAULT '',
  model VARCHAR(128) NOT NULL,
  input_tokens BIGINT NOT NULL DEFAULT 0,
  output_tokens BIGINT NOT NULL DEFAULT 0,
  cache_create_5m_tokens BIGINT NOT NULL DEFAULT 0,
  cache_create_1h_tokens BIGINT NOT NULL DEFAULT 0,
  cache_read_tokens BIGINT NOT NULL DEFAULT 0,
  cost_micros BIGINT NOT NULL DEFAULT 0,
  status_code SMALLINT NOT NULL DEFAULT 200,
  is_stream BOOLEAN NOT NULL DEFAULT FALSE,
  latency_ms INT NOT NULL DEFAULT 0,
  usage_date DATE NOT NULL,
  created_at DATETIME(6) NOT NULL,
  UNIQUE KEY uq_usage_records_request (request_id),
  KEY ix_usage_records_key_date (api_key_id, usage_date),
  KEY ix_usage_records_account_date (account_id, usage_date),
  KEY ix_usage_records_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE usage_daily (
  usage_date DATE NOT NULL,
  api_key_id CHAR(36) NOT NULL,
  account_id VARCHAR(64) NOT NULL,
  model VARCHAR(128) NOT NULL,
  source VARCHAR(16) NOT NULL DEFAULT 'relay',
  requests BIGINT NOT NULL DEFAULT 0,
  input_tokens BIGINT NOT NULL DEFAULT 0,
  output_tokens BIGINT NOT NULL DEFAULT 0,
  cache_create_tokens BIGINT NOT NULL DEFAULT 0,
  cache_read_tokens BIGINT NOT NULL DEFAULT 0,
  cost_micros BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (usage_date, api_key_id, account_id, model, source),
  KEY ix_usage_daily_key (api_key_id, usage_date)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
