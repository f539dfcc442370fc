//! The run loop's supervision with a source and sinks in memory.

use std::sync::Arc;

use courier_core::{Batch, Change, Op, Position, Relation, SinkError, SinkErrorKind, TableId};
use tokio::sync::mpsc;

use super::*;
use crate::pipeline::memory_sink::{MemorySink, Then};
use crate::pipeline::sink_task::run_sink;

fn batch(version: u64) -> Batch {
    let relation = Arc::new(Relation {
        oid: 1,
        id: TableId::new("public", "t"),
        columns: Vec::new(),
    });
    let change = Change::new(
        relation,
        Op::Insert,
        None,
        Some(Vec::new()),
        Lsn(version),
        1,
        0,
    )
    .expect("no values for no columns");
    Batch {
        changes: vec![change],
        through: Some(Position(version)),
    }
}

/// Two sinks behind a fan-out: their status, fan-out and tasks.
fn two_sinks(a: MemorySink, b: MemorySink) -> (Status, Fanout, SinkTasks) {
    let names = [
        ("a".to_string(), "memory".to_string()),
        ("b".into(), "memory".into()),
    ];
    let status = Status::new("s", "p", &names, Lsn(0));
    let mut tasks = SinkTasks::new();
    let mut queues = Vec::new();
    for (name, sink) in [("a", a), ("b", b)] {
        let (tx, rx) = mpsc::channel(2);
        queues.push(tx);
        tasks.spawn(
            name.into(),
            run_sink(name.into(), sink.builder(), rx, status.clone()),
        );
    }
    (status, Fanout::new(queues), tasks)
}

/// What the replication stream does with the fan-out: send batches, and
/// at shutdown send a barrier and end.
async fn streaming_source(
    fanout: Fanout,
    mut shutdown: watch::Receiver<bool>,
    batches: u64,
) -> anyhow::Result<()> {
    for v in 1..=batches {
        fanout.send(batch(v * 10)).await?;
    }
    let _ = shutdown.wait_for(|s| *s).await;
    fanout.barrier().await?;
    Ok(())
}

const LONG: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn a_fatal_sink_error_ends_the_run_while_another_sink_is_healthy() {
    let table = TableId::new("public", "t");
    let fatal = SinkError::new(SinkErrorKind::Rejected, "value rejected")
        .with_table(&table)
        .with_lsn(Lsn(10));
    let (status, fanout, sinks) = two_sinks(
        MemorySink::new(Vec::new(), Then::Apply),
        MemorySink::new(vec![fatal], Then::Apply),
    );
    let (_tx, rx) = watch::channel(false);
    // The source keeps its own fan-out clone and waits (as the stream does
    // between messages): the healthy sink's queue stays open.
    let source = streaming_source(fanout.clone(), rx.clone(), 1);
    let ended = tokio::time::timeout(
        Duration::from_secs(60),
        supervise(source, sinks, fanout, &status, rx, LONG),
    )
    .await
    .expect("the run must end when a sink fails, not hang");
    let e = format!("{:#}", ended.unwrap_err());
    assert!(e.contains("sink b") && e.contains("value rejected"), "{e}");
    assert!(e.contains("public.t") && e.contains("0/A"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_source_failing_to_send_reports_the_sink_that_stopped() {
    let (status, fanout, sinks) = two_sinks(
        MemorySink::new(Vec::new(), Then::Apply),
        MemorySink::new(
            vec![SinkError::new(SinkErrorKind::Rejected, "mapping refused")],
            Then::Apply,
        ),
    );
    let (_tx, rx) = watch::channel(false);
    let source = streaming_source(fanout.clone(), rx.clone(), 50);
    let e = supervise(source, sinks, fanout, &status, rx, LONG)
        .await
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("sink b") && e.contains("mapping refused"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_clean_shutdown_drains_every_sink() {
    let a = MemorySink::new(Vec::new(), Then::Apply);
    let b = MemorySink::new(
        vec![SinkError::new(SinkErrorKind::Overloaded, "busy")],
        Then::Apply,
    );
    let (applied_a, applied_b) = (a.applied.clone(), b.applied.clone());
    let (status, fanout, sinks) = two_sinks(a, b);
    let (tx, rx) = watch::channel(false);
    let source = streaming_source(fanout.clone(), rx.clone(), 3);
    let run = tokio::spawn({
        let status = status.clone();
        async move { supervise(source, sinks, fanout, &status, rx, LONG).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    tx.send(true).unwrap();
    run.await.unwrap().unwrap();
    assert_eq!(*applied_a.lock().unwrap(), [10, 20, 30]);
    assert_eq!(*applied_b.lock().unwrap(), [10, 20, 30]);
    assert_eq!(status.watermark.min(), Some(Position(30)));
}

#[tokio::test(start_paused = true)]
async fn a_stop_behind_a_sink_that_never_recovers_ends_at_the_deadline() {
    let (status, fanout, sinks) = two_sinks(
        MemorySink::new(Vec::new(), Then::Apply),
        MemorySink::new(Vec::new(), Then::FailRetriable),
    );
    status.set_acknowledged(Lsn(5));
    let (tx, rx) = watch::channel(false);
    let source = streaming_source(fanout.clone(), rx.clone(), 2);
    let timeout = Duration::from_secs(30);
    let run = tokio::spawn({
        let status = status.clone();
        async move { supervise(source, sinks, fanout, &status, rx, timeout).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    tx.send(true).unwrap();
    let asked = Instant::now();
    let e = run.await.unwrap().unwrap_err();
    let waited = asked.elapsed();
    assert!(
        waited >= timeout && waited < timeout + Duration::from_secs(1),
        "stopped after {waited:?}"
    );
    let RunError::ShutdownTimedOut {
        sinks, replay_from, ..
    } = e.downcast_ref::<RunError>().expect("a shutdown timeout")
    else {
        panic!("not a shutdown timeout: {e:#}");
    };
    assert_eq!(sinks, &["b".to_string()], "only the stuck sink is named");
    assert_eq!(*replay_from, Some(Lsn(5)));
    let text = e.to_string();
    assert!(text.contains("sink b") && text.contains("0/5"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_source_error_stops_the_sinks() {
    let (status, fanout, sinks) = two_sinks(
        MemorySink::new(Vec::new(), Then::Apply),
        MemorySink::new(Vec::new(), Then::FailRetriable),
    );
    let (_tx, rx) = watch::channel(false);
    let held = fanout.clone();
    let source = async move {
        let _held = held;
        tokio::time::sleep(Duration::from_secs(2)).await;
        anyhow::bail!("publication courier does not exist")
    };
    let e = supervise(source, sinks, fanout, &status, rx, LONG)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("publication courier"), "{e:#}");
}
