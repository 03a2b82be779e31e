-- Void a reservation. Idempotent: an unknown, expired, settled or released id changes nothing.
-- KEYS: 1 profile, 2 reservations, 3 reservation expiry
-- ARGV: 1 reservation id
local held = redis.call('HGET', KEYS[2], ARGV[1])
if not held then
  return {'unknown', 0}
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'reserved', 0 - tonumber(held))  -- not -x: Redis refuses "-0"
return {'released', tonumber(held)}
