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

/// KEYS: meta hash, history list. Returns `{epoch, offset, now_ms, entries…}`,
/// entries oldest first as `"<offset> <ms> <data>"`; epoch "" when the channel
/// has none.
pub const READ: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e') or ''
local off = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
local t = redis.call('TIME')
local out = {epoch, off, t[1] * 1000 + math.floor(t[2] / 1000)}
for _, e in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  out[#out + 1] = e
end
return out
"#;
