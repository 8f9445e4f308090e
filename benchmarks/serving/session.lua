-- wrk script of bench_session.py: POST /api/v1/recommend/session with a random session of
-- 1..MAX_LEN items (ITEMS_FILE: one item id per line, the network's catalogue), N items back.
-- done() prints one JSON line with the latency percentiles and error counts.
local max_len = tonumber(os.getenv("MAX_LEN") or "10")
local n = tonumber(os.getenv("N") or "10")
local ids = {}
for line in io.lines(os.getenv("ITEMS_FILE")) do ids[#ids + 1] = line end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function setup(thread)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end

request = function()
  local len = math.random(1, max_len)
  local items = {}
  for i = 1, len do items[i] = ids[math.random(1, #ids)] end
  local body = '{"item_ids": [' .. table.concat(items, ", ") .. '], "n_recommendations": ' .. n .. '}'
  return wrk.format(nil, "/api/v1/recommend/session", nil, body)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, ' ..
    '"max_us": %d, "errors": %d, "non_2xx": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max,
    e.connect + e.read + e.write + e.timeout, e.status))
end
