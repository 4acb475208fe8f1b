package dev.outbox.spring;

import dev.outbox.r2dbc.ConnectionResolver;
import io.r2dbc.spi.Connection;
import io.r2dbc.spi.ConnectionFactory;
import java.util.Objects;
import org.jspecify.annotations.Nullable;
import org.springframework.r2dbc.connection.ConnectionHolder;
import org.springframework.transaction.NoTransactionException;
import org.springframework.transaction.reactive.TransactionSynchronizationManager;
import reactor.core.publisher.Mono;
import reactor.util.context.ContextView;

/**
 * Finds the connection of the Spring-managed reactive transaction ({@code TransactionalOperator}
 * or {@code @Transactional} with {@code R2dbcTransactionManager}) for {@link
 * dev.outbox.r2dbc.OutboxWriter}, so
 * {@code writer.write(...)} joins that transaction without any {@code contextWrite}.
 *
 * <pre>{@code
 * ConnectionPool pool = ...;                       // the one R2dbcTransactionManager uses
 * TransactionalOperator tx = TransactionalOperator.create(new R2dbcTransactionManager(pool));
 * OutboxWriter writer = OutboxWriter.builder()
 *     .table(OutboxTable.of("order_outbox"))
 *     .connectionResolver(SpringTransactionConnectionResolver.create(pool))
 *     .build();
 *
 * Mono<Void> placeOrder(Order order) {
 *   return databaseClient.sql("INSERT INTO orders (id) VALUES (:id)").bind("id", order.id())
 *       .then()
 *       .then(writer.write(orderPlaced(order)))
 *       .as(tx::transactional);                    // one transaction, one connection
 * }
 * }</pre>
 *
 * <p>Spring keeps the transaction's connection in a {@code ConnectionHolder} bound, in its own
 * Reactor Context entry, to the {@link ConnectionFactory} of the transaction manager. {@link
 * #resolve} returns that connection when Spring has an actual transaction active and the
 * connection is in a transaction (not in auto-commit), and completes empty otherwise: no Spring
 * transaction in the Context ({@code NoTransactionException}), none for this factory, or a
 * Spring scope without a real transaction (such as {@code PROPAGATION_SUPPORTS} or {@code
 * NOT_SUPPORTED}). It never opens a connection and never blocks. A connection bound with {@link
 * dev.outbox.r2dbc.OutboxContext#withConnection} still wins: the writer asks resolvers only
 * when none is bound.
 *
 * <p><b>Same factory instance.</b> Spring binds the connection under the exact {@code
 * ConnectionFactory} object given to {@code R2dbcTransactionManager}; give this resolver that
 * same instance (for example the {@code ConnectionFactory} bean). Another instance over the same
 * database, even an equal one, finds nothing, and the writer then fails with {@link
 * dev.outbox.r2dbc.MissingConnectionException}.
 *
 * <p>Instances are immutable and thread-safe.
 *
 * @see dev.outbox.r2dbc.OutboxWriter.Builder#connectionResolver(ConnectionResolver)
 */
public final class SpringTransactionConnectionResolver implements ConnectionResolver {
  private final ConnectionFactory connectionFactory;

  private SpringTransactionConnectionResolver(ConnectionFactory connectionFactory) {
    this.connectionFactory = connectionFactory;
  }

  /**
   * A resolver for the transactions of the {@code R2dbcTransactionManager} built over {@code
   * connectionFactory}: pass the same instance the transaction manager was given.
   */
  public static SpringTransactionConnectionResolver create(ConnectionFactory connectionFactory) {
    return new SpringTransactionConnectionResolver(
        Objects.requireNonNull(connectionFactory, "connectionFactory"));
  }

  /**
   * The connection of the Spring-managed transaction in {@code context} for this resolver's
   * factory; empty when no such transaction is active.
   */
  @Override
  public Mono<Connection> resolve(ContextView context) {
    Objects.requireNonNull(context, "context");
    return TransactionSynchronizationManager.forCurrentTransaction()
        .filter(TransactionSynchronizationManager::isActualTransactionActive)
        .flatMap(synchronization -> Mono.justOrEmpty(
            transactionalConnection(synchronization.getResource(connectionFactory))))
        .onErrorResume(NoTransactionException.class, none -> Mono.empty())
        .contextWrite(context);
  }

  private static @Nullable Connection transactionalConnection(@Nullable Object resource) {
    if (!(resource instanceof ConnectionHolder holder)) {
      return null;
    }
    Connection connection;
    try {
      connection = holder.getConnection();
    } catch (IllegalStateException released) {
      return null; // a holder whose connection was released (suspended or completing)
    }
    // The holder's own "transaction active" flag is not public. A connection in auto-commit is
    // in no transaction: for example one that DatabaseClient bound for this factory while a
    // transaction of another transaction manager is active.
    return connection.isAutoCommit() ? null : connection;
  }

  @Override
  public String toString() {
    return "SpringTransactionConnectionResolver[" + connectionFactory + "]";
  }
}
