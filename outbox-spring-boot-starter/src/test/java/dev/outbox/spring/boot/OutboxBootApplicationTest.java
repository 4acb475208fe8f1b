package dev.outbox.spring.boot;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Ksuid;
import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.testing.Poll;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.MeterRegistry;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.springframework.boot.SpringBootConfiguration;
import org.springframework.boot.WebApplicationType;
import org.springframework.boot.autoconfigure.EnableAutoConfiguration;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.boot.web.server.context.WebServerApplicationContext;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.core.ParameterizedTypeReference;
import org.springframework.http.HttpStatusCode;
import org.springframework.http.ResponseEntity;
import org.springframework.transaction.reactive.TransactionalOperator;
import org.springframework.web.reactive.function.client.WebClient;
import reactor.core.publisher.Mono;

/**
 * A whole Spring Boot application (WebFlux, Actuator, Micrometer, R2DBC) with only the starter
 * added: a message written in a Spring transaction reaches Kafka through the embedded relay, the
 * meters count it, the health contributor reports the relay, and the dead-letter endpoint lists,
 * shows, re-drives and deletes dead letters over HTTP.
 */
class OutboxBootApplicationTest {
  private static final String TABLE = TestPostgres.uniqueName("boot_outbox");
  private static final String TOPIC = TestPostgres.uniqueName("boot_orders");
  private static final Duration WAIT = Duration.ofSeconds(30);
  private static final ParameterizedTypeReference<Map<String, Object>> JSON =
      new ParameterizedTypeReference<>() {};

  private static ConfigurableApplicationContext app;
  private static WebClient http;

  @SpringBootConfiguration
  @EnableAutoConfiguration
  static class App {}

  @BeforeAll
  static void start() {
    TestKafka.get().createTopic(TOPIC, 2);
    app = new SpringApplicationBuilder(App.class).web(WebApplicationType.REACTIVE).run(
        "--server.port=0",
        "--spring.main.banner-mode=off",
        "--spring.r2dbc.url=" + TestPostgres.get().url(),
        "--spring.kafka.bootstrap-servers=" + TestKafka.get().bootstrapServers(),
        "--outbox.table=" + TABLE,
        "--outbox.schema.create-if-missing=true",
        "--outbox.relay.poll-interval=100ms",
        "--outbox.relay.stats-interval=200ms",
        "--outbox.relay.retry.max-attempts=1",
        "--outbox.relay.shutdown-timeout=2s",
        "--management.endpoints.web.exposure.include=health,outboxdeadletters",
        "--management.endpoint.health.show-details=always");
    int port = ((WebServerApplicationContext) app).getWebServer().getPort();
    http = WebClient.create("http://localhost:" + port);
  }

  @AfterAll
  static void stop() {
    if (app != null) {
      app.close();
    }
  }

  private static void writeInTransaction(Message message) {
    app.getBean(OutboxWriter.class).write(message)
        .as(app.getBean(TransactionalOperator.class)::transactional)
        .block(WAIT);
  }

  private static ResponseEntity<Map<String, Object>> get(String path) {
    return http.get().uri(path).exchangeToMono(response -> response.toEntity(JSON)).block(WAIT);
  }

  private static Map<String, Object> body(ResponseEntity<Map<String, Object>> response) {
    return Objects.requireNonNull(response.getBody(), "response body");
  }

  @Test
  void aMessageWrittenInASpringTransactionReachesKafkaAndIsCounted() {
    String key = Ksuid.generate().toString();
    writeInTransaction(Message.builder().stream(TOPIC).key(key).header("type", "OrderPlaced")
        .data("{\"order\":\"" + key + "\"}").contentType("application/json").build());

    List<ConsumerRecord<String, byte[]>> records =
        TestKafka.get().consume(List.of(TOPIC), 1, WAIT, Duration.ZERO);
    ConsumerRecord<String, byte[]> record = records.stream()
        .filter(r -> key.equals(r.key())).findFirst().orElseThrow();
    assertThat(new String(record.value(), StandardCharsets.UTF_8)).contains(key);
    assertThat(new String(record.headers().lastHeader("type").value(), StandardCharsets.UTF_8))
        .isEqualTo("OrderPlaced");

    MeterRegistry registry = app.getBean(MeterRegistry.class);
    Poll.until("the published record is counted", WAIT, () -> {
      Counter published = registry.find("outbox.relay.records.published").tag("table", TABLE)
          .counter();
      return published != null && published.count() >= 1;
    });
    Poll.until("the outbox row is deleted after publishing", WAIT,
        () -> TestPostgres.get().queryLong("SELECT count(*) FROM " + TABLE) == 0);
  }

  @Test
  @SuppressWarnings("unchecked")
  void theHealthContributorReportsTheRelay() {
    Poll.until("the outbox health is UP", WAIT,
        () -> get("/actuator/health/outbox").getStatusCode().value() == 200);
    Poll.until("the health shows partitions and backlog", WAIT, () -> {
      Map<String, Object> details = (Map<String, Object>) body(get("/actuator/health/outbox"))
          .get("details");
      return details != null && details.containsKey("partitions") && details.containsKey("backlog");
    });
    Map<String, Object> health = body(get("/actuator/health/outbox"));
    assertThat(health).containsEntry("status", "UP");
    Map<String, Object> details = (Map<String, Object>) health.get("details");
    assertThat(details).containsEntry("state", "running").containsEntry("mode", "PARTITIONED")
        .containsEntry("table", TABLE)
        .containsEntry("partitions", 32); // the only relay on the table owns every partition
    assertThat((Map<String, Object>) details.get("backlog"))
        .containsKeys("rows", "deadLetters")
        .containsEntry("ageThresholdSeconds", 300);
    assertThat((Map<String, Object>) details.get("checks")).containsKeys("database", "kafka");
    // It is part of the application's health.
    assertThat(body(get("/actuator/health"))).containsEntry("status", "UP");
  }

  @Test
  @SuppressWarnings("unchecked")
  void theDeadLetterEndpointListsShowsRedrivesAndDeletes() {
    // A batch Kafka refuses for good (an illegal topic name) and a row that does not decode.
    String refused = Ksuid.generate().toString();
    writeInTransaction(Message.builder().id(refused).stream("no spaces allowed").key("k")
        .data("x").build());
    String poison = Ksuid.generate().toString();
    TestPostgres.get().execute("INSERT INTO " + TABLE + " (batch_id, message_count, raw_data)"
        + " VALUES ('" + poison + "', 1, '\\x00ff00')");
    // The message id is not the batch id: find the batch by its message's stream.
    Poll.until("both are dead-lettered", WAIT, () -> deadLetters().size() >= 2);
    Map<String, Object> refusedLetter = deadLetters().stream()
        .filter(d -> !d.get("batchId").equals(poison)).findFirst().orElseThrow();
    String refusedBatch = (String) refusedLetter.get("batchId");
    assertThat((String) refusedLetter.get("reason")).contains("no spaces allowed");
    assertThat(refusedLetter).containsEntry("messageCount", 1);

    Map<String, Object> shown = body(get("/actuator/outboxdeadletters/" + refusedBatch));
    List<Map<String, Object>> messages = (List<Map<String, Object>>) shown.get("messages");
    assertThat(messages).singleElement().satisfies(m -> {
      assertThat(m).containsEntry("id", refused).containsEntry("stream", "no spaces allowed")
          .containsEntry("key", "k").containsEntry("sizeBytes", 1);
      assertThat(m).doesNotContainKey("data");
    });
    assertThat(shown.get("undecodable")).isNull();
    Map<String, Object> poisonShown = body(get("/actuator/outboxdeadletters/" + poison));
    assertThat((List<?>) poisonShown.get("messages")).isEmpty();
    assertThat((String) poisonShown.get("undecodable")).isNotBlank();

    // Re-drive: back into the outbox; the relay tries it again and dead-letters it again, later.
    Instant firstDeadLettered = Instant.parse((String) refusedLetter.get("deadLetteredAt"));
    Map<String, Object> redriven = http.post().uri("/actuator/outboxdeadletters/" + refusedBatch)
        .retrieve().bodyToMono(JSON).block(WAIT);
    assertThat(redriven).containsEntry("found", true).containsEntry("operation", "redrive");
    Poll.until("the re-driven batch is dead-lettered again", WAIT, () -> {
      ResponseEntity<Map<String, Object>> again = get("/actuator/outboxdeadletters/" + refusedBatch);
      if (again.getStatusCode().value() != 200) {
        return false; // in the outbox right now
      }
      Map<String, Object> letter = (Map<String, Object>) body(again).get("deadLetter");
      return Instant.parse((String) letter.get("deadLetteredAt")).isAfter(firstDeadLettered);
    });

    // Delete: gone for good; a second delete finds nothing.
    assertThat(delete(poison)).containsEntry("found", true).containsEntry("operation", "delete");
    assertThat(get("/actuator/outboxdeadletters/" + poison).getStatusCode())
        .isEqualTo(HttpStatusCode.valueOf(404));
    assertThat(delete(poison)).containsEntry("found", false);
    assertThat(http.post().uri("/actuator/outboxdeadletters/" + poison).retrieve()
        .bodyToMono(JSON).block(WAIT)).containsEntry("found", false);
    assertThat(deadLetters()).extracting(d -> d.get("batchId")).doesNotContain(poison)
        .contains(refusedBatch);
  }

  @SuppressWarnings("unchecked")
  private static List<Map<String, Object>> deadLetters() {
    Map<String, Object> list = body(get("/actuator/outboxdeadletters?limit=100"));
    assertThat(list).containsEntry("table", TABLE + "_dead_letter");
    return (List<Map<String, Object>>) list.get("deadLetters");
  }

  private static Map<String, Object> delete(String batchId) {
    return http.delete().uri("/actuator/outboxdeadletters/" + batchId).retrieve().bodyToMono(JSON)
        .switchIfEmpty(Mono.error(new AssertionError("no body"))).block(WAIT);
  }
}
