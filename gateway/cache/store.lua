-- Store an entry and, in the same trip, release the writer's lock if it still holds it.
-- (write.lua comes first.)
-- KEYS[1] entry, KEYS[2] lock; ARGV[1] encoded entry, ARGV[2] ttl (ms), ARGV[3] token or ''
cache_put(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
return 1
