-- Store an entry and, in the same trip, release the writer's lock if it still holds it.
-- KEYS[1] entry, KEYS[2] lock; ARGV[1] encoded entry, ARGV[2] ttl (ms), ARGV[3] token or ''
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
return 1
