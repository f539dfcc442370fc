//! Catalog look-ups against a real PostgreSQL: `COURIER_TEST_PG` (default:
//! the `dev/pg.sh` cluster) names it.

use std::sync::Arc;

use courier_core::PgType;
use courier_postgres::catalog::{Catalog, ReplicaIdentity, SESSION_OPTIONS};
use tokio_postgres::NoTls;

const DEFAULT_URL: &str = "postgres://postgres:postgres@127.0.0.1:55432/postgres";

/// A catalog over a fresh schema `schema` holding the fixtures.
async fn catalog(schema: &str) -> Catalog {
    let url = std::env::var("COURIER_TEST_PG").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let mut config: tokio_postgres::Config = url.parse().expect("COURIER_TEST_PG is a URL");
    config.options(SESSION_OPTIONS);
    let (client, connection) = config
        .connect(NoTls)
        .await
        .expect("connect to PostgreSQL (start it with dev/pg.sh start)");
    tokio::spawn(connection);
    // The fixtures are created through a search_path, read without it.
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE;
             CREATE SCHEMA {schema};
             SET search_path = {schema}, public;
             CREATE TYPE mood AS ENUM ('sad', 'happy');
             CREATE DOMAIN price AS numeric(12,2);
             CREATE DOMAIN cheap AS price CHECK (VALUE < 10);
             CREATE DOMAIN ints AS int4[];
             CREATE TYPE pair AS (a int, b text);
             CREATE TABLE with_pk (a int, b text NOT NULL, c int, PRIMARY KEY (c, a));
             CREATE TABLE with_index (a int NOT NULL, b int NOT NULL, c text);
             CREATE UNIQUE INDEX with_index_b ON with_index (b);
             ALTER TABLE with_index REPLICA IDENTITY USING INDEX with_index_b;
             CREATE TABLE full_only (a int, b text);
             ALTER TABLE full_only REPLICA IDENTITY FULL;
             CREATE TABLE no_key (a int, dropped int, b text);
             ALTER TABLE no_key DROP COLUMN dropped;
             RESET search_path;"
        ))
        .await
        .expect("create the catalog fixtures");
    Catalog::new(Arc::new(client))
}

async fn oid(catalog: &Catalog, schema: &str, name: &str, kind: &str) -> u32 {
    let sql = format!("SELECT '{schema}.{name}'::{kind}::oid");
    catalog.client().query_one(&sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn resolves_user_defined_types() {
    let schema = "courier_catalog_types";
    let mut catalog = catalog(schema).await;
    let numeric_12_2 = PgType::Numeric {
        precision: Some(12),
        scale: Some(2),
    };
    let cases = [
        ("mood", PgType::Enum, "mood"),
        ("_mood", PgType::Array(Box::new(PgType::Enum)), "mood[]"),
        ("price", numeric_12_2.clone(), "price"),
        ("cheap", numeric_12_2.clone(), "cheap"),
        ("_price", PgType::Array(Box::new(numeric_12_2)), "price[]"),
        ("ints", PgType::Array(Box::new(PgType::Int4)), "ints"),
        ("pair", PgType::Other, "pair"),
    ];
    for (name, pg_type, sql_name) in cases {
        let oid = oid(&catalog, schema, name, "regtype").await;
        let resolved = catalog.resolve_type(oid).await.unwrap();
        assert_eq!(resolved.pg_type, pg_type, "{name}");
        assert_eq!(resolved.name, format!("{schema}.{sql_name}"), "{name}");
        // The second look-up comes from the cache.
        assert_eq!(catalog.resolve_type(oid).await.unwrap(), resolved);
    }
    let builtin = catalog.resolve_type(1184).await.unwrap();
    assert_eq!(builtin.pg_type, PgType::TimestampTz);
    assert_eq!(builtin.name, "timestamp with time zone");
    assert!(catalog.resolve_type(4_000_000_000).await.is_err());
    drop_schema(&catalog, schema).await;
}

#[tokio::test]
async fn finds_keys_nullability_and_replica_identity() {
    let schema = "courier_catalog_keys";
    let catalog = catalog(schema).await;
    let keys = |info: &courier_postgres::catalog::TableInfo| -> Vec<(String, bool, bool)> {
        info.columns
            .iter()
            .map(|c| (c.name.clone(), c.is_key, c.not_null))
            .collect()
    };
    let s = |n: &str| n.to_string();

    let info = catalog
        .table_columns(oid(&catalog, schema, "with_pk", "regclass").await)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.id.to_string(), format!("{schema}.with_pk"));
    assert_eq!(info.replica_identity, ReplicaIdentity::Default);
    assert_eq!(
        keys(&info),
        [
            (s("a"), true, true),
            (s("b"), false, true),
            (s("c"), true, true)
        ]
    );
    assert_eq!(info.column("a").unwrap().type_name, "integer");

    let info = catalog
        .table_columns(oid(&catalog, schema, "with_index", "regclass").await)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.replica_identity, ReplicaIdentity::Index);
    assert_eq!(
        keys(&info),
        [
            (s("a"), false, true),
            (s("b"), true, true),
            (s("c"), false, false)
        ]
    );

    let info = catalog
        .table_columns(oid(&catalog, schema, "full_only", "regclass").await)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.replica_identity, ReplicaIdentity::Full);
    assert!(info.columns.iter().all(|c| c.is_key));

    let info = catalog
        .table_columns(oid(&catalog, schema, "no_key", "regclass").await)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        keys(&info),
        [(s("a"), false, false), (s("b"), false, false)]
    );

    assert_eq!(catalog.table_columns(4_000_000_000).await.unwrap(), None);
    drop_schema(&catalog, schema).await;
}

async fn drop_schema(catalog: &Catalog, schema: &str) {
    let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    let _ = catalog.client().batch_execute(&sql).await;
}
