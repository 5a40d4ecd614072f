//! The Lua scripts Redis runs atomically for the bus. Keys share a hash tag
//! (`{channel}`), so a Redis Cluster would keep a channel's keys on one node.

/// `epoch`: the channel's epoch, or the one in `ARGV[n]`, stored with offset 0
/// when the channel has none (first use, or Redis lost it).
macro_rules! epoch_or_new {
    ($n:literal) => {
        concat!(
            "local epoch = redis.call('HGET', KEYS[1], 'e')\n",
            "if not epoch then\n",
            "  epoch = ARGV[",
            $n,
            "]\n",
            "  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)\n",
            "end\n"
        )
    };
}

/// KEYS: meta hash, history list. ARGV: data, history size, history TTL ms,
/// epoch if none yet, pub/sub topic. Returns `{epoch, offset}`.
pub const PUBLISH: &str = concat!(
    epoch_or_new!("4"),
    r#"
local off = redis.call('HINCRBY', KEYS[1], 'o', 1)
local size = tonumber(ARGV[2])
if size > 0 then
  local t = redis.call('TIME')
  local ms = t[1] * 1000 + math.floor(t[2] / 1000)
  redis.call('RPUSH', KEYS[2], off .. ' ' .. ms .. ' ' .. ARGV[1])
  redis.call('LTRIM', KEYS[2], -size, -1)
  local ttl = tonumber(ARGV[3])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
redis.call('PUBLISH', ARGV[5], epoch .. ' ' .. off .. ' ' .. ARGV[1])
return {epoch, off}
"#
);

/// KEYS: meta hash. ARGV: epoch if none yet. Returns `{epoch, offset}`.
pub const POSITION: &str = concat!(
    epoch_or_new!("1"),
    r#"
return {epoch, tonumber(redis.call('HGET', KEYS[1], 'o'))}
"#
);

/// KEYS: meta hash, history list. ARGV: history TTL ms, `after` offset ("" for
/// the newest), count, page bytes. Entries past the TTL are dropped first (as
/// if trimmed). Returns `{epoch, offset, oldest, more, entries…}`: `oldest` is
/// the oldest offset kept (offset + 1 when none), `more` 1 when the page was
/// cut by its byte budget, entries oldest first as `"<offset> <ms> <data>"`
/// (at least one when any is in the window); epoch "" when the channel has none.
pub const READ: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e') or ''
local off = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local function head(e)
  local o, ms = string.match(e, '^(%d+) (%d+) ')
  return tonumber(o), tonumber(ms)
end
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  while true do
    local e = redis.call('LINDEX', KEYS[2], 0)
    if not e then break end
    local _, ms = head(e)
    if now - ms <= ttl then break end
    redis.call('LPOP', KEYS[2])
  end
end
local len = redis.call('LLEN', KEYS[2])
local oldest = off + 1
if len > 0 then oldest = head(redis.call('LINDEX', KEYS[2], 0)) end
local count = tonumber(ARGV[3])
local start
if ARGV[2] == '' then start = len - count else start = tonumber(ARGV[2]) + 1 - oldest end
if start < 0 then start = 0 end
local stop = math.min(len, start + count)
local budget = tonumber(ARGV[4])
local out = {epoch, off, oldest, 0}
local bytes = 0
local i = start
while i < stop do
  for _, e in ipairs(redis.call('LRANGE', KEYS[2], i, math.min(stop, i + 64) - 1)) do
    if #out > 4 and bytes + #e > budget then
      out[4] = 1
      return out
    end
    bytes = bytes + #e
    out[#out + 1] = e
  end
  i = i + 64
end
return out
"#;
