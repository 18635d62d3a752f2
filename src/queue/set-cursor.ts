/**
 * A position in a sorted set that stays right while members are removed and while many members
 * share one score (jobs failing in the same millisecond): a score, and the members already seen at
 * that score. The next page starts at the score and skips the seen members that are still there;
 * the count is taken inside Redis, atomically with the page it skips into.
 */
export interface SetCursor {
  /** Lowest score of the next page, inclusive (`-inf` at the start). */
  score: string;
  /** Members already seen at that score. */
  seen: string[];
}

/** The cursor after a page whose last member has `lastScore`; `atLast`: its members at that score. */
export function nextCursor(cursor: SetCursor, lastScore: string, atLast: string[]): SetCursor {
  // A run of equal scores longer than a page: remember every member seen at that score.
  const seen = Number(lastScore) === Number(cursor.score) ? [...cursor.seen, ...atLast] : atLast;
  return { score: lastScore, seen };
}

/**
 * Lua: `skipSeen(zset, cursor, first)` counts the members in ARGV[first..] still in `zset` at the
 * cursor score, which is how many members of the next page were seen already.
 */
export const SKIP_SEEN_LUA = `
local function skipSeen(zset, cursor, first)
  local skip = 0
  local cursorScore = tonumber(cursor)
  for i = first, #ARGV do
    local score = redis.call('ZSCORE', zset, ARGV[i])
    if score and tonumber(score) == cursorScore then skip = skip + 1 end
  end
  return skip
end
`;
