-- Per document: its tokens and where it starts in the trace, so that `moetrace analyze
-- --from-counts` can put the documents back in trace order (manifest order of the shards,
-- then row order), which decides how documents are dealt into buckets.
-- Reads the view trace (see expert_counts.sql), which for this file must also carry
--   shard_file: the path or URI of the shard the row came from (DuckDB: read_parquet's
--     filename = true; Spark: _metadata.file_path); it must end with the shard's path in
--     the manifest (e.g. shards/part-00000.parquet);
--   shard_row: the row's place in that file from 0 (DuckDB: file_row_number = true; Spark 3.5+:
--     _metadata.row_index).
-- A document never spans shards, so MIN(shard_file) is its only file.
SELECT
  domain,
  CAST(doc AS BIGINT) AS doc,
  MIN(shard_file) AS shard_file,
  CAST(MIN(shard_row) AS BIGINT) AS first_row,
  CAST(COUNT(*) AS BIGINT) AS tokens
FROM trace
GROUP BY domain, doc
