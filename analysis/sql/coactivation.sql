-- Per document, MoE layer and pair of experts i < j: tokens whose top-k holds both
-- (OLMoE co-activation). Reads the views trace and slots (see expert_counts.sql).
WITH pairs AS (
  SELECT a.layer AS layer, a.slot AS slot_a, b.slot AS slot_b
  FROM slots a
  JOIN slots b ON b.layer_index = a.layer_index AND b.rank > a.rank
)
SELECT
  t.domain AS domain,
  CAST(t.doc AS BIGINT) AS doc,
  p.layer AS layer,
  LEAST(t.experts[p.slot_a], t.experts[p.slot_b]) AS expert_i,
  GREATEST(t.experts[p.slot_a], t.experts[p.slot_b]) AS expert_j,
  CAST(COUNT(*) AS BIGINT) AS tokens
FROM trace t
CROSS JOIN pairs p
GROUP BY
  t.domain,
  t.doc,
  p.layer,
  LEAST(t.experts[p.slot_a], t.experts[p.slot_b]),
  GREATEST(t.experts[p.slot_a], t.experts[p.slot_b])
