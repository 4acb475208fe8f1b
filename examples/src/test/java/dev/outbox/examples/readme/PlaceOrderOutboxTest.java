package dev.outbox.examples.readme;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.examples.webflux.OrderServiceApplication;
import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.test.OutboxTestSupport;
import dev.outbox.test.OutboxTransaction;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.spi.ConnectionFactory;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.springframework.beans.factory.annotation.Autowired;
import org.springframework.boot.test.context.SpringBootTest;
import org.springframework.boot.test.web.server.LocalServerPort;
import org.springframework.test.context.DynamicPropertyRegistry;
import org.springframework.test.context.DynamicPropertySource;
import org.springframework.test.web.reactive.server.WebTestClient;

/**
 * README "Testing your code": the example service's own test of what it writes to the outbox,
 * with the relay off and no Kafka.
 */
// tag::testing[]
@SpringBootTest(classes = OrderServiceApplication.class,
    webEnvironment = SpringBootTest.WebEnvironment.RANDOM_PORT,
    properties = "outbox.relay.enabled=false")                 // no relay, no Kafka: rows stay
class PlaceOrderOutboxTest {
  @DynamicPropertySource
  static void database(DynamicPropertyRegistry registry) {    // here the harness's PostgreSQL
    registry.add("spring.r2dbc.url", () -> TestPostgres.get().url());
  }

  @Autowired ConnectionFactory connectionFactory;
  @Autowired OutboxTable table;                               // the starter's (outbox.table)
  @LocalServerPort int port;
  OutboxTestSupport outbox;

  @BeforeEach
  void emptyOutbox() {
    outbox = OutboxTestSupport.of(connectionFactory, table);
    outbox.clear().block(Duration.ofSeconds(10));
  }

  @Test
  void placingAnOrderWritesOneOrderPlacedMessageInItsTransaction() {
    Map<?, ?> created = WebTestClient.bindToServer().baseUrl("http://localhost:" + port).build()
        .post().uri("/orders").bodyValue(Map.of("customer", "alice", "totalCents", 4200))
        .exchange()
        .expectStatus().isCreated()
        .expectBody(Map.class).returnResult().getResponseBody();
    String orderId = String.valueOf(created.get("orderId"));

    List<OutboxTransaction> written = outbox.transactions().block(Duration.ofSeconds(10));
    assertThat(written).hasSize(1);                           // one transaction ...
    assertThat(written.get(0).messages()).hasSize(1);         // ... with one message
    Message placed = written.get(0).messages().get(0);
    assertThat(placed.stream()).isEqualTo("orders");
    assertThat(placed.key()).hasValue(orderId);
    assertThat(placed.headers()).containsEntry("type", "OrderPlaced");
    assertThat(placed.contentType()).isEqualTo("application/json");
    assertThat(OutboxTestSupport.text(placed))
        .contains("\"orderId\":\"" + orderId + "\"", "\"customer\":\"alice\"", "\"totalCents\":4200");
  }

  @Test
  void aRejectedOrderWritesNothing() {
    WebTestClient.bindToServer().baseUrl("http://localhost:" + port).build()
        .post().uri("/orders").bodyValue(Map.of("customer", "mallory", "totalCents", -5))
        .exchange()
        .expectStatus().isEqualTo(422);

    assertThat(outbox.messages().block(Duration.ofSeconds(10))).isEmpty();
  }
}
// end::testing[]
