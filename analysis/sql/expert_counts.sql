-- Per document, MoE layer and expert: tokens whose first choice, second choice and
-- any of the top-k choices is the expert (Mixtral §5 expert shares; CoSMoEs ratios).
-- Every file in this folder reads two views the caller defines:
--   trace: the trace's shards (DuckDB: read_parquet([...]); Spark: spark.read.parquet(...));
--   slots: (slot, layer, layer_index, rank), one row per position of the `experts` list:
--     slot its subscript (from 1 in DuckDB, from 0 in Spark), layer the model's index of
--     the MoE layer (manifest model.moe_layers), layer_index its place on the trace's
--     layer axis (0..M-1), rank the choice (0 first, ..., k-1).
-- Each scans the trace once (no join between token rows). Rows with no token are absent.
-- Portable SQL, the same text for DuckDB and Spark SQL: SELECT, WITH, GROUP BY, CROSS/INNER/
-- LEFT JOIN, UNION ALL, CASE, CAST(... AS BIGINT), COUNT, SUM, MIN, COALESCE, LEAST,
-- GREATEST, array subscripts `experts[i]` and the window function LAG(...) OVER
-- (PARTITION BY ... ORDER BY ...); no engine's own functions. Where the engines differ
-- (reading Parquet, subscripts from 1 or 0, a row's file and place in it) is in the views.
-- documents.sql gives each document's tokens and place in the trace; the five count
-- tables and it are what `moetrace analyze --from-counts DIR` reads.
SELECT
  t.domain AS domain,
  CAST(t.doc AS BIGINT) AS doc,
  s.layer AS layer,
  t.experts[s.slot] AS expert,
  CAST(SUM(CASE WHEN s.rank = 0 THEN 1 ELSE 0 END) AS BIGINT) AS first_tokens,
  CAST(SUM(CASE WHEN s.rank = 1 THEN 1 ELSE 0 END) AS BIGINT) AS second_tokens,
  CAST(COUNT(*) AS BIGINT) AS any_tokens
FROM trace t
CROSS JOIN slots s
GROUP BY t.domain, t.doc, s.layer, t.experts[s.slot]
