-- Subscription (OAuth) accounts: the 5-hour usage window (start rounded down to the hour,
-- end = start + 5 h, the upstream's `anthropic-ratelimit-unified-5h-status`), the optional
-- stop before the limit (CRS `autoStopOnWarning`) and the profile read from the OAuth
-- provider (email, organization, subscription type; JSON). Console accounts: a daily quota
-- in dollars (CRS `dailyQuota`; 0 = none).
ALTER TABLE claude_accounts
  ADD COLUMN session_window_start DATETIME(6) NULL AFTER user_agent,
  ADD COLUMN session_window_end DATETIME(6) NULL AFTER session_window_start,
  ADD COLUMN session_window_status VARCHAR(32) NULL AFTER session_window_end,
  ADD COLUMN auto_stop_on_warning BOOLEAN NOT NULL DEFAULT FALSE AFTER session_window_status,
  ADD COLUMN daily_quota DOUBLE NOT NULL DEFAULT 0 AFTER auto_stop_on_warning,
  ADD COLUMN subscription_info VARCHAR(2000) NULL AFTER daily_quota;
