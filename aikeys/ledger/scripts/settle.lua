-- settle: end a reservation and charge the actual cost, exactly once per rid.
-- KEYS: period, leases, res, done, lastused
-- ARGV[1]: "|"-joined rid, now_ms, cost, in_tokens, out_tokens, key, model, day, done_ttl_s,
--          usage_ttl_s, period_ttl_s (-1: none), cached_tokens, cache_write_tokens (both parts of
--          in_tokens; absent: 0)
-- ARGV[2] (optional): the key's label "<name>|<owner>" (the key itself is its AIKey's uid)
-- Returns {status, spent, reserved}; status: 1 charged, 3 charged as a correction of a reaped
-- lease, 0 duplicate (already settled: nothing charged).
-- A settle without a reservation (fail-open mode, or a lost reserve reply) still charges.
local period_key, leases_key, res_key, done_key, lastused_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ARGS = split(ARGV[1])
local rid, now_ms = ARGS[1], tonumber(ARGS[2])
local cost, tin, tout = tonumber(ARGS[3]), tonumber(ARGS[4]), tonumber(ARGS[5])
local key, model, day = ARGS[6], ARGS[7], ARGS[8]
local done_ttl, usage_ttl, period_ttl = tonumber(ARGS[9]), tonumber(ARGS[10]), tonumber(ARGS[11])
local tcached, twrite = tonumber(ARGS[12]) or 0, tonumber(ARGS[13]) or 0
local prefix = prefix_of(period_key)

reap(period_key, leases_key, res_key, now_ms, done_ttl, usage_ttl, day)

local status = 1
local done = redis.call('GET', done_key)
local target = period_key
if done then
  local d = split(done)
  if d[1] ~= 'reaped' then
    local st = redis.call('HMGET', period_key, 'spent', 'reserved')
    return {0, tonumber(st[1] or 0), tonumber(st[2] or 0)}
  end
  -- d = {'reaped', period, cost, in, out, key, model, day}: charge only the difference
  target = prefix .. 'period:' .. d[2]
  local ecost, ein, eout = tonumber(d[3]), tonumber(d[4]), tonumber(d[5])
  redis.call('HINCRBY', target, 'spent', int(cost - ecost))
  redis.call('HINCRBY', target, 'tokens', int((tin + tout) - (ein + eout)))
  local reaped_day = d[#d] ~= '' and d[#d] or d[#d - 1]  -- the marker's last field (entries grew)
  usage_add(prefix, reaped_day, usage_ttl, key, model, 0, tin - ein, tout - eout, cost - ecost)
  usage_cache_add(prefix, reaped_day, key, model, tcached, twrite)  -- the reaper counted none
  key_spend_add(prefix, d[2], key, cost - ecost, redis.call('TTL', target))
  status = 3
else
  local entry = redis.call('HGET', res_key, rid)
  if entry then
    local r = split(entry)
    target = prefix .. 'period:' .. r[1]
    redis.call('HINCRBY', target, 'reserved', int(-tonumber(r[2])))
    redis.call('HINCRBY', target, 'reserved_tokens', int(-(tonumber(r[3]) + tonumber(r[4]))))
    redis.call('HDEL', res_key, rid)
    redis.call('ZREM', leases_key, rid)
    -- the rate windows counted the token bound at admission: correct them to what was used
    local unused = (tin + tout) - (tonumber(r[3]) + tonumber(r[4]))
    rl_adjust(prefix .. 'rl:alloc', tonumber(r[7]), 0, unused)
    rl_adjust(prefix .. 'rl:key:' .. r[5], tonumber(r[8]), 0, unused)
  end
  redis.call('HINCRBY', target, 'spent', int(cost))
  redis.call('HINCRBY', target, 'tokens', int(tin + tout))
  redis.call('HINCRBY', target, 'requests', 1)
  if period_ttl > 0 then redis.call('EXPIRE', target, int(period_ttl)) end
  usage_add(prefix, day, usage_ttl, key, model, 1, tin, tout, cost)
  usage_cache_add(prefix, day, key, model, tcached, twrite)
  key_spend_add(prefix, period_id_of(target), key, cost, redis.call('TTL', target))
end
label_key(prefix, key, ARGV[2], usage_ttl)
redis.call('SET', done_key, 'settled|' .. int(cost), 'EX', int(done_ttl))
local last = tonumber(redis.call('HGET', lastused_key, key) or 0)
if now_ms > last then redis.call('HSET', lastused_key, key, int(now_ms)) end
local st = redis.call('HMGET', target, 'spent', 'reserved')
return {status, tonumber(st[1] or 0), tonumber(st[2] or 0)}
