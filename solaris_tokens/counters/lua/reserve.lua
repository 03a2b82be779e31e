-- Check status and available tokens and reserve the estimate, in one atomic step.
-- KEYS: 1 profile, 2 period hash, 3 reservations, 4 reservation expiry, 5 ledger stream
-- ARGV: 1 email, 2 now_ms, 3 period name, 4 reservation id, 5 estimate,
--       6 reservation expiry ms, 7 period key ttl s
-- Returns {verdict, used, limit, additional, reserved, suspended_until_ms, suspend_reason}
-- or {'no_profile'} when the user's counters are not loaded.
local profile, period, res, resx, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local email, now_ms, period_name, rid = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local estimate = int_arg(ARGV[5], 'estimate')
if type(estimate) == 'table' then return estimate end

if redis.call('EXISTS', profile) == 0 then
  return {'no_profile'}
end
purge_expired(profile, res, resx, stream, email, now_ms)

local p = redis.call('HMGET', profile, 'limit', 'additional', 'reserved', 'status',
  'suspended_until', 'suspend_reason')
local limit = tonumber(p[1] or '0')
local additional = tonumber(p[2] or '0')
local reserved = tonumber(p[3] or '0')
local used = tonumber(redis.call('HGET', period, 'used') or '0')

if p[4] == 'suspended' then
  local until_ms = tonumber(p[5] or '0')
  if until_ms == 0 or now_ms < until_ms then
    return {'suspended', used, limit, additional, reserved, until_ms, p[6] or ''}
  end
end

local available = limit - used - reserved + additional
if estimate > available then
  if redis.call('HSETNX', period, 'alert:blocked', now_ms) == 1 then
    redis.call('EXPIRE', period, tonumber(ARGV[7]))
    redis.call('XADD', stream, '*', 'type', 'alert', 'email', email, 'kind', 'blocked',
      'period', period_name, 'used', used, 'limit', limit, 'additional', additional, 'at', now_ms)
  end
  return {'exhausted', used, limit, additional, reserved, 0, ''}
end

redis.call('HSET', res, rid, estimate)
redis.call('ZADD', resx, tonumber(ARGV[6]), rid)
redis.call('HINCRBY', profile, 'reserved', estimate)
return {'admitted', used, limit, additional, reserved + estimate, 0, ''}
