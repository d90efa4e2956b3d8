-- A cache entry's read and its lock, as functions: lookup.lua reads an entry on its own,
-- reserve_lookup.lua in the same call as the request's reservation. An entry starts with its
-- expiry time (ms) and a newline.
local function cache_get(entry_key, now)  -- fresh?, the entry (false when there is none)
  local entry = redis.call('GET', entry_key)
  if not entry then return false, false end
  local expires = tonumber(string.match(entry, '^(%d+)\n'))
  return expires ~= nil and expires > tonumber(now), entry
end

local function cache_lock(lock_key, token, ttl)  -- 'leader', 'follower' or 'none'
  if token ~= '' then  -- a token asks for the lock
    if redis.call('SET', lock_key, token, 'NX', 'PX', ttl) then return 'leader' end
    -- its own, when the same call is sent again after a lost reply
    if redis.call('GET', lock_key) == token then return 'leader' end
    return 'follower'
  end
  if redis.call('EXISTS', lock_key) == 1 then return 'follower' end
  return 'none'
end
