-- Charge every reservation past its expiry at its reserved amount (a process died holding it).
--
-- KEYS[1]  the accounting prefix (shared hash tag)
-- Returns  the number of reservations charged
local p = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key_ttl = 400 * 86400
-- A counter gets its expiry when an increment creates it (or finds it at zero), as in
-- settle.lua.
local function add(key, by)
  if redis.call('INCRBY', key, by) == tonumber(by) then redis.call('EXPIRE', key, key_ttl) end
end
local expired = redis.call('ZRANGEBYSCORE', p .. 'resv:exp', '-inf', now, 'LIMIT', 0, 1000)
for _, rid in ipairs(expired) do
  local rec = redis.call('HGET', p .. 'resv', rid)
  if rec then
    local ramount, rtokens, rday, rmonth, rscopes = string.match(rec, '^(%d+)|(%d+)|(%d+)|(%d+)|(.*)$')
    for scope in string.gmatch(rscopes, '[^;]+') do
      for _, per in ipairs({'d' .. rday, 'm' .. rmonth}) do
        redis.call('DECRBY', p .. 'held:' .. scope .. ':' .. per, ramount)
        add(p .. 'spent:' .. scope .. ':' .. per, ramount)
      end
      redis.call('DECRBY', p .. 'heldtok:' .. scope .. ':m' .. rmonth, rtokens)
      add(p .. 'tokens:' .. scope .. ':m' .. rmonth, rtokens)
    end
    redis.call('HINCRBY', p .. 'stats:' .. rmonth, 'expired_reservations', 1)
    redis.call('HDEL', p .. 'resv', rid)
  end
  redis.call('ZREM', p .. 'resv:exp', rid)
end
return #expired
