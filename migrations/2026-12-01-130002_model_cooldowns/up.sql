-- Rate-limit cooldowns per model family (`{"opus":"<RFC 3339 until>"}`): an Opus 429 no
-- longer takes the account out for Sonnet and Haiku. Console accounts: a model mapping
-- (CRS `supportedModels`: client model -> upstream model; when set, only those models) and
-- a custom user agent.
ALTER TABLE claude_accounts
  ADD COLUMN model_cooldowns VARCHAR(1000) NOT NULL DEFAULT '{}' AFTER group_ids,
  ADD COLUMN model_mapping VARCHAR(4000) NOT NULL DEFAULT '{}' AFTER model_cooldowns,
  ADD COLUMN user_agent VARCHAR(512) NULL AFTER model_mapping;
