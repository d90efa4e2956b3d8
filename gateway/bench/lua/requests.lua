-- wrk script for `python -m gateway.bench`: one POST shape, a unique prompt per request on
-- demand, and a machine-readable summary line at the end.
--
-- Arguments after `--`: path, authorization, provider latency (ms), unique (0|1),
--   body prefix, body suffix, reply text ('' = the mock's default answer)
-- A unique body is prefix .. run id .. counter .. suffix, so no two requests of any run share
-- a cache key; otherwise every request sends prefix .. 'same' .. suffix.
local counter = 0
local path, unique, prefix, suffix, run_id

function init(args)
  path = args[1]
  unique = args[4] == "1"
  prefix, suffix = args[5], args[6]
  -- Each wrk thread has its own Lua state: the thread's address keeps their ids apart.
  run_id = tostring(os.time()) .. "-" .. tostring({}):sub(-8)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = args[2]
  if tonumber(args[3]) > 0 then
    wrk.headers["x-mock-latency-ms"] = args[3]
  end
  if args[7] ~= "" then
    wrk.headers["x-mock-reply"] = args[7]
  end
  if not unique then
    wrk.body = prefix .. "same" .. suffix
  end
end

function request()
  if not unique then
    return wrk.format(nil, path)
  end
  counter = counter + 1
  return wrk.format(nil, path, nil, prefix .. run_id .. "-" .. counter .. suffix)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
