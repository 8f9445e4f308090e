-- wrk script of the serving benchmark (bench_serving.py sets the environment):
--   TARGET=floor       POST /floor (the empty endpoint of floor_app.py)
--   TARGET=recommend   POST /api/v1/recommend for a user drawn at random from N_USERS published
--                      ones (ids ID_STRIDE*k+1), a share UNKNOWN of them shifted by one to an
--                      id without a list (the cold-start path); HOT=1: always the first user;
--                      SWEEP=1: every known and unknown id once, in order (warms the LRU).
--                      RULES=<json>: sent as the request's "rules" object (business rules);
--                      each "RAND" in it becomes a random id per request (rules that vary).
-- done() prints one JSON line with the latency percentiles and error counts.
local target = os.getenv("TARGET") or "recommend"
local n_users = tonumber(os.getenv("N_USERS") or "5000")
local unknown = tonumber(os.getenv("UNKNOWN") or "0.05")
local stride = tonumber(os.getenv("ID_STRIDE") or "3")
local hot = os.getenv("HOT") == "1"
local sweep = os.getenv("SWEEP") == "1"
local rules = os.getenv("RULES")
local seq = 0

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function setup(thread)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end

local function body(user)
  if rules and rules ~= "" then
    local r = rules:gsub("RAND", function() return tostring(math.random(1, 1000000)) end)
    return '{"user_id": ' .. user .. ', "n_recommendations": 10, "rules": ' .. r .. '}'
  end
  return '{"user_id": ' .. user .. ', "n_recommendations": 10}'
end

request = function()
  if target == "floor" then
    return wrk.format(nil, "/floor", nil, "")
  end
  local user
  if hot then
    user = 1
  elseif sweep then
    -- 0 .. 2*n_users-1: known ids first, then the unknown ones beside them
    local k = seq % (2 * n_users)
    seq = seq + 1
    user = (k % n_users) * stride + 1 + math.floor(k / n_users)
  else
    user = math.random(0, n_users - 1) * stride + 1
    if math.random() < unknown then user = user + 1 end
  end
  return wrk.format(nil, "/api/v1/recommend", nil, body(user))
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
