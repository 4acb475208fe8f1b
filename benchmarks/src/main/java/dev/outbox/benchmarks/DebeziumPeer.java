package dev.outbox.benchmarks;

import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.debezium.embedded.Connect;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.RecordChangeEvent;
import io.debezium.engine.format.ChangeEventFormat;
import io.r2dbc.spi.ConnectionFactoryOptions;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.SQLException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.BiConsumer;
import java.util.stream.Stream;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.connect.header.Header;
import org.apache.kafka.connect.source.SourceRecord;
import org.slf4j.LoggerFactory;

/**
 * The Debezium peer: the same messages through Debezium's embedded engine (PostgreSQL connector,
 * pgoutput, streaming only) with the outbox {@code EventRouter} SMT, published to the same broker
 * by a plain {@link KafkaProducer} with the relay's producer defaults (idempotence, acks=all,
 * linger.ms=5). Debezium offsets are marked processed only after every send of the batch was
 * acknowledged, so delivery is at-least-once like the relay's.
 *
 * <p>Throughput: the replication slot is created first (an engine run that stops once it
 * streams), then the backlog is written, then the clock runs from starting the engine again until
 * every message is acknowledged, mirroring the relay draining a pre-written backlog. Latency:
 * commit (taken in the writer thread after COMMIT returned) to producer acknowledgement at a
 * steady ~1,000 messages/s (a transaction of 10 rows every 10 ms), correlated by event id.
 */
final class DebeziumPeer {
  /** Latency load: a transaction of {@code BATCH} rows every 10 ms, {@code PAYLOAD}-byte payloads. */
  static final int BATCH = 10;
  static final int PAYLOAD = 200;
  private static final String WARMUP_TYPE = "dbz-peer-warmup";
  /** Whether the throughput run drains a backlog as large as the measured one first. */
  static final boolean WARM_UP = Boolean.parseBoolean(System.getProperty("bench.debezium.warmup", "true"));

  private DebeziumPeer() {}

  /** Drain figures: the clock starts when the engine is started over the written backlog. */
  record Result(int messages, double seconds, double msgsPerSecond, double secondsToFirstAck,
      double meanBatch, String cpu, List<Double> rounds) {}

  /** Commit → acknowledgement latencies of one steady run. */
  record LatencyResult(double p50Millis, double p99Millis, double maxMillis, int messages,
      double deliveredP50Millis, double deliveredP99Millis, double meanBatch) {}

  /**
   * Writes {@code messages} outbox rows (transactions of {@code batch}) while no engine runs, then
   * times the engine draining them into a topic of {@code partitions} partitions. {@code
   * overrides} are extra engine/connector properties.
   */
  static Result throughput(TestPostgres postgres, TestKafka kafka, int messages, int batch,
      int payloadBytes, int partitions, Map<String, String> overrides) throws Exception {
    String name = TestPostgres.uniqueName("dbz_tp");
    String topic = "bench-debezium-" + System.nanoTime();
    kafka.createTopic(topic, partitions);
    kafka.createTopic(WARMUP_TYPE, 1);
    Path offsets = Files.createTempDirectory("dbz-peer").resolve("offsets.dat");
    createOutbox(postgres, name);
    AtomicLong acked = new AtomicLong();
    AtomicLong firstAck = new AtomicLong();
    try (Peer peer = new Peer(postgres, kafka, name, offsets, overrides, (id, ackNanos) -> {
      firstAck.compareAndSet(0, ackNanos);
      acked.incrementAndGet();
    })) {
      // First run only creates the slot and publication (snapshot.mode=no_data streams from the
      // slot's start), then stops with its offsets flushed: the backlog is written behind it.
      peer.start();
      peer.awaitStreaming();
      peer.stop();

      byte[] payload = new byte[payloadBytes];
      ThreadLocalRandom.current().nextBytes(payload);
      if (WARM_UP) {
        // A warm-up drain as large as the relay's (RelayBenchmark.WARMUP): without
        // it the engine's own code is timed while the JIT compiles it for the first time.
        String warmUpTopic = topic + "-warmup"; // acknowledged like the measured records
        kafka.createTopic(warmUpTopic, partitions);
        // fill writes whole transactions of `batch` rows: wait for as many as it writes
        int warmUp = Integer.getInteger("bench.warmup", RelayBenchmark.warmUpFor(messages)) / batch * batch;
        // Then more rounds of the measured size while the JIT compilers are still busy, as the
        // relay's warm-up does (CpuProbe#jitQuiet).
        for (int round = 0; ; round++) {
          int rows = round == 0 ? warmUp : messages / batch * batch;
          fill(postgres, name, warmUpTopic, rows, batch, payload);
          acked.set(0);
          long jitBefore = CpuProbe.jitMillis();
          long started = System.nanoTime();
          peer.start();
          awaitAcks(peer, acked, rows, "Warm-up: only ");
          double seconds = (System.nanoTime() - started) / 1e9;
          if (CpuProbe.jitQuiet("debezium", round, CpuProbe.jitMillis() - jitBefore, seconds)
              || round >= CpuProbe.JIT_ROUNDS) {
            break;
          }
          peer.stop();
        }
        settle(postgres, name, peer);
        peer.stop();
      }
      List<Double> rounds = new ArrayList<>();
      List<Result> results = new ArrayList<>();
      for (int round = 0; round < RelayBenchmark.ROUNDS; round++) {
        // As the relay's (RelayBenchmark.FRESH_TOPICS): the warm-up's topic unless asked otherwise.
        String roundTopic = WARM_UP && !RelayBenchmark.FRESH_TOPICS ? topic + "-warmup"
            : round == 0 ? topic : topic + "-r" + round;
        if (round > 0 && !roundTopic.endsWith("-warmup")) {
          kafka.createTopic(roundTopic, partitions);
        }
        if (round > 0) {
          settle(postgres, name, peer); // what the next start replays of this round, as above
          peer.stop();
        }
        acked.set(0);
        firstAck.set(0);
        peer.batches.set(0);
        peer.batchRecords.set(0);
        System.out.println(RelayBenchmark.slotLag(postgres, name));
        long[] walBefore = RelayBenchmark.walWritten(postgres);
        fill(postgres, name, roundTopic, messages, batch, payload);
        System.out.println("debezium " + RelayBenchmark.walPerMessage(postgres, walBefore, messages));

        CpuProbe cpu = CpuProbe.of(postgres);
        CpuProbe.Snapshot cpuBefore = cpu.now();
        Profiling.start();
        long t0 = System.nanoTime();
        peer.start();
        awaitAcks(peer, acked, messages, "Only ");
        double seconds = (System.nanoTime() - t0) / 1e9;
        Profiling.stop("debezium");
        CpuProbe.Snapshot cpuAfter = cpu.now();
        String cpuPerMessage = cpuAfter.perMessage(cpuBefore, messages);
        System.out.println("debezium drain " + cpuPerMessage);
        System.out.println("debezium drain " + cpuAfter.postgresByRole(cpuBefore, messages));
        System.out.printf(java.util.Locale.ROOT, "debezium measured round %d: %.2f s, %,.0f msgs/s"
            + " (first ack after %.2f s)%n", round, seconds, messages / seconds,
            (firstAck.get() - t0) / 1e9);
        rounds.add(seconds);
        results.add(new Result(messages, seconds, messages / seconds, (firstAck.get() - t0) / 1e9,
            (double) peer.batchRecords.get() / Math.max(1, peer.batches.get()), cpuPerMessage,
            List.of()));
      }
      Result median = results.get(RelayBenchmark.medianIndex(rounds));
      return new Result(median.messages(), median.seconds(), median.msgsPerSecond(),
          median.secondsToFirstAck(), median.meanBatch(), median.cpu(), List.copyOf(rounds));
    } finally {
      dropAll(postgres, name);
      Files.deleteIfExists(offsets);
      Files.deleteIfExists(offsets.getParent());
    }
  }

  /**
   * The slot's restart position moves only past running-transaction records the engine has
   * confirmed: checkpoints (each logs one) and a running engine, until it is near the end of the
   * WAL, as the relay's slot is (RelayBenchmark.settleSlot); otherwise the next start decodes the
   * previous drain's WAL again (161 MB behind after 600,000 rows). The slot cannot simply be
   * advanced: the engine refuses an offset the slot has passed. {@code peer} runs.
   */
  /** Waits (10 minutes at most) until {@code acked} reaches {@code count}, the engine alive. */
  private static void awaitAcks(Peer peer, AtomicLong acked, long count, String failure)
      throws Exception {
    long deadline = System.nanoTime() + TimeUnit.MINUTES.toNanos(10);
    while (acked.get() < count) {
      peer.checkAlive();
      if (System.nanoTime() > deadline) {
        throw new IllegalStateException(failure + acked.get() + " of " + count + " acknowledged");
      }
      Thread.sleep(20);
    }
  }

  private static void settle(TestPostgres postgres, String name, Peer peer) throws Exception {
    long settleDeadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
    while (RelayBenchmark.restartLag(postgres, name) > RelayBenchmark.SETTLED_RESTART_LAG
        && System.nanoTime() < settleDeadline) {
      postgres.execute("CHECKPOINT");
      peer.awaitStreaming();
      Thread.sleep(1_100); // the engine flushes (and confirms) its offsets every second
    }
  }

  /**
   * Commit → acknowledgement at ~1,000 msgs/s for {@code run}: every 10 ms a transaction of 10
   * rows with keys k0..k9 and 200-byte payloads, into a topic of {@code partitions} partitions.
   */
  static LatencyResult latency(TestPostgres postgres, TestKafka kafka, Duration run, int partitions,
      Map<String, String> overrides) throws Exception {
    String name = TestPostgres.uniqueName("dbz_lat");
    String topic = "bench-debezium-latency-" + System.nanoTime();
    kafka.createTopic(topic, partitions);
    kafka.createTopic(WARMUP_TYPE, 1);
    Path offsets = Files.createTempDirectory("dbz-peer").resolve("offsets.dat");
    createOutbox(postgres, name);
    Map<String, Long> committedAt = new ConcurrentHashMap<>();
    Map<String, Long> ackedAt = new ConcurrentHashMap<>();
    try (Peer peer = new Peer(postgres, kafka, name, offsets, overrides, ackedAt::put)) {
      peer.deliveredAt = new ConcurrentHashMap<>();
      peer.start();
      peer.awaitStreaming();

      byte[] payload = new byte[PAYLOAD];
      String sql = insertSql(name, BATCH);
      try (Connection c = jdbc(postgres); PreparedStatement insert = c.prepareStatement(sql)) {
        // As the relay's latency benchmark: commits flushed at once (the test server's default
        // synchronous_commit=off hands WAL to logical replication up to 200 ms late).
        try (java.sql.Statement set = c.createStatement()) {
          set.execute("SET synchronous_commit = on");
        }
        c.setAutoCommit(false);
        long start = System.nanoTime();
        long end = start + run.toNanos();
        long next = start;
        while (next < end) {
          long wait = next - System.nanoTime();
          if (wait > 0) {
            TimeUnit.NANOSECONDS.sleep(wait);
          }
          next += TimeUnit.MILLISECONDS.toNanos(10);
          String[] ids = new String[BATCH];
          for (int i = 0; i < BATCH; i++) {
            ids[i] = UUID.randomUUID().toString();
            bindRow(insert, i, ids[i], topic, "k" + i, payload);
          }
          insert.executeUpdate();
          c.commit();
          long now = System.nanoTime();
          for (String id : ids) {
            committedAt.put(id, now);
          }
        }
      }
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
      while (!ackedAt.keySet().containsAll(committedAt.keySet()) && System.nanoTime() < deadline) {
        peer.checkAlive();
        Thread.sleep(50);
      }
      List<Long> micros = new ArrayList<>();
      committedAt.forEach((id, committed) -> {
        Long acked = ackedAt.get(id);
        if (acked != null) {
          micros.add((acked - committed) / 1_000);
        }
      });
      Collections.sort(micros);
      if (micros.size() < committedAt.size()) {
        LoggerFactory.getLogger(DebeziumPeer.class).warn("{} of {} committed messages acknowledged",
            micros.size(), committedAt.size());
      }
      List<Long> delivered = new ArrayList<>();
      committedAt.forEach((id, committed) -> {
        Long at = peer.deliveredAt.get(id);
        if (at != null) {
          delivered.add((at - committed) / 1_000);
        }
      });
      Collections.sort(delivered);
      return new LatencyResult(percentile(micros, 0.5) / 1000.0, percentile(micros, 0.99) / 1000.0,
          micros.isEmpty() ? Double.NaN : micros.get(micros.size() - 1) / 1000.0, micros.size(),
          percentile(delivered, 0.5) / 1000.0, percentile(delivered, 0.99) / 1000.0,
          peer.batches.get() == 0 ? 0 : (double) peer.batchRecords.get() / peer.batches.get());
    } finally {
      dropAll(postgres, name);
      Files.deleteIfExists(offsets);
      Files.deleteIfExists(offsets.getParent());
    }
  }

  /** One outbox table watched by one engine at a time, publishing through one producer. */
  private static final class Peer implements AutoCloseable {
    private final TestPostgres postgres;
    private final String table;
    private final Properties config;
    private final KafkaProducer<String, byte[]> producer;
    private final BiConsumer<String, Long> onAck;
    private final AtomicReference<Throwable> failure = new AtomicReference<>();
    private final AtomicLong warmupAcks = new AtomicLong();
    final AtomicLong batches = new AtomicLong();
    final AtomicLong batchRecords = new AtomicLong();
    /** When set: event id → when its batch reached the change consumer (diagnostics). */
    Map<String, Long> deliveredAt;
    private DebeziumEngine<RecordChangeEvent<SourceRecord>> engine;
    private ExecutorService executor;

    Peer(TestPostgres postgres, TestKafka kafka, String table, Path offsets,
        Map<String, String> overrides, BiConsumer<String, Long> onAck) {
      this.postgres = postgres;
      this.table = table;
      this.onAck = onAck;
      this.config = engineConfig(postgres, table, offsets);
      overrides.forEach(config::setProperty);
      Map<String, Object> props =
          RelayBenchmark.withRelayProducerDefaults(kafka.producerProperties());
      this.producer = new KafkaProducer<>(props);
    }

    void start() {
      engine = DebeziumEngine.create(ChangeEventFormat.of(Connect.class))
          .using(config)
          .using((success, message, error) -> {
            if (!success) {
              failure.compareAndSet(null, error != null ? error : new IllegalStateException(message));
            }
          })
          .notifying(this::handleBatch)
          .build();
      executor = Executors.newSingleThreadExecutor(r -> new Thread(r, "debezium-peer"));
      executor.execute(engine);
    }

    /** Inserts a warm-up row every 200 ms until one was published: the slot streams. */
    void awaitStreaming() throws Exception {
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
      long before = warmupAcks.get();
      int n = 0;
      while (warmupAcks.get() == before) {
        checkAlive();
        if (System.nanoTime() > deadline) {
          throw new IllegalStateException("Debezium did not stream within 120 s");
        }
        postgres.execute("INSERT INTO " + table + " (id, aggregatetype, aggregateid, type, payload)"
            + " VALUES ('" + UUID.randomUUID() + "', '" + WARMUP_TYPE + "', 'w" + n++ + "', 'warmup', '\\x00')");
        Thread.sleep(200);
      }
    }

    void checkAlive() {
      Throwable error = failure.get();
      if (error != null) {
        throw new IllegalStateException("Debezium engine failed", error);
      }
    }

    void stop() throws java.io.IOException, InterruptedException {
      if (engine != null) {
        try {
          engine.close();
        } catch (IllegalStateException e) {
          if (failure.get() == null) {
            throw e;
          } // a failed engine has shut itself down already
        }
        executor.shutdown();
        if (!executor.awaitTermination(60, TimeUnit.SECONDS)) {
          throw new IllegalStateException("Debezium engine did not stop within 60 s");
        }
        engine = null;
      }
    }

    @Override
    public void close() throws java.io.IOException {
      try {
        stop();
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new IllegalStateException(e);
      } finally {
        producer.close(Duration.ofSeconds(10));
      }
    }

    /** Sends the batch, waits for every acknowledgement, then commits the batch's offsets. */
    private void handleBatch(List<RecordChangeEvent<SourceRecord>> records,
        DebeziumEngine.RecordCommitter<RecordChangeEvent<SourceRecord>> committer)
        throws InterruptedException {
      long entered = System.nanoTime();
      batches.incrementAndGet();
      batchRecords.addAndGet(records.size());
      List<Future<RecordMetadata>> sends = new ArrayList<>(records.size());
      for (RecordChangeEvent<SourceRecord> event : records) {
        SourceRecord record = event.record();
        if (record.value() == null) {
          continue; // tombstone (none expected: route.tombstone.on.empty.payload is off)
        }
        String id = headerString(record, "id");
        if (deliveredAt != null && id != null) {
          deliveredAt.put(id, entered);
        }
        RecordHeaders headers = new RecordHeaders();
        if (id != null) {
          headers.add("id", id.getBytes(StandardCharsets.UTF_8));
        }
        boolean warmup = WARMUP_TYPE.equals(record.topic());
        sends.add(producer.send(new ProducerRecord<>(record.topic(), null,
                record.key() == null ? null : record.key().toString(), bytes(record.value()), headers),
            (metadata, error) -> {
              if (error == null) {
                long now = System.nanoTime();
                if (warmup) {
                  warmupAcks.incrementAndGet();
                } else if (id != null) {
                  onAck.accept(id, now);
                }
              }
            }));
      }
      for (Future<RecordMetadata> send : sends) {
        try {
          send.get();
        } catch (java.util.concurrent.ExecutionException e) {
          // Not marking the batch leaves its offsets uncommitted: redelivered after a restart.
          failure.compareAndSet(null, e.getCause());
          throw new IllegalStateException("Kafka send failed", e.getCause());
        }
      }
      for (RecordChangeEvent<SourceRecord> event : records) {
        committer.markProcessed(event);
      }
      committer.markBatchFinished();
    }
  }

  private static Properties engineConfig(TestPostgres postgres, String table, Path offsets) {
    ConnectionFactoryOptions options = ConnectionFactoryOptions.parse(postgres.url());
    Properties p = new Properties();
    p.setProperty("name", table);
    p.setProperty("connector.class", "io.debezium.connector.postgresql.PostgresConnector");
    p.setProperty("offset.storage", "org.apache.kafka.connect.storage.FileOffsetBackingStore");
    p.setProperty("offset.storage.file.filename", offsets.toString());
    p.setProperty("offset.flush.interval.ms", "1000");
    p.setProperty("database.hostname", String.valueOf(options.getRequiredValue(ConnectionFactoryOptions.HOST)));
    p.setProperty("database.port", String.valueOf(options.getValue(ConnectionFactoryOptions.PORT) == null
        ? 5432 : options.getValue(ConnectionFactoryOptions.PORT)));
    p.setProperty("database.user", String.valueOf(options.getRequiredValue(ConnectionFactoryOptions.USER)));
    Object password = options.getValue(ConnectionFactoryOptions.PASSWORD);
    if (password != null) {
      p.setProperty("database.password", password.toString());
    }
    p.setProperty("database.dbname", String.valueOf(options.getRequiredValue(ConnectionFactoryOptions.DATABASE)));
    p.setProperty("topic.prefix", table);
    p.setProperty("plugin.name", "pgoutput");
    p.setProperty("slot.name", table);
    p.setProperty("publication.name", table);
    p.setProperty("publication.autocreate.mode", "filtered");
    p.setProperty("table.include.list", "public." + table);
    p.setProperty("snapshot.mode", "no_data");
    p.setProperty("tombstones.on.delete", "false");
    if (RelayBenchmark.DELETE_ONCE_LOGGED) {
      p.setProperty("skipped.operations", "u,d,t");
    }
    p.setProperty("transforms", "outbox");
    p.setProperty("transforms.outbox.type", "io.debezium.transforms.outbox.EventRouter");
    p.setProperty("transforms.outbox.route.by.field", "aggregatetype");
    p.setProperty("transforms.outbox.route.topic.replacement", "${routedByValue}");
    p.setProperty("transforms.outbox.table.field.event.id", "id");
    p.setProperty("transforms.outbox.table.field.event.key", "aggregateid");
    p.setProperty("transforms.outbox.table.field.event.payload", "payload");
    return p;
  }

  private static void createOutbox(TestPostgres postgres, String table) {
    postgres.execute("CREATE TABLE " + table + " (id uuid PRIMARY KEY, aggregatetype text NOT NULL,"
        + " aggregateid text NOT NULL, type text NOT NULL, payload bytea)");
  }

  /** Stops nothing: drops the slot (once its walsender is gone), the publication and the table. */
  private static void dropAll(TestPostgres postgres, String name) throws InterruptedException {
    for (int attempt = 0; ; attempt++) {
      try {
        postgres.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            + " WHERE slot_name = '" + name + "'");
        break;
      } catch (RuntimeException e) {
        if (attempt >= 50) {
          throw e; // still active after 10 s
        }
        Thread.sleep(200);
      }
    }
    postgres.execute("DROP PUBLICATION IF EXISTS " + name, "DROP TABLE IF EXISTS " + name);
  }

  /**
   * The backlog: {@code messages / batch} transactions of {@code batch} rows, 4 writers; with
   * {@code -Dbench.deleteOnceLogged=true} each transaction deletes its rows again, as Debezium's
   * outbox documentation recommends (the log keeps them), and the connector skips the deletes
   * ({@code skipped.operations}).
   */
  private static void fill(TestPostgres postgres, String table, String topic, int messages, int batch,
      byte[] payload) throws Exception {
    int transactions = messages / batch;
    int writers = 4;
    ExecutorService pool = Executors.newFixedThreadPool(writers);
    List<Future<?>> done = new ArrayList<>();
    for (int w = 0; w < writers; w++) {
      int first = w;
      done.add(pool.submit(() -> {
        try (Connection c = jdbc(postgres); PreparedStatement insert = c.prepareStatement(insertSql(table, batch));
            PreparedStatement delete = RelayBenchmark.DELETE_ONCE_LOGGED
                ? c.prepareStatement("DELETE FROM " + table + " WHERE id = ANY (?)") : null) {
          c.setAutoCommit(false);
          Object[] ids = new Object[batch];
          for (int b = first; b < transactions; b += writers) {
            for (int i = 0; i < batch; i++) {
              UUID id = UUID.randomUUID();
              ids[i] = id;
              bindRow(insert, i, id.toString(), topic, "key-" + (b % 1000), payload);
            }
            insert.executeUpdate();
            if (delete != null) {
              delete.setArray(1, c.createArrayOf("uuid", ids));
              delete.executeUpdate();
            }
            c.commit();
          }
        }
        return null;
      }));
    }
    for (Future<?> f : done) {
      f.get();
    }
    pool.shutdown();
  }

  private static String insertSql(String table, int rows) {
    StringBuilder sql = new StringBuilder("INSERT INTO " + table
        + " (id, aggregatetype, aggregateid, type, payload) VALUES ");
    for (int i = 0; i < rows; i++) {
      sql.append(i == 0 ? "" : ", ").append("(?::uuid, ?, ?, 'event', ?)");
    }
    return sql.toString();
  }

  private static void bindRow(PreparedStatement insert, int row, String id, String type, String key,
      byte[] payload) throws SQLException {
    insert.setString(row * 4 + 1, id);
    insert.setString(row * 4 + 2, type);
    insert.setString(row * 4 + 3, key);
    insert.setBytes(row * 4 + 4, payload);
  }

  private static Connection jdbc(TestPostgres postgres) throws SQLException {
    ConnectionFactoryOptions o = ConnectionFactoryOptions.parse(postgres.url());
    Object port = o.getValue(ConnectionFactoryOptions.PORT);
    Properties props = new Properties();
    props.setProperty("user", String.valueOf(o.getRequiredValue(ConnectionFactoryOptions.USER)));
    Object password = o.getValue(ConnectionFactoryOptions.PASSWORD);
    if (password != null) {
      props.setProperty("password", password.toString());
    }
    return DriverManager.getConnection("jdbc:postgresql://" + o.getRequiredValue(ConnectionFactoryOptions.HOST)
        + ":" + (port == null ? 5432 : port) + "/" + o.getRequiredValue(ConnectionFactoryOptions.DATABASE), props);
  }

  private static String headerString(SourceRecord record, String name) {
    Header header = record.headers().lastWithName(name);
    return header == null || header.value() == null ? null : header.value().toString();
  }

  private static byte[] bytes(Object value) {
    if (value instanceof byte[] b) {
      return b;
    }
    if (value instanceof ByteBuffer buffer) {
      ByteBuffer copy = buffer.duplicate();
      byte[] b = new byte[copy.remaining()];
      copy.get(b);
      return b;
    }
    return value.toString().getBytes(StandardCharsets.UTF_8);
  }

  private static double percentile(List<Long> sorted, double p) {
    if (sorted.isEmpty()) {
      return Double.NaN;
    }
    return sorted.get(Math.min(sorted.size() - 1, (int) Math.ceil(p * sorted.size()) - 1));
  }

  /** The Debezium version on the class path (from the jar manifest), or {@code "?"}. */
  static String debeziumVersion() {
    String v = DebeziumEngine.class.getPackage().getImplementationVersion();
    return v == null ? "?" : v;
  }

  /**
   * Debezium and Kafka Connect log every config and each offset flush at INFO; Debezium's
   * statistics collector warns once per event while draining a backlog ("queue is full").
   */
  static void quietDebeziumLogs() {
    if (LoggerFactory.getILoggerFactory() instanceof ch.qos.logback.classic.LoggerContext context) {
      Stream.of("io.debezium", "org.apache.kafka.connect", "org.reflections")
          .forEach(name -> context.getLogger(name).setLevel(ch.qos.logback.classic.Level.WARN));
      context.getLogger("io.debezium.metrics.stats.MeasurementCollector")
          .setLevel(ch.qos.logback.classic.Level.ERROR);
    }
  }
}
