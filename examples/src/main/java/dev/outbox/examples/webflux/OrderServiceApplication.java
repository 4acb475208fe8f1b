package dev.outbox.examples.webflux;

import io.r2dbc.spi.ConnectionFactory;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.context.annotation.Bean;
import org.springframework.r2dbc.core.DatabaseClient;

/**
 * A WebFlux order service: {@code POST /orders} inserts an order and writes its {@code
 * OrderPlaced} message in the same R2DBC transaction. The outbox writer and the embedded relay
 * come from {@code outbox-spring-boot-starter}; this class adds nothing for them.
 *
 * <p>Configuration: {@code spring.r2dbc.url} (the database), {@code spring.kafka.bootstrap-servers}
 * (read by the relay), {@code outbox.*} (see {@code application.properties}), {@code
 * orders.topic} (default {@code orders}). {@code schema.sql} creates the {@code orders} table.
 */
@SpringBootApplication
public class OrderServiceApplication {

  public static void main(String[] args) {
    SpringApplication.run(OrderServiceApplication.class, args);
  }

  @Bean
  DatabaseClient databaseClient(ConnectionFactory connectionFactory) {
    return DatabaseClient.create(connectionFactory);
  }
}
