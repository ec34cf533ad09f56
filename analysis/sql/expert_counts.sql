-- Per document, MoE layer and expert: tokens whose first choice, second choice and
-- any of the top-k choices is the expert (Mixtral §5 expert shares; CoSMoEs ratios).
-- Every file in this folder reads two views the caller defines:
--   trace: the trace's shards (DuckDB: read_parquet([...]); Spark: spark.read.parquet(...));
--   slots: (slot, layer, layer_index, rank), one row per position of the `experts` list:
--     slot its subscript (from 1 in DuckDB, from 0 in Spark), layer the model's index of
--     the MoE layer (manifest model.moe_layers), layer_index its place on the trace's
--     layer axis (0..M-1), rank the choice (0 first, ..., k-1).
-- Each scans the trace once (no join between token rows). Rows with no token are absent.
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
