package dev.outbox.examples.webflux;

import dev.outbox.examples.DemoEvents;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.web.server.context.WebServerApplicationContext;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.web.reactive.function.client.WebClient;
import reactor.core.publisher.Flux;

/**
 * The one-command demo: embedded PostgreSQL and Kafka (or the servers named by {@code
 * OUTBOX_TEST_POSTGRES_URL} / {@code OUTBOX_TEST_KAFKA_BOOTSTRAP}), the WebFlux order service
 * with its embedded relay, N orders placed over HTTP, every event consumed, and a summary. Exits
 * 1 when an event is missing.
 */
public final class OrderServiceDemo {
  private OrderServiceDemo() {}

  public static void main(String[] args) throws Exception {
    int orders = Integer.getInteger("demo.orders", 2000);
    System.out.println("Starting PostgreSQL and Kafka ...");
    TestPostgres postgres = TestPostgres.get();
    TestKafka kafka = TestKafka.get();
    String topic = "orders";
    kafka.createTopic(topic, 3);
    postgres.execute("DROP TABLE IF EXISTS orders", "DROP TABLE IF EXISTS order_outbox",
        "DROP TABLE IF EXISTS order_outbox_dead_letter");

    System.out.println("Starting the order service (WebFlux, relay embedded) ...");
    ConfigurableApplicationContext service = new SpringApplication(OrderServiceApplication.class)
        .run("--server.port=0", "--spring.r2dbc.url=" + postgres.url(),
            "--spring.kafka.bootstrap-servers=" + kafka.bootstrapServers(),
            "--orders.topic=" + topic, "--spring.main.banner-mode=off",
            "--logging.level.root=WARN");
    int port = ((WebServerApplicationContext) service).getWebServer().getPort();
    WebClient http = WebClient.create("http://localhost:" + port);

    DemoEvents events = new DemoEvents(kafka, topic);
    AtomicInteger placed = new AtomicInteger();
    AtomicInteger failed = new AtomicInteger();
    System.out.printf("Placing %d orders through POST http://localhost:%d/orders ...%n", orders, port);
    Flux.range(1, orders)
        .flatMap(i -> http.post().uri("/orders")
            .bodyValue(Map.of("customer", "customer-" + (i % 97), "totalCents", 1_000 + i))
            .retrieve()
            .bodyToMono(Map.class)
            .doOnNext(body -> {
              events.committed(String.valueOf(body.get("orderId")));
              int n = placed.incrementAndGet();
              if (n % Math.max(1, orders / 10) == 0) {
                System.out.printf("  placed %d/%d, consumed %d%n", n, orders, events.consumed());
              }
            })
            .onErrorResume(e -> {
              failed.incrementAndGet();
              System.out.println("  order failed: " + e);
              return reactor.core.publisher.Mono.empty();
            }), 16)
        .blockLast();

    events.awaitAll(placed.get(), Duration.ofMinutes(2));
    events.close();
    service.close(); // stops the relay (drain) and the HTTP server
    long published = postgres.queryLong("SELECT count(*) FROM orders")
        - postgres.queryLong("SELECT count(*) FROM order_outbox");
    long missing = events.printSummary(placed.get(), published);
    kafka.close();
    System.exit(missing == 0 && failed.get() == 0 ? 0 : 1);
  }
}
