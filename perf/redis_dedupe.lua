-- Durable, deduplicated submit in Redis, the way fleetq ingests a command:
-- the idempotency key is claimed with SET NX and the command is appended to
-- its device's queue (a stream) with XADD, atomically (a Lua script runs as
-- one unit).  A repeat of the same tenant + key with the same content gets
-- the original id back with dup = 1; different content is refused.
--
-- KEYS[1]  idempotency key   "idem:<tenant>:<key>"
-- KEYS[2]  the device queue  "dev:<vin or site>"
-- ARGV     tenant, key, account, device, command, params (msgpack), ttl_ms
--
-- Returns {dup (0/1), stream id}.  With appendonly yes and appendfsync
-- always, Redis writes and fsyncs the AOF before it answers.
local content = ARGV[3] .. '\0' .. ARGV[4] .. '\0' .. ARGV[5] .. '\0' .. ARGV[6]
local digest = redis.sha1hex(content)
local prev = redis.call('GET', KEYS[1])
if prev then
  local d, id = string.match(prev, '^(%x+):(.*)$')
  if d == digest then
    return {1, id}
  end
  return redis.error_reply('idempotency_mismatch')
end
local id = redis.call('XADD', KEYS[2], '*', 'tenant', ARGV[1], 'key', ARGV[2],
                      'account', ARGV[3], 'command', ARGV[5], 'params', ARGV[6],
                      'ttl_ms', ARGV[7])
redis.call('SET', KEYS[1], digest .. ':' .. id, 'NX', 'EX', 86400)
return {0, id}
