-- The request's settle and its answer's cache write in one call, on a single Redis (on a
-- Redis Cluster the accounting and the entry live in different slots): after a miss, one
-- round trip in all. The settle comes first; the entry is written once it has run.
-- (write.lua comes first, then settle.lua as the function `settle`.)
-- KEYS[1] the accounting prefix, KEYS[2] entry, KEYS[3] lock
-- ARGV     settle.lua's, then the encoded entry, its ttl (ms), the lock token or ''
-- Returns  settle.lua's answer
local last = #ARGV
local crossed = settle()
cache_put(KEYS[2], KEYS[3], ARGV[last - 2], ARGV[last - 1], ARGV[last])
return crossed
