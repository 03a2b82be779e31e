-- Change profile settings (limit, status, thresholds, plan) if the profile is loaded;
-- a missing profile will be loaded from the ledger, which already holds the change.
-- KEYS: 1 profile
-- ARGV: field/value pairs
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
