-- Add statistics counters: the increments of many requests, summed in one gateway process.
--
-- KEYS[1]  the accounting prefix (shared hash tag)
-- ARGV     month (YYYYMM), then field, increment pairs (field: "<prefix>:<name>")
local stats = KEYS[1] .. 'stats:' .. ARGV[1]
for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', stats, ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', stats, 400 * 86400)
return 0
