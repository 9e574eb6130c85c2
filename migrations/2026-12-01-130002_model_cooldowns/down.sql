ALTER TABLE claude_accounts DROP COLUMN model_cooldowns;
