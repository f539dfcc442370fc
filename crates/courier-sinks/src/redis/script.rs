//! The server-side script that makes every write version-gated and atomic.

/// The hash field holding the row's version: the commit LSN as a decimal u64.
pub const VERSION_FIELD: &str = "_courier_version";
/// The hash field present (value `1`) only on tombstones.
pub const DELETED_FIELD: &str = "_courier_deleted";
/// The hash field holding the row's JSON object (`format = "json"`).
pub const ROW_FIELD: &str = "row";

/// `KEYS[1]` the row's key. `ARGV`: op (`set`, `del` or `trunc`), version
/// (decimal), expiry in milliseconds (0: none), then field/value pairs (`set`).
///
/// Returns 1 when applied, 0 when the stored version is newer (or, for
/// `trunc`, when the key is not one of Courier's rows).
///
/// Versions are compared as decimal strings (by length, then bytes), exact
/// for the whole u64 range where Lua numbers would round.
pub(crate) const APPLY: &str = r#"
local cur = redis.call('HGET', KEYS[1], '_courier_version')
local v = ARGV[2]
if cur then
  if #v < #cur or (#v == #cur and v < cur) then return 0 end
elseif ARGV[1] == 'trunc' then
  return 0
end
redis.call('DEL', KEYS[1])
if ARGV[1] == 'set' then
  redis.call('HSET', KEYS[1], '_courier_version', v, unpack(ARGV, 4))
else
  redis.call('HSET', KEYS[1], '_courier_version', v, '_courier_deleted', '1')
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"#;
