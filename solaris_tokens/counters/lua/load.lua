-- Set (never add) a user's counters from the ledger.
-- mode 'if_absent': only when the profile is missing (first request, or Redis lost its data);
-- mode 'force': only when the profile's `seq` still equals the one the caller computed from
-- (optimistic concurrency: a settle or credit in between makes the caller recompute).
-- Reservations in flight are kept in both modes.
-- KEYS: 1 profile, 2 period hash, 3 applied credit keys, 4 settled reservation ids
-- ARGV: 1 mode, 2 expected seq, 3 period ttl s, 4 period used, 5 period requests,
--       6 alert flags (comma separated kinds), 7 credit keys (newline separated),
--       8 recently settled ids ('ms id' lines), 9.. profile field/value pairs
local exists = redis.call('EXISTS', KEYS[1]) == 1
if ARGV[1] == 'if_absent' and exists then
  return 0
end
if ARGV[1] == 'force' and tostring(redis.call('HGET', KEYS[1], 'seq') or '0') ~= ARGV[2] then
  return -1
end
local fields = {}
for i = 9, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(fields))
if not exists then
  redis.call('HSET', KEYS[1], 'reserved', 0, 'seq', 0)
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'used', ARGV[4], 'requests', ARGV[5])
for kind in string.gmatch(ARGV[6], '[^,]+') do
  redis.call('HSET', KEYS[2], 'alert:' .. kind, 0)
end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
redis.call('DEL', KEYS[3])
for key in string.gmatch(ARGV[7], '[^\n]+') do
  redis.call('SADD', KEYS[3], key)
end
for ms, rid in string.gmatch(ARGV[8], '(%d+) ([^\n]+)') do
  redis.call('ZADD', KEYS[4], tonumber(ms), rid)
end
return 1
