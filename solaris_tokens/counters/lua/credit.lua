-- Add additional tokens (never expire), once per idempotency key.
-- KEYS: 1 profile, 2 applied credit keys (set), 3 ledger stream
-- ARGV: 1 email, 2 idempotency key, 3 tokens, 4 kind, 5 actor, 6 reason, 7 now_ms
local amount = int_arg(ARGV[3], 'tokens')
if type(amount) == 'table' then return amount end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'no_profile', 0}
end
if redis.call('SADD', KEYS[2], ARGV[2]) == 0 then
  return {'duplicate', tonumber(redis.call('HGET', KEYS[1], 'additional') or '0')}
end
local additional = redis.call('HINCRBY', KEYS[1], 'additional', amount)
redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[3], '*', 'type', 'credit', 'email', ARGV[1], 'key', ARGV[2], 'tokens', amount,
  'kind', ARGV[4], 'actor', ARGV[5], 'reason', ARGV[6], 'at', ARGV[7])
return {'credited', additional}
