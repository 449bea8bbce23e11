-- Apply one batch atomically: check versions, write states, memberships, progress, outbox, timers.
--
-- KEYS: every key the batch touches (declared for Redis Cluster routing).
-- ARGV[1]: JSON plan, key references are 1-based indexes into KEYS:
--   states      [[key, expected_version, json or false], ...]
--   members     [[set_key, customer_id, delta, segment], ...]
--   sizes       key of the segment-size hash
--   offsets     [key, [[partition, offset], ...]]
--   clocks      [key, [[partition, ts], ...]]
--   outbox      [[list_key, entry], ...]
--   due         [[zset_key, customer_id, when or false], ...]
--   matrix      [[hash_key, "<from>|<to>", count], ...]
--   suppress    [key, [[digest, when], ...]]
-- An expected version of -1 writes whatever the current version is.
-- Returns {1} on success, {0, key} when a state's version moved (nothing is written then).
local plan = cjson.decode(ARGV[1])

for _, s in ipairs(plan.states) do
  local current = tonumber(redis.call('HGET', KEYS[s[1]], 'v') or '0')
  if s[2] ~= -1 and current ~= s[2] then
    return {0, KEYS[s[1]]}
  end
end

for _, s in ipairs(plan.states) do
  if s[3] then
    local current = tonumber(redis.call('HGET', KEYS[s[1]], 'v') or '0')
    redis.call('HSET', KEYS[s[1]], 's', s[3], 'v', current + 1)
  else
    redis.call('DEL', KEYS[s[1]])
  end
end

for _, m in ipairs(plan.members) do
  local changed
  if m[3] > 0 then
    changed = redis.call('SADD', KEYS[m[1]], m[2])
  else
    changed = redis.call('SREM', KEYS[m[1]], m[2])
  end
  if changed == 1 then
    redis.call('HINCRBY', KEYS[plan.sizes], m[4], m[3])
  end
end

local function raise_to(key, pairs)
  for _, p in ipairs(pairs) do
    local current = tonumber(redis.call('HGET', key, p[1]) or '-1e300')
    if p[2] > current then
      redis.call('HSET', key, p[1], string.format('%.17g', p[2]))
    end
  end
end
raise_to(KEYS[plan.offsets[1]], plan.offsets[2])
raise_to(KEYS[plan.clocks[1]], plan.clocks[2])

for _, o in ipairs(plan.outbox) do
  redis.call('RPUSH', KEYS[o[1]], o[2])
end

for _, d in ipairs(plan.due) do
  if d[3] then
    redis.call('ZADD', KEYS[d[1]], string.format('%.17g', d[3]), d[2])
  else
    redis.call('ZREM', KEYS[d[1]], d[2])
  end
end

for _, m in ipairs(plan.matrix) do
  redis.call('HINCRBY', KEYS[m[1]], m[2], m[3])
end

for _, s in ipairs(plan.suppress[2]) do
  redis.call('HSET', KEYS[plan.suppress[1]], s[1], string.format('%.17g', s[2]))
end

return {1}
