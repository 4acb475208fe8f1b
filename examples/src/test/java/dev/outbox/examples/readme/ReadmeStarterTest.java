package dev.outbox.examples.readme;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.testing.Poll;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.spi.ConnectionFactory;
import java.io.IOException;
import java.io.InputStream;
import java.time.Duration;
import java.util.List;
import java.util.Properties;
import java.util.UUID;
import org.junit.jupiter.api.Test;
import org.springframework.boot.SpringBootConfiguration;
import org.springframework.boot.WebApplicationType;
import org.springframework.boot.autoconfigure.EnableAutoConfiguration;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Import;
import org.springframework.r2dbc.core.DatabaseClient;
import org.springframework.stereotype.Service;
import org.springframework.transaction.annotation.Transactional;
import reactor.core.publisher.Mono;

/**
 * README "Spring Boot": the service and the properties shown there, in a Boot application with
 * the starter, on PostgreSQL and Kafka.
 */
class ReadmeStarterTest {
  private final ReadmeServers servers = ReadmeServers.get();

  // tag::starter[]
  @Service
  static class OrderService {
    private final DatabaseClient database;
    private final OutboxWriter outbox;                         // from the starter

    OrderService(DatabaseClient database, OutboxWriter outbox) {
      this.database = database;
      this.outbox = outbox;
    }

    @Transactional                                             // or TransactionalOperator
    public Mono<Void> placeOrder(Order order) {
      return database.sql("INSERT INTO orders (id) VALUES (:id)").bind("id", order.id())
          .then()
          .then(outbox.write(Message.builder().stream("orders").key(order.id())
              .contentType("application/json").data(order.toJson()).build()));
    }
  }
  // end::starter[]

  @SpringBootConfiguration
  @EnableAutoConfiguration
  @Import(OrderService.class)
  static class App {
    @Bean
    DatabaseClient databaseClient(ConnectionFactory connectionFactory) {
      return DatabaseClient.create(connectionFactory);
    }
  }

  private static Properties readmeProperties() throws IOException {
    Properties properties = new Properties();
    try (InputStream in = ReadmeStarterTest.class.getResourceAsStream("/readme/starter.properties")) {
      properties.load(in);
    }
    return properties;
  }

  @Test
  void theServicesOrderAndItsEventCommitTogetherAndTheRelayPublishesIt() throws IOException {
    String url = TestPostgres.get().url();
    Properties readme = readmeProperties();
    assertThat(readme).containsEntry("outbox.table", "order_outbox")
        .containsKey("spring.kafka.bootstrap-servers");
    try (ConfigurableApplicationContext app = new SpringApplicationBuilder(App.class)
        .web(WebApplicationType.NONE)
        .properties(readme) // the README's settings, with the test's servers over them:
        .run("--spring.r2dbc.url=" + url + (url.contains("?") ? "&" : "?") + "schema="
                + servers.schema,
            "--spring.kafka.bootstrap-servers=" + TestKafka.get().bootstrapServers(),
            "--spring.main.banner-mode=off")) {
      OrderService orders = app.getBean(OrderService.class);
      Order order = new Order(UUID.randomUUID().toString(), "dora");

      orders.placeOrder(order).block(Duration.ofSeconds(10));
      Poll.until("the order's event is published", Duration.ofSeconds(30),
          () -> TestKafka.get().consume(List.of(ReadmeServers.TOPIC), 1_000,
                  Duration.ofMillis(500), Duration.ZERO)
              .stream().anyMatch(r -> order.id().equals(r.key())));
      assertThat(servers.count("SELECT count(*) FROM {schema}.orders WHERE id = '" + order.id()
          + "'")).isEqualTo(1);

      // The same order again: the insert fails, and the transaction with it.
      assertThatThrownBy(() -> orders.placeOrder(order).block(Duration.ofSeconds(10)))
          .hasMessageContaining("duplicate key");
    }
  }
}
