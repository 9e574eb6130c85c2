DROP TABLE IF EXISTS usage_daily;
DROP TABLE IF EXISTS usage_records;
