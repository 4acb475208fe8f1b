package dev.outbox.faults;

import dev.outbox.testing.RestartablePostgres;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Map;
import org.jspecify.annotations.Nullable;

/**
 * The servers of the fault suite, one set per test JVM: a PostgreSQL the tests may stop and
 * start, a Kafka broker the tests may stop and start, and a {@link TcpProxy} in front of each.
 * Relays connect through the proxies; the broker advertises its proxy, so every Kafka client
 * (relay and checker alike) goes through it. The load writer talks to PostgreSQL directly.
 *
 * <p>These are embedded servers even when {@code OUTBOX_TEST_POSTGRES_URL} or {@code
 * OUTBOX_TEST_KAFKA_BOOTSTRAP} are set: the suite has to stop and start them.
 */
final class FaultWorld {
  private static @Nullable FaultWorld instance;

  final Path directory;
  final RestartablePostgres postgres;
  final TcpProxy postgresProxy;
  final TestKafka kafka;
  final TcpProxy kafkaProxy;

  private FaultWorld(Path directory, RestartablePostgres postgres, TcpProxy postgresProxy,
      TestKafka kafka, TcpProxy kafkaProxy) {
    this.directory = directory;
    this.postgres = postgres;
    this.postgresProxy = postgresProxy;
    this.kafka = kafka;
    this.kafkaProxy = kafkaProxy;
  }

  static synchronized FaultWorld get() {
    if (instance == null) {
      instance = start();
    }
    return instance;
  }

  private static FaultWorld start() {
    try {
      Path directory = Files.createTempDirectory(Files.createDirectories(Paths.get("target")),
          "faults-");
      RestartablePostgres postgres = RestartablePostgres.start(directory.resolve("pgdata"));
      TcpProxy postgresProxy = TcpProxy.start("postgres", postgres.port());
      // The proxy's port must be known before the broker starts, to advertise it; the broker's
      // own port only after (the test kit binds it).
      TcpProxy kafkaProxy = TcpProxy.start("kafka", 0);
      TestKafka kafka = TestKafka.startDedicated(
          Map.of("advertised.listeners", "EXTERNAL://localhost:" + kafkaProxy.port()),
          "localhost:" + kafkaProxy.port());
      kafkaProxy.forwardTo(kafka.brokerPort());
      return new FaultWorld(directory, postgres, postgresProxy, kafka, kafkaProxy);
    } catch (IOException e) {
      throw new UncheckedIOException("Could not set up the fault suite's servers", e);
    }
  }

  /** Direct connections and helpers, for the writer and the checker. */
  TestPostgres db() {
    return postgres.client();
  }

  /** The URL relays use: through the PostgreSQL proxy. */
  String relayDatabaseUrl() {
    return "r2dbc:postgresql://postgres@localhost:" + postgresProxy.port() + "/postgres";
  }

  String kafkaBootstrap() {
    return kafka.bootstrapServers();
  }
}
