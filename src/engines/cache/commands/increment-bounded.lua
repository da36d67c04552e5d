-- increment-bounded: adds one amount to several counters, all or none, never past a maximum.
-- Used for usage quotas: a day counter and a month counter must both allow the tokens, and
-- a refused call must change nothing. One script, so it is atomic for every node sharing
-- this Redis.
--
-- KEYS[i]          counter i (on Cluster all keys share one {hash tag}, hence one slot)
-- ARGV[1]          the amount to add (integer >= 0)
-- ARGV[3i-1]       max for KEYS[i]: refuse if the counter would end above it
-- ARGV[3i]         TTL in seconds, set when KEYS[i] is created
-- ARGV[3i+1]       initial value when KEYS[i] is missing (the total known to SQLite)
-- Result: { applied (1 or 0), value of KEYS[1] after the call, value of KEYS[2], ... }
local by = tonumber(ARGV[1])
local values = {}
local exists = {}
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  exists[i] = v ~= false
  if exists[i] then values[i] = tonumber(v) else values[i] = tonumber(ARGV[3 * i + 1]) end
end
for i = 1, #KEYS do
  if values[i] + by > tonumber(ARGV[3 * i - 1]) then
    local result = { 0 }
    for j = 1, #KEYS do result[j + 1] = values[j] end
    return result
  end
end
local result = { 1 }
for i = 1, #KEYS do
  if exists[i] then
    result[i + 1] = redis.call('INCRBY', KEYS[i], by)
  else
    values[i] = values[i] + by
    redis.call('SET', KEYS[i], values[i], 'EX', tonumber(ARGV[3 * i]))
    result[i + 1] = values[i]
  end
end
return result
