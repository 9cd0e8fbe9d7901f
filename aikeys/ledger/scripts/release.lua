-- release: give a reservation back (the request never reached the model). Idempotent.
-- KEYS: period, leases, res, done
-- ARGV: rid, done_ttl_s
-- Returns 1 when a reservation was released, 0 when there was none.
-- Leaves a tombstone "released|<reservation>" in done (unless the rid is already settled or
-- reaped: that marker stays), so a reserve of the rid that Redis runs later is refused
-- (ALREADY_SETTLED) and a settle of it charges nothing (DUPLICATE).
local leases_key, res_key, done_key = KEYS[2], KEYS[3], KEYS[4]
local rid = ARGV[1]
local entry = redis.call('HGET', res_key, rid)
redis.call('SET', done_key, 'released|' .. (entry or ''), 'EX', int(tonumber(ARGV[2])), 'NX')
if not entry then return 0 end
local r = split(entry)
local pkey = prefix_of(KEYS[1]) .. 'period:' .. r[1]
redis.call('HINCRBY', pkey, 'reserved', int(-tonumber(r[2])))
redis.call('HINCRBY', pkey, 'reserved_tokens', int(-(tonumber(r[3]) + tonumber(r[4]))))
redis.call('HDEL', res_key, rid)
redis.call('ZREM', leases_key, rid)
local bound = tonumber(r[3]) + tonumber(r[4])  -- the request never ran: its rate share comes back
rl_adjust(prefix_of(KEYS[1]) .. 'rl:alloc', tonumber(r[7]), -1, -bound)
rl_adjust(prefix_of(KEYS[1]) .. 'rl:key:' .. r[5], tonumber(r[8]), -1, -bound)
return 1
