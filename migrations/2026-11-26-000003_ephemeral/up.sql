-- What Redis holds in hybrid mode, as tables for mysql mode; expired rows are swept.
CREATE TABLE kv_entries (
  entry_key VARCHAR(191) NOT NULL PRIMARY KEY,
  entry_value TEXT NOT NULL,
  expires_at DATETIME(6) NULL,
  KEY ix_kv_entries_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- One row per counter set (key / account / model x period, rate windows), as Redis hashes.
CREATE TABLE usage_counters (
  counter_key VARCHAR(255) CHARACTER SET ascii NOT NULL PRIMARY KEY,
  requests BIGINT NOT NULL DEFAULT 0,
  input_tokens BIGINT NOT NULL DEFAULT 0,
  output_tokens BIGINT NOT NULL DEFAULT 0,
  cache_create_tokens BIGINT NOT NULL DEFAULT 0,
  cache_read_tokens BIGINT NOT NULL DEFAULT 0,
  cost_micros BIGINT NOT NULL DEFAULT 0,
  expires_at DATETIME(6) NULL,
  KEY ix_usage_counters_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE concurrency_leases (
  scope VARCHAR(191) NOT NULL,
  lease_id CHAR(36) NOT NULL,
  expires_at DATETIME(6) NOT NULL,
  PRIMARY KEY (scope, lease_id),
  KEY ix_concurrency_leases_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE concurrency_scopes (
  scope VARCHAR(191) NOT NULL PRIMARY KEY
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
