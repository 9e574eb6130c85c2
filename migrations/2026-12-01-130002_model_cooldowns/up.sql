-- Rate-limit cooldowns per model family (`{"opus":"<RFC 3339 until>"}`): an Opus 429 no
-- longer takes the account out for Sonnet and Haiku.
ALTER TABLE claude_accounts
  ADD COLUMN model_cooldowns VARCHAR(1000) NOT NULL DEFAULT '{}' AFTER group_ids;
