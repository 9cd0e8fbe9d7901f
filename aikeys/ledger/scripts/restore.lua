-- restore: raise one period's counters to floors (after Redis lost data, from the last status the
-- operator wrote). Never lowers anything, so it is idempotent and safe against live traffic.
-- KEYS: period, keyspend (of the same period)
-- ARGV: period_ttl_s (-1: none), spent, tokens, requests, then pairs key, key spend floor
-- Returns {existed (the period hash existed), spent added, tokens added, requests added,
--          then pairs key, spend added (only the keys that were raised)}.
local period_key, keyspend_key = KEYS[1], KEYS[2]
local ttl = tonumber(ARGV[1])
local existed = redis.call('EXISTS', period_key)

local function raise(key, field, floor)
  local current = tonumber(redis.call('HGET', key, field) or 0)
  if current >= floor then return 0 end
  redis.call('HINCRBY', key, field, int(floor - current))
  return floor - current
end

local out = {existed, 0, 0, 0}
out[2] = raise(period_key, 'spent', tonumber(ARGV[2]))
out[3] = raise(period_key, 'tokens', tonumber(ARGV[3]))
out[4] = raise(period_key, 'requests', tonumber(ARGV[4]))
for i = 5, #ARGV - 1, 2 do
  local added = raise(keyspend_key, ARGV[i], tonumber(ARGV[i + 1]))
  if added > 0 then
    out[#out + 1] = ARGV[i]
    out[#out + 1] = added
  end
end
if ttl > 0 then  -- as reserve and settle set them (a no-op on a key that does not exist)
  redis.call('EXPIRE', period_key, int(ttl))
  redis.call('EXPIRE', keyspend_key, int(ttl))
end
return out
