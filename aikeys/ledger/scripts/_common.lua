-- Shared prelude of every aikeys ledger script (prepended by aikeys.ledger.scripts).
--
-- All keys of one allocation share the hash tag in KEYS[1]'s prefix, so each script touches a
-- single Redis Cluster slot. Amounts are integer nano-USD; Lua numbers are doubles, exact to
-- 2^53 nano-USD (about 9 million USD per counter), which the callers check.
--
-- A reservation is stored in the `res` hash as
--   "<period id>|<estimated cost>|<estimated input tokens>|<estimated output tokens>|<key>|<model>
--    |<allocation rate window start>|<key rate window start>"   (window starts: -1 when unlimited)
-- and its lease expiry (ms) in the `leases` sorted set.
--
-- Rate limits: one HASH per scope {w = start of the current window (ms, Redis clock), r =
-- requests, t = tokens} — `rl:alloc` and `rl:key:<key>` beside the allocation's other keys (same
-- slot), `aikeys:{model/...}:rl` for a model (its own slot, its own call). Fixed windows: a
-- request is admitted when r + 1 and t + its token bound stay within the limits; at settle the
-- window's tokens are corrected to what was used, if the window is still the same.

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

-- per-key spend of one period, for AIKey.status.spend; the key goes into the allocation's
-- `dirty` set, from which the operator takes the keys whose status needs a refresh (so its work
-- follows what was charged, not how many keys exist)
local function key_spend_add(prefix, period_id, key, cost, ttl)
  local k = prefix .. 'keyspend:' .. period_id
  redis.call('HINCRBY', k, key, int(cost))
  if ttl and ttl > 0 then redis.call('EXPIRE', k, int(ttl)) end
  redis.call('SADD', prefix .. 'dirty', key)
end

-- The ledger counts a key by its AIKey's uid; its name and owner ("<name>|<owner>", from the
-- caller, any characters in the owner) are kept beside it for usage reports, which must still
-- name a key after it was deleted. Kept as long as usage records are.
local function label_key(prefix, key, label, ttl)
  if not label or label == '' then return end
  local k = prefix .. 'keylabels'
  redis.call('HSET', k, key, label)
  redis.call('EXPIRE', k, int(ttl))
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

-- The cached parts of a usage record's input tokens: cache reads ('cin') and cache writes
-- ('cwr'). Written only when non-zero (a record without them reads 0); after usage_add, which
-- set the record's expiry.
local function usage_cache_add(prefix, day, key, model, tcached, twrite)
  local ukey = prefix .. 'usage:' .. day
  local f = key .. '|' .. model .. '|'
  if tcached ~= 0 then redis.call('HINCRBY', ukey, f .. 'cin', int(tcached)) end
  if twrite ~= 0 then redis.call('HINCRBY', ukey, f .. 'cwr', int(twrite)) end
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

-- Redis's own clock, ms: every gateway replica sees the same rate windows.
local function redis_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The current window of a rate scope: start, requests, tokens (zeros when a new window began).
local function rl_state(key, window_ms, now)
  local start = now - (now % window_ms)
  local st = redis.call('HMGET', key, 'w', 'r', 't')
  if tonumber(st[1] or -1) ~= start then return start, 0, 0 end
  return start, tonumber(st[2] or 0), tonumber(st[3] or 0)
end

-- Check one scope's limits for one more request of `tokens`; nil when within them, else
-- {status, limit requests, remaining requests, limit tokens, remaining tokens, reset ms}
-- (status -4: requests, -5: tokens). `info` collects the tightest numbers for the headers.
local function rl_check(key, req_limit, tok_limit, window_ms, tokens, now, info)
  if window_ms <= 0 then return nil end
  local start, r, t = rl_state(key, window_ms, now)
  local reset = start + window_ms - now
  local status = nil
  if req_limit >= 0 and r + 1 > req_limit then status = -4
  elseif tok_limit >= 0 and t + tokens > tok_limit then status = -5 end
  local rem_r = req_limit >= 0 and req_limit - r - (status and 0 or 1) or -1
  local rem_t = tok_limit >= 0 and tok_limit - t - (status and 0 or tokens) or -1
  if req_limit >= 0 and (info[1] < 0 or rem_r < info[2]) then info[1], info[2] = req_limit, rem_r end
  if tok_limit >= 0 and (info[3] < 0 or rem_t < info[4]) then info[3], info[4] = tok_limit, rem_t end
  if reset > info[5] then info[5] = reset end
  if status then return status end
  return nil
end

local function rl_take(key, window_ms, tokens, now)
  if window_ms <= 0 then return -1 end
  local start = now - (now % window_ms)
  if tonumber(redis.call('HGET', key, 'w') or -1) ~= start then
    redis.call('HSET', key, 'w', int(start), 'r', 0, 't', 0)
  end
  redis.call('HINCRBY', key, 'r', 1)
  redis.call('HINCRBY', key, 't', int(tokens))
  redis.call('PEXPIRE', key, int(2 * window_ms))
  return start
end

-- Give back (requests `dr`, tokens `dt`, both usually <= 0) in the window that started at
-- `start`, if it is still the current one; never below zero.
local function rl_adjust(key, start, dr, dt)
  if not start or start < 0 then return end
  if tonumber(redis.call('HGET', key, 'w') or -1) ~= start then return end
  local st = redis.call('HMGET', key, 'r', 't')
  redis.call('HSET', key, 'r', int(math.max(tonumber(st[1] or 0) + dr, 0)), 't', int(math.max(tonumber(st[2] or 0) + dt, 0)))
end
