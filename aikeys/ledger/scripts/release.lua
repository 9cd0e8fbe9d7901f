-- release: give a reservation back (the request never reached the model). Idempotent.
-- KEYS: period, leases, res
-- ARGV: rid
-- Returns 1 when a reservation was released, 0 when there was none.
local leases_key, res_key = KEYS[2], KEYS[3]
local rid = ARGV[1]
local entry = redis.call('HGET', res_key, rid)
if not entry then return 0 end
local r = split(entry)
local pkey = prefix_of(KEYS[1]) .. 'period:' .. r[1]
redis.call('HINCRBY', pkey, 'reserved', int(-tonumber(r[2])))
redis.call('HINCRBY', pkey, 'reserved_tokens', int(-(tonumber(r[3]) + tonumber(r[4]))))
redis.call('HDEL', res_key, rid)
redis.call('ZREM', leases_key, rid)
return 1
