-- KEYS[1] bucket blob; ARGV[1] id. Returns the payload or nil. Reads only KEYS[1] (any slot).
local key = KEYS[1]
local id = tonumber(ARGV[1])
local head = redis.call('GETRANGE', key, 0, 3)
if string.len(head) < 4 then return false end
local n = struct.unpack('<I4', head)
local ids = redis.call('GETRANGE', key, 4, 3 + 8 * n)
local lo, hi = 1, n
while lo <= hi do
  local mid = math.floor((lo + hi) / 2)
  local v = struct.unpack('<i8', ids, 8 * (mid - 1) + 1)
  if v == id then
    local at = 4 + 8 * n + 4 * (mid - 1)
    local a, b = struct.unpack('<I4I4', redis.call('GETRANGE', key, at, at + 7))
    return redis.call('GETRANGE', key, a, b - 1)
  elseif v < id then lo = mid + 1 else hi = mid - 1 end
end
return false
