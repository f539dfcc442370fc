package dev.courier.bench;

import io.debezium.engine.ChangeEvent;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.format.Json;
import java.io.FileInputStream;
import java.io.InputStream;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Drains a replication slot's backlog with Debezium's embedded engine into a
 * consumer that only counts records (and the bytes of their JSON values),
 * for Courier's benchmark runner.
 *
 * <p>Usage: {@code DebeziumDrain CONFIG.properties}. Keys starting with
 * {@code bench.} are the runner's: {@code bench.expected_records} is the
 * backlog's size. Every other key is passed to the engine unchanged.
 *
 * <p>Prints {@code first} on stdout when the first batch was consumed and
 * {@code done RECORDS BYTES} once the expected number of records has been
 * (the runner times the process up to that line), then stops the engine and
 * exits 0. Exits 1 if the engine stops first.
 */
public final class DebeziumDrain {
    private DebeziumDrain() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: DebeziumDrain CONFIG.properties");
            System.exit(2);
        }
        Properties all = new Properties();
        try (InputStream in = new FileInputStream(args[0])) {
            all.load(in);
        }
        long expected = Long.parseLong(all.getProperty("bench.expected_records"));
        Properties engineProps = new Properties();
        for (String key : all.stringPropertyNames()) {
            if (!key.startsWith("bench.")) {
                engineProps.setProperty(key, all.getProperty(key));
            }
        }

        CountDownLatch finished = new CountDownLatch(1);
        AtomicReference<String> stoppedEarly = new AtomicReference<>();
        Counter counter = new Counter(expected, finished);

        DebeziumEngine<ChangeEvent<String, String>> engine = DebeziumEngine.create(Json.class)
                .using(engineProps)
                .notifying(counter)
                .using((success, message, error) -> {
                    if (counter.reported()) {
                        return;
                    }
                    stoppedEarly.set(message + (error == null ? "" : ": " + error));
                    finished.countDown();
                })
                .build();
        ExecutorService executor = Executors.newSingleThreadExecutor();
        executor.execute(engine);
        finished.await();
        String failure = stoppedEarly.get();
        if (failure != null && !counter.reported()) {
            System.err.println("engine stopped after " + counter.records() + " of " + expected
                    + " records: " + failure);
            System.exit(1);
        }
        engine.close();
        executor.shutdown();
        executor.awaitTermination(30, TimeUnit.SECONDS);
        System.exit(0);
    }

    /** The null consumer: counts records and the bytes of their values. */
    private static final class Counter
            implements DebeziumEngine.ChangeConsumer<ChangeEvent<String, String>> {
        private final long expected;
        private final CountDownLatch finished;
        private long records;
        private long bytes;
        private volatile boolean reported;

        Counter(long expected, CountDownLatch finished) {
            this.expected = expected;
            this.finished = finished;
        }

        @Override
        public synchronized void handleBatch(
                List<ChangeEvent<String, String>> batch,
                DebeziumEngine.RecordCommitter<ChangeEvent<String, String>> committer)
                throws InterruptedException {
            for (ChangeEvent<String, String> record : batch) {
                String value = record.value();
                if (value != null) {
                    bytes += value.length();
                }
                committer.markProcessed(record);
            }
            committer.markBatchFinished();
            if (records == 0 && !batch.isEmpty()) {
                System.out.println("first");
                System.out.flush();
            }
            records += batch.size();
            if (!reported && records >= expected) {
                reported = true;
                System.out.println("done " + records + " " + bytes);
                System.out.flush();
                finished.countDown();
            }
        }

        synchronized long records() {
            return records;
        }

        boolean reported() {
            return reported;
        }
    }
}
