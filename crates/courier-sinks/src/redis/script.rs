//! The server-side script that makes every write version-gated and atomic.

/// The hash field holding the row's version: the commit LSN as a decimal u64.
pub const VERSION_FIELD: &str = "_courier_version";
/// The hash field present (value `1`) only on tombstones.
pub const DELETED_FIELD: &str = "_courier_deleted";
/// The hash field holding the row's JSON object (`format = "json"`).
pub const ROW_FIELD: &str = "row";

/// Op of a row written whole (`ARGV` group: op, version, n, n field/value pairs).
pub(crate) const OP_SET: &str = "s";
/// Op of a JSON row (`ARGV` group: op, version, 1, `row`, the JSON object):
/// as [`OP_SET`], but a live JSON row is overwritten in place.
pub(crate) const OP_JSON: &str = "j";
/// Op of a delete: leave a tombstone (`ARGV` group: op, version, 0).
pub(crate) const OP_DELETE: &str = "d";
/// Op of a truncated row: a tombstone, but only over one of Courier's rows.
pub(crate) const OP_TRUNCATE: &str = "t";

/// Applies one or more rows' changes, each to its own key.
///
/// `KEYS` the rows' keys. `ARGV[1]` the rows' expiry in milliseconds (0:
/// none), `ARGV[2]` the tombstones' expiry in milliseconds, then one group
/// per key, in the order of `KEYS`: op ([`OP_SET`], [`OP_JSON`],
/// [`OP_DELETE`] or [`OP_TRUNCATE`]), version (decimal), the number n of
/// field/value pairs that follow, and those pairs (a set's row).
///
/// Each key is applied only if its version is greater than or equal to the
/// stored one (a truncate: and only if the key holds one of Courier's rows):
/// the rule of [`courier_core::version::incoming_wins`], which the encoder
/// also applies to the changes of a batch, so the server and Courier agree
/// on every row's winner.
/// Returns how many keys were applied.
///
/// Versions are compared as decimal strings (by length, then bytes), exact
/// for the whole u64 range where Lua numbers would round. One call carries
/// many rows because a call's own cost in the server (parsing, setting up
/// the script's arguments) is then shared. A row's own cost is mostly its
/// commands, so the JSON op saves some: a new key is written without a
/// `DEL` first, and a live JSON row (exactly the fields `_courier_version`
/// and `row`) is overwritten in place instead of deleted and created again;
/// the expiry is then set again (`PEXPIRE`) or removed (`PERSIST`), so the
/// outcome is the same as writing the key anew. On a cluster all keys of a
/// call share a hash slot.
pub(crate) const APPLY: &str = r#"
local row_ttl = tonumber(ARGV[1])
local tomb_ttl = tonumber(ARGV[2])
local a = 3
local applied = 0
for i = 1, #KEYS do
  local key = KEYS[i]
  local op = ARGV[a]
  local v = ARGV[a + 1]
  local first = a + 3
  a = first + 2 * tonumber(ARGV[a + 2])
  local cur
  local fresh = false
  local live_json = false
  if op == 'j' then
    local h = redis.call('HGETALL', key)
    fresh = #h == 0
    live_json = #h == 4
    for j = 1, #h, 2 do
      if h[j] == '_courier_version' then
        cur = h[j + 1]
      elseif h[j] ~= 'row' then
        live_json = false
      end
    end
    live_json = live_json and cur ~= nil
  else
    cur = redis.call('HGET', key, '_courier_version')
  end
  local go = true
  if cur then
    if #v < #cur or (#v == #cur and v < cur) then go = false end
  elseif op == 't' then
    go = false
  end
  if go and live_json then
    redis.call('HSET', key, '_courier_version', v, unpack(ARGV, first, a - 1))
    if row_ttl > 0 then
      redis.call('PEXPIRE', key, row_ttl)
    else
      redis.call('PERSIST', key)
    end
    applied = applied + 1
  elseif go then
    if not fresh then redis.call('DEL', key) end
    local ttl = tomb_ttl
    if op == 's' or op == 'j' then
      redis.call('HSET', key, '_courier_version', v, unpack(ARGV, first, a - 1))
      ttl = row_ttl
    else
      redis.call('HSET', key, '_courier_version', v, '_courier_deleted', '1')
    end
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
    applied = applied + 1
  end
end
return applied
"#;
