-- Shared prelude of every aikeys ledger script (prepended by aikeys.ledger.scripts).
--
-- All keys of one allocation share the hash tag in KEYS[1]'s prefix, so each script touches a
-- single Redis Cluster slot. Amounts are integer nano-USD; Lua numbers are doubles, exact to
-- 2^53 nano-USD (about 9 million USD per counter), which the callers check.
--
-- A reservation is stored in the `res` hash as
--   "<period id>|<estimated cost>|<estimated input tokens>|<estimated output tokens>|<key>|<model>"
-- and its lease expiry (ms) in the `leases` sorted set.

-- Lua 5.1 formats numbers with %.14g ("1e+14"), which HINCRBY refuses: every number handed to
-- redis.call goes through int(), exact for |n| < 2^53.
local function int(n) return string.format('%d', n) end

local function split(s)
  local out = {}
  for part in string.gmatch(s, '([^|]*)|?') do out[#out + 1] = part end
  return out
end

local function prefix_of(period_key)
  return string.sub(period_key, 1, string.find(period_key, ':period:', 1, true))
end

-- per-key spend of one period, for AIKey.status.spend
local function key_spend_add(prefix, period_id, key, cost, ttl)
  local k = prefix .. 'keyspend:' .. period_id
  redis.call('HINCRBY', k, key, int(cost))
  if ttl and ttl > 0 then redis.call('EXPIRE', k, int(ttl)) end
end

local function period_id_of(period_key)
  local _, stop = string.find(period_key, ':period:', 1, true)
  return string.sub(period_key, stop + 1)
end

local function usage_add(prefix, day, usage_ttl, key, model, requests, tin, tout, cost)
  local ukey = prefix .. 'usage:' .. day
  local f = key .. '|' .. model .. '|'
  redis.call('HINCRBY', ukey, f .. 'req', int(requests))
  redis.call('HINCRBY', ukey, f .. 'in', int(tin))
  redis.call('HINCRBY', ukey, f .. 'out', int(tout))
  redis.call('HINCRBY', ukey, f .. 'cost', int(cost))
  redis.call('EXPIRE', ukey, int(usage_ttl))
end

-- Leases whose gateway never came back (crash, kill) are charged at their estimate: the
-- request may have reached the model, and the estimate is an upper bound of what it could
-- cost. A late settle for the same request then corrects the charge to the actual cost.
local function reap(period_key, leases_key, res_key, now_ms, done_ttl, usage_ttl, day)
  local expired = redis.call('ZRANGEBYSCORE', leases_key, '-inf', now_ms, 'LIMIT', 0, 100)
  local prefix = prefix_of(period_key)
  for _, rid in ipairs(expired) do
    local entry = redis.call('HGET', res_key, rid)
    if entry then
      local r = split(entry)
      local pkey = prefix .. 'period:' .. r[1]
      local cost, tin, tout = tonumber(r[2]), tonumber(r[3]), tonumber(r[4])
      redis.call('HINCRBY', pkey, 'reserved', int(-cost))
      redis.call('HINCRBY', pkey, 'reserved_tokens', int(-(tin + tout)))
      redis.call('HINCRBY', pkey, 'spent', int(cost))
      redis.call('HINCRBY', pkey, 'tokens', int(tin + tout))
      redis.call('HINCRBY', pkey, 'requests', 1)
      redis.call('HINCRBY', pkey, 'reaped', 1)
      usage_add(prefix, day, usage_ttl, r[5], r[6], 1, tin, tout, cost)
      key_spend_add(prefix, r[1], r[5], cost, redis.call('TTL', pkey))
      redis.call('SET', prefix .. 'done:' .. rid, 'reaped|' .. entry .. '|' .. day, 'EX', int(done_ttl))
      redis.call('HDEL', res_key, rid)
    end
    redis.call('ZREM', leases_key, rid)
  end
  return #expired
end
