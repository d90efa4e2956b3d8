-- The request's reservation and its cache read in one call, on a single Redis (on a Redis
-- Cluster the accounting and the entry live in different slots). A fresh entry makes the
-- reservation a check that holds nothing (its rate limit is still taken), so a hit needs no
-- settle: one round trip in all. Otherwise the reservation is made and, only if it passes,
-- the entry's lock is tried: a refused request never leads.
-- (read.lua comes first, then reserve.lua as the function `reserve`.)
-- KEYS[1] the accounting prefix, KEYS[2] entry, KEYS[3] lock
-- ARGV     reserve.lua's, then now (ms), lock token or '', lock ttl (ms)
-- Returns  reserve.lua's answer; when it passed, followed by 'hit' and the entry, or by the
--          lock state and any expired entry (as lookup.lua returns them)
local last = #ARGV
local fresh, entry = cache_get(KEYS[2], ARGV[last - 2])
if fresh then ARGV[8] = '0' end  -- hold nothing
local verdict = reserve()
if verdict[1] ~= 1 then return verdict end
if fresh then
  verdict[#verdict + 1] = 'hit'
  verdict[#verdict + 1] = entry
else
  verdict[#verdict + 1] = cache_lock(KEYS[3], ARGV[last - 1], ARGV[last])
  verdict[#verdict + 1] = entry or ''
end
return verdict
