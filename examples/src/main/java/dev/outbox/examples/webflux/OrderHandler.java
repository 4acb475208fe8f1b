package dev.outbox.examples.webflux;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import io.r2dbc.spi.Connection;
import io.r2dbc.spi.ConnectionFactory;
import io.r2dbc.spi.R2dbcDataIntegrityViolationException;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import dev.outbox.r2dbc.Ksuid;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.dao.DataIntegrityViolationException;
import org.springframework.http.HttpStatus;
import org.springframework.r2dbc.core.DatabaseClient;
import org.springframework.transaction.reactive.TransactionalOperator;
import org.springframework.web.reactive.function.server.RouterFunction;
import org.springframework.web.reactive.function.server.RouterFunctions;
import org.springframework.web.reactive.function.server.ServerRequest;
import org.springframework.web.reactive.function.server.ServerResponse;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * {@code POST /orders} and {@code POST /orders/plain}: insert an order and write its {@code
 * OrderPlaced} message atomically, two ways.
 */
@Configuration
class OrderHandler {
  /** The request body. */
  record PlaceOrder(String customer, long totalCents) {}

  private final DatabaseClient database;
  private final ConnectionFactory connectionFactory;
  private final TransactionalOperator transactions;
  private final OutboxWriter writer;
  private final String topic;

  OrderHandler(DatabaseClient database, ConnectionFactory connectionFactory,
      TransactionalOperator transactions, OutboxWriter writer,
      @Value("${orders.topic:orders}") String topic) {
    this.database = database;
    this.connectionFactory = connectionFactory;
    this.transactions = transactions;
    this.writer = writer;
    this.topic = topic;
  }

  @Bean
  RouterFunction<ServerResponse> orderRoutes() {
    return RouterFunctions.route()
        .POST("/orders", this::placeWithSpringTransaction)
        .POST("/orders/plain", this::placeWithPlainTransaction)
        .build();
  }

  /** Spring manages the transaction; the writer finds Spring's connection by itself. */
  Mono<ServerResponse> placeWithSpringTransaction(ServerRequest request) {
    return request.bodyToMono(PlaceOrder.class).flatMap(order -> {
      String id = Ksuid.generate().toString(); // UUID.randomUUID() would read /dev/urandom on the event loop
      Mono<Void> work = database
          .sql("INSERT INTO orders (id, customer, total_cents) VALUES (:id, :customer, :total)")
          .bind("id", id).bind("customer", order.customer()).bind("total", order.totalCents())
          .then()
          .then(writer.write(orderPlaced(id, order)));
      return respond(id, transactions.transactional(work));
    });
  }

  /** No framework: OutboxTransactions binds the connection for the writer. */
  Mono<ServerResponse> placeWithPlainTransaction(ServerRequest request) {
    return request.bodyToMono(PlaceOrder.class).flatMap(order -> {
      String id = Ksuid.generate().toString(); // UUID.randomUUID() would read /dev/urandom on the event loop
      Mono<Void> work = OutboxTransactions.inTransaction(connectionFactory, connection ->
          insert(connection, id, order).then(writer.write(orderPlaced(id, order))));
      return respond(id, work);
    });
  }

  private static Mono<Void> insert(Connection connection, String id, PlaceOrder order) {
    return Flux.from(connection
            .createStatement("INSERT INTO orders (id, customer, total_cents) VALUES ($1, $2, $3)")
            .bind(0, id).bind(1, order.customer()).bind(2, order.totalCents())
            .execute())
        .concatMap(result -> result.getRowsUpdated())
        .then();
  }

  private Message orderPlaced(String id, PlaceOrder order) {
    return Message.builder()
        .stream(topic)
        .key(id)
        .header("type", "OrderPlaced")
        .contentType("application/json")
        .data(("{\"orderId\":\"" + id + "\",\"customer\":\"" + order.customer().replace("\"", "")
            + "\",\"totalCents\":" + order.totalCents() + "}").getBytes(StandardCharsets.UTF_8))
        .build();
  }

  private static Mono<ServerResponse> respond(String id, Mono<Void> work) {
    return work
        .then(ServerResponse.status(HttpStatus.CREATED).bodyValue(Map.of("orderId", id)))
        .onErrorResume(e -> e instanceof DataIntegrityViolationException
                || e instanceof R2dbcDataIntegrityViolationException,
            e -> ServerResponse.unprocessableEntity()
                .bodyValue(Map.of("error", "order rejected by the database: " + e.getMessage())));
  }
}
