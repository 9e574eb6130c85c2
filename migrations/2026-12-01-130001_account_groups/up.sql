-- Account groups (CRS `account_group:*`): keys bound to `group:<id>` are served by the
-- group's accounts. Membership lives on the account (`group_ids`, a JSON list) so the
-- scheduler reads it from the account snapshot it already has.
CREATE TABLE account_groups (
  id CHAR(36) NOT NULL PRIMARY KEY,
  name VARCHAR(255) NOT NULL,
  description VARCHAR(2000) NOT NULL DEFAULT '',
  platform VARCHAR(16) NOT NULL DEFAULT 'claude',
  created_at DATETIME(6) NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  KEY ix_account_groups_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

ALTER TABLE claude_accounts
  ADD COLUMN group_ids VARCHAR(2000) NOT NULL DEFAULT '[]' AFTER last_refresh_at;
