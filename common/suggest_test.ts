import assert from "node:assert/strict";
import { didYouMean, editDistance, nearest } from "./suggest.ts";

Deno.test("editDistance equals hand-computed distances (Levenshtein plus adjacent swaps)", () => {
  const cases: [string, string, number][] = [
    ["", "", 0],
    ["", "abc", 3],
    ["abc", "", 3],
    ["abc", "abc", 0],
    // kitten → sitten (s for k) → sittin (i for e) → sitting (+g).
    ["kitten", "sitting", 3],
    // flaw → law (−f) → lawn (+n).
    ["flaw", "lawn", 2],
    // analyse → analyze: one substitution.
    ["analyse", "analyze", 1],
    // max-token → max-tokens: one insertion.
    ["max-token", "max-tokens", 1],
    // ab → ba: one swap of adjacent letters.
    ["ab", "ba", 1],
    // belday → belady: one swap; lfru → lrfu: one swap.
    ["belday", "belady", 1],
    ["lfru", "lrfu", 1],
    // ca → abc: 3, not 2 (ca → ac → abc edits the swapped pair again, which
    // optimal string alignment does not allow): delete c, keep a, insert b, c.
    ["ca", "abc", 3],
    // intention → execution, the textbook example: 5.
    ["intention", "execution", 5],
  ];
  for (const [a, b, d] of cases) {
    assert.equal(editDistance(a, b), d, `${a} → ${b}`);
    assert.equal(editDistance(b, a), d, `${b} → ${a}`);
  }
});

Deno.test("nearest suggests close words only, case-insensitively", () => {
  const commands = ["capture", "generate", "analyze", "simulate", "report"];
  assert.equal(nearest("analyse", commands), "analyze");
  assert.equal(nearest("simulat", commands), "simulate");
  assert.equal(nearest("frobnicate", commands), null);
  assert.equal(nearest("ARXIV", ["ArXiv", "Github"]), "ArXiv");
  assert.equal(nearest("Arxiv", ["ArXiv", "Github"]), "ArXiv");
  // Two letters from a three-letter word is another word, not a typo.
  assert.equal(nearest("lfu", ["lru", "fifo"]), "lru");
  assert.equal(nearest("abc", ["xyz"]), null);
  assert.equal(
    didYouMean("max-token", ["max-tokens", "batch-tokens"], "--"),
    " Did you mean --max-tokens?",
  );
  assert.equal(didYouMean("zzzz", ["max-tokens"]), "");
});
