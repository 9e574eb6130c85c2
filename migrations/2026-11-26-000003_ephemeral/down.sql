DROP TABLE IF EXISTS concurrency_scopes;
DROP TABLE IF EXISTS concurrency_leases;
DROP TABLE IF EXISTS usage_counters;
DROP TABLE IF EXISTS kv_entries;
