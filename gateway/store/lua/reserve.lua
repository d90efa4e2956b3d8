-- Rate limits and budget reservation for one request, atomically, on Redis server time.
-- (Expired reservations still count as held until sweep.lua charges them: never an overspend.)
--
-- KEYS[1]  the accounting prefix, e.g. "llmgw:{acct}:" (every key below shares its hash tag)
-- ARGV     id, amount_micro, tokens, ttl_ms, rpm, tpm, rate_key, hold ('1'|'0'), n_scopes,
--          then per scope: name, day_limit_micro, month_limit_micro, month_limit_tokens (-1 = none)
--          hold '0': a request served without calling the provider (from the cache) is checked
--          as any other and takes its request from the rate limit, but holds nothing (no
--          tokens per minute, no budget): it costs nothing and needs no settle
-- Returns  {1, remaining_micro|-1, remaining_requests|-1, day, month, held (1|0)}
--          {2, which ("rpm"|"tpm"), retry_after_ms, 0|1 (1 = can never pass)}
--          {3, scope, period ("day"|"month"|"tokens"), used, limit, day, month}
local p = KEYS[1]
local id, amount, tokens, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local rpm, tpm, rate_key = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local hold, n = ARGV[8] == '1', tonumber(ARGV[9])

-- This very reservation sent again (its reply was lost with a connection, and the client
-- sends what was not answered once more) finds itself held: it is answered as it was held,
-- and is neither held a second time (a hold no settle would release) nor counted again.
if hold and n > 0 then
  local rec = redis.call('HGET', p .. 'resv', id)
  if rec then
    local rday, rmonth = string.match(rec, '^[^|]*|[^|]*|([^|]*)|([^|]*)|')
    return {1, '-1', -1, rday, rmonth, 1}
  end
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function civil(days)  -- days since 1970-01-01 -> y, m, d (proleptic Gregorian, UTC)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local y, m, d = civil(math.floor(now / 86400000))
local day = string.format('%04d%02d%02d', y, m, d)
local month = string.format('%04d%02d', y, m)
-- Every counter the checks below read, fetched in one MGET (each redis.call costs more than
-- the command it runs). Each key is named, and each limit parsed, once.
local wanted = {}
local req_key, tok_key = p .. 'rl:' .. rate_key .. ':req', p .. 'rl:' .. rate_key .. ':tok'
if rpm > 0 then wanted[#wanted + 1] = req_key end
local req_at = #wanted
if tpm > 0 then wanted[#wanted + 1] = tok_key end
local tok_at = #wanted
-- Per scope: its name; its limits (day, month, tokens; -1 = none); the keys of what it holds
-- (day, month, tokens); where its counters start in the MGET's reply.
local scopes = {}
for i = 0, n - 1 do
  local name = ARGV[10 + i * 4]
  local s = {name, tonumber(ARGV[11 + i * 4]), tonumber(ARGV[12 + i * 4]), tonumber(ARGV[13 + i * 4]),
             p .. 'held:' .. name .. ':d' .. day, p .. 'held:' .. name .. ':m' .. month,
             p .. 'heldtok:' .. name .. ':m' .. month, #wanted}
  if s[2] >= 0 then wanted[#wanted + 1] = p .. 'spent:' .. name .. ':d' .. day; wanted[#wanted + 1] = s[5] end
  if s[3] >= 0 then wanted[#wanted + 1] = p .. 'spent:' .. name .. ':m' .. month; wanted[#wanted + 1] = s[6] end
  if s[4] >= 0 then wanted[#wanted + 1] = p .. 'tokens:' .. name .. ':m' .. month; wanted[#wanted + 1] = s[7] end
  scopes[i + 1] = s
end
local values = #wanted > 0 and redis.call('MGET', unpack(wanted)) or {}
local function num(at) return tonumber(values[at] or '0') end
local function int(x) return string.format('%d', x) end

-- 1. Rate limits (GCRA: `limit` per minute, a full minute's worth may come at once).
local function gcra(at, limit, cost)
  local interval = 60000 / limit
  local tat = math.max(num(at), now)
  local new_tat = tat + cost * interval
  local allow_at = new_tat - 60000
  if allow_at > now then return nil, math.ceil(allow_at - now), cost > limit end
  return new_tat, math.floor((now + 60000 - new_tat) / interval)
end
local req_tat, tok_tat, remaining_requests = nil, nil, -1
if rpm > 0 then
  local tat, second, never = gcra(req_at, rpm, 1)
  if not tat then return {2, 'rpm', second, never and 1 or 0} end
  req_tat, remaining_requests = tat, second
end
if tpm > 0 then
  local tat, second, never = gcra(tok_at, tpm, tokens)
  if not tat then return {2, 'tpm', second, never and 1 or 0} end
  tok_tat = tat
end

-- 2. Budgets: settled spend + open reservations + this one, against every limit.
local remaining = -1
for _, s in ipairs(scopes) do
  local at = s[8]
  for period = 2, 3 do
    local limit = s[period]
    if limit >= 0 then
      local used = num(at + 1) + num(at + 2)
      if used + amount > limit then
        return {3, s[1], period == 2 and 'day' or 'month', int(used), int(limit), day, month}
      end
      local left = limit - used - (hold and amount or 0)
      if remaining < 0 or left < remaining then remaining = left end
      at = at + 2
    end
  end
  if s[4] >= 0 then
    local used = num(at + 1) + num(at + 2)
    if used + tokens > s[4] then return {3, s[1], 'tokens', int(used), int(s[4]), day, month} end
  end
end

-- 3. Everything passed: commit.
local key_ttl = 400 * 86400
-- A counter gets its expiry when an increment creates it (or finds it at zero). The amounts
-- go to Redis as the strings they came as.
local function add(key, by, by_text)
  if redis.call('INCRBY', key, by_text) == by then redis.call('EXPIRE', key, key_ttl) end
end
if req_tat then redis.call('SET', req_key, int(req_tat), 'PX', '120000') end
if not hold then return {1, int(remaining), remaining_requests, day, month, 0} end
if tok_tat then redis.call('SET', tok_key, int(tok_tat), 'PX', '120000') end
local names = {}
for i, s in ipairs(scopes) do
  add(s[5], amount, ARGV[2])
  add(s[6], amount, ARGV[2])
  add(s[7], tokens, ARGV[3])
  names[i] = s[1]
end
if n > 0 then
  local rec = ARGV[2] .. '|' .. ARGV[3] .. '|' .. day .. '|' .. month .. '|' .. table.concat(names, ';')
  redis.call('HSET', p .. 'resv', id, rec)
  redis.call('ZADD', p .. 'resv:exp', int(now + ttl), id)
end
return {1, int(remaining), remaining_requests, day, month, 1}
