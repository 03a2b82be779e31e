-- Shared prelude, prepended to every user script when it is loaded.
-- Reservations live in a hash (id -> tokens) plus a sorted set (id -> expiry ms);
-- the profile keeps their sum in `reserved`. A reservation past its expiry stops
-- counting the next time any script looks at the user, and its expiry is written
-- to the ledger stream so it is audited, never silent.
local function purge_expired(profile, res, resx, stream, email, now_ms)
  local expired = redis.call('ZRANGEBYSCORE', resx, '-inf', now_ms, 'LIMIT', 0, 256)
  local freed = 0
  for _, rid in ipairs(expired) do
    local held = tonumber(redis.call('HGET', res, rid) or '0')
    redis.call('HDEL', res, rid)
    redis.call('ZREM', resx, rid)
    freed = freed + held
    redis.call('XADD', stream, '*', 'type', 'expired', 'email', email, 'rid', rid,
      'tokens', held, 'at', now_ms)
  end
  if freed > 0 then
    redis.call('HINCRBY', profile, 'reserved', -freed)
  end
  return freed
end

local function int_arg(value, name)
  local n = tonumber(value)
  if n == nil or n ~= math.floor(n) or n < 0 then
    return redis.error_reply('ERR solaris: ' .. name .. ' must be a non-negative integer')
  end
  return n
end
