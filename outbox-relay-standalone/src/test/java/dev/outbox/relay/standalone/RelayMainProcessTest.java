package dev.outbox.relay.standalone;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.testing.Poll;
import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import java.io.IOException;
import java.net.ServerSocket;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** {@link RelayMain} as its own JVM, configured by environment variables, stopped by SIGTERM. */
@ExtendWith(PostgresExtension.class)
class RelayMainProcessTest {
  private final TestPostgres postgres;
  private final TestKafka kafka = TestKafka.get();
  private @TempDir Path dir;
  private Process process;

  RelayMainProcessTest(TestPostgres postgres) {
    this.postgres = postgres;
  }

  @AfterEach
  void killLeftovers() {
    if (process != null && process.isAlive()) {
      process.destroyForcibly();
    }
  }

  /** The harness URL with a password in it (the embedded server trusts local logins). */
  private static String urlWithPassword(String url, String password) {
    int scheme = url.indexOf("://") + 3;
    int at = url.indexOf('@', scheme);
    if (at < 0 || url.substring(scheme, at).contains(":")) {
      return url; // no user to attach it to, or it has a password already
    }
    return url.substring(0, at) + ":" + password + url.substring(at);
  }

  private static String password(String url) {
    int scheme = url.indexOf("://") + 3;
    String userInfo = url.substring(scheme, url.indexOf('@', scheme));
    return userInfo.substring(userInfo.indexOf(':') + 1);
  }

  private Process launch(Map<String, String> outboxEnv, Path output, String... args)
      throws IOException {
    String java = Paths.get(System.getProperty("java.home"), "bin", "java").toString();
    List<String> command = new java.util.ArrayList<>(List.of(java, "-Xmx256m",
        "-cp", System.getProperty("java.class.path"), RelayMain.class.getName()));
    command.addAll(List.of(args));
    ProcessBuilder builder = new ProcessBuilder(command);
    builder.environment().keySet().removeIf(name -> name.startsWith("OUTBOX_"));
    builder.environment().putAll(outboxEnv);
    builder.redirectErrorStream(true).redirectOutput(output.toFile());
    process = builder.start();
    return process;
  }

  private static String read(Path output) {
    try {
      return Files.readString(output, StandardCharsets.UTF_8);
    } catch (IOException e) {
      return "(unreadable: " + e + ")";
    }
  }

  private static int freePort() throws IOException {
    try (ServerSocket socket = new ServerSocket(0)) {
      return socket.getLocalPort();
    }
  }

  @Test
  void runsFromEnvironmentVariablesAndExitsZeroOnSigterm() throws Exception {
    OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("process"));
    String topic = TestPostgres.uniqueName("process_topic");
    kafka.createTopic(topic, 1);
    ConnectionPool pool = postgres.newPool(2);
    try {
      OutboxSchema.createIfMissing(pool, table).block(Duration.ofSeconds(60));
      OutboxTransactions.inTransaction(pool, c -> OutboxWriter.builder().table(table).build()
              .write(Message.builder().stream(topic).key("k").data(new byte[] {42}).build()))
          .block(Duration.ofSeconds(30));
    } finally {
      pool.dispose();
    }
    String url = urlWithPassword(postgres.url(), "pw-" + UUID.randomUUID());
    String dbPassword = password(url);
    String kafkaSecret = "kafka-secret-" + UUID.randomUUID();
    int port = freePort();
    Path output = dir.resolve("relay.log");

    Process relay = launch(Map.of(
        "OUTBOX_DATABASE_URL", url,
        "OUTBOX_KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrapServers(),
        "OUTBOX_TABLE", table.qualifiedName(),
        "OUTBOX_POLL_INTERVAL", "200ms",
        "OUTBOX_HTTP_PORT", Integer.toString(port),
        "OUTBOX_DRAIN", "5s",
        "OUTBOX_KAFKA_LINGER_MS", "1",
        "OUTBOX_KAFKA_SSL_KEY_PASSWORD", kafkaSecret), output);

    Poll.until("the relay process reports UP on /health", Duration.ofSeconds(120), () -> {
      if (!relay.isAlive()) {
        throw new AssertionError("The relay exited with " + relay.exitValue() + ":\n" + read(output));
      }
      HttpResponse<String> health = Http.tryGet(port, "/health");
      return health != null && health.statusCode() == 200 && health.body().contains("\"UP\"");
    });
    assertThat(kafka.consume(List.of(topic), 1, Duration.ofSeconds(60), Duration.ZERO))
        .as("the message written before the start").hasSize(1);
    Poll.until("the row is deleted", Duration.ofSeconds(60),
        () -> postgres.queryLong("SELECT count(*) FROM " + table.qualifiedName()) == 0);
    assertThat(Http.get(port, "/metrics").body()).contains("outbox_relay_records_published");

    relay.destroy(); // SIGTERM

    assertThat(relay.waitFor(30, TimeUnit.SECONDS)).as("exited within 30 s").isTrue();
    String log = read(output);
    assertThat(relay.exitValue()).as("exit status; output:\n%s", log).isZero();
    assertThat(log)
        .contains("OUTBOX_TABLE=" + table.qualifiedName())
        .contains("ssl.key.password=****")
        .contains(":****@")
        .contains("Outbox relay stopped")
        .doesNotContain(dbPassword)
        .doesNotContain(kafkaSecret);
  }

  @Test
  void deadLetterSubcommandsRunWithoutStartingTheRelayAndExitWithTheirStatus() throws Exception {
    OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("process_admin"));
    ConnectionPool pool = postgres.newPool(2);
    String batchId;
    try {
      OutboxSchema.createIfMissing(pool, table).block(Duration.ofSeconds(60));
      OutboxTransactions.inTransaction(pool, c -> OutboxWriter.builder().table(table).build()
              .write(Message.builder().stream("t").key("k").data(new byte[] {42}).build()))
          .block(Duration.ofSeconds(30));
      batchId = (String) postgres.queryColumn("SELECT batch_id FROM " + table.qualifiedName())
          .get(0);
      postgres.execute("WITH moved AS (DELETE FROM " + table.qualifiedName() + " RETURNING"
          + " batch_id, message_count, raw_data, insert_time) INSERT INTO "
          + table.deadLetterQualifiedName() + " (batch_id, message_count, write_retries, reason,"
          + " raw_data, insert_time) SELECT batch_id, message_count, 20, 'Kafka said no',"
          + " raw_data, insert_time FROM moved");
    } finally {
      pool.dispose();
    }
    // Only the database: no Kafka variable, no HTTP port, as an operator would run it.
    Map<String, String> env = Map.of("OUTBOX_DATABASE_URL", postgres.url(),
        "OUTBOX_TABLE", table.qualifiedName());
    Path listed = dir.resolve("list.log");
    Path purged = dir.resolve("purge.log");
    Path misused = dir.resolve("misused.log");

    Process list = launch(env, listed, "dead-letters", "list");
    assertThat(list.waitFor(60, TimeUnit.SECONDS)).as("list exited within 60 s").isTrue();
    Process purge = launch(env, purged, "dead-letters", "purge", batchId);
    assertThat(purge.waitFor(60, TimeUnit.SECONDS)).as("purge exited within 60 s").isTrue();
    Process misuse = launch(env, misused, "dead-letters", "purge", "--older-than", "soon");
    assertThat(misuse.waitFor(60, TimeUnit.SECONDS)).as("misuse exited within 60 s").isTrue();

    assertThat(list.exitValue()).as("list; output:\n%s", read(listed)).isZero();
    assertThat(read(listed)).contains(batchId).contains("Kafka said no")
        .doesNotContain("Outbox relay started");
    assertThat(purge.exitValue()).as("purge; output:\n%s", read(purged)).isZero();
    assertThat(postgres.queryLong("SELECT count(*) FROM " + table.deadLetterQualifiedName()))
        .isZero();
    assertThat(misuse.exitValue()).as("misuse; output:\n%s", read(misused))
        .isEqualTo(AdminCommands.EXIT_USAGE);
    assertThat(read(misused)).contains("--older-than must be a duration").contains("Usage");
  }

  @Test
  void invalidConfigurationExitsWithStatusTwoNamingTheVariable() throws Exception {
    Path output = dir.resolve("invalid.log");

    Process relay = launch(Map.of(
        "OUTBOX_DATABASE_URL", "r2dbc:postgresql://relay:hunter2@localhost:5432/app",
        "OUTBOX_KAFKA_BOOTSTRAP_SERVERS", "localhost:9092",
        "OUTBOX_MODE", "SIDEWAYS"), output);

    assertThat(relay.waitFor(60, TimeUnit.SECONDS)).as("exited within 60 s").isTrue();
    String log = read(output);
    assertThat(relay.exitValue()).as("exit status; output:\n%s", log)
        .isEqualTo(RelayMain.EXIT_INVALID_CONFIGURATION);
    assertThat(log).contains("Invalid outbox relay configuration: OUTBOX_MODE must be one of"
        + " PARALLEL, ORDERED, WAL, PARTITIONED, got 'SIDEWAYS'").doesNotContain("hunter2");
  }

  @ParameterizedTest(name = "{0}={1}")
  @CsvSource(delimiter = '|', value = {
      "OUTBOX_KAFKA_ACKS             | banana                                        | OUTBOX_KAFKA_ACKS: Invalid value banana for configuration acks",
      "OUTBOX_KAFKA_LINGER_MS        | -1                                            | OUTBOX_KAFKA_LINGER_MS: Invalid value -1 for configuration linger.ms",
      "OUTBOX_KAFKA_MAX_REQUEST_SIZE | 1MB                                           | OUTBOX_KAFKA_MAX_REQUEST_SIZE: Invalid value 1MB for configuration max.request.size",
      "OUTBOX_DATABASE_URL           | r2dbc:postgresql://relay:hunter2@db:port/app  | OUTBOX_DATABASE_URL must name a port",
      "OUTBOX_DATABASE_URL           | r2dbc:postgresql://relay:hunter2@db:5432/app?sslMode=banana | OUTBOX_DATABASE_URL holds an invalid value",
  })
  void invalidProducerPropertiesAndDatabaseUrlsExitWithStatusTwo(String variable, String value,
      String message) throws Exception {
    Path output = dir.resolve("invalid-" + variable + ".log");
    Map<String, String> env = new java.util.HashMap<>(Map.of(
        "OUTBOX_DATABASE_URL", "r2dbc:postgresql://relay:hunter2@localhost:5432/app",
        "OUTBOX_KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"));
    env.put(variable, value);

    Process relay = launch(env, output);

    assertThat(relay.waitFor(60, TimeUnit.SECONDS)).as("exited within 60 s").isTrue();
    String log = read(output);
    assertThat(relay.exitValue()).as("exit status; output:\n%s", log)
        .isEqualTo(RelayMain.EXIT_INVALID_CONFIGURATION);
    assertThat(log).contains("Invalid outbox relay configuration: " + message)
        .doesNotContain("hunter2")
        .doesNotContain("Exception in thread")
        .doesNotContain("\tat ");
  }
}
