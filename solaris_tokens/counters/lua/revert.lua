-- Undo the counter effect of a usage entry the ledger refused as a duplicate of an earlier one
-- (a callback replayed after Redis forgot the reservation id). Idempotent per stream entry.
-- KEYS: 1 profile, 2 period hash of the entry, 3 reverted entry ids (zset)
-- ARGV: 1 stream entry id, 2 monthly tokens, 3 additional tokens, 4 now_ms, 5 retention cutoff ms
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0  -- not loaded: the next load reads the ledger, which has no duplicate
end
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[3], tonumber(ARGV[4]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[5]))
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'used', 0 - tonumber(ARGV[2]))  -- not -x: Redis refuses "-0"
  redis.call('HINCRBY', KEYS[2], 'requests', -1)
end
redis.call('HINCRBY', KEYS[1], 'additional', tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[1], 'seq', 1)
return 1
