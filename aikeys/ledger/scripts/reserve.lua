-- reserve: hold an estimate against the allocation, or refuse.
-- KEYS: period, leases, res, done
-- ARGV[1]: "|"-joined rid, now_ms, lease_ms, cost, in_tokens, out_tokens, budget,
--          token_limit (-1: none), period_ttl_s (-1: none), period_id, key, model, done_ttl_s,
--          usage_ttl_s, day, deadline_ms (Redis clock; -1: none), then the rate limits of the
--          allocation and of the key: requests, tokens, window_ms (-1: none; window 0: no limit)
--          (one argument: packing many is the client's main cost)
-- ARGV[2] (optional): the key's label "<name>|<owner>" (the key itself is its AIKey's uid)
-- Returns {status, spent, reserved, tokens, reserved_tokens, limit requests, remaining requests,
--          limit tokens, remaining tokens, reset ms} (limits -1: none); status: 1 reserved, 2 already
-- reserved (retry of the same rid), 0 over budget (also for cost -1: an estimate beyond 2^53),
-- -1 over the token limit, -2 rid already settled or released, -3 expired: Redis ran the script
-- after the client's deadline (the client has given up on it), so it wrote nothing and returns
-- zeros; -4 over a request rate limit, -5 over a token rate limit (nothing held).
local period_key, leases_key, res_key, done_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ARGS = split(ARGV[1])

-- First, before any write: a reserve that arrives after its caller gave up never takes effect.
local deadline_ms = tonumber(ARGS[16])
if deadline_ms and deadline_ms >= 0 then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > deadline_ms then return {-3, 0, 0, 0, 0} end
end

local rid, now_ms, lease_ms = ARGS[1], tonumber(ARGS[2]), tonumber(ARGS[3])
local cost, tin, tout = tonumber(ARGS[4]), tonumber(ARGS[5]), tonumber(ARGS[6])
local budget, token_limit, period_ttl = tonumber(ARGS[7]), tonumber(ARGS[8]), tonumber(ARGS[9])

reap(period_key, leases_key, res_key, now_ms, tonumber(ARGS[13]), tonumber(ARGS[14]), ARGS[15])

local state = redis.call('HMGET', period_key, 'spent', 'reserved', 'tokens', 'reserved_tokens')
local spent, reserved = tonumber(state[1] or 0), tonumber(state[2] or 0)
local tokens, reserved_tokens = tonumber(state[3] or 0), tonumber(state[4] or 0)
local info = {-1, -1, -1, -1, 0}
local function result(status)
  return {status, spent, reserved, tokens, reserved_tokens, info[1], info[2], info[3], info[4], info[5]}
end

if redis.call('EXISTS', done_key) == 1 then return result(-2) end
if redis.call('HEXISTS', res_key, rid) == 1 then return result(2) end
if cost < 0 then return result(0) end  -- an estimate too large to count: no budget covers it
if spent + reserved + cost > budget then return result(0) end
if token_limit >= 0 and tokens + reserved_tokens + tin + tout > token_limit then return result(-1) end

local a_req, a_tok, a_win = tonumber(ARGS[17] or -1), tonumber(ARGS[18] or -1), tonumber(ARGS[19] or 0)
local k_req, k_tok, k_win = tonumber(ARGS[20] or -1), tonumber(ARGS[21] or -1), tonumber(ARGS[22] or 0)
local a_rl, k_rl = prefix_of(period_key) .. 'rl:alloc', prefix_of(period_key) .. 'rl:key:' .. ARGS[11]
local a_start, k_start = -1, -1
if a_win > 0 or k_win > 0 then
  local now = redis_ms()
  local limited = rl_check(a_rl, a_req, a_tok, a_win, tin + tout, now, info)
  limited = limited or rl_check(k_rl, k_req, k_tok, k_win, tin + tout, now, info)
  if limited then return result(limited) end
  a_start = rl_take(a_rl, a_win, tin + tout, now)
  k_start = rl_take(k_rl, k_win, tin + tout, now)
end

redis.call('HINCRBY', period_key, 'reserved', int(cost))
redis.call('HINCRBY', period_key, 'reserved_tokens', int(tin + tout))
if period_ttl > 0 then redis.call('EXPIRE', period_key, int(period_ttl)) end
redis.call('HSET', res_key, rid, table.concat({ARGS[10], int(cost), int(tin), int(tout), ARGS[11], ARGS[12], int(a_start), int(k_start)}, '|'))
redis.call('ZADD', leases_key, int(now_ms + lease_ms), rid)
label_key(prefix_of(period_key), ARGS[11], ARGV[2], tonumber(ARGS[14]))
reserved, reserved_tokens = reserved + cost, reserved_tokens + tin + tout
return result(1)
