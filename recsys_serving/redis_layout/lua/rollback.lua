-- KEYS: current, previous; ARGV: head of meta keys ("{p}:v:"), channel. Swaps the pointers.
-- The meta key it builds has the deployment tag {p} like KEYS, so on Redis Cluster every key
-- this script touches is in the slot the cluster routed it to.
local cur = redis.call('GET', KEYS[1])
local prev = redis.call('GET', KEYS[2])
if not prev then return redis.error_reply('no previous version to roll back to') end
if redis.call('EXISTS', ARGV[1] .. prev .. ':meta') == 0 then
  return redis.error_reply('previous version ' .. prev .. ' is gone')
end
redis.call('SET', KEYS[1], prev)
if cur then redis.call('SET', KEYS[2], cur) else redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[2], 'rollback:' .. prev)
return prev
