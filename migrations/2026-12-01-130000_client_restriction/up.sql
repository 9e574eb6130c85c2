-- Client restriction per key (CRS `enableClientRestriction` / `allowedClients`): a JSON
-- list of client ids (`claude_code`, …) and `ua:` user-agent patterns.
ALTER TABLE api_keys
  ADD COLUMN enable_client_restriction BOOLEAN NOT NULL DEFAULT FALSE AFTER restricted_models,
  ADD COLUMN allowed_clients VARCHAR(4000) NOT NULL DEFAULT '[]' AFTER enable_client_restriction;
