-- A cache entry's write, as a function: store.lua writes an entry on its own,
-- settle_store.lua in the same call as the request's settle.
local function cache_put(entry_key, lock_key, entry, ttl, token)
  -- Store for `ttl` ms and release the writer's lock if it still holds it.
  redis.call('SET', entry_key, entry, 'PX', ttl)
  if token ~= '' and redis.call('GET', lock_key) == token then
    redis.call('DEL', lock_key)
  end
end
