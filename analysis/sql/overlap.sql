-- Per document and MoE layer: consecutive-token pairs (t-1, t) by how many experts
-- their top-k sets share, 0..k (CoSMoEs expert replacement; Mixtral §5 repetition).
-- Reads the views trace and slots (see expert_counts.sql). Rows with no pair are absent.
-- A token's k experts are distinct, so the experts two sets share are the (choice,
-- previous choice) pairs that name the same expert: `hits` keeps only those, and
-- pairs with none are each document's pairs less those with any. (Grouping every
-- pair × layer × k² comparison by token instead took 5× as long in DuckDB.)
WITH paired AS (
  SELECT doc, pos, experts, LAG(experts) OVER (PARTITION BY doc ORDER BY pos) AS previous
  FROM trace
),
combos AS (
  SELECT a.layer AS layer, a.slot AS slot_a, b.slot AS slot_b
  FROM slots a
  JOIN slots b ON b.layer_index = a.layer_index
),
hits AS (
  SELECT p.doc AS doc, p.pos AS pos, c.layer AS layer
  FROM paired p
  CROSS JOIN combos c
  WHERE p.previous IS NOT NULL AND p.experts[c.slot_a] = p.previous[c.slot_b]
),
some_shared AS (
  SELECT doc, layer, shared, COUNT(*) AS pairs
  FROM (SELECT doc, pos, layer, COUNT(*) AS shared FROM hits GROUP BY doc, pos, layer) h
  GROUP BY doc, layer, shared
),
docs AS (
  SELECT domain, doc, COUNT(*) - 1 AS pairs FROM trace GROUP BY domain, doc HAVING COUNT(*) > 1
),
layers AS (
  SELECT DISTINCT layer FROM slots
),
any_shared AS (
  SELECT doc, layer, SUM(pairs) AS pairs FROM some_shared GROUP BY doc, layer
),
none_shared AS (
  SELECT d.domain AS domain, d.doc AS doc, l.layer AS layer, d.pairs - COALESCE(a.pairs, 0) AS pairs
  FROM docs d
  CROSS JOIN layers l
  LEFT JOIN any_shared a ON a.doc = d.doc AND a.layer = l.layer
)
SELECT d.domain AS domain, CAST(s.doc AS BIGINT) AS doc, s.layer AS layer,
  CAST(s.shared AS BIGINT) AS shared, CAST(s.pairs AS BIGINT) AS pairs
FROM some_shared s
JOIN docs d ON d.doc = s.doc
UNION ALL
SELECT domain, CAST(doc AS BIGINT) AS doc, layer, CAST(0 AS BIGINT) AS shared,
  CAST(pairs AS BIGINT) AS pairs
FROM none_shared
WHERE pairs > 0
