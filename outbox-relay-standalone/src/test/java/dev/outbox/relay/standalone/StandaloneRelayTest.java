package dev.outbox.relay.standalone;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.relay.RelayHealth;
import dev.outbox.testing.Poll;
import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import java.io.IOException;
import java.net.ServerSocket;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import reactor.core.publisher.Flux;

/** {@link StandaloneRelay} in this JVM against the real PostgreSQL and Kafka of the harness. */
@ExtendWith(PostgresExtension.class)
class StandaloneRelayTest {
  private final TestPostgres postgres;
  private final TestKafka kafka = TestKafka.get();
  private final OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("standalone"));
  private final ConnectionPool writerPool;
  private final OutboxWriter writer = OutboxWriter.builder().table(table).build();
  private final List<StandaloneRelay> relays = new ArrayList<>();

  StandaloneRelayTest(TestPostgres postgres) {
    this.postgres = postgres;
    this.writerPool = postgres.newPool(4);
    OutboxSchema.createIfMissing(writerPool, table).block(Duration.ofSeconds(60));
  }

  @AfterEach
  void tearDown() {
    relays.forEach(r -> r.stop(Duration.ofSeconds(5)).block(Duration.ofSeconds(20)));
    writerPool.dispose();
  }

  private Map<String, String> env(String databaseUrl) {
    Map<String, String> env = new HashMap<>();
    env.put("OUTBOX_DATABASE_URL", databaseUrl);
    env.put("OUTBOX_KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrapServers());
    env.put("OUTBOX_TABLE", table.qualifiedName());
    env.put("OUTBOX_POLL_INTERVAL", "100ms");
    env.put("OUTBOX_HTTP_PORT", "0");
    env.put("OUTBOX_DB_POOL_SIZE", "6");
    env.put("OUTBOX_KAFKA_MAX_BLOCK_MS", "5000");
    env.put("OUTBOX_KAFKA_LINGER_MS", "1");
    return env;
  }

  private StandaloneRelay start(Map<String, String> env) {
    StandaloneRelay relay = StandaloneRelay.start(StandaloneConfig.fromEnvironment(env));
    relays.add(relay);
    return relay;
  }

  private void write(String topic, int batches) {
    Flux.range(0, batches)
        .concatMap(i -> OutboxTransactions.inTransaction(writerPool, c -> writer.write(
            Message.builder().stream(topic).key("order-" + i).header("type", "OrderPlaced")
                .data(("order " + i).getBytes(StandardCharsets.UTF_8)).build())))
        .blockLast(Duration.ofSeconds(60));
  }

  private long rows(String where) {
    return postgres.queryLong("SELECT count(*) FROM " + table.qualifiedName() + where);
  }

  @Test
  void relaysToKafkaServesHealthAndMetricsAndStopsWithoutLeases() throws IOException {
    String topic = TestPostgres.uniqueName("standalone_topic");
    kafka.createTopic(topic, 2);
    StandaloneRelay relay = start(env(postgres.url()));
    assertThat(relay.httpPort()).isPositive();

    write(topic, 1);

    List<ConsumerRecord<String, byte[]>> consumed =
        kafka.consume(List.of(topic), 1, Duration.ofSeconds(60), Duration.ZERO);
    assertThat(consumed).hasSize(1);
    assertThat(consumed.get(0).key()).isEqualTo("order-0");
    assertThat(new String(consumed.get(0).value(), StandardCharsets.UTF_8)).isEqualTo("order 0");
    assertThat(consumed.get(0).headers().lastHeader("message_id")).isNotNull();
    Poll.until("the published row is deleted", Duration.ofSeconds(60), () -> rows("") == 0);

    Poll.until("/health is UP", Duration.ofSeconds(30), () -> {
      HttpResponse<String> health = Http.tryGet(relay.httpPort(), "/health");
      return health != null && health.statusCode() == 200;
    });
    HttpResponse<String> health = Http.get(relay.httpPort(), "/health");
    assertThat(health.body()).startsWith("{\"status\":\"UP\",\"details\":{")
        .contains("\"database\":\"ok, tables present\"")
        .contains("\"table\":\"" + table.qualifiedName() + "\"")
        .doesNotContain("reason");
    assertThat(health.headers().firstValue("content-type")).hasValue("application/json");

    HttpResponse<String> metrics = Http.get(relay.httpPort(), "/metrics");
    assertThat(metrics.statusCode()).isEqualTo(200);
    assertThat(metrics.headers().firstValue("content-type").orElse("")).startsWith("text/plain");
    assertThat(metrics.body())
        .contains("outbox_relay_records_published_total{table=\"" + table.qualifiedName() + "\"} 1.0")
        .contains("outbox_relay_in_flight")
        .contains("outbox_relay_db_pool_acquired")
        .contains("jvm_memory_used_bytes");

    assertThat(Http.get(relay.httpPort(), "/nothing-here").statusCode()).isEqualTo(404);

    // Stop while a burst is being relayed: whatever is not published must be released.
    write(topic, 300);
    int port = relay.httpPort();
    relay.stop(Duration.ofSeconds(5)).block(Duration.ofSeconds(20));

    assertThat(rows(" WHERE lease_token IS NOT NULL OR in_flight")).as("leased rows").isZero();
    // The default mode owns partitions instead of leasing rows: a graceful stop hands them over.
    assertThat(postgres.queryLong("SELECT count(*) FROM " + table.partitionsQualifiedName()
        + " WHERE owner IS NOT NULL")).as("partitions still owned").isZero();
    assertThat(kafka.recordCount(topic) + rows("")).as("published + left").isGreaterThanOrEqualTo(301);
    assertThat(Http.tryGet(port, "/health")).as("the HTTP server is closed").isNull();
    // Idempotent.
    relay.stop(Duration.ofSeconds(5)).block(Duration.ofSeconds(20));
  }

  @Test
  void deadLetterRetentionDeletesExpiredDeadLettersInBoundedRunsAndKeepsRecentOnes() {
    String dl = table.deadLetterQualifiedName();
    int expired = StandaloneRelay.RETENTION_BATCH * 2 + 5; // needs three runs
    postgres.execute("INSERT INTO " + dl + " (batch_id, message_count, write_retries, reason,"
        + " raw_data, insert_time, dead_lettered_at) SELECT 'old' || lpad(g::text, 24, '0'), 1,"
        + " 0, 'x', '\\x00'::bytea, now(), now() - interval '2 hours'"
        + " FROM generate_series(1, " + expired + ") AS g",
        "INSERT INTO " + dl + " (batch_id, message_count, write_retries, reason, raw_data,"
        + " insert_time, dead_lettered_at) VALUES ('new' || lpad('1', 24, '0'), 1, 0, 'x',"
        + " '\\x00'::bytea, now(), now() - interval '50 minutes')");
    Map<String, String> env = env(postgres.url());
    env.put("OUTBOX_DEAD_LETTER_RETENTION", "1h");

    start(env);

    Poll.until("every expired dead letter is deleted", Duration.ofSeconds(60),
        () -> postgres.queryLong("SELECT count(*) FROM " + dl + " WHERE batch_id LIKE 'old%'") == 0);
    assertThat(postgres.queryLong("SELECT count(*) FROM " + dl + " WHERE batch_id LIKE 'new%'"))
        .as("the one dead-lettered 50 minutes ago").isEqualTo(1);
  }

  @Test
  void retentionRunsAboutTenTimesPerRetentionWithinBounds() {
    assertThat(StandaloneRelay.retentionInterval(Duration.ofDays(30))).isEqualTo(Duration.ofMinutes(10));
    assertThat(StandaloneRelay.retentionInterval(Duration.ofMinutes(20))).isEqualTo(Duration.ofMinutes(2));
    assertThat(StandaloneRelay.retentionInterval(Duration.ofSeconds(3))).isEqualTo(Duration.ofSeconds(1));
  }

  @Test
  void healthIsDownWhileTheDatabaseIsUnreachable() throws IOException {
    int closedPort;
    try (ServerSocket socket = new ServerSocket(0)) {
      closedPort = socket.getLocalPort();
    }
    StandaloneRelay relay = start(env("r2dbc:postgresql://postgres:pw@localhost:" + closedPort
        + "/postgres"));

    Poll.until("/health is DOWN naming the database", Duration.ofSeconds(30), () -> {
      HttpResponse<String> health = Http.tryGet(relay.httpPort(), "/health");
      return health != null && health.body().contains("\"reason\":\"database");
    });

    HttpResponse<String> health = Http.get(relay.httpPort(), "/health");
    assertThat(health.statusCode()).isEqualTo(503);
    assertThat(health.body()).startsWith("{\"status\":\"DOWN\",\"reason\":\"database")
        .contains("\"reasons\":[\"database");
    assertThat(Http.get(relay.httpPort(), "/metrics").statusCode()).isEqualTo(200);
  }

  @Test
  void healthIsDownOnceStopping() throws IOException {
    StandaloneRelay relay = start(env(postgres.url()));
    Poll.until("/health is UP", Duration.ofSeconds(30), () -> {
      HttpResponse<String> health = Http.tryGet(relay.httpPort(), "/health");
      return health != null && health.statusCode() == 200;
    });

    relay.stop(Duration.ofSeconds(5)).block(Duration.ofSeconds(20));
    RelayHealth health = relay.checkHealth();

    assertThat(health.isUp()).isFalse();
    assertThat(health.reasons()).containsExactly("relay is stopping");
  }

  @Test
  void healthIsDownWhileTheTableIsMissingAndUpOnceItExists() throws IOException {
    OutboxTable missing = OutboxTable.of(TestPostgres.uniqueName("standalone_later"));
    Map<String, String> env = env(postgres.url());
    env.put("OUTBOX_TABLE", missing.qualifiedName());
    StandaloneRelay relay = start(env);

    Poll.until("/health is 503 naming the missing table", Duration.ofSeconds(30), () -> {
      HttpResponse<String> health = Http.tryGet(relay.httpPort(), "/health");
      return health != null && health.statusCode() == 503 && health.body()
          .contains("outbox table " + missing.qualifiedName() + " does not exist");
    });

    OutboxSchema.createIfMissing(writerPool, missing).block(Duration.ofSeconds(60));

    Poll.until("/health is 200 once the table exists", Duration.ofSeconds(30), () -> {
      HttpResponse<String> health = Http.tryGet(relay.httpPort(), "/health");
      return health != null && health.statusCode() == 200;
    });
    assertThat(Http.get(relay.httpPort(), "/metrics").body())
        .contains("outbox_relay_health{table=\"" + missing.qualifiedName() + "\"} 1.0");
  }

  @Test
  void healthJsonEscapesAndNestsDetails() {
    RelayHealth health = new RelayHealth(RelayHealth.Status.DOWN, List.of("a \"quoted\"\nline", "b"),
        Map.of("kafka", Map.of("brokers", 1)), java.time.Instant.EPOCH);

    assertThat(StandaloneRelay.toJson(health)).isEqualTo("{\"status\":\"DOWN\","
        + "\"reason\":\"a \\\"quoted\\\"\\nline; b\",\"reasons\":[\"a \\\"quoted\\\"\\nline\",\"b\"],"
        + "\"details\":{\"kafka\":{\"brokers\":1}},\"checkedAt\":\"1970-01-01T00:00:00Z\"}");
  }

  @Test
  void aTakenPortFailsTheStartAndReleasesEverything() throws IOException {
    try (ServerSocket taken = new ServerSocket(0)) {
      Map<String, String> env = env(postgres.url());
      env.put("OUTBOX_HTTP_PORT", Integer.toString(taken.getLocalPort()));
      StandaloneConfig config = StandaloneConfig.fromEnvironment(env);

      org.assertj.core.api.Assertions.assertThatThrownBy(() -> StandaloneRelay.start(config))
          .isInstanceOf(RuntimeException.class);
    }
  }
}
