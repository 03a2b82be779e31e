-- Debit a finished request's real usage in place of its reservation, exactly once per
-- reservation id: monthly allowance first, then additional tokens; anything beyond both
-- stays on the monthly counter (used > limit) so no usage is ever lost.
-- KEYS: 1 profile, 2 period hash, 3 reservations, 4 reservation expiry, 5 settled ids, 6 ledger stream
-- ARGV: 1 email, 2 now_ms, 3 period name, 4 reservation id, 5 prompt tokens,
--       6 completion tokens, 7 payload (JSON, forwarded to the ledger as is),
--       8 settled-id retention cutoff ms, 9 period key ttl s
-- Returns {outcome, monthly, additional_part, used_after, limit, additional_after, alerts...}
local profile, period, res, resx, settled, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local email, now_ms, period_name, rid = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local prompt = int_arg(ARGV[5], 'prompt_tokens')
if type(prompt) == 'table' then return prompt end
local completion = int_arg(ARGV[6], 'completion_tokens')
if type(completion) == 'table' then return completion end

if redis.call('EXISTS', profile) == 0 then
  return {'no_profile'}
end
if redis.call('ZSCORE', settled, rid) then
  return {'duplicate'}
end
purge_expired(profile, res, resx, stream, email, now_ms)

local outcome = 'settled'
local held = redis.call('HGET', res, rid)
if held then
  redis.call('HDEL', res, rid)
  redis.call('ZREM', resx, rid)
  redis.call('HINCRBY', profile, 'reserved', 0 - tonumber(held))  -- not -x: Redis refuses "-0"
else
  outcome = 'late'
end

local p = redis.call('HMGET', profile, 'limit', 'additional', 'warning', 'urgent')
local limit = tonumber(p[1] or '0')
local additional = tonumber(p[2] or '0')
local used = tonumber(redis.call('HGET', period, 'used') or '0')
local total = prompt + completion
local room = math.max(limit - used, 0)
local from_additional = math.min(math.max(total - room, 0), additional)
local from_monthly = total - from_additional

used = redis.call('HINCRBY', period, 'used', from_monthly)
redis.call('HINCRBY', period, 'requests', 1)
if from_additional > 0 then
  additional = redis.call('HINCRBY', profile, 'additional', -from_additional)
end
redis.call('HINCRBY', profile, 'seq', 1)
redis.call('ZADD', settled, now_ms, rid)
redis.call('ZREMRANGEBYSCORE', settled, '-inf', tonumber(ARGV[8]))

redis.call('XADD', stream, '*', 'type', 'usage', 'email', email, 'rid', rid, 'period', period_name,
  'prompt', prompt, 'completion', completion, 'monthly', from_monthly,
  'additional', from_additional, 'outcome', outcome, 'at', now_ms, 'payload', ARGV[7])

local result = {outcome, from_monthly, from_additional, used, limit, additional}
local thresholds = {{'warning', tonumber(p[3] or '0')}, {'urgent', tonumber(p[4] or '0')}}
for _, t in ipairs(thresholds) do
  local kind, pct = t[1], t[2]
  if limit > 0 and pct > 0 and used * 100 >= pct * limit then
    if redis.call('HSETNX', period, 'alert:' .. kind, now_ms) == 1 then
      redis.call('XADD', stream, '*', 'type', 'alert', 'email', email, 'kind', kind,
        'period', period_name, 'percent', pct, 'used', used, 'limit', limit,
        'additional', additional, 'at', now_ms)
      table.insert(result, kind)
    end
  end
end
redis.call('EXPIRE', period, tonumber(ARGV[9]))
return result
