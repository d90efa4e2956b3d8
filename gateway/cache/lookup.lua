-- One round trip for a cache read. A fresh entry is returned as a hit. Otherwise the lock
-- state comes back (the lock is taken when a token is given) with any expired entry still
-- kept for serve-stale, so neither the leader election nor serve-stale needs a second trip.
-- KEYS[1] entry, KEYS[2] lock; ARGV[1] now (ms), ARGV[2] lock token or '', ARGV[3] lock ttl (ms)
local entry = redis.call('GET', KEYS[1])
if entry then
  local expires = tonumber(string.match(entry, '^(%d+)\n'))
  if expires and expires > tonumber(ARGV[1]) then
    return {'hit', entry}
  end
else
  entry = ''
end
local lock = 'none'
if ARGV[2] ~= '' then
  if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
    lock = 'leader'
  else
    lock = 'follower'
  end
elseif redis.call('EXISTS', KEYS[2]) == 1 then
  lock = 'follower'
end
return {lock, entry}
