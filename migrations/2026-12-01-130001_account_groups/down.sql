ALTER TABLE claude_accounts DROP COLUMN group_ids;
DROP TABLE account_groups;
