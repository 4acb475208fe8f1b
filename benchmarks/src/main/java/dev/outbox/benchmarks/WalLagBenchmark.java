package dev.outbox.benchmarks;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.relay.OutboxRelay;
import dev.outbox.relay.RelayHandle;
import dev.outbox.relay.RelayMode;
import dev.outbox.relay.RelayOptions;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.IntStream;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * WAL mode under a steady load: writers commit {@code bench.wal.rate} messages per second
 * (default 10,000: 1,000 transactions/s, each one row of 10 messages of one of 1,000 keys) for
 * {@code bench.wal.seconds} (default 60) while a WAL relay publishes; every 5 s it samples the
 * slot's lag in bytes (WAL written but not confirmed), the age of the oldest row not yet
 * published, and the rows waiting. The load is steady if the lag does not grow. Baseline: what
 * the writers committed in the same window (published ÷ committed).
 */
final class WalLagBenchmark {
  private static final int RATE = Integer.getInteger("bench.wal.rate", 10_000);
  private static final Duration RUN = Duration.ofSeconds(Integer.getInteger("bench.wal.seconds", 60));
  private static final int PER_ROW = 10;
  private static final Duration SAMPLE = Duration.ofSeconds(5);
  private static final int WRITER_CONNECTIONS = 32;

  private WalLagBenchmark() {}

  public static void main(String[] args) {
    TestPostgres postgres = TestPostgres.get();
    TestKafka kafka = TestKafka.get();
    ConnectionPool pool = postgres.newPool(12);
    // The writers (the application) have a pool of their own. Sharing the relay's 12 connections,
    // ticks of 10 rows every 10 ms, a tick dropped while 8 were in flight, they committed
    // ~8,500 msgs/s of the 10,000 asked.
    ConnectionPool writers = postgres.newPool(WRITER_CONNECTIONS);
    String topic = "bench-wal-lag-" + System.nanoTime();
    kafka.createTopic(topic, 6);
    OutboxTable table = OutboxTable.of("bench_wal_lag");
    String slot = table.name() + "_relay";
    postgres.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '"
        + slot + "'", "DROP PUBLICATION IF EXISTS " + slot, "DROP TABLE IF EXISTS bench_wal_lag",
        "DROP TABLE IF EXISTS bench_wal_lag_dead_letter");
    OutboxSchema.createIfMissing(pool, table).block();
    OutboxWriter writer = OutboxWriter.builder().table(table).build();
    RelayHandle relay = OutboxRelay.create(pool, RelayOptions.builder().table(table)
        .mode(RelayMode.WAL).kafka(kafka.producerProperties()).build()).start();
    byte[] payload = new byte[200];

    AtomicLong committed = new AtomicLong();
    long end = System.nanoTime() + RUN.toNanos();
    long start = System.nanoTime();
    List<String> samples = new ArrayList<>();
    Flux.interval(SAMPLE, SAMPLE, reactor.core.scheduler.Schedulers.boundedElastic()) // samples block
        .takeWhile(t -> System.nanoTime() < end + SAMPLE.toNanos() / 2)
        .subscribe(t -> samples.add(sample(postgres, table, slot, (System.nanoTime() - start) / 1e9,
            committed.get(), kafka.recordCount(topic))));
    // Row i is due at start + i / rows-per-second; a row behind its time goes at once (up to
    // WRITER_CONNECTIONS transactions open), so a slow moment is caught up, not dropped.
    long nanosPerRow = 1_000_000_000L * PER_ROW / RATE;
    Flux.<Long, Long>generate(() -> 0L, (i, sink) -> {
          sink.next(i);
          return i + 1;
        })
        .concatMap(i -> {
          long wait = start + i * nanosPerRow - System.nanoTime();
          return wait > 0 ? Mono.delay(Duration.ofNanos(wait)).thenReturn(i) : Mono.just(i);
        }, 0)
        .takeWhile(i -> System.nanoTime() < end)
        .flatMap(i -> {
          String key = "key-" + ThreadLocalRandom.current().nextInt(1_000);
          List<Message> messages = IntStream.range(0, PER_ROW)
              .mapToObj(j -> Message.builder().stream(topic).key(key).data(payload).build()).toList();
          // synchronous_commit=on, PostgreSQL's default (the test server's off delays WAL).
          return OutboxTransactions.inTransaction(writers, c -> Flux.from(c.createStatement(
                      "SET LOCAL synchronous_commit = on").execute())
                  .concatMap(r -> r.getRowsUpdated())
                  .then(writer.write(messages)))
              .doOnSuccess(v -> committed.addAndGet(PER_ROW));
        }, WRITER_CONNECTIONS)
        .blockLast();
    double writeSeconds = (System.nanoTime() - start) / 1e9;
    long written = committed.get();
    // Let the tail drain (bounded), then the last sample.
    long drainDeadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
    while (kafka.recordCount(topic) < written && System.nanoTime() < drainDeadline) {
      RelayBenchmark.sleep(200);
    }
    double caughtUp = (System.nanoTime() - start) / 1e9 - writeSeconds;
    samples.add(sample(postgres, table, slot, (System.nanoTime() - start) / 1e9, written,
        kafka.recordCount(topic)));
    relay.stop(Duration.ofSeconds(10)).block();
    long published = kafka.recordCount(topic);

    System.out.println();
    System.out.println("| WAL mode, ~" + RATE + " msgs/s committed | s | committed | in Kafka |"
        + " slot lag bytes | oldest row waiting, s | rows waiting |");
    System.out.println("|---|---|---|---|---|---|---|");
    samples.forEach(System.out::println);
    double committedRate = written / writeSeconds;
    Results.add(String.format(Locale.ROOT, "WAL mode: steady %,d msgs/s for %d s (rows of %d, 1,000 keys)",
            RATE, RUN.toSeconds(), PER_ROW),
        String.format(Locale.ROOT, "%,d of %,d published; caught up %.1f s after the writers stopped",
            published, written, caughtUp),
        Results.rate(committedRate, "msgs/s") + " committed by the writers",
        Results.ratio(Math.min(published, written) / writeSeconds, committedRate),
        "slot lag and oldest waiting row every 5 s: " + String.join(" ; ", samples.stream()
            .map(s -> s.replace("|", " ").trim().replaceAll(" +", " ")).toList()));
    postgres.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '"
        + slot + "'", "DROP PUBLICATION IF EXISTS " + slot);
    pool.dispose();
    writers.dispose();
  }

  private static String sample(TestPostgres postgres, OutboxTable table, String slot, double at,
      long committed, long inKafka) {
    long lagBytes = postgres.queryLong("SELECT coalesce((SELECT pg_wal_lsn_diff(pg_current_wal_lsn(),"
        + " confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = '" + slot + "'), -1)");
    long oldestMillis = postgres.queryLong("SELECT coalesce((extract(epoch FROM now() - min(insert_time))"
        + " * 1000)::bigint, 0) FROM " + table.qualifiedName());
    long rows = postgres.queryLong("SELECT count(*) FROM " + table.qualifiedName());
    return String.format(Locale.ROOT, "| | %.0f | %,d | %,d | %,d | %.2f | %,d |", at, committed,
        inKafka, lagBytes, oldestMillis / 1000.0, rows);
  }
}
