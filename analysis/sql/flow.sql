-- Per document and pair of consecutive MoE layers: tokens whose first choice is
-- expert_from at `layer` and expert_to at `next_layer` (OLMoE cross-layer flow).
-- Reads the views trace and slots (see expert_counts.sql).
WITH steps AS (
  SELECT a.layer AS layer, b.layer AS next_layer, a.slot AS slot_a, b.slot AS slot_b
  FROM slots a
  JOIN slots b ON b.layer_index = a.layer_index + 1 AND a.rank = 0 AND b.rank = 0
)
SELECT
  t.domain AS domain,
  CAST(t.doc AS BIGINT) AS doc,
  s.layer AS layer,
  s.next_layer AS next_layer,
  t.experts[s.slot_a] AS expert_from,
  t.experts[s.slot_b] AS expert_to,
  CAST(COUNT(*) AS BIGINT) AS tokens
FROM trace t
CROSS JOIN steps s
GROUP BY t.domain, t.doc, s.layer, s.next_layer, t.experts[s.slot_a], t.experts[s.slot_b]
