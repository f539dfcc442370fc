//! The explicit mapping Courier gives each index, derived from the
//! PostgreSQL column types, and the check of an existing index against it.

use courier_core::{Column, PgType, Relation};
use serde_json::{json, Map, Value as Json};

/// The field mapping of one column (an array column maps as its element).
///
/// | PostgreSQL | field |
/// | --- | --- |
/// | `bool` | `boolean` |
/// | `int2`, `int4`, `int8`, `oid` | `long` |
/// | `float4`, `float8` | `double` (`NaN`/`Infinity` kept in `_source`, not indexed) |
/// | `numeric` | `double` (the exact text stays in `_source`) |
/// | `date`, `timestamp`, `timestamptz` | `date` (`infinity` kept in `_source`, not indexed) |
/// | `text`, `varchar`, `interval` | `text` with a `keyword` subfield (first 256 characters) |
/// | `uuid`, enums, `time`, `inet` and other types | `keyword` |
/// | `bytea` | `binary` |
/// | `json`, `jsonb` | `flat_json` when given (`flat_object` on OpenSearch ≥ 2.7, `flattened` on Elasticsearch ≥ 7.3, see `Server::flat_json_type`), else an unindexed `object` |
pub(crate) fn field_for(pg: &PgType, flat_json: Option<&str>) -> Json {
    match pg {
        PgType::Bool => json!({"type": "boolean"}),
        PgType::Int2 | PgType::Int4 | PgType::Int8 | PgType::Oid => json!({"type": "long"}),
        PgType::Float4 | PgType::Float8 | PgType::Numeric { .. } => {
            json!({"type": "double", "ignore_malformed": true})
        }
        PgType::Date | PgType::Timestamp | PgType::TimestampTz => json!({
            "type": "date",
            "format": "strict_date_optional_time||epoch_millis",
            "ignore_malformed": true
        }),
        PgType::Text | PgType::Interval => json!({
            "type": "text",
            "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}
        }),
        PgType::Uuid | PgType::Enum | PgType::Time | PgType::TimeTz | PgType::Other => {
            json!({"type": "keyword", "ignore_above": 8191})
        }
        PgType::Bytea => json!({"type": "binary"}),
        PgType::Json | PgType::Jsonb => match flat_json {
            Some(t) => json!({ "type": t }),
            None => json!({"type": "object", "enabled": false}),
        },
        PgType::Array(inner) => field_for(inner, flat_json),
    }
}

/// The `properties` of a table's index: every column, with the user's
/// overrides (`mappings` file) in place of the derived fields; JSON columns
/// as `flat_json` when given, else as unindexed objects.
pub(crate) fn properties(
    rel: &Relation,
    flat_json: Option<&str>,
    overrides: Option<&Map<String, Json>>,
) -> Map<String, Json> {
    rel.columns
        .iter()
        .map(|c| (c.name.clone(), column_field(c, flat_json, overrides)))
        .collect()
}

fn column_field(
    c: &Column,
    flat_json: Option<&str>,
    overrides: Option<&Map<String, Json>>,
) -> Json {
    overrides
        .and_then(|o| o.get(&c.name))
        .cloned()
        .unwrap_or_else(|| field_for(&c.pg_type, flat_json))
}

/// A column whose existing field has another type than the one derived now.
#[derive(Debug, PartialEq)]
pub(crate) struct Conflict {
    pub column: String,
    pub existing: String,
    pub wanted: String,
}

/// Compares an index's existing `properties` with the wanted ones: the
/// fields to add (new columns) and the first column whose type differs.
pub(crate) fn diff(
    existing: &Map<String, Json>,
    wanted: &Map<String, Json>,
) -> Result<Map<String, Json>, Conflict> {
    let mut add = Map::new();
    for (name, field) in wanted {
        match existing.get(name) {
            None => {
                add.insert(name.clone(), field.clone());
            }
            Some(have) => {
                let have_t = type_of(have);
                let want_t = type_of(field);
                if have_t != want_t && !holds_json(have_t, want_t) {
                    return Err(Conflict {
                        column: name.clone(),
                        existing: have_t.to_string(),
                        wanted: want_t.to_string(),
                    });
                }
            }
        }
    }
    Ok(add)
}

/// An unindexed `object` holds what a flat JSON field would: the index was
/// made where the server lacked the flat type (or is the user's choice).
fn holds_json(have: &str, want: &str) -> bool {
    have == "object" && matches!(want, "flattened" | "flat_object")
}

/// A field's type; `object` for fields with `properties` and no `type`.
fn type_of(field: &Json) -> &str {
    field.get("type").and_then(Json::as_str).unwrap_or("object")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::fixtures::table;
    use crate::search::server::Server;

    #[test]
    fn derives_fields_from_column_types() {
        let os = Server::parse_root(
            &json!({"version": {"distribution": "opensearch", "number": "2.19.6"}}),
        )
        .unwrap();
        let p = properties(&table("s", "t"), os.flat_json_type(), None);
        assert_eq!(p["id"]["type"], "long");
        assert_eq!(p["name"]["type"], "text");
        assert_eq!(p["name"]["fields"]["keyword"]["type"], "keyword");
        assert_eq!(p["price"]["type"], "double");
        assert_eq!(p["tags"]["type"], "text");
        assert_eq!(p["doc"]["type"], "flat_object");
        let es7 =
            Server::parse_root(&json!({"version": {"number": "7.2.0", "build_flavor": "default"}}))
                .unwrap();
        assert_eq!(
            properties(&table("s", "t"), es7.flat_json_type(), None)["doc"]["enabled"],
            false
        );
    }

    #[test]
    fn new_columns_are_added_and_changed_types_conflict() {
        let existing: Map<String, Json> =
            serde_json::from_value(json!({"id": {"type": "long"}})).unwrap();
        let wanted: Map<String, Json> =
            serde_json::from_value(json!({"id": {"type": "long"}, "name": {"type": "keyword"}}))
                .unwrap();
        let add = diff(&existing, &wanted).unwrap();
        assert_eq!(add.keys().collect::<Vec<_>>(), ["name"]);
        let changed: Map<String, Json> =
            serde_json::from_value(json!({"id": {"type": "keyword"}})).unwrap();
        let c = diff(&existing, &changed).unwrap_err();
        assert_eq!(
            (c.existing.as_str(), c.wanted.as_str()),
            ("long", "keyword")
        );
        // JSON held as an unindexed object stays as it is.
        let object: Map<String, Json> =
            serde_json::from_value(json!({"doc": {"type": "object", "enabled": false}})).unwrap();
        let flat: Map<String, Json> =
            serde_json::from_value(json!({"doc": {"type": "flattened"}})).unwrap();
        assert!(diff(&object, &flat).unwrap().is_empty());
    }
}
