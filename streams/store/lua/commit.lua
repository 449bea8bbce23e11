-- Apply one batch atomically: check versions, write states, memberships, progress, outbox, timers.
-- A customer's state is stored as the string "<version>:<json>".
--
-- KEYS: every key the batch touches (declared for Redis Cluster routing).
-- ARGV[1]: JSON plan, key references are 1-based indexes into KEYS; a value (a state's JSON,
-- an outbox entry, a hand-over record) is either text in the plan or, as a number, the index
-- into ARGV of the argument that holds it (ARGV[2] onwards, passed as they are):
--   states      [[key, expected_version, json or false], ...]
--   members     [[set_key, customer_id, delta, segment], ...]
--   sizes       key of the segment-size hash
--   offsets     [key, [[partition, offset], ...]]
--   clocks      [key, [[partition, ts], ...]]
--   outbox      [[list_key, entry], ...]
--   due         [[zset_key, customer_id, when or false], ...]
--   matrix      [[hash_key, "<from>|<to>", count], ...]
--   suppress    [key, [[digest, when], ...]]
--   history     [[hour_key, hour, [[field, count], ...]], ...]   (size history, per hour)
--   hist        [index_key, base_key, hour_key_prefix, retention_hours]   (with history only)
--   hset        [[hash_key, field, value], ...]   (hand-over records, partitioned layout)
--   progress    [key, [[field, position], ...]]   (an import run's checkpoint, raised only)
--   hsetnx      [[hash_key, field, value], ...]   (an import run's memberships before it)
--   hdel        [[hash_key, field], ...]          (... deleted once announced)
-- An expected version of -1 writes whatever the current version is.
-- Returns {1, len...} on success (each outbox list's length after the push, in the order the
-- lists first appear in the plan), {0, key} when a state's version moved (nothing is written).
local plan = cjson.decode(ARGV[1])

local function value_of(v)
  if type(v) == 'number' then
    return ARGV[v]
  end
  return v
end

local function version_of(key)
  local value = redis.call('GET', key)
  if not value then
    return 0
  end
  return tonumber(string.match(value, '^(%d+):'))
end

local versions = {}
for i, s in ipairs(plan.states) do
  local current = version_of(KEYS[s[1]])
  if s[2] ~= -1 and current ~= s[2] then
    return {0, KEYS[s[1]]}
  end
  versions[i] = current
end

for i, s in ipairs(plan.states) do
  if s[3] then
    redis.call('SET', KEYS[s[1]], (versions[i] + 1) .. ':' .. value_of(s[3]))
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
if plan.progress then
  raise_to(KEYS[plan.progress[1]], plan.progress[2])
end
for _, h in ipairs(plan.hsetnx or {}) do
  redis.call('HSETNX', KEYS[h[1]], h[2], h[3])
end
for _, h in ipairs(plan.hdel or {}) do
  redis.call('HDEL', KEYS[h[1]], h[2])
end

local lengths = {}
local order = {}
for _, o in ipairs(plan.outbox) do
  local n = redis.call('RPUSH', KEYS[o[1]], value_of(o[2]))
  if lengths[o[1]] == nil then
    order[#order + 1] = o[1]
  end
  lengths[o[1]] = n
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

-- The size history: add the batch's counts per hour; when an hour is new, fold the hours more
-- than the retention older than the newest one into the base (the same as base.fold_history).
if #plan.history > 0 then
  local index = KEYS[plan.hist[1]]
  local added = 0
  for _, h in ipairs(plan.history) do
    for _, f in ipairs(h[3]) do
      redis.call('HINCRBY', KEYS[h[1]], f[1], f[2])
    end
    added = added + redis.call('ZADD', index, h[2], h[2])
  end
  if added > 0 then
    local newest = tonumber(redis.call('ZRANGE', index, -1, -1)[1])
    local cutoff = '(' .. (newest - plan.hist[4])
    local old = redis.call('ZRANGEBYSCORE', index, '-inf', cutoff)
    for _, hour in ipairs(old) do
      local key = plan.hist[3] .. hour
      local flat = redis.call('HGETALL', key)
      for i = 1, #flat, 2 do
        redis.call('HINCRBY', KEYS[plan.hist[2]], flat[i], flat[i + 1])
      end
      redis.call('DEL', key)
    end
    if #old > 0 then
      redis.call('ZREMRANGEBYSCORE', index, '-inf', cutoff)
    end
  end
end

-- Hand-over records (partitioned layout): changes to finish in another key group.
for _, h in ipairs(plan.hset or {}) do
  redis.call('HSET', KEYS[h[1]], h[2], value_of(h[3]))
end

local reply = {1}
for _, key in ipairs(order) do
  reply[#reply + 1] = lengths[key]
end
return reply
