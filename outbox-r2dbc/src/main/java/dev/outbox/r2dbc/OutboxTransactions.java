package dev.outbox.r2dbc;

import io.r2dbc.spi.Connection;
import io.r2dbc.spi.ConnectionFactory;
import java.util.function.Function;
import org.reactivestreams.Publisher;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * Runs a unit of work in an R2DBC transaction with the connection bound for {@link OutboxWriter}.
 *
 * <pre>{@code
 * Mono<Order> placed = OutboxTransactions.inTransaction(pool, connection ->
 *     insertOrder(connection, order)
 *         .then(writer.write(orderPlaced(order)))
 *         .thenReturn(order));
 * }</pre>
 *
 * <p>For each subscription: acquire a connection, begin, run the work with the connection bound
 * in the Context, then commit on completion, roll back on error <em>and on cancel</em>, and
 * always close (return to the pool) after the commit or rollback has finished. A failed commit
 * is reported to the subscriber.
 */
public final class OutboxTransactions {
  private OutboxTransactions() {}

  /** Runs {@code work} in a transaction; the result is emitted after the commit. */
  public static <T> Mono<T> inTransaction(
      ConnectionFactory connectionFactory, Function<? super Connection, ? extends Mono<T>> work) {
    return Mono.usingWhen(connectionFactory.create(),
        connection -> Mono.from(connection.beginTransaction())
            .then(Mono.defer(() -> work.apply(connection)))
            .contextWrite(OutboxContext.withConnection(connection)),
        connection -> finish(connection, connection.commitTransaction()),
        (connection, error) -> finish(connection, connection.rollbackTransaction()),
        connection -> finish(connection, connection.rollbackTransaction()));
  }

  /**
   * As {@link #inTransaction}, for work that emits many items. Items are emitted as the work
   * produces them, before the commit; the Flux completes after the commit.
   */
  public static <T> Flux<T> inTransactionMany(ConnectionFactory connectionFactory,
      Function<? super Connection, ? extends Publisher<T>> work) {
    return Flux.usingWhen(connectionFactory.create(),
        connection -> Mono.from(connection.beginTransaction())
            .thenMany(Flux.defer(() -> work.apply(connection)))
            .contextWrite(OutboxContext.withConnection(connection)),
        connection -> finish(connection, connection.commitTransaction()),
        (connection, error) -> finish(connection, connection.rollbackTransaction()),
        connection -> finish(connection, connection.rollbackTransaction()));
  }

  /** Ends the transaction, then closes, also when ending fails (that error still propagates). */
  private static Mono<Void> finish(Connection connection, Publisher<Void> end) {
    Mono<Void> close = Mono.defer(() -> Mono.from(connection.close()));
    return Mono.from(end)
        .onErrorResume(error -> close.then(Mono.error(error)))
        .then(close);
  }
}
