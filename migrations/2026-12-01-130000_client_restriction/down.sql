ALTER TABLE api_keys
  DROP COLUMN allowed_clients,
  DROP COLUMN enable_client_restriction;
