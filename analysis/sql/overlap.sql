-- Per document and MoE layer: consecutive-token pairs (t-1, t) by how many experts
-- their top-k sets share, 0..k (CoSMoEs expert replacement; Mixtral §5 repetition).
-- Reads the views trace and slots (see expert_counts.sql). Rows with no pair are absent.
WITH paired AS (
  SELECT domain, doc, pos, experts, LAG(experts) OVER (PARTITION BY doc ORDER BY pos) AS previous
  FROM trace
),
combos AS (
  SELECT a.layer AS layer, a.slot AS slot_a, b.slot AS slot_b
  FROM slots a
  JOIN slots b ON b.layer_index = a.layer_index
),
shared AS (
  SELECT
    p.domain AS domain,
    p.doc AS doc,
    c.layer AS layer,
    SUM(CASE WHEN p.experts[c.slot_a] = p.previous[c.slot_b] THEN 1 ELSE 0 END) AS shared
  FROM paired p
  CROSS JOIN combos c
  WHERE p.previous IS NOT NULL
  GROUP BY p.domain, p.doc, p.pos, c.layer
)
SELECT domain, CAST(doc AS BIGINT) AS doc, layer, shared, CAST(COUNT(*) AS BIGINT) AS pairs
FROM shared
GROUP BY domain, doc, layer, shared
