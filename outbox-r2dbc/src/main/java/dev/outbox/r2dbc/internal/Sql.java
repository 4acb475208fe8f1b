package dev.outbox.r2dbc.internal;

import io.r2dbc.spi.Connection;
import io.r2dbc.spi.ConnectionFactory;
import io.r2dbc.spi.Readable;
import io.r2dbc.spi.Statement;
import java.util.Objects;
import java.util.function.Function;
import org.jspecify.annotations.Nullable;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * Internal: not part of the public API. One auto-commit statement on a connection taken from a
 * factory (a pool), the connection closed however the statement ends (completion, error,
 * cancellation).
 */
public final class Sql {
  private Sql() {}

  /** Rows of {@code sql}, each mapped. */
  public static <T> Flux<T> query(ConnectionFactory connections, String sql,
      Function<Statement, Statement> binder, Function<Readable, @Nullable T> mapper) {
    return Flux.usingWhen(connections.create(),
        connection -> Flux.from(binder.apply(connection.createStatement(sql)).execute())
            .concatMap(result -> result.map(row -> mapper.apply(row))),
        Connection::close);
  }

  /** How many rows {@code sql} changed. */
  public static Mono<Long> rowsUpdated(ConnectionFactory connections, String sql,
      Function<Statement, Statement> binder) {
    return Mono.usingWhen(connections.create(),
        connection -> Flux.from(binder.apply(connection.createStatement(sql)).execute())
            .concatMap(result -> result.getRowsUpdated())
            .reduce(0L, Long::sum),
        Connection::close);
  }

  /** Whether {@code sql} changed any row. */
  public static Mono<Boolean> updated(ConnectionFactory connections, String sql,
      Function<Statement, Statement> binder) {
    return rowsUpdated(connections, sql, binder).map(rows -> rows > 0);
  }

  /** A non-null {@code byte[]} column. */
  public static byte[] bytes(Readable row, String column) {
    return Objects.requireNonNull(row.get(column, byte[].class), column);
  }
}
