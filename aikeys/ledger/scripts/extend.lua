-- extend: push a live reservation's lease further (long streams heartbeat with this).
-- KEYS: period, leases, res
-- ARGV: rid, new_expiry_ms
-- Returns 1 when extended, 0 when the reservation is gone (settled, released or reaped).
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], 'XX', int(tonumber(ARGV[2])), ARGV[1])
return 1
