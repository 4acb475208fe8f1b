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
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.lang.management.MemoryPoolMXBean;
import java.lang.management.MemoryType;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.stream.IntStream;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringSerializer;
import io.r2dbc.spi.Connection;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.kafka.sender.KafkaSender;
import reactor.kafka.sender.SenderOptions;
import reactor.kafka.sender.SenderRecord;

/**
 * Drain throughput: the relay emptying a backlog of 200,000 messages (batches of 10, 200-byte
 * payloads) into Kafka, against plain reactor-kafka {@link KafkaSender} sending the same
 * 200,000 records to the same broker in the same run. Also the heap high-water mark while
 * draining.
 */
final class RelayBenchmark {
  /** The backlog (also the Debezium peer's, {@link DebeziumPeerBenchmark}). */
  static final int MESSAGES = Integer.getInteger("bench.messages", Results.scaled(200_000, 10_000));
  /** Messages per outbox row (per write); {@code -Dbench.batch} to change. */
  static final int BATCH = Integer.getInteger("bench.batch", 10);
  static final int PAYLOAD = 200;
  /** {@code -Dbench.mode}, else the relay's default mode. */
  @SuppressWarnings("deprecation") // PARALLEL and ORDERED can still be measured
  static final RelayMode MODE = RelayMode.valueOf(System.getProperty("bench.mode",
      RelayOptions.builder().kafka(java.util.Map.of("bootstrap.servers", "localhost:9092")).build().mode().name()));

  /**
   * {@code -Dbench.deleteOnceLogged=true}: the backlog's writers delete their rows again in the
   * inserting transaction ({@code OutboxWriter.Builder#deleteOnceLogged}; the Debezium peer's the
   * same way), so a WAL relay publishes from the log and deletes nothing; drains are then timed
   * until Kafka has acknowledged every message to the relay (counted in-process through {@code
   * RelayMetrics}, as the Debezium peer counts its acks), not until the table is empty.
   */
  static final boolean DELETE_ONCE_LOGGED = Boolean.getBoolean("bench.deleteOnceLogged");

  /**
   * {@code -Dbench.txWrites}: writes (rows of {@link #BATCH} messages) per writing transaction of
   * the backlog; default 1, as a service writes its messages in its own transaction and as the
   * Debezium peer's backlog is written (transactions of {@code bench.batch} rows of one message).
   * Until the tenth session it was 200 here and 1 there: the two drains read different logs (a
   * BEGIN and COMMIT every 200 rows here, every row there).
   */
  static final int TX_WRITES = Integer.getInteger("bench.txWrites", 1);

  /**
   * {@code -Dbench.rounds}: measured drains (default 3), each of a backlog written anew; the
   * median is reported, every round listed. One drain of ~3 s varied from 49,000 to 72,000 msgs/s
   * between runs of the same code (runs 90-99), the Debezium peer's from 27,000 to 41,000.
   */
  static final int ROUNDS = Math.max(1, Integer.getInteger("bench.rounds", 3));

  /**
   * {@code -Dbench.freshTopics=true}: each measured drain sends to a topic of its own, created
   * just before. Default: to the warm-up's topic, as a relay in service sends to topics it has
   * sent to before. A new topic made the in-JVM broker and the producer compile new hot paths
   * during the measured drain (JFR, run 104: LogSegment.append, RecordAccumulator.partitionReady,
   * most of the 0.7-1.9 s the JIT compiled in each), charged to whichever side ran first.
   */
  static final boolean FRESH_TOPICS = Boolean.getBoolean("bench.freshTopics");

  /**
   * {@code -Dbench.dropOldModeIndexes=true}: the table without the two indexes only the deprecated
   * modes read ({@code OutboxSchema.dropOldModeIndexes}, version 5), as WAL and PARTITIONED
   * deployments may run it. Every index adds a WAL record to each insert, which a WAL relay's
   * walsender reads (and a writer writes) whether or not decoding needs it.
   */
  static final boolean DROP_OLD_MODE_INDEXES = Boolean.getBoolean("bench.dropOldModeIndexes");

  /** WAL records and bytes the server has written so far ({@code pg_stat_wal}). */
  static long[] walWritten(TestPostgres postgres) {
    return new long[] {postgres.queryLong("SELECT wal_records FROM pg_stat_wal"),
        postgres.queryLong("SELECT wal_bytes::bigint FROM pg_stat_wal")};
  }

  /** "WAL written by the backlog: 7.1 records, 812 bytes a message" since {@code before}. */
  static String walPerMessage(TestPostgres postgres, long[] before, int messages) {
    long[] after = walWritten(postgres);
    return String.format(java.util.Locale.ROOT, "WAL written by the backlog: %.1f records, %.0f bytes"
        + " a message", (after[0] - before[0]) / (double) messages, (after[1] - before[1]) / (double) messages);
  }

  /** The index of the median of {@code values} (the lower middle one of an even count). */
  static int medianIndex(List<Double> values) {
    List<Integer> order = new java.util.ArrayList<>(IntStream.range(0, values.size()).boxed().toList());
    order.sort(java.util.Comparator.comparing(values::get));
    return order.get((values.size() - 1) / 2);
  }

  /** ", median of 3 rounds: 61,000, 58,000, 70,000 msgs/s" (nothing for one round). */
  static String roundsNote(List<Double> seconds, int messages) {
    if (seconds.size() < 2) {
      return "";
    }
    return ", median of " + seconds.size() + " rounds: " + seconds.stream()
        .map(s -> String.format(java.util.Locale.ROOT, "%,.0f", messages / s))
        .collect(java.util.stream.Collectors.joining(", ")) + " msgs/s";
  }

  /**
   * {@code -Dbench.sharedSink=true}: every drain of the run (warm-ups and measured) sends through
   * one sink, so the measured drain's producer is warm, as the Debezium peer's producer, created
   * once for its warm-up and measured drains, is. Default: each relay makes its own.
   */
  static final boolean SHARED_SINK = Boolean.getBoolean("bench.sharedSink");
  /**
   * {@code -Dbench.sink=producer}: each drain sends through a {@link
   * dev.outbox.relay.KafkaProducerSink} (the plain producer, no reactor-kafka), created and closed
   * with it. Default: the relay's own {@code ReactorKafkaSink} from {@code kafka(...)}.
   */
  static final boolean PLAIN_PRODUCER_SINK = "producer".equals(System.getProperty("bench.sink"));
  private static dev.outbox.relay.@org.jspecify.annotations.Nullable RecordSink sharedSink;

  /** {@code -Dbench.minimal=false} skips the minimal correct loop ({@link MinimalLoop}). */
  static final boolean MINIMAL = Boolean.parseBoolean(System.getProperty("bench.minimal", "true"));
  /** The relay's defaults in MODE unless {@code -Dbench.maxInFlight} / {@code -Dbench.claimSize}. */
  static final RelayOptions DEFAULTS = RelayOptions.builder().mode(MODE)
      .kafka(java.util.Map.of("bootstrap.servers", "localhost:9092")).build();
  static final int MAX_IN_FLIGHT = Integer.getInteger("bench.maxInFlight", DEFAULTS.maxInFlight());
  static final int CLAIM_SIZE = Integer.getInteger("bench.claimSize", DEFAULTS.claimSize());
  /**
   * Messages of the warm-up drain (and of the minimal loop's warm-up): three times the backlog, at
   * most 1,000,000; the Debezium peer warms up as much ({@link DebeziumPeer}). With a warm-up as
   * large as the backlog (200,000), C2 compiled for 5.5 s of a 6.4 s WAL drain
   * (-XX:+LogCompilation): the per-row methods of the relay and of the producer reached C2 only
   * then, having stayed at tier 3 through the warm-up while C2's queue was long.
   */
  static final int WARMUP = Integer.getInteger("bench.warmup", warmUpFor(MESSAGES));

  /**
   * How far the slot's confirmed position and its restart position (where its walsender starts
   * decoding) are behind the end of the WAL: what a restart decodes again before new rows.
   */
  static String slotLag(TestPostgres postgres, String slot) {
    return "WAL behind slot " + slot + " before the backlog: confirmed " + postgres.queryLong(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint FROM pg_replication_slots"
            + " WHERE slot_name = '" + slot + "'") + " bytes, restart " + postgres.queryLong(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots"
            + " WHERE slot_name = '" + slot + "'") + " bytes";
  }

  /**
   * After a warm-up drain, before the measured backlog is written: moves the (inactive) slot's
   * restart position up to the end of the WAL, as a consumer that kept streaming would, so that
   * the measured start does not decode the warm-up's WAL again. The restart position moves only
   * past running-transaction records the client has confirmed, which consumers reach
   * differently: after a 600,000-row warm-up the Debezium peer's slot restarted 161 MB behind
   * (its first ack 2.3 s after its start), the relay's 12 MB. Everything before is acknowledged
   * (the warm-up waits for every row), so nothing is skipped. The Debezium peer, whose engine
   * refuses a slot advanced past its offset, streams until it is within {@link
   * #SETTLED_RESTART_LAG} instead.
   */
  static void settleSlot(TestPostgres postgres, String slot) {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
    while (postgres.queryLong("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '" + slot
        + "' AND active") > 0) { // its walsender exits a moment after its consumer stops
      if (System.nanoTime() > deadline) {
        throw new IllegalStateException("slot " + slot + " still active 30 s after its consumer stopped");
      }
      java.util.concurrent.locks.LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(20));
    }
    postgres.execute("CHECKPOINT"); // logs the running transactions: a restart point at the end
    while (true) {
      try {
        postgres.queryLong("SELECT count(*) FROM pg_replication_slot_advance('" + slot + "', pg_current_wal_lsn())");
        break;
      } catch (RuntimeException e) { // seen once: "active for PID n" right after the check
        System.out.println("could not advance slot " + slot + " yet: " + e.getMessage() + "; its holder: "
            + postgres.queryColumn("SELECT concat_ws(' ', a.pid, a.backend_type, a.application_name,"
                + " a.backend_start, a.state) FROM pg_replication_slots s JOIN pg_stat_activity a"
                + " ON a.pid = s.active_pid WHERE s.slot_name = '" + slot + "'"));
        if (System.nanoTime() > deadline) {
          throw e;
        }
        java.util.concurrent.locks.LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(100));
      }
    }
    System.out.println(slotLag(postgres, slot));
  }

  /** How far behind the WAL's end a slot's restart position may be before a measured drain. */
  static final long SETTLED_RESTART_LAG = 16L << 20;

  static long restartLag(TestPostgres postgres, String slot) {
    return postgres.queryLong("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint"
        + " FROM pg_replication_slots WHERE slot_name = '" + slot + "'");
  }

  static int warmUpFor(int messages) {
    return (int) Math.min(1_000_000L, 3L * messages);
  }

  /** CPU a message of the last measured drain (CpuProbe). */
  private static String lastDrainCpu = "";
  /** What the JIT compilers spent during the last drain, measured or not. */
  private static long lastDrainJitMillis;

  private RelayBenchmark() {}

  public static void main(String[] args) {
    TestPostgres postgres = TestPostgres.get();
    TestKafka kafka = TestKafka.get();
    ConnectionPool pool = postgres.newPool(12);
    byte[] payload = new byte[PAYLOAD];
    ThreadLocalRandom.current().nextBytes(payload);

    String baselineTopic = "bench-baseline-" + System.nanoTime();
    String relayTopic = "bench-relay-" + System.nanoTime();
    kafka.createTopic(baselineTopic, 6);
    kafka.createTopic(relayTopic, 6);
    Map<String, Object> producer = new HashMap<>(kafka.producerProperties());

    // The baseline is timed before and after the relay and the faster of the two kept: the JIT
    // compiler keeps a core of this 2-core box busy for the first tens of seconds of the JVM
    // (async-profiler), so whichever phase runs first is slowed most.
    double baselineBefore = plainSenderSeconds(kafka, baselineTopic, MESSAGES, payload);

    OutboxTable table = OutboxTable.of("bench_relay");
    postgres.execute("DROP TABLE IF EXISTS bench_relay", "DROP TABLE IF EXISTS bench_relay_dead_letter",
        "DROP TABLE IF EXISTS bench_relay_partitions", "DROP TABLE IF EXISTS bench_relay_relays");
    OutboxSchema.createIfMissing(pool, table).block();
    if (DROP_OLD_MODE_INDEXES) {
      OutboxSchema.dropOldModeIndexes(pool, table).block();
    }
    OutboxWriter writer = OutboxWriter.builder().table(table).deleteOnceLogged(DELETE_ONCE_LOGGED)
        .build();
    // A warm-up drain as the baseline has a warm-up send, so that neither is timed while the JIT
    // compiles its code for the first time (see WARMUP). Earlier, as large as the backlog: after a
    // warm-up of 20,000 (and of 100,000) the JIT compiler still took 37 % (38 %) of the CPU
    // samples of a 1,000,000-message drain (async-profiler); -XX:+PrintCompilation counted 2,435
    // compilations (628 deoptimisations) during it after 100,000, 1,215 (183) after 1,000,000.
    String warmupTopic = relayTopic + "-warmup";
    kafka.createTopic(warmupTopic, 6);
    if (MODE == RelayMode.WAL) {
      // A WAL relay sweeps rows written before its slot existed and publishes the later ones as
      // the log carries them: one row first creates the slot, so that the warm-up takes the
      // path the measured drain does.
      long firstTarget = BATCH;
      fill(pool, writer, warmupTopic, payload, BATCH);
      drain(pool, table, producer, false, warmupTopic, firstTarget);
    }
    long warmupTarget = WARMUP / BATCH * BATCH;
    fill(pool, writer, warmupTopic, payload, WARMUP);
    double warmSeconds = drain(pool, table, producer, false, warmupTopic, warmupTarget);
    // More rounds of the measured size while the JIT compilers are still busy (CpuProbe#jitQuiet),
    // as the Debezium peer's warm-up does.
    for (int round = 0; !CpuProbe.jitQuiet("relay", round, lastDrainJitMillis, warmSeconds)
        && round < CpuProbe.JIT_ROUNDS; round++) {
      fill(pool, writer, warmupTopic, payload, MESSAGES);
      warmSeconds = drain(pool, table, producer, false, warmupTopic, MESSAGES / BATCH * BATCH);
    }
    if (MODE == RelayMode.WAL) { // what the measured drain's slot replays of the warm-up
      settleSlot(postgres, "bench_relay_relay");
    }
    long relayTarget = MESSAGES / BATCH * BATCH;
    List<MemoryPoolMXBean> heap = ManagementFactory.getMemoryPoolMXBeans().stream()
        .filter(p -> p.getType() == MemoryType.HEAP).toList();
    long heapBefore = 0;
    long heapPeak = 0;
    long records = 0;
    List<Double> rounds = new java.util.ArrayList<>();
    List<String> roundCpu = new java.util.ArrayList<>();
    for (int round = 0; round < ROUNDS; round++) {
      String topic = !FRESH_TOPICS ? warmupTopic : round == 0 ? relayTopic : relayTopic + "-r" + round;
      if (round > 0) {
        if (FRESH_TOPICS) {
          kafka.createTopic(topic, 6);
        }
        if (MODE == RelayMode.WAL) { // what this drain's slot replays of the previous one
          settleSlot(postgres, "bench_relay_relay");
        }
      }
      long inTopicBefore = TestKafka.get().recordCount(topic);
      long[] walBefore = walWritten(postgres);
      fill(pool, writer, topic, payload, MESSAGES);
      System.out.println("relay " + walPerMessage(postgres, walBefore, MESSAGES));
      // Statistics, as a table in service has them (Backlog.fill does the same): without them the
      // planner reads whole partitions for the PARTITIONED claim instead of walking insert_seq.
      postgres.execute("VACUUM ANALYZE bench_relay");
      System.gc();
      heap.forEach(MemoryPoolMXBean::resetPeakUsage);
      heapBefore = Math.max(heapBefore, heap.stream().mapToLong(p -> p.getUsage().getUsed()).sum());
      double seconds = drain(pool, table, producer, true, topic, relayTarget);
      heapPeak = Math.max(heapPeak, heap.stream().mapToLong(p -> p.getPeakUsage().getUsed()).sum());
      System.out.printf(java.util.Locale.ROOT, "relay measured round %d: %.2f s, %,.0f msgs/s%n",
          round, seconds, MESSAGES / seconds);
      rounds.add(seconds);
      roundCpu.add(lastDrainCpu);
      records += TestKafka.get().recordCount(topic) - inTopicBefore;
    }
    int medianRound = medianIndex(rounds);
    double relaySeconds = rounds.get(medianRound);
    // The floor: the least a correct drain must do (MinimalLoop), on the same rows, same run.
    double minimalSeconds = Double.NaN;
    if (MINIMAL) {
      String minimalTopic = relayTopic + "-minimal";
      kafka.createTopic(minimalTopic, 6);
      fill(pool, writer, minimalTopic, payload, WARMUP);
      MinimalLoop.drainSeconds(pool, table, producer, MAX_IN_FLIGHT); // warm-up
      fill(pool, writer, minimalTopic, payload, MESSAGES);
      postgres.execute("VACUUM ANALYZE bench_relay");
      Profiling.start();
      minimalSeconds = MinimalLoop.drainSeconds(pool, table, producer, MAX_IN_FLIGHT);
      Profiling.stop("minimal");
      long left = postgres.queryLong("SELECT count(*) FROM bench_relay");
      if (left != 0) {
        throw new IllegalStateException(left + " rows left after the minimal loop");
      }
    }
    double baselineAfter = plainSenderSeconds(kafka, baselineTopic, MESSAGES, payload);
    double baselineSeconds = Math.min(baselineBefore, baselineAfter);
    System.out.printf("baseline before the relay %.2f s, after %.2f s%n", baselineBefore, baselineAfter);

    double baselineRate = MESSAGES / baselineSeconds;
    double relayRate = MESSAGES / relaySeconds;
    System.out.println();
    System.out.println("| " + MESSAGES + " messages (batches of " + BATCH + ", " + PAYLOAD
        + "-byte payloads) | seconds | msgs/s |");
    System.out.println("|---|---|---|");
    System.out.printf("| plain KafkaSender (baseline) | %.2f | %.0f |%n", baselineSeconds, baselineRate);
    System.out.printf("| relay: claim + decode + send + delete | %.2f | %.0f |%n", relaySeconds, relayRate);
    System.out.printf("| ratio relay / baseline | | %.3f |%n", relayRate / baselineRate);
    if (MINIMAL) {
      double minimalRate = MESSAGES / minimalSeconds;
      System.out.printf("| minimal correct loop (MinimalLoop) | %.2f | %.0f |%n", minimalSeconds, minimalRate);
      System.out.printf("| ratio minimal loop / baseline | | %.3f |%n", minimalRate / baselineRate);
      System.out.printf("| ratio relay / minimal loop | | %.3f |%n", relayRate / minimalRate);
      Results.add(String.format(java.util.Locale.ROOT, "minimal correct loop: drain %,d msgs (batches of %d)",
              MESSAGES, BATCH),
          Results.rate(minimalRate, "msgs/s") + String.format(java.util.Locale.ROOT, " (%.1f s)", minimalSeconds),
          Results.rate(baselineRate, "msgs/s") + " plain KafkaSender (as above)",
          Results.ratio(minimalRate, baselineRate),
          String.format(java.util.Locale.ROOT, "relay / minimal loop %.3f; one reader, no fencing,"
              + " watermark, retries or validation (MinimalLoop)", relayRate / minimalRate));
    }
    System.out.printf("| heap high-water mark while draining (max heap %d MB) | | %d MB (%d MB before) |%n",
        Runtime.getRuntime().maxMemory() >> 20, heapPeak >> 20, heapBefore >> 20);
    Results.add(String.format(java.util.Locale.ROOT, "relay: drain %,d msgs (batches of %d, %d B), in-process",
            MESSAGES, BATCH, PAYLOAD),
        Results.rate(relayRate, "msgs/s") + String.format(java.util.Locale.ROOT, " (%.1f s)", relaySeconds)
            + roundsNote(rounds, MESSAGES),
        Results.rate(baselineRate, "msgs/s") + String.format(java.util.Locale.ROOT,
            " (%.1f s; %.1f s before and %.1f s after the relay, the faster kept), plain KafkaSender",
            baselineSeconds, baselineBefore, baselineAfter),
        Results.ratio(relayRate, baselineRate),
        String.format(java.util.Locale.ROOT, MODE + "; maxInFlight %d, claimSize %d; %,d records sent by the measured rounds; heap high-water %d MB"
                + " (%d MB before) of this JVM, which also hosts the broker; %d writes a transaction; %s",
            MAX_IN_FLIGHT, CLAIM_SIZE, records, heapPeak >> 20, heapBefore >> 20, TX_WRITES,
            roundCpu.get(medianRound)));
    postgres.execute("DROP TABLE IF EXISTS bench_relay", "DROP TABLE IF EXISTS bench_relay_dead_letter",
        "DROP TABLE IF EXISTS bench_relay_partitions", "DROP TABLE IF EXISTS bench_relay_relays");
    if (sharedSink != null) {
      sharedSink.close().block(Duration.ofSeconds(10));
      sharedSink = null;
    }
    pool.dispose();
  }

  /**
   * The drain baseline: seconds for a plain {@link KafkaSender} (the relay sink's producer
   * defaults: idempotence, acks=all, linger.ms=5; 1,000 in flight) to send {@code messages}
   * records with {@code payload} to {@code topic} (keys and headers as the relay's), after a warm-up of
   * a tenth of them (at most 20,000) to the same topic.
   */
  static double plainSenderSeconds(TestKafka kafka, String topic, int messages, byte[] payload) {
    Map<String, Object> plain = new HashMap<>(kafka.producerProperties());
    plain.put("key.serializer", StringSerializer.class);
    plain.put("value.serializer", ByteArraySerializer.class);
    plain.put("enable.idempotence", true);
    plain.put("acks", "all");
    plain.put("linger.ms", 5);
    KafkaSender<String, byte[]> sender = KafkaSender.create(
        SenderOptions.<String, byte[]>create(plain).maxInFlight(1_000));
    try {
      String[] ids = IntStream.range(0, messages).mapToObj(i -> String.format("%027d", i)).toArray(String[]::new);
      sendPlain(sender, topic, Math.min(20_000, messages / 10), payload, ids); // warm-up
      ProducerStats before = ProducerStats.now();
      Profiling.start();
      long t0 = System.nanoTime();
      sendPlain(sender, topic, messages, payload, ids);
      double seconds = (System.nanoTime() - t0) / 1e9;
      Profiling.stop("baseline-" + topic.replaceAll("-[0-9]+$", ""));
      System.out.println("baseline producer: " + ProducerStats.now().minus(before));
      return seconds;
    } finally {
      sender.close();
    }
  }

  /**
   * The same records the relay sends: key, payload and the two headers the relay adds to every
   * record ({@code message_id}, a 27-character id, and {@code content_type}).
   */
  private static void sendPlain(KafkaSender<String, byte[]> sender, String topic, int count, byte[] payload,
      String[] ids) {
    long errors = sender.send(Flux.range(0, count).map(i -> {
          ProducerRecord<String, byte[]> record = new ProducerRecord<>(topic, "key-" + (i / BATCH % 1000), payload);
          record.headers().add(Message.MESSAGE_ID_HEADER, ids[i].getBytes(StandardCharsets.UTF_8));
          record.headers().add(Message.CONTENT_TYPE_HEADER, Message.DEFAULT_CONTENT_TYPE.getBytes(StandardCharsets.UTF_8));
          return SenderRecord.create(record, i);
        }))
        .filter(r -> r.exception() != null)
        .count()
        .block();
    if (errors > 0) {
      throw new IllegalStateException(errors + " baseline sends failed");
    }
  }

  /**
   * Seconds for a relay started now to empty the table (polled every 50 ms through the pool: a
   * new connection per poll would cost PostgreSQL a backend start each time). The relay's stop
   * is not timed; the table's emptiness is checked once more after it.
   */
  private static double drain(ConnectionPool pool, OutboxTable table, Map<String, Object> producer,
      boolean measured, String topic, long target) {
    ProducerStats producerBefore = ProducerStats.now();
    long inTopicBefore = TestKafka.get().recordCount(topic);
    CpuProbe cpu = CpuProbe.of(TestPostgres.get());
    CpuProbe.Snapshot cpuBefore = cpu.now();
    if (measured) {
      System.out.println("measured drain starts at " + java.time.LocalTime.now() + ", JVM uptime " + ManagementFactory.getRuntimeMXBean().getUptime() + " ms");
      Profiling.start();
    }
    boolean statements = measured && Boolean.getBoolean(TestPostgres.STATEMENTS_PROPERTY);
    if (statements) {
      TestPostgres.get().execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
          "SELECT pg_stat_statements_reset()");
    }
    long t0 = System.nanoTime();
    long jitBefore = CpuProbe.jitMillis();
    // Records Kafka acknowledged, counted in-process (RelayMetrics#published is called for each,
    // never dropped) as the Debezium peer counts its acks.
    java.util.concurrent.atomic.AtomicLong acknowledged = new java.util.concurrent.atomic.AtomicLong();
    if (SHARED_SINK && sharedSink == null) {
      sharedSink = dev.outbox.relay.ReactorKafkaSink.create(producer, MAX_IN_FLIGHT);
    }
    RelayOptions.Builder options = RelayOptions.builder();
    dev.outbox.relay.@org.jspecify.annotations.Nullable KafkaProducerSink plainSink =
        PLAIN_PRODUCER_SINK ? dev.outbox.relay.KafkaProducerSink.create(producer, MAX_IN_FLIGHT) : null;
    if (plainSink != null) {
      options.sink(plainSink);
    } else if (sharedSink != null) {
      options.sink(sharedSink);
    } else {
      options.kafka(producer);
    }
    OutboxRelay created = OutboxRelay.create(pool, options.table(table)
        .mode(MODE)
        .maxInFlight(MAX_IN_FLIGHT)
        .claimSize(CLAIM_SIZE)
        .metrics(new dev.outbox.relay.RelayMetrics() {
          @Override
          public void published(Duration latency) {
            acknowledged.incrementAndGet();
          }
        })
        .pollInterval(Duration.ofMillis(100)).build());
    RelayHandle relay = created.start();
    // Not count(*): on a million-row table it cost PostgreSQL ~7 ms per poll (pg_stat_statements).
    // The newest rows go last, so a walk from the end of insert_seq finds one at once.
    String count = "SELECT count(*) FROM (SELECT 1 FROM " + table.qualifiedName()
        + " ORDER BY insert_seq DESC LIMIT 1) AS newest";
    long remaining;
    if (DELETE_ONCE_LOGGED) { // the table stays empty: count what Kafka acknowledged
      do {
        sleep(20);
        remaining = target - acknowledged.get();
      } while (remaining > 0);
      long inTopic = TestKafka.get().recordCount(topic) - inTopicBefore;
      if (inTopic < target) {
        throw new IllegalStateException("the relay published " + acknowledged.get()
            + " messages but " + topic + " holds " + inTopic + " of " + target);
      }
    } else {
      do {
        sleep(50);
        remaining = Mono.usingWhen(pool.create(),
                c -> Mono.from(c.createStatement(count).execute())
                    .flatMap(r -> Mono.from(r.map((row, meta) -> row.get(0, Long.class)))),
                Connection::close)
            .blockOptional().orElseThrow();
      } while (remaining > 0);
    }
    double seconds = (System.nanoTime() - t0) / 1e9;
    lastDrainJitMillis = CpuProbe.jitMillis() - jitBefore;
    if (measured) {
      Profiling.stop("relay-" + MODE);
      CpuProbe.Snapshot cpuAfter = cpu.now();
      lastDrainCpu = cpuAfter.perMessage(cpuBefore, MESSAGES);
      System.out.println("relay drain " + lastDrainCpu);
      System.out.println("relay drain " + cpuAfter.postgresByRole(cpuBefore, MESSAGES));
      if (statements) {
        System.out.println("relay drain, statements by total execution time (pg_stat_statements):");
        TestPostgres.get().queryColumn("SELECT format('%s calls, %s ms, %s rows, %s WAL records: %s',"
                + " calls, round(total_exec_time::numeric, 1), rows, wal_records,"
                + " left(regexp_replace(query, '\\s+', ' ', 'g'), 200)) FROM pg_stat_statements"
                + " ORDER BY total_exec_time DESC LIMIT 8")
            .forEach(line -> System.out.println("  " + line));
      }
      System.out.println("measured drain ends at " + java.time.LocalTime.now() + ", JVM uptime " + ManagementFactory.getRuntimeMXBean().getUptime() + " ms");
      System.out.println("relay producer: " + ProducerStats.now().minus(producerBefore));
    }
    if (MODE == RelayMode.WAL) {
      // As a relay in service is, idle for a moment before it is stopped: its slot confirms past
      // the position its start read (idle confirmation), so the next start may take the replayed
      // backlog without the check (WalStarts). Stopped within 50 ms of draining, it would not.
      TestPostgres postgres = TestPostgres.get();
      long now = postgres.queryLong("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint");
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
      while (postgres.queryLong("SELECT pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint FROM"
          + " pg_replication_slots WHERE slot_name = '" + table.name() + "_relay'") < now
          && System.nanoTime() < deadline) {
        sleep(100);
      }
    }
    relay.stop(Duration.ofSeconds(10)).block();
    if (plainSink != null) { // given to the relay, so not closed by it
      plainSink.close().block(Duration.ofSeconds(10));
    }
    long left = TestPostgres.get().queryLong("SELECT count(*) FROM " + table.qualifiedName());
    if (left != 0) {
      throw new IllegalStateException(left + " rows left after the drain");
    }
    return seconds;
  }

  private static void fill(ConnectionPool pool, OutboxWriter writer, String topic, byte[] payload, int messages) {
    int batches = messages / BATCH;
    Flux.range(0, batches)
        .buffer(TX_WRITES)
        .flatMap(group -> OutboxTransactions.inTransaction(pool, c -> Flux.fromIterable(group)
            .concatMap(b -> writer.write(IntStream.range(0, BATCH)
                .mapToObj(j -> Message.builder().stream(topic).key("key-" + (b % 1000)).data(payload).build())
                .toList()))
            .then()), 4)
        .blockLast();
  }

  /**
   * {@code base} plus the producer defaults of the relay's sinks (String keys, byte[] values,
   * idempotence, acks=all, linger 5 ms), so baselines send the way the relay does.
   */
  static Map<String, Object> withRelayProducerDefaults(Map<String, Object> base) {
    Map<String, Object> props = new HashMap<>(base);
    props.put("key.serializer", StringSerializer.class);
    props.put("value.serializer", ByteArraySerializer.class);
    props.put("enable.idempotence", true);
    props.put("acks", "all");
    props.put("linger.ms", 5);
    return props;
  }

  static void sleep(long millis) {
    try {
      Thread.sleep(millis);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException(e);
    }
  }
}
