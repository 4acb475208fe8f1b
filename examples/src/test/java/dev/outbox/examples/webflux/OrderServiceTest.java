package dev.outbox.examples.webflux;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.testing.Poll;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.junit.jupiter.api.Test;
import org.springframework.boot.test.context.SpringBootTest;
import org.springframework.boot.test.web.server.LocalServerPort;
import org.springframework.test.context.DynamicPropertyRegistry;
import org.springframework.test.context.DynamicPropertySource;
import org.springframework.test.web.reactive.server.WebTestClient;

/** The example service on real PostgreSQL and Kafka, through HTTP. */
@SpringBootTest(webEnvironment = SpringBootTest.WebEnvironment.RANDOM_PORT)
class OrderServiceTest {
  private static final String TABLE = TestPostgres.uniqueName("order_outbox");
  private static final String TOPIC = TestPostgres.uniqueName("orders");

  @LocalServerPort
  int port;

  @DynamicPropertySource
  static void servers(DynamicPropertyRegistry registry) {
    TestKafka.get().createTopic(TOPIC, 3);
    registry.add("spring.r2dbc.url", () -> TestPostgres.get().url());
    registry.add("spring.kafka.bootstrap-servers", () -> TestKafka.get().bootstrapServers());
    registry.add("outbox.table", () -> TABLE);
    registry.add("orders.topic", () -> TOPIC);
  }

  private WebTestClient client() {
    return WebTestClient.bindToServer().baseUrl("http://localhost:" + port)
        .responseTimeout(Duration.ofSeconds(30)).build();
  }

  private String place(String path, String customer, long totalCents, int expectedStatus) {
    Map<?, ?> body = client().post().uri(path)
        .bodyValue(Map.of("customer", customer, "totalCents", totalCents))
        .exchange()
        .expectStatus().isEqualTo(expectedStatus)
        .expectBody(Map.class).returnResult().getResponseBody();
    assertThat(body).isNotNull();
    return String.valueOf(body.get("orderId"));
  }

  private List<ConsumerRecord<String, byte[]>> eventsFor(String customer, int expected, Duration wait) {
    return TestKafka.get().consume(List.of(TOPIC), 1_000, wait, Duration.ZERO).stream()
        .filter(r -> new String(r.value(), StandardCharsets.UTF_8).contains("\"customer\":\"" + customer + "\""))
        .toList();
  }

  @Test
  void anOrderPlacedInASpringTransactionBecomesAKafkaEvent() {
    String orderId = place("/orders", "alice", 4_200, 201);

    Poll.until("the order event is published", Duration.ofSeconds(30),
        () -> !eventsFor("alice", 1, Duration.ofMillis(500)).isEmpty());
    ConsumerRecord<String, byte[]> event = eventsFor("alice", 1, Duration.ofSeconds(5)).get(0);
    assertThat(event.key()).isEqualTo(orderId);
    assertThat(new String(event.value(), StandardCharsets.UTF_8)).contains("\"totalCents\":4200");
    assertThat(new String(event.headers().lastHeader("type").value(), StandardCharsets.UTF_8))
        .isEqualTo("OrderPlaced");
    assertThat(TestPostgres.get().queryLong("SELECT count(*) FROM orders WHERE id = '" + orderId + "'"))
        .isEqualTo(1);
  }

  @Test
  void anOrderPlacedInAPlainTransactionBecomesAKafkaEvent() {
    String orderId = place("/orders/plain", "bob", 1_500, 201);

    Poll.until("the order event is published", Duration.ofSeconds(30),
        () -> !eventsFor("bob", 1, Duration.ofMillis(500)).isEmpty());
    assertThat(eventsFor("bob", 1, Duration.ofSeconds(5)).get(0).key()).isEqualTo(orderId);
  }

  @Test
  void aFailingBusinessInsertLeavesNoOrderNoOutboxRowAndNoEvent() {
    client().post().uri("/orders").bodyValue(Map.of("customer", "mallory", "totalCents", -5))
        .exchange().expectStatus().isEqualTo(422);
    client().post().uri("/orders/plain").bodyValue(Map.of("customer", "mallory", "totalCents", 0))
        .exchange().expectStatus().isEqualTo(422);
    // A good order after the bad ones: once its event is out, the bad ones would have been too.
    place("/orders", "carol", 100, 201);
    Poll.until("the later good order is published", Duration.ofSeconds(30),
        () -> !eventsFor("carol", 1, Duration.ofMillis(500)).isEmpty());

    assertThat(eventsFor("mallory", 0, Duration.ofSeconds(2))).isEmpty();
    assertThat(TestPostgres.get().queryLong("SELECT count(*) FROM orders WHERE customer = 'mallory'"))
        .isZero();
    Poll.until("no outbox row is left", Duration.ofSeconds(10),
        () -> TestPostgres.get().queryLong("SELECT count(*) FROM " + TABLE) == 0);
  }
}
