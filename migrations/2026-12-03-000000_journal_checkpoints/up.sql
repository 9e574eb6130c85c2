-- Where each instance's journal stands in the archive, one row per instance, written in the
-- same transaction as the rows it covers. It replaces the (instance_id, journal_seq) index:
-- that index cost every archived row an index entry; this costs one row update per batch.
-- `last_row_id` is an id of the instance's last archived batch: every later row of that
-- instance has a higher id (ids are handed out in increasing order and one writer per
-- instance archives batch after batch), so the rows after a boundary are found by a range
-- scan of the primary key from it.
CREATE TABLE journal_checkpoints (
  instance_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
  archived_seq BIGINT NOT NULL,
  last_row_id BIGINT NOT NULL
) ENGINE=InnoDB;

INSERT INTO journal_checkpoints (instance_id, archived_seq, last_row_id)
SELECT instance_id, MAX(journal_seq), MAX(id) FROM usage_records
WHERE instance_id IS NOT NULL AND journal_seq IS NOT NULL
GROUP BY instance_id;

ALTER TABLE usage_records DROP KEY ix_usage_records_journal;
