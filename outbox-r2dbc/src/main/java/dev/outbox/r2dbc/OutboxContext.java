package dev.outbox.r2dbc;

import io.r2dbc.spi.Connection;
import java.util.Objects;
import java.util.Optional;
import java.util.function.Function;
import reactor.util.context.Context;
import reactor.util.context.ContextView;

/**
 * Binds the connection of the business transaction into the Reactor {@link Context}, where
 * {@link OutboxWriter#write} finds it.
 *
 * <pre>{@code
 * Mono.from(connection.beginTransaction())
 *     .then(insertOrder(connection, order))
 *     .then(writer.write(orderPlaced(order)))
 *     .contextWrite(OutboxContext.withConnection(connection))
 *     ...
 * }</pre>
 *
 * <p>The key is private to this library, so nothing else can bind or overwrite it by accident.
 */
public final class OutboxContext {
  private static final Object CONNECTION_KEY = new Object() {
    @Override
    public String toString() {
      return "dev.outbox.r2dbc.OutboxContext.CONNECTION";
    }
  };

  private OutboxContext() {}

  /** A function for {@code contextWrite} that binds {@code connection}. */
  public static Function<Context, Context> withConnection(Connection connection) {
    Objects.requireNonNull(connection, "connection");
    return context -> context.put(CONNECTION_KEY, connection);
  }

  /** The connection bound by {@link #withConnection}, if any. */
  public static Optional<Connection> boundConnection(ContextView context) {
    return context.getOrEmpty(CONNECTION_KEY);
  }
}
