-- Archived requests per minute (UTC), for the console's activity chart, added in the archive
-- writer's transaction as usage_daily is. It replaces the created_at index of usage_records:
-- only that chart read it, and every archived row paid an entry in it. The chart shows the
-- last hour: the roll-up starts with the last 7 days of the archive (read through the index
-- before it goes), not a scan of all of it.
CREATE TABLE usage_minutely (
  minute DATETIME NOT NULL PRIMARY KEY,
  requests BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB;

INSERT INTO usage_minutely (minute, requests)
SELECT DATE_FORMAT(created_at, '%Y-%m-%d %H:%i:00'), COUNT(*) FROM usage_records
WHERE created_at >= UTC_TIMESTAMP() - INTERVAL 7 DAY
GROUP BY DATE_FORMAT(created_at, '%Y-%m-%d %H:%i:00');

ALTER TABLE usage_records DROP KEY ix_usage_records_created;
