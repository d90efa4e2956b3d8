-- Settle one request: release its reservation, charge the actual cost. (Its statistics are
-- summed in the gateway process and added by stats_add.lua.)
--
-- KEYS[1]  the accounting prefix (shared hash tag)
-- ARGV     id, actual_micro, actual_tokens, reserved_micro, reserved_tokens, day, month,
--          tpm, rate_key, n_scopes, then per scope: name, day_limit, month_limit,
--          month_limit_tokens (-1 = none)
-- Returns  flat list of budget thresholds crossed: scope, period ("day"|"month"|"tokens"),
--          percent, spent (micro-dollars, or tokens), limit, ...
local p = KEYS[1]
local id = ARGV[1]
local actual, actual_tok = tonumber(ARGV[2]), tonumber(ARGV[3])
local reserved, reserved_tok = tonumber(ARGV[4]), tonumber(ARGV[5])
local day, month = ARGV[6], ARGV[7]
local tpm, rate_key, n = tonumber(ARGV[8]), ARGV[9], tonumber(ARGV[10])
local function int(x) return string.format('%d', x) end
local key_ttl = 400 * 86400

-- Whether it was still held (not yet charged by sweep.lua): released if so.
local rec = redis.call('HDEL', p .. 'resv', id) == 1
local charge, charge_tok = actual, actual_tok
if rec then
  redis.call('ZREM', p .. 'resv:exp', id)
elseif reserved > 0 then
  -- Already charged at its reserved amount when it expired: add only what exceeds it.
  charge = math.max(0, actual - reserved)
  charge_tok = math.max(0, actual_tok - reserved_tok)
end

-- What is charged and released goes to Redis as text: the amounts as they came, when they
-- are what is charged.
local reserved_text, reserved_tok_text = ARGV[4], ARGV[5]
local charge_text = charge == actual and ARGV[2] or int(charge)
local charge_tok_text = charge_tok == actual_tok and ARGV[3] or int(charge_tok)
local crossed = {}
-- Each of 50, 80 and 100 % of `limit` that this charge took `after` past, for one request.
local function cross(name, period, after, by, limit)
  if limit <= 0 then return end
  local before = after - by
  for _, pct in ipairs({50, 80, 100}) do
    if before * 100 < pct * limit and after * 100 >= pct * limit then
      for _, v in ipairs({name, period, pct, int(after), int(limit)}) do
        crossed[#crossed + 1] = v
      end
    end
  end
end
for i = 0, n - 1 do
  local name = ARGV[11 + i * 4]
  for period = 1, 2 do
    local suffix = period == 1 and ':d' .. day or ':m' .. month
    local limit = tonumber(ARGV[11 + period + i * 4])
    if rec then redis.call('DECRBY', p .. 'held:' .. name .. suffix, reserved_text) end
    local key = p .. 'spent:' .. name .. suffix
    local after = redis.call('INCRBY', key, charge_text)
    if after == charge then redis.call('EXPIRE', key, key_ttl) end  -- new (or at zero)
    cross(name, period == 1 and 'day' or 'month', after, charge, limit)
  end
  if rec then redis.call('DECRBY', p .. 'heldtok:' .. name .. ':m' .. month, reserved_tok_text) end
  local tokens_key = p .. 'tokens:' .. name .. ':m' .. month
  local tokens_after = redis.call('INCRBY', tokens_key, charge_tok_text)
  if tokens_after == charge_tok then redis.call('EXPIRE', tokens_key, key_ttl) end
  cross(name, 'tokens', tokens_after, charge_tok, tonumber(ARGV[14 + i * 4]))
end

-- Tokens per minute were taken at the estimate: give back what the request did not use.
if tpm > 0 and actual_tok < reserved_tok then
  local key = p .. 'rl:' .. rate_key .. ':tok'
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat > 0 then
    redis.call('SET', key, int(tat - (reserved_tok - actual_tok) * 60000 / tpm), 'KEEPTTL')
  end
end

return crossed
