-- extend: push live reservations' leases further (long streams heartbeat with this).
-- KEYS: period, leases, res
-- ARGV: new_expiry_ms, rid, rid, ...  (any number of rids of this allocation)
-- Returns one flag per rid: 1 extended, 0 gone (settled, released or reaped).
local leases_key, res_key = KEYS[2], KEYS[3]
local expiry = int(tonumber(ARGV[1]))
local out = {}
for i = 2, #ARGV do
  if redis.call('HEXISTS', res_key, ARGV[i]) == 1 then
    redis.call('ZADD', leases_key, 'XX', expiry, ARGV[i])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
