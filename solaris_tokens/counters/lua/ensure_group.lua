-- Create the ledger consumer group on a stream (and the stream) unless it exists.
-- Done inside a script so "already exists" never travels as an error reply.
-- KEYS: 1 ledger stream; ARGV: 1 group name
local ok = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
return ok and 1 or 0
