-- Per document and MoE layer: consecutive-token pairs (t-1, t) and those whose first
-- choice is the same expert (Mixtral §5 Table 5). Reads the views trace and slots
-- (see expert_counts.sql). Documents of one token have no pair and no row.
WITH paired AS (
  SELECT domain, doc, experts, LAG(experts) OVER (PARTITION BY doc ORDER BY pos) AS previous
  FROM trace
)
SELECT
  p.domain AS domain,
  CAST(p.doc AS BIGINT) AS doc,
  s.layer AS layer,
  CAST(COUNT(*) AS BIGINT) AS pairs,
  CAST(SUM(CASE WHEN p.experts[s.slot] = p.previous[s.slot] THEN 1 ELSE 0 END) AS BIGINT)
    AS same_first_pairs
FROM paired p
CROSS JOIN slots s
WHERE p.previous IS NOT NULL AND s.rank = 0
GROUP BY p.domain, p.doc, s.layer
