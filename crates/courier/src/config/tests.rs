use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("/etc/courier/courier.toml")).map_err(|e| e.to_string())
}

const MINIMAL: &str = r#"
[source]
url = "postgres://courier:secret@127.0.0.1:5432/shop"
tables = ["public.products"]

[sinks.log]
type = "stdout"
"#;

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL).unwrap();
    let source = c.source.postgres("test").unwrap();
    assert_eq!(source.slot, "courier");
    assert_eq!(source.publication, "courier");
    assert_eq!(source.snapshot, SnapshotMode::Initial);
    assert_eq!(c.api.listen, Some("127.0.0.1:7070".parse().unwrap()));
    assert_eq!(c.state_dir, Path::new("/etc/courier/.courier/courier"));
    assert_eq!(c.sinks["log"].0, "stdout");
    assert!(!format!("{:?}", c.source).contains("secret"));
}

#[test]
fn unknown_keys_are_named() {
    let e = parse(&MINIMAL.replace("tables =", "slott = \"x\"\ntables =")).unwrap_err();
    assert!(e.contains("slott"), "{e}");
    let e = parse(&format!("{MINIMAL}\n[extra]\na = 1\n")).unwrap_err();
    assert!(e.contains("extra"), "{e}");
}

#[test]
fn unknown_sink_type_lists_the_known_ones() {
    let e = parse(&MINIMAL.replace("type = \"stdout\"", "type = \"mongo\"")).unwrap_err();
    assert!(e.contains("mongo") && e.contains("stdout"), "{e}");
}

#[test]
fn interpolates_environment_variables() {
    let text = interpolate::interpolate(
        "url = \"postgres://u:${PW}@h/${DB:-shop}\" # $${LITERAL}",
        |k| (k == "PW").then(|| "p\"w".to_string()),
    )
    .unwrap();
    assert_eq!(text, "url = \"postgres://u:p\\\"w@h/shop\" # ${LITERAL}");
    let e = interpolate::interpolate("${MISSING_VAR}", |_| None).unwrap_err();
    assert!(e.contains("MISSING_VAR"), "{e}");
}

#[test]
fn bad_values_say_how_to_fix_them() {
    let e = parse(&MINIMAL.replace("tables = [\"public.products\"]", "tables = []")).unwrap_err();
    assert!(e.contains("source.tables"), "{e}");
    let e = parse(&MINIMAL.replace("[source]", "[source]\nslot = \"Bad-Slot\"")).unwrap_err();
    assert!(e.contains("source.slot"), "{e}");
    let e =
        parse(&MINIMAL.replace("[source]", "[source]\nheartbeat = \"10 parsecs\"")).unwrap_err();
    assert!(e.contains("source.heartbeat"), "{e}");
    assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
}

#[test]
fn verify_every_is_a_period_of_a_sink_that_keeps_rows() {
    let cache = "[sinks.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1\"\n";
    let c = parse(&format!("{MINIMAL}{cache}verify_every = \"6h\"\n")).unwrap();
    assert_eq!(c.verify_every["cache"], Duration::from_secs(6 * 3600));
    assert!(!c.sinks["cache"].1.contains_key("verify_every"));
    assert!(!c.verify_every.contains_key("log"));
    for (value, says) in [
        ("\"6 hours\"", "no known unit"),
        ("6", "duration string"),
        ("\"0s\"", "longer than zero"),
    ] {
        let e = parse(&format!("{MINIMAL}{cache}verify_every = {value}\n")).unwrap_err();
        assert!(
            e.contains("sinks.cache.verify_every") && e.contains(says),
            "{value}: {e}"
        );
    }
    let e = parse(&MINIMAL.replace("\"stdout\"", "\"stdout\"\nverify_every = \"1h\"")).unwrap_err();
    assert!(
        e.contains("sinks.log.verify_every") && e.contains("stdout"),
        "{e}"
    );
}

#[test]
fn redacts_passwords() {
    assert_eq!(
        redact_url("postgres://u:pw@h:5/db"),
        "postgres://u:***@h:5/db"
    );
}

#[test]
fn a_listener_open_to_other_machines_needs_a_token() {
    let with_api = |api: &str| format!("{MINIMAL}\n[api]\n{api}\n");
    let e = parse(&with_api("listen = \"0.0.0.0:7070\"")).unwrap_err();
    assert!(
        e.contains("api.token") && e.contains("allow_remote_without_token"),
        "{e}"
    );
    let e = parse(&with_api("listen = \"[::]:7070\"")).unwrap_err();
    assert!(e.contains("api.token"), "{e}");
    let c = parse(&with_api("listen = \"0.0.0.0:7070\"\ntoken = \"t0ken\"")).unwrap();
    assert_eq!(c.api.token.as_deref(), Some("t0ken"));
    parse(&with_api(
        "listen = \"0.0.0.0:7070\"\nallow_remote_without_token = true",
    ))
    .unwrap();
    parse(&with_api("listen = \"[::1]:7070\"")).unwrap();
    parse(&with_api("listen = \"127.0.0.2:7070\"")).unwrap();
}

#[test]
fn shutdown_timeout_has_a_default_and_is_a_duration() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.pipeline.shutdown_timeout, Duration::from_secs(30));
    let c = parse(&format!(
        "{MINIMAL}\n[pipeline]\nshutdown_timeout = \"5s\"\n"
    ))
    .unwrap();
    assert_eq!(c.pipeline.shutdown_timeout, Duration::from_secs(5));
    let e = parse(&format!(
        "{MINIMAL}\n[pipeline]\nshutdown_timeout = \"soon\"\n"
    ))
    .unwrap_err();
    assert!(e.contains("pipeline.shutdown_timeout"), "{e}");
}

const KAFKA: &str = r#"
[source]
type = "kafka"
brokers = ["127.0.0.1:9092", "127.0.0.1:9093"]
group = "courier-search"
topics = ["shop.public.products"]

[source.kafka]
"session.timeout.ms" = 6000

[sinks.log]
type = "stdout"
"#;

#[test]
fn a_kafka_source_gets_defaults() {
    let c = parse(KAFKA).unwrap();
    let Source::Kafka(k) = &c.source else {
        panic!("not a Kafka source: {:?}", c.source);
    };
    assert_eq!(k.brokers, "127.0.0.1:9092,127.0.0.1:9093");
    assert_eq!(
        (k.start, k.format),
        (KafkaStart::Committed, KafkaFormat::Auto)
    );
    assert_eq!(k.settings["session.timeout.ms"], "6000");
    assert_eq!(k.dead_letter_topic, None);
    let c = parse(&KAFKA.replace("group =", "dead_letter_topic = \"shop.dead\"\ngroup =")).unwrap();
    let Source::Kafka(k) = &c.source else {
        panic!("not a Kafka source");
    };
    assert_eq!(k.dead_letter_topic.as_deref(), Some("shop.dead"));
    assert_eq!(
        c.state_dir,
        Path::new("/etc/courier/.courier/courier-search")
    );
    let e = c.source.postgres("courier tail").unwrap_err().to_string();
    assert!(e.contains("courier tail") && e.contains("Kafka"), "{e}");
}

#[test]
fn bad_kafka_sources_say_how_to_fix_them() {
    let e = parse(&KAFKA.replace("topics = [\"shop.public.products\"]", "")).unwrap_err();
    assert!(
        e.contains("source.topics") && e.contains("topic_pattern"),
        "{e}"
    );
    let e = parse(&KAFKA.replace("topics =", "topic_pattern = \"^shop\\\\..*\"\ntopics ="))
        .unwrap_err();
    assert!(e.contains("both set"), "{e}");
    let e = parse(&KAFKA.replace(
        "topics = [\"shop.public.products\"]",
        "topic_pattern = \"(\"",
    ))
    .unwrap_err();
    assert!(e.contains("not a regular expression"), "{e}");
    let e =
        parse(&KAFKA.replace("\"session.timeout.ms\" = 6000", "\"group.id\" = \"x\"")).unwrap_err();
    assert!(
        e.contains("source.kafka.group.id") && e.contains("source.group"),
        "{e}"
    );
    let e = parse(&KAFKA.replace("group = \"courier-search\"", "group = \"g\"\nslot = \"s\""))
        .unwrap_err();
    assert!(e.contains("slot"), "{e}");
    let e =
        parse(&KAFKA.replace("group =", "dead_letter_topic = \"bad topic\"\ngroup =")).unwrap_err();
    assert!(
        e.contains("source.dead_letter_topic") && e.contains("not a Kafka topic"),
        "{e}"
    );
    let e = parse(&KAFKA.replace(
        "group =",
        "dead_letter_topic = \"shop.public.products\"\ngroup =",
    ))
    .unwrap_err();
    assert!(e.contains("its own dead letters"), "{e}");
    let e = parse(&KAFKA.replace(
        "topics = [\"shop.public.products\"]",
        "topic_pattern = \"^shop\\\\..*\"\ndead_letter_topic = \"shop.dead\"",
    ))
    .unwrap_err();
    assert!(e.contains("matches source.topic_pattern"), "{e}");
    let e = parse(&KAFKA.replace("group =", "dead_letter = \"x\"\ngroup =")).unwrap_err();
    assert!(e.contains("dead_letter"), "{e}");
    let e = parse(&KAFKA.replace("type = \"kafka\"", "type = \"mysql\"")).unwrap_err();
    assert!(e.contains("mysql") && e.contains("postgres"), "{e}");
    let e = parse(&KAFKA.replace("group =", "start = \"now\"\ngroup =")).unwrap_err();
    assert!(e.contains("now"), "{e}");
    let e = parse(&format!(
        "{KAFKA}\n[sinks.bus]\ntype = \"kafka\"\nbrokers = \"x:1\"\nexactly_once = true\n"
    ))
    .unwrap_err();
    assert!(
        e.contains("sinks.bus.exactly_once") && e.contains("PostgreSQL source"),
        "{e}"
    );
    let e = parse(&format!(
        "{KAFKA}\n[sinks.bus]\ntype = \"kafka\"\nbrokers = \"x:1\"\ntransaction_metadata = true\n"
    ))
    .unwrap_err();
    assert!(
        e.contains("sinks.bus.transaction_metadata") && e.contains("PostgreSQL source"),
        "{e}"
    );
}

#[test]
fn outbox_routers_need_a_sink_that_carries_events() {
    let with = |extra: &str| format!("{MINIMAL}\n[sinks.cache]\ntype = \"redis\"\n{extra}\n");
    let c = parse(&with(
        "[outbox.orders]\ntable = \"public.outbox\"\nsink = \"log\"",
    ))
    .unwrap();
    assert_eq!(c.outbox.len(), 1);
    assert_eq!(c.outbox[0].name, "orders");
    assert_eq!(c.outbox[0].sink, "log");
    let e = parse(&with(
        "[outbox.orders]\ntable = \"public.outbox\"\nsink = \"bus\"",
    ))
    .unwrap_err();
    assert!(
        e.contains("outbox.orders.sink") && e.contains("[sinks.bus]"),
        "{e}"
    );
    let e = parse(&with(
        "[outbox.orders]\ntable = \"public.outbox\"\nsink = \"cache\"",
    ))
    .unwrap_err();
    assert!(e.contains("redis sink") && e.contains("kafka"), "{e}");
    let e = parse(&with(
        "[outbox.orders]\nmessages = \"o\"\nsink = \"log\"\ntopik = \"x\"",
    ))
    .unwrap_err();
    assert!(e.contains("outbox.orders") && e.contains("topik"), "{e}");
    let e = parse(&with(
        "[outbox.orders]\ntable = \"public.products\"\nsink = \"log\"",
    ))
    .unwrap_err();
    assert!(e.contains("also in source.tables"), "{e}");
}

#[test]
fn outbox_routers_alone_need_no_source_tables() {
    let text = MINIMAL.replace("tables = [\"public.products\"]", "")
        + "\n[outbox.orders]\nmessages = \"orders\"\nsink = \"log\"\n";
    let c = parse(&text).unwrap();
    let Source::Postgres(source) = &c.source else {
        panic!("a PostgreSQL source")
    };
    assert!(source.table_patterns.is_empty());
    let e = parse(&MINIMAL.replace("tables = [\"public.products\"]", "")).unwrap_err();
    assert!(e.contains("source.tables"), "{e}");
}

#[test]
fn outbox_routers_need_a_postgresql_source() {
    let e = parse(&format!(
        "{KAFKA}\n[outbox.orders]\ntable = \"public.outbox\"\nsink = \"log\"\n"
    ))
    .unwrap_err();
    assert!(
        e.contains("outbox.orders") && e.contains("source is Kafka"),
        "{e}"
    );
}

#[test]
fn streaming_is_off_by_default_and_auto_resolves_by_server_version() {
    let c = parse(MINIMAL).unwrap();
    let source = c.source.postgres("test").unwrap();
    assert_eq!(source.streaming, Streaming::Off);
    assert_eq!(Streaming::Auto.resolve(140_000), Ok(true));
    assert_eq!(Streaming::Auto.resolve(130_012), Ok(false));
    assert_eq!(Streaming::Off.resolve(170_006), Ok(false));
    assert_eq!(Streaming::On.resolve(140_019), Ok(true));
    let e = Streaming::On.resolve(130_012).unwrap_err();
    assert!(e.contains("PostgreSQL 14") && e.contains("130012"), "{e}");

    let on = MINIMAL.replace("tables =", "streaming = \"on\"\ntables =");
    let c = parse(&on).unwrap();
    assert_eq!(c.source.postgres("test").unwrap().streaming, Streaming::On);
    let e = parse(&MINIMAL.replace("tables =", "streaming = \"yes\"\ntables =")).unwrap_err();
    assert!(e.contains("yes") || e.contains("variant"), "{e}");
}

#[test]
fn generated_columns_are_left_out_unless_asked_for() {
    use courier_postgres::setup::GeneratedColumns;
    let c = parse(MINIMAL).unwrap();
    let source = c.source.postgres("test").unwrap();
    assert_eq!(source.generated_columns(), GeneratedColumns::Omitted);
    let on = MINIMAL.replace("tables =", "generated_columns = true\ntables =");
    let c = parse(&on).unwrap();
    assert_eq!(
        c.source.postgres("test").unwrap().generated_columns(),
        GeneratedColumns::Stored
    );
    let e = parse(&MINIMAL.replace("tables =", "generated_columns = \"stored\"\ntables ="))
        .unwrap_err();
    assert!(e.contains("generated_columns"), "{e}");
}
