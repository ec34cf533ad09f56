/**
 * "Did you mean …?" for mistyped commands, flags and names: the edit
 * distance to each known word, and the nearest one when it is close enough to be a typo.
 */

/**
 * Edit distance between `a` and `b` counting insertions, deletions,
 * substitutions and transpositions of two adjacent characters as 1 each (the
 * optimal string alignment distance: Levenshtein plus swaps, the commonest
 * typo; no substring is edited twice). Full DP table, O(|a|·|b|).
 */
export function editDistance(a: string, b: string): number {
  if (a === b) return 0;
  // d[i][j]: distance between a[0, i) and b[0, j).
  const d = Array.from(
    { length: a.length + 1 },
    (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j - 1]! + cost, d[i - 1]![j]! + 1, d[i]![j - 1]! + 1);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        best = Math.min(best, d[i - 2]![j - 2]! + 1);
      }
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The known word nearest to `word` (compared case-insensitively), or null
 * when none is within a third of the longer word's length (at least 1, at
 * most 3 edits): a typo, not a different word. Ties go to the earlier word.
 */
export function nearest(word: string, known: Iterable<string>): string | null {
  const w = word.toLowerCase();
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const candidate of known) {
    const d = editDistance(w, candidate.toLowerCase());
    const limit = Math.min(3, Math.max(1, Math.floor(Math.max(w.length, candidate.length) / 3)));
    if (d <= limit && d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

/** " Did you mean X?" (with a leading space) when `word` is near a known word, else "". */
export function didYouMean(word: string, known: Iterable<string>, prefix = ""): string {
  const match = nearest(word, known);
  return match === null ? "" : ` Did you mean ${prefix}${match}?`;
}
