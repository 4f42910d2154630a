"""The Lua script behind the shared quota windows (quota/redis.py): take, end, forget, renew
and block, each one atomic step on an app's keys by Redis' clock (any other op, such as
peek, only reads the app's pauses)."""

_WALK = 64  # entries read to find when enough room frees: the wait is a bound beyond that

# KEYS: epoch, pause, block, then per window its sorted set and its running sum.
# ARGV: op, now_us ("" = the server's TIME; only tests pass one), lease_us, windows n,
#       then per window limit and window_us, then state_loss_us (what a lost state pauses
#       the app for beyond its longest window), then the op's own arguments.
# Every reply starts with: epoch, pause left (us, lost state), block left (us, a vendor's
# rate refusal).
SCRIPT = """
local op, now = ARGV[1], tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local lease, n = tonumber(ARGV[3]), tonumber(ARGV[4])
local limits, windows, longest = {}, {}, 0
for w = 1, n do
  limits[w] = tonumber(ARGV[3 + 2 * w])
  windows[w] = tonumber(ARGV[4 + 2 * w])
  if windows[w] > longest then longest = windows[w] end
end
local state_loss = tonumber(ARGV[5 + 2 * n])
local arg = 6 + 2 * n
local ttl = math.ceil((lease + longest) / 1000) + 1000

local function amount_of(member)
  return tonumber(string.match(member, ':(%d+)$'))
end

local function until_of(key)
  return tonumber(redis.call('GET', key) or '0')
end

local function pause(key, at)
  if at > until_of(key) then
    redis.call('SET', key, at, 'PX', math.ceil((at - now) / 1000) + 1)
  end
end

-- A missing epoch means the entries are gone: pause the app for one window + lease.
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = tostring(now)
  redis.call('SET', KEYS[1], epoch)
  pause(KEYS[2], now + longest + state_loss)
end

local function held(w)
  local zset, sum = KEYS[2 + 2 * w], KEYS[3 + 2 * w]
  local gone = redis.call('ZRANGEBYSCORE', zset, '-inf', now)
  if #gone > 0 then
    local freed = 0
    for _, member in ipairs(gone) do freed = freed + amount_of(member) end
    redis.call('ZREMRANGEBYSCORE', zset, '-inf', now)
    redis.call('DECRBY', sum, freed)
  end
  local total = tonumber(redis.call('GET', sum) or '0')
  if total < 0 or (total > 0 and redis.call('ZCARD', zset) == 0) then
    total = 0
    redis.call('SET', sum, 0, 'PX', ttl)
  end
  return total
end

local function add(w, member, score)
  local zset, sum = KEYS[2 + 2 * w], KEYS[3 + 2 * w]
  if redis.call('ZADD', zset, score, member) == 1 then
    redis.call('INCRBY', sum, amount_of(member))
  end
  redis.call('PEXPIRE', zset, ttl)
  redis.call('PEXPIRE', sum, ttl)
end

local function remove(w, member)
  local zset, sum = KEYS[2 + 2 * w], KEYS[3 + 2 * w]
  if redis.call('ZREM', zset, member) == 1 then
    redis.call('DECRBY', sum, amount_of(member))
  end
end

local function paused_left()
  return math.max(0, until_of(KEYS[2]) - now, until_of(KEYS[3]) - now)
end

local function lost_left()
  return math.max(0, until_of(KEYS[2]) - now)
end

local function block_left()
  return math.max(0, until_of(KEYS[3]) - now)
end

if op == 'take' then
  local token = ARGV[arg]
  local totals, wait, exact = {}, paused_left(), 1
  for w = 1, n do
    local amount = tonumber(ARGV[arg + w])
    local total = held(w)
    totals[w] = total
    local excess = total + amount - limits[w]
    if excess > 0 then
      local entries = redis.call('ZRANGE', KEYS[2 + 2 * w], 0, _WALK - 1, 'WITHSCORES')
      local freed, at, certain = 0, now, 1
      for i = 1, #entries, 2 do
        -- In-flight entries may end (and so expire) earlier than their score says.
        if string.sub(entries[i], 1, 1) == 'i' then certain = 0 end
        freed = freed + amount_of(entries[i])
        at = tonumber(entries[i + 1])
        if freed >= excess then break end
      end
      if freed < excess then certain = 0 end
      if at - now > wait then wait, exact = at - now, certain end
    end
  end
  if wait > 0 then
    return {epoch, lost_left(), block_left(), 0, wait, exact, unpack(totals)}
  end
  for w = 1, n do
    local amount = tonumber(ARGV[arg + w])
    add(w, 'i:' .. token .. ':' .. amount, now + lease + windows[w])
    totals[w] = totals[w] + amount
  end
  return {epoch, 0, 0, 1, 0, 1, unpack(totals)}
elseif op == 'end' then
  local token = ARGV[arg]
  for w = 1, n do
    local amount = ARGV[arg + w]
    remove(w, 'i:' .. token .. ':' .. amount)
    -- Added even when the in-flight entry is gone (lost state): the vendor saw the call.
    add(w, 'e:' .. token .. ':' .. amount, now + windows[w])
  end
elseif op == 'forget' then
  -- Takes whose answer never arrived: each may hold an entry with no call behind it.
  for i = arg, #ARGV, n + 1 do
    for w = 1, n do remove(w, 'i:' .. ARGV[i] .. ':' .. ARGV[i + w]) end
  end
elseif op == 'renew' then
  for i = arg, #ARGV, n + 1 do
    for w = 1, n do
      add(w, 'i:' .. ARGV[i] .. ':' .. ARGV[i + w], now + lease + windows[w])
    end
  end
elseif op == 'block' then
  pause(KEYS[3], now + tonumber(ARGV[arg]))
end
return {epoch, lost_left(), block_left()}
""".replace("_WALK", str(_WALK))
