package dev.outbox.benchmarks;

import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.relay.OutboundRecord;
import dev.outbox.relay.OutboxRelay;
import dev.outbox.relay.ReactorKafkaSink;
import dev.outbox.relay.RecordSink;
import dev.outbox.relay.RelayHandle;
import dev.outbox.relay.RelayMode;
import dev.outbox.relay.RelayOptions;
import dev.outbox.relay.RelayOutcome;
import dev.outbox.relay.RetryPolicy;
import dev.outbox.relay.SendResult;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import java.time.Duration;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.stream.Collectors;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.common.errors.TimeoutException;
import org.jspecify.annotations.Nullable;
import org.reactivestreams.Publisher;
import reactor.core.Disposable;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.publisher.Sinks;

/**
 * One failing key must not hold up the others: a PARTITIONED relay drains 200,000 single-message
 * rows (200-byte payloads, keys {@code key-0} … {@code key-999}, table with partitions) twice,
 * from the same backlog ({@link KeyedBacklog}, copied into a fresh table per run). Run A (the
 * baseline): every record goes to Kafka through a {@link ReactorKafkaSink}; clock until the table
 * is empty. Run B: the same kind of sink behind a wrapper that answers every record of {@code
 * key-0} at once with a retriable {@link TimeoutException}, without sending it; the retry policy
 * (200 ms doubling to 1 s, {@value #MAX_ATTEMPTS} attempts) keeps {@code key-0} failing
 * throughout; clock until only {@code key-0}'s rows remain. Figure: the other keys' msgs/s in B
 * ÷ msgs/s in A (target ≥ 0.8). All runs use the same relay options (retry policy included),
 * after an untimed warm-up drain; they run in the order {@code -Dbench.keyfailure.order}
 * (default {@code ABBA}: a drift over the run weighs on both sides alike), each side's rate over
 * its runs together.
 */
final class KeyFailureBenchmark {
  private static final int ROWS = Results.scaled(Integer.getInteger("bench.keyfailure.rows", 200_000), 10_000);
  /** JIT thresholds are absolute: at least 10,000 rows, also at small scales. */
  private static final int WARM_UP_ROWS = Math.min(ROWS, Math.max(10_000, ROWS / 10));
  private static final int KEYS = 1_000;
  private static final int PAYLOAD = 200;
  private static final String FAILING_KEY = KeyedBacklog.key(0);
  private static final int MAX_ATTEMPTS = 10_000;
  private static final RetryPolicy RETRY = RetryPolicy.builder()
      .initialBackoff(Duration.ofMillis(200)).maxBackoff(Duration.ofSeconds(1)).maxAttempts(MAX_ATTEMPTS).build();
  /**
   * The runs, A (baseline) and B (failing key): default ABBA, so that a drift during the run
   * (warm-up, other load on the machine) weighs on both sides alike.
   */
  private static final String ORDER = System.getProperty("bench.keyfailure.order", "ABBA");
  /**
   * {@code -Dbench.keyfailure.baseline=wrapped}: run A through the same wrapper as B, failing no
   * key, instead of the bare sink (isolates the wrapper's own effect).
   */
  private static final boolean WRAPPED_BASELINE = "wrapped".equals(System.getProperty("bench.keyfailure.baseline"));
  private static final Duration DEADLINE = Duration.ofMinutes(Long.getLong("bench.keyfailure.timeoutMinutes", 15));

  private KeyFailureBenchmark() {}

  public static void main(String[] args) throws Exception {
    if (!ORDER.matches("[AB]+") || !ORDER.contains("A") || !ORDER.contains("B")) {
      throw new IllegalArgumentException("bench.keyfailure.order must be A and B runs, at least one of each: " + ORDER);
    }
    TestPostgres postgres = TestPostgres.get();
    TestKafka kafka = TestKafka.get();
    String topic = "bench-keyfailure-" + System.nanoTime();
    kafka.createTopic(topic, 6);
    OutboxTable source = OutboxTable.of("bench_kf_source");
    OutboxTable table = OutboxTable.of("bench_kf");
    drop(postgres, source);
    drop(postgres, table);
    ConnectionPool setup = postgres.newPool(2);
    OutboxSchema.createIfMissing(setup, source).block();
    setup.dispose();
    System.out.printf(Locale.ROOT, "keyfailure: writing %,d rows x 1 message over %,d keys...%n", ROWS, KEYS);
    double writeSeconds = KeyedBacklog.write(postgres, source, topic, ROWS, 1, KEYS, PAYLOAD);
    System.out.printf(Locale.ROOT, "keyfailure: backlog written in %.1f s (%,.0f rows/s)%n", writeSeconds, ROWS / writeSeconds);
    try {
      // Untimed warm-up (JIT, producer, broker): a tenth of the backlog (at least 10,000 rows), as run A drains it.
      run(postgres, kafka, source, table, topic, false, WARM_UP_ROWS);
      List<Run> runs = new ArrayList<>();
      for (char side : ORDER.toCharArray()) {
        long before = kafka.recordCount(topic);
        Run run = run(postgres, kafka, source, table, topic, side == 'B', ROWS);
        run.records = kafka.recordCount(topic) - before;
        runs.add(run);
      }
      report(runs, writeSeconds);
    } finally {
      drop(postgres, source);
      drop(postgres, table);
    }
  }

  private static void report(List<Run> runs, double writeSeconds) {
    List<Run> as = runs.stream().filter(r -> !r.failKey0).toList();
    List<Run> bs = runs.stream().filter(r -> r.failKey0).toList();
    double secondsA = as.stream().mapToDouble(r -> r.seconds).sum();
    double secondsB = bs.stream().mapToDouble(r -> r.seconds).sum();
    long messagesA = (long) ROWS * as.size();
    long othersB = bs.stream().mapToLong(r -> ROWS - r.failingRows).sum();
    double rateA = messagesA / secondsA;
    double rateB = othersB / secondsB;
    System.out.println();
    System.out.printf(Locale.ROOT, "| %,d single-message rows (%d B), %,d keys, PARTITIONED, runs in order %s | seconds | msgs/s | rows left | records in topic | retries scheduled | dead-lettered |%n",
        ROWS, PAYLOAD, KEYS, ORDER);
    System.out.println("|---|---|---|---|---|---|---|");
    for (Run r : runs) {
      long counted = r.failKey0 ? ROWS - r.failingRows : ROWS;
      System.out.printf(Locale.ROOT, "| %s | %.2f | %,.0f | %,d%s | %,d | %,d | %,d |%n",
          r.failKey0 ? "B: " + FAILING_KEY + " fails (TimeoutException), other keys' messages" : "A: all keys to Kafka (baseline)",
          r.seconds, counted / r.seconds, r.othersLeft + r.failingLeft,
          r.failKey0 ? String.format(Locale.ROOT, " (%s: %,d of %,d)", FAILING_KEY, r.failingLeft, r.failingRows) : "",
          r.records, r.outcome(RelayOutcome.Kind.RETRY_SCHEDULED), r.deadLettered);
    }
    System.out.printf(Locale.ROOT, "| all B / all A | | %.3f | | | | |%n", rateB / rateA);

    String secondsEach = runs.stream().map(r -> String.format(Locale.ROOT, "%s %.1f", r.failKey0 ? "B" : "A", r.seconds))
        .collect(Collectors.joining(", "));
    String failingLeft = bs.stream().map(r -> r.failingLeft + " of " + r.failingRows).collect(Collectors.joining(", "));
    long answers = bs.stream().mapToLong(r -> r.failedAnswers).sum();
    long retries = bs.stream().mapToLong(r -> r.outcome(RelayOutcome.Kind.RETRY_SCHEDULED)).sum();
    long deadTable = runs.stream().mapToLong(r -> r.deadLettered).sum();
    long deadOutcomes = runs.stream().mapToLong(r -> r.outcome(RelayOutcome.Kind.DEAD_LETTERED)).sum();
    String records = runs.stream().map(r -> String.format(Locale.ROOT, "%s %,d", r.failKey0 ? "B" : "A", r.records))
        .collect(Collectors.joining(", "));
    String notDrained = runs.stream().filter(r -> r.othersLeft > 0 || (!r.failKey0 && r.failingLeft > 0))
        .map(r -> String.format(Locale.ROOT, "%s left %,d rows", r.failKey0 ? "B" : "A", r.failKey0 ? r.othersLeft : r.othersLeft + r.failingLeft))
        .collect(Collectors.joining(", "));
    String notes = String.format(Locale.ROOT,
        "target ≥ 0.8. Runs %s (s: %s), each on a fresh copy of the same backlog; ratio of summed rates. "
            + "%s: rows remaining when the other keys were done %s (its partition holds %d other keys); "
            + "answered %,d times with TimeoutException without sending, %,d retries scheduled; dead-lettered: %,d "
            + "(dead-letter tables %,d, DEAD_LETTERED outcomes %,d); records in the topic per run: %s%s; "
            + "all runs: ReactorKafkaSink (maxInFlight %d%s), claimSize %d, poll 100 ms, retry 200 ms doubling to 1 s, %,d attempts; "
            + "backlog by OutboxWriter (%.0f s); untimed warm-up drain of %,d rows first; remaining rows polled every 100 ms",
        ORDER, secondsEach, FAILING_KEY, failingLeft, bs.isEmpty() ? -1 : bs.get(0).partitionNeighbours, answers, retries,
        deadTable + deadOutcomes, deadTable, deadOutcomes, records,
        notDrained.isEmpty() ? "" : "; NOT drained within " + DEADLINE + ": " + notDrained,
        DrainChild.MAX_IN_FLIGHT, WRAPPED_BASELINE ? "; A through B's wrapper, failing no key" : "",
        DrainChild.CLAIM_SIZE, MAX_ATTEMPTS, writeSeconds, WARM_UP_ROWS);
    Results.add(String.format(Locale.ROOT,
            "keyfailure: other keys' msgs/s while %s keeps failing, %,d rows (1 msg, %d B), %,d keys, PARTITIONED", FAILING_KEY, ROWS, PAYLOAD, KEYS),
        Results.rate(rateB, "msgs/s") + String.format(Locale.ROOT, " (%d run%s, %.1f s)", bs.size(), bs.size() == 1 ? "" : "s", secondsB),
        Results.rate(rateA, "msgs/s") + String.format(Locale.ROOT, " (%d run%s, %.1f s), no failing key", as.size(), as.size() == 1 ? "" : "s", secondsA),
        Results.ratio(rateB, rateA), notes);
  }

  /** One drain of a fresh copy of the backlog; with {@code failKey0}, until only key-0 is left. */
  private static Run run(TestPostgres postgres, TestKafka kafka, OutboxTable source, OutboxTable table,
      String topic, boolean failKey0, int rows) {
    String name = table.qualifiedName();
    drop(postgres, table);
    ConnectionPool pool = postgres.newPool(12);
    Run run = new Run();
    run.failKey0 = failKey0;
    try {
      OutboxSchema.createIfMissing(pool, table).block();
      OutboxSchema.enablePartitions(pool, table).block();
      KeyedBacklog.copy(postgres, source, table, rows);
      String failing = KeyedBacklog.keySql(topic, FAILING_KEY);
      run.failingRows = postgres.queryLong("SELECT count(*) FROM " + name + " WHERE message_keys[1] = " + failing);
      run.partitionNeighbours = postgres.queryLong("SELECT count(DISTINCT message_keys[1]) - 1 FROM " + name
          + " WHERE outbox_partition = (SELECT outbox_partition FROM " + name + " WHERE message_keys[1] = "
          + failing + " LIMIT 1)");
      ReactorKafkaSink kafkaSink = ReactorKafkaSink.create(kafka.producerProperties(), DrainChild.MAX_IN_FLIGHT);
      FailingKeySink failingSink = new FailingKeySink(kafkaSink, FAILING_KEY);
      OutboxRelay relay = OutboxRelay.create(pool, RelayOptions.builder().table(table)
          .mode(RelayMode.PARTITIONED)
          .sink(failKey0 ? failingSink : WRAPPED_BASELINE ? new FailingKeySink(kafkaSink, null) : kafkaSink)
          .retryPolicy(RETRY)
          .maxInFlight(DrainChild.MAX_IN_FLIGHT)
          .claimSize(DrainChild.CLAIM_SIZE)
          .pollInterval(Duration.ofMillis(100))
          .build());
      Disposable counting = relay.outcomes().subscribe(o -> run.outcomes.get(o.kind()).incrementAndGet());
      String remaining = "SELECT count(*) FILTER (WHERE message_keys[1] IS DISTINCT FROM " + failing + ") * 1000000000"
          + " + count(*) FILTER (WHERE message_keys[1] = " + failing + ") FROM " + name;
      long t0 = System.nanoTime();
      RelayHandle handle = relay.start();
      long deadline = t0 + DEADLINE.toNanos();
      long counts;
      do {
        RelayBenchmark.sleep(100);
        counts = postgres.queryLong(remaining);
        run.othersLeft = counts / 1_000_000_000L;
        run.failingLeft = counts % 1_000_000_000L;
      } while ((failKey0 ? run.othersLeft : run.othersLeft + run.failingLeft) > 0 && System.nanoTime() < deadline);
      run.seconds = (System.nanoTime() - t0) / 1e9;
      handle.stop(Duration.ofSeconds(10)).block();
      counting.dispose();
      kafkaSink.close().block();
      run.failedAnswers = failingSink.failed.get();
      run.deadLettered = postgres.queryLong("SELECT count(*) FROM " + name + "_dead_letter");
      System.out.printf(Locale.ROOT, "keyfailure: run %s (%,d rows): %.2f s, %,d other rows and %,d %s rows left, outcomes %s%n",
          failKey0 ? "B" : rows == ROWS ? "A" : "warm-up", rows, run.seconds, run.othersLeft, run.failingLeft, FAILING_KEY, run.outcomes);
      return run;
    } finally {
      pool.dispose();
    }
  }

  private static void drop(TestPostgres postgres, OutboxTable table) {
    String name = table.qualifiedName();
    postgres.execute("DROP TABLE IF EXISTS " + name, "DROP TABLE IF EXISTS " + name + "_dead_letter",
        "DROP TABLE IF EXISTS " + name + "_partitions", "DROP TABLE IF EXISTS " + name + "_relays");
  }

  /** What one run measured. */
  private static final class Run {
    final Map<RelayOutcome.Kind, AtomicLong> outcomes = new EnumMap<>(RelayOutcome.Kind.class);
    boolean failKey0;
    long records;
    double seconds;
    long othersLeft;
    long failingLeft;
    long failingRows;
    long partitionNeighbours;
    long failedAnswers;
    long deadLettered;

    Run() {
      for (RelayOutcome.Kind kind : RelayOutcome.Kind.values()) {
        outcomes.put(kind, new AtomicLong());
      }
    }

    long outcome(RelayOutcome.Kind kind) {
      return outcomes.get(kind).get();
    }
  }

  /**
   * Answers every record of one key at once with a retriable {@link TimeoutException}, without
   * sending it, and sends all others through {@code delegate}; one result per record, as the
   * {@link RecordSink} contract asks.
   */
  static final class FailingKeySink implements RecordSink {
    private final RecordSink delegate;
    private final @Nullable String key;
    final AtomicLong failed = new AtomicLong();

    /** @param key the failing key; {@code null}: none (every record is sent) */
    FailingKeySink(RecordSink delegate, @Nullable String key) {
      this.delegate = delegate;
      this.key = key;
    }

    @Override
    public <T> Flux<SendResult<T>> send(Publisher<OutboundRecord<T>> records) {
      return Flux.defer(() -> {
        Sinks.Many<SendResult<T>> answered = Sinks.many().unicast().onBackpressureBuffer();
        Flux<OutboundRecord<T>> others = Flux.from(records)
            .filter(r -> {
              if (key == null || !key.equals(r.key())) {
                return true;
              }
              failed.incrementAndGet();
              answered.tryEmitNext(new SendResult<>(r.correlation(),
                  new TimeoutException("benchmark: " + key + " always fails")));
              return false;
            })
            .doFinally(signal -> answered.tryEmitComplete());
        return Flux.merge(delegate.send(others), answered.asFlux());
      });
    }

    @Override
    public Mono<Void> close() {
      return delegate.close();
    }
  }
}
