/** Class-name matching for the picker: exact, prefix, substring, then in-order (fuzzy) matches. */

export interface Match {
  index: number;
  score: number;
}

function subsequenceScore(query: string, name: string): number {
  // All query characters in order; tighter matches score higher.
  let position = -1;
  let gaps = 0;
  for (const ch of query) {
    const next = name.indexOf(ch, position + 1);
    if (next < 0) return -1;
    if (position >= 0) gaps += next - position - 1;
    position = next;
  }
  return 1 / (1 + gaps);
}

/** The best matches of `query` among `names`, best first (at most `limit`). */
export function matchClasses(query: string, names: readonly string[], limit = 50): Match[] {
  const q = query.trim().toLowerCase();
  if (!q) return names.slice(0, limit).map((_, index) => ({ index, score: 0 }));
  const matches: Match[] = [];
  names.forEach((raw, index) => {
    const name = raw.toLowerCase();
    let score: number;
    if (name === q) score = 4;
    else if (name.startsWith(q)) score = 3;
    else if (name.includes(q)) score = 2;
    else {
      const s = subsequenceScore(q, name);
      if (s < 0) return;
      score = s;
    }
    matches.push({ index, score });
  });
  matches.sort((a, b) => b.score - a.score || names[a.index].length - names[b.index].length);
  return matches.slice(0, limit);
}
