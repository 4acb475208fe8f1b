package dev.outbox.relay;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.testing.Poll;
import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import io.r2dbc.pool.ConnectionPool;
import io.r2dbc.spi.Connection;
import java.io.IOException;
import java.io.OutputStream;
import java.net.ServerSocket;
import java.net.Socket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.jspecify.annotations.Nullable;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/** {@link HealthProbe} against the harness's real PostgreSQL and Kafka; each condition and back. */
@ExtendWith(PostgresExtension.class)
class HealthProbeTest {
  private static final Duration INTERVAL = Duration.ofMillis(200);
  private static final Duration TIMEOUT = Duration.ofSeconds(2);
  private static final Duration DEADLINE = Duration.ofSeconds(30);

  private final TestPostgres postgres;
  private final TestKafka kafka = TestKafka.get();
  private final ConnectionPool pool;
  private final SimpleMeterRegistry registry = new SimpleMeterRegistry();
  private final List<AutoCloseable> cleanup = new ArrayList<>();

  HealthProbeTest(TestPostgres postgres) {
    this.postgres = postgres;
    this.pool = postgres.newPool(4);
  }

  @AfterEach
  void tearDown() throws Exception {
    for (int i = cleanup.size() - 1; i >= 0; i--) {
      cleanup.get(i).close();
    }
    pool.dispose();
  }

  private OutboxTable newTable(boolean create) {
    OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("health"));
    if (create) {
      OutboxSchema.createIfMissing(pool, table).block(Duration.ofSeconds(30));
    }
    return table;
  }

  private HealthProbe start(OutboxTable table, RelayMode mode,
      @Nullable Map<String, Object> producerProperties, String slot) {
    HealthProbe probe = new HealthProbe(pool, table, mode, producerProperties, slot, slot,
        MicrometerRelayMetrics.create(registry, table.qualifiedName()), INTERVAL, TIMEOUT,
        Duration.ofSeconds(1));
    cleanup.add(probe::dispose);
    probe.start();
    return probe;
  }

  private static RelayHealth awaitHealth(HealthProbe probe, String what,
      java.util.function.Predicate<RelayHealth> condition) {
    Poll.until(what + "; last: " + probe.health(), DEADLINE, () -> condition.test(probe.health()));
    return probe.health();
  }

  private static boolean downFor(RelayHealth health, String reasonPart) {
    return !health.isUp() && health.reasons().stream().anyMatch(r -> r.contains(reasonPart));
  }

  private double gauge(String name) {
    return registry.get(name).gauge().value();
  }

  private static int closedPort() throws IOException {
    try (ServerSocket socket = new ServerSocket(0)) {
      return socket.getLocalPort();
    }
  }

  @Test
  void missingTableIsDownUntilTheTableIsCreated() {
    OutboxTable table = newTable(false);
    HealthProbe probe = start(table, RelayMode.PARALLEL, null, "unused_slot");

    RelayHealth down = awaitHealth(probe, "DOWN for the missing table",
        h -> downFor(h, "outbox table " + table.qualifiedName() + " does not exist"));
    assertThat(down.status()).isEqualTo(RelayHealth.Status.DOWN);
    assertThat(gauge("outbox.relay.health")).isZero();

    OutboxSchema.createIfMissing(pool, table).block(Duration.ofSeconds(30));

    RelayHealth up = awaitHealth(probe, "UP once the table exists", RelayHealth::isUp);
    assertThat(up.reasons()).isEmpty();
    assertThat(up.details()).containsEntry("database", "ok, tables present")
        .containsEntry("table", table.qualifiedName());
    assertThat(gauge("outbox.relay.health")).isEqualTo(1.0);
  }

  @Test
  void unreachableDatabaseIsDown() throws IOException {
    ConnectionPool dead = new ConnectionPool(io.r2dbc.pool.ConnectionPoolConfiguration.builder(
            io.r2dbc.spi.ConnectionFactories.get("r2dbc:postgresql://postgres@localhost:"
                + closedPort() + "/postgres"))
        .maxSize(1).build());
    cleanup.add(dead::dispose);
    HealthProbe probe = new HealthProbe(dead, newTable(false), RelayMode.PARALLEL, null, "s", "s",
        RelayMetrics.none(), INTERVAL, TIMEOUT);
    cleanup.add(probe::dispose);

    RelayHealth health = probe.check().block(Duration.ofSeconds(10));

    assertThat(health).isNotNull();
    assertThat(health.isUp()).isFalse();
    assertThat(health.reasons()).singleElement().asString().startsWith("database");
  }

  @Test
  void kafkaReachableIsUpAndAClosedPortIsDown() throws IOException {
    OutboxTable table = newTable(true);
    HealthProbe reachable = start(table, RelayMode.PARALLEL, kafka.producerProperties(), "s");
    RelayHealth up = awaitHealth(reachable, "UP with the harness broker", RelayHealth::isUp);
    assertThat(up.details().get("kafka")).asString().contains("clusterId");

    Map<String, Object> unreachable = new HashMap<>(kafka.producerProperties());
    unreachable.put("bootstrap.servers", "localhost:" + closedPort());
    HealthProbe probe = start(table, RelayMode.PARALLEL, unreachable, "s");

    RelayHealth down = awaitHealth(probe, "DOWN: Kafka unreachable",
        h -> downFor(h, "Kafka unreachable"));
    assertThat(down.reasons()).hasSize(1);
    assertThat(down.details()).containsEntry("database", "ok, tables present");
  }

  @Test
  void saslAgainstAPlaintextListenerIsDown() {
    Map<String, Object> sasl = new HashMap<>(kafka.producerProperties());
    sasl.put("security.protocol", "SASL_PLAINTEXT");
    sasl.put("sasl.mechanism", "PLAIN");
    sasl.put("sasl.jaas.config", "org.apache.kafka.common.security.plain.PlainLoginModule"
        + " required username=\"relay\" password=\"wrong\";");
    HealthProbe probe = start(newTable(true), RelayMode.PARALLEL, sasl, "s");

    RelayHealth down = awaitHealth(probe, "DOWN: Kafka refuses the SASL client",
        h -> downFor(h, "Kafka authentication failed"));
    assertThat(down.reasons()).singleElement().asString().contains("IllegalSaslStateException");
  }

  @Test
  void aDeadProducerNetworkThreadIsDown() throws Exception {
    // Something that is not Kafka: once released, it answers with a frame size of ~2 GB, which
    // the producer's network thread tries to allocate and dies of (OutOfMemoryError).
    ServerSocket notKafka = new ServerSocket(0);
    cleanup.add(notKafka);
    CountDownLatch answer = new CountDownLatch(1);
    cleanup.add(answer::countDown);
    Thread server = new Thread(() -> {
      while (!notKafka.isClosed()) {
        try (Socket client = notKafka.accept()) {
          answer.await();
          OutputStream out = client.getOutputStream();
          out.write(new byte[] {0x7f, (byte) 0xff, (byte) 0xff, (byte) 0xf0});
          out.flush();
          client.getInputStream().read(new byte[4096]);
        } catch (IOException e) {
          // closed
        } catch (InterruptedException e) {
          return;
        }
      }
    }, "not-kafka");
    server.setDaemon(true);
    server.start();
    String clientId = TestPostgres.uniqueName("doomed_producer");
    Map<String, Object> producerProps = new HashMap<>();
    producerProps.put("bootstrap.servers", "localhost:" + notKafka.getLocalPort());
    producerProps.put("client.id", clientId);
    producerProps.put("max.block.ms", 1_000);
    KafkaProducer<String, byte[]> producer = new KafkaProducer<>(producerProps,
        new StringSerializer(), new ByteArraySerializer());
    cleanup.add(() -> producer.close(Duration.ofSeconds(1)));
    // The probe's own Kafka check goes to the real broker; only the thread check is at stake.
    Map<String, Object> probeProps = new HashMap<>(kafka.producerProperties());
    probeProps.put("client.id", clientId);
    HealthProbe probe = start(newTable(true), RelayMode.PARALLEL, probeProps, "s");
    awaitHealth(probe, "UP while the producer thread lives (it is waiting for an answer)",
        h -> h.isUp() && "alive".equals(h.details().get("producerNetworkThread")));

    answer.countDown();

    RelayHealth down = awaitHealth(probe, "DOWN: producer network thread dead",
        h -> downFor(h, "network thread 'kafka-producer-network-thread | " + clientId + "' is dead"));
    assertThat(down.reasons()).hasSize(1);
  }

  /** A connection in an open transaction that holds a transaction id; returns its pid. */
  private int openWriteTransaction(List<Connection> holder) {
    Connection connection = Mono.from(postgres.connectionFactory().create()).block();
    assertThat(connection).isNotNull();
    holder.add(connection);
    cleanup.add(() -> Mono.from(connection.close()).block(Duration.ofSeconds(10)));
    Mono.from(connection.beginTransaction()).block(Duration.ofSeconds(10));
    Integer pid = Flux.from(connection.createStatement(
                "SELECT pg_backend_pid(), pg_current_xact_id()::text").execute())
        .concatMap(r -> r.map((row, meta) -> row.get(0, Integer.class)))
        .blockFirst(Duration.ofSeconds(10));
    assertThat(pid).isNotNull();
    return pid;
  }

  @Test
  void anOpenTransactionHoldingOrderedPublicationBackIsReportedUntilItEnds() {
    HealthProbe probe = start(newTable(true), RelayMode.ORDERED, null, "s");
    awaitHealth(probe, "UP, nothing held back",
        h -> h.isUp() && "none".equals(h.details().get("heldBackBy")));

    List<Connection> holder = new ArrayList<>();
    int pid = openWriteTransaction(holder);

    RelayHealth held = awaitHealth(probe, "the transaction is reported",
        h -> h.details().get("heldBackBy") instanceof Map<?, ?> m && Integer.valueOf(pid).equals(m.get("pid")));
    assertThat(held.isUp()).as("held back is not DOWN").isTrue();
    assertThat(held.details().get("heldBackBy")).asString().contains("ageSeconds=").contains("state=");
    assertThat(gauge("outbox.relay.held.back.age")).isGreaterThanOrEqualTo(1.0);

    Mono.from(holder.get(0).rollbackTransaction()).block(Duration.ofSeconds(10));

    awaitHealth(probe, "no longer held back", h -> "none".equals(h.details().get("heldBackBy")));
    assertThat(gauge("outbox.relay.held.back.age")).isZero();
  }

  @Test
  void walModeReportsAMissingSlotUntilItExists() {
    String slot = TestPostgres.uniqueName("health_slot");
    HealthProbe probe = start(newTable(true), RelayMode.WAL, null, slot);

    RelayHealth missing = awaitHealth(probe, "the slot is reported missing",
        h -> String.valueOf(h.details().get("walSlot")).contains("missing"));
    assertThat(missing.details()).containsKey("heldBackBy");
    assertThat(gauge("outbox.relay.wal.slot.missing")).isEqualTo(1.0);
    assertThat(gauge("outbox.relay.wal.lag.bytes")).as("no slot, no lag in bytes").isNaN();
    assertThat(missing.details().get("walLag")).asString().contains("slot missing");

    postgres.execute("SELECT pg_create_logical_replication_slot('" + slot + "', 'pgoutput')");
    cleanup.add(() -> postgres.execute("SELECT pg_drop_replication_slot('" + slot + "')"));

    awaitHealth(probe, "the slot is reported present",
        h -> String.valueOf(h.details().get("walSlot")).contains("present"));
    assertThat(gauge("outbox.relay.wal.slot.missing")).isZero();
    awaitHealth(probe, "lag in bytes is known once the slot exists",
        h -> h.details().get("walLag") instanceof Map<?, ?> m && m.get("bytes") instanceof Long b
            && b >= 0);
    assertThat(gauge("outbox.relay.wal.lag.bytes")).isNotNaN();
  }

  @Test
  void walLagIsReadInBytesAndSecondsWhileTheSlotIsBehindAndIsZeroOnceItCaughtUp() {
    OutboxTable table = newTable(true);
    String slot = TestPostgres.uniqueName("lag_slot");
    postgres.execute("SELECT pg_create_logical_replication_slot('" + slot + "', 'pgoutput')");
    cleanup.add(() -> postgres.execute("SELECT pg_drop_replication_slot('" + slot + "')"));
    HealthProbe probe = new HealthProbe(pool, table, RelayMode.WAL, null, slot, slot,
        MicrometerRelayMetrics.create(registry, table.qualifiedName()), INTERVAL, TIMEOUT,
        Duration.ofSeconds(1));
    cleanup.add(probe::dispose);

    RelayHealth caughtUp = check(probe);
    assertThat(caughtUp.details().get("walLag")).isInstanceOf(Map.class);
    assertThat(gauge("outbox.relay.wal.lag.seconds")).as("empty table").isZero();

    // Behind: ~100 kB of WAL follow the slot's confirmed position, and a row written a minute
    // ago still waits. pg_current_wal_lsn() is the position written out, not the insert
    // position, and the test server commits asynchronously: a synchronous commit writes out the
    // WAL before it.
    postgres.execute("SET synchronous_commit = on",
        "SELECT pg_logical_emit_message(false, 'lag-test', repeat('x', 100000))",
        "INSERT INTO " + table.qualifiedName() + " (batch_id, message_count, raw_data, insert_time)"
            + " VALUES ('lag000000000000000000000001', 1, '\\x00', now() - interval '1 minute')");

    RelayHealth behind = check(probe);
    assertThat(behind.isUp()).as("lag is no DOWN reason: " + behind).isTrue();
    Map<?, ?> lag = (Map<?, ?>) behind.details().get("walLag");
    assertThat((Long) lag.get("bytes")).as(behind.toString()).isGreaterThan(100_000L);
    assertThat((Long) lag.get("retainedBytes")).isGreaterThanOrEqualTo((Long) lag.get("bytes"));
    assertThat(lag.get("slotActive")).isEqualTo(false);
    assertThat(gauge("outbox.relay.wal.lag.bytes")).isGreaterThan(100_000.0);
    assertThat(gauge("outbox.relay.wal.lag.seconds")).isBetween(59.0, 600.0);

    // Caught up: the row is gone (published) and the slot confirmed everything written.
    postgres.execute("DELETE FROM " + table.qualifiedName(),
        "SELECT pg_replication_slot_advance('" + slot + "', pg_current_wal_lsn())");

    check(probe);
    // Only what the server wrote since the advance (background activity, other tests) counts.
    assertThat(gauge("outbox.relay.wal.lag.bytes")).isBetween(0.0, 16_384.0);
    assertThat(gauge("outbox.relay.wal.lag.seconds")).isZero();
  }

  private static RelayHealth check(HealthProbe probe) {
    RelayHealth health = probe.check().block(Duration.ofSeconds(10));
    assertThat(health).isNotNull();
    return health;
  }

  @Test
  void disposedProbeIsDownAndStopsChecking() {
    HealthProbe probe = start(newTable(true), RelayMode.PARALLEL, kafka.producerProperties(), "s");
    awaitHealth(probe, "UP", RelayHealth::isUp);

    probe.dispose();

    assertThat(probe.isDisposed()).isTrue();
    assertThat(probe.health().reasons()).containsExactly("relay stopped");
  }
}
