-- One round trip for a cache read. A fresh entry is returned as a hit. Otherwise the lock
-- state comes back (the lock is taken when a token is given) with any expired entry still
-- kept for serve-stale, so neither the leader election nor serve-stale needs a second trip.
-- (read.lua comes first.)
-- KEYS[1] entry, KEYS[2] lock; ARGV[1] now (ms), ARGV[2] lock token or '', ARGV[3] lock ttl (ms)
local fresh, entry = cache_get(KEYS[1], ARGV[1])
if fresh then return {'hit', entry} end
return {cache_lock(KEYS[2], ARGV[2], ARGV[3]), entry or ''}
