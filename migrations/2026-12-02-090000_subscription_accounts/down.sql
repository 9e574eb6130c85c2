ALTER TABLE claude_accounts
  DROP COLUMN subscription_info,
  DROP COLUMN daily_quota,
  DROP COLUMN auto_stop_on_warning,
  DROP COLUMN session_window_status,
  DROP COLUMN session_window_end,
  DROP COLUMN session_window_start;
