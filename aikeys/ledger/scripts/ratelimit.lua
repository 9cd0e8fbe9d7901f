-- ratelimit: admit one request of `tokens` into a model's rate window, or refuse; or give back.
-- KEYS: the scope's rate hash (its own slot: a model's limits span allocations)
-- ARGV: "admit", requests limit, tokens limit, window_ms, tokens
--    or "adjust", window start, requests delta, tokens delta
-- Returns (admit) {status, limit requests, remaining requests, limit tokens, remaining tokens,
-- reset ms, window start}; status 1 admitted, -4 over requests, -5 over tokens. (adjust) {1}.
local key = KEYS[1]
if ARGV[1] == 'adjust' then
  rl_adjust(key, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
  return {1}
end
local req, tok, win, tokens = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local info = {-1, -1, -1, -1, 0}
local now = redis_ms()
local limited = rl_check(key, req, tok, win, tokens, now, info)
if limited then return {limited, info[1], info[2], info[3], info[4], info[5], -1} end
local start = rl_take(key, win, tokens, now)
return {1, info[1], info[2], info[3], info[4], info[5], start}
