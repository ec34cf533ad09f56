/**
 * "Did you mean …?" for mistyped commands, flags and names: the Levenshtein
 * distance (insertions, deletions and substitutions, each costing 1) to each
 * known word, and the nearest one when it is close enough to be a typo.
 */

/** Levenshtein distance between `a` and `b` (two rows of the DP table, O(|a|·|b|) time). */
export function editDistance(a: string, b: string): number {
  if (a === b) return 0;
  if (a.length === 0) return b.length;
  if (b.length === 0) return a.length;
  // previous[j]: distance between a[0, i) and b[0, j).
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  let current = new Array<number>(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    current[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const substitute = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current[j] = Math.min(substitute, previous[j]! + 1, current[j - 1]! + 1);
    }
    [previous, current] = [current, previous];
  }
  return previous[b.length]!;
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
