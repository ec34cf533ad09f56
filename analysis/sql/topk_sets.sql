-- Per document, MoE layer and distinct top-k set (its experts in increasing order): the tokens
-- whose top-k is that set. Only `moetrace analyze --from-counts` reads it, and only for
-- top_k >= 3, where the within-document shuffle baselines of the top-k overlap need every
-- set's count (for k <= 2 the other tables give them exactly). It is optional and large (up to
-- one row per token and layer at k = 8): without it those baselines are left empty.
-- Reads the views trace and slots (see expert_counts.sql); `pos` orders a document's tokens.
-- Beyond the constructs of expert_counts.sql it relies on array_agg and array_sort (DuckDB;
-- Spark 3.3+) and GROUP BY on an array; Spark writes arrays to Parquet, not to CSV.
WITH members AS (
  SELECT t.domain AS domain, t.doc AS doc, t.pos AS pos, s.layer AS layer,
    t.experts[s.slot] AS expert
  FROM trace t
  CROSS JOIN slots s
),
token_sets AS (
  SELECT domain, doc, pos, layer, array_sort(array_agg(expert)) AS experts
  FROM members
  GROUP BY domain, doc, pos, layer
)
SELECT domain, CAST(doc AS BIGINT) AS doc, layer, experts, CAST(COUNT(*) AS BIGINT) AS tokens
FROM token_sets
GROUP BY domain, doc, layer, experts
