ALTER TABLE claude_accounts
  DROP COLUMN user_agent,
  DROP COLUMN model_mapping,
  DROP COLUMN model_cooldowns;
