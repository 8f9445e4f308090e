-- KEYS: current, previous, meta of the new version; ARGV: version, channel. Atomic switch.
-- All three KEYS carry the deployment tag {p}: one slot, so it also runs on Redis Cluster.
if redis.call('EXISTS', KEYS[3]) == 0 then
  return redis.error_reply('version ' .. ARGV[1] .. ' is incomplete (no meta key)')
end
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
if old and old ~= ARGV[1] then redis.call('SET', KEYS[2], old) end
redis.call('PUBLISH', ARGV[2], 'version:' .. ARGV[1])
return old
