package dev.outbox.r2dbc.internal;

import io.r2dbc.spi.Connection;
import io.r2dbc.spi.ConnectionFactory;
import io.r2dbc.spi.R2dbcTimeoutException;
import io.r2dbc.spi.Readable;
import io.r2dbc.spi.Statement;
import io.r2dbc.spi.Wrapped;
import java.time.Duration;
import java.util.Objects;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Function;
import org.jspecify.annotations.Nullable;
import org.reactivestreams.Publisher;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.Disposable;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.publisher.Sinks;
import reactor.core.scheduler.Schedulers;

/**
 * Internal: not part of the public API. One auto-commit statement on a connection taken from a
 * factory (a pool), the connection closed however the statement ends (completion, error,
 * cancellation).
 *
 * <p><b>Statement timeout.</b> Every statement has a deadline (from execution to its last row;
 * waiting for a pooled connection is the pool's {@code maxAcquireTime}). When it passes, the
 * statement fails with {@link R2dbcTimeoutException} and its connection is <em>given up</em>
 * rather than returned for reuse: r2dbc-postgresql keeps a cancelled exchange queued on its
 * connection until the server answers, so a connection whose server (or network) went silent
 * would otherwise go back to the pool and hang every statement that is given it next. Giving
 * up means closing the physical connection first (for a pooled connection, the one {@link
 * Wrapped#unwrap()} returns) and then the handle: r2dbc-pool validates a released connection
 * ({@code ValidationDepth.LOCAL}), finds it closed and invalidates it, so the pool drops it and
 * opens a new one when needed. The same happens when the statement is cancelled before the
 * server has answered anything (a caller's own timeout, a stop); a statement cancelled after
 * rows have arrived (for example by {@code next()}) is on a live connection, which goes back to
 * the pool as usual.
 */
public final class Sql {
  /** The statement timeout when none is given. */
  public static final Duration DEFAULT_STATEMENT_TIMEOUT = Duration.ofSeconds(30);
  /** How long giving up a connection may take before it is left to the pool as it is. */
  private static final Duration CLOSE_TIMEOUT = Duration.ofSeconds(5);
  private static final int SQL_IN_MESSAGES = 80;

  private static final Logger log = LoggerFactory.getLogger(Sql.class);

  private Sql() {}

  /** Rows of {@code sql}, each mapped, within {@link #DEFAULT_STATEMENT_TIMEOUT}. */
  public static <T> Flux<T> query(ConnectionFactory connections, String sql,
      Function<Statement, Statement> binder, Function<Readable, @Nullable T> mapper) {
    return query(connections, DEFAULT_STATEMENT_TIMEOUT, sql, binder, mapper);
  }

  /** Rows of {@code sql}, each mapped, within {@code timeout}. */
  public static <T> Flux<T> query(ConnectionFactory connections, Duration timeout, String sql,
      Function<Statement, Statement> binder, Function<Readable, @Nullable T> mapper) {
    return run(connections, timeout, sql,
        connection -> Flux.from(binder.apply(connection.createStatement(sql)).execute())
            .concatMap(result -> result.map(row -> mapper.apply(row))));
  }

  /** How many rows {@code sql} changed, within {@link #DEFAULT_STATEMENT_TIMEOUT}. */
  public static Mono<Long> rowsUpdated(ConnectionFactory connections, String sql,
      Function<Statement, Statement> binder) {
    return rowsUpdated(connections, DEFAULT_STATEMENT_TIMEOUT, sql, binder);
  }

  /** How many rows {@code sql} changed, within {@code timeout}. */
  public static Mono<Long> rowsUpdated(ConnectionFactory connections, Duration timeout, String sql,
      Function<Statement, Statement> binder) {
    return run(connections, timeout, sql,
        connection -> Flux.from(binder.apply(connection.createStatement(sql)).execute())
            .concatMap(result -> result.getRowsUpdated()))
        .reduce(0L, Long::sum);
  }

  /** Whether {@code sql} changed any row, within {@link #DEFAULT_STATEMENT_TIMEOUT}. */
  public static Mono<Boolean> updated(ConnectionFactory connections, String sql,
      Function<Statement, Statement> binder) {
    return updated(connections, DEFAULT_STATEMENT_TIMEOUT, sql, binder);
  }

  /** Whether {@code sql} changed any row, within {@code timeout}. */
  public static Mono<Boolean> updated(ConnectionFactory connections, Duration timeout, String sql,
      Function<Statement, Statement> binder) {
    return rowsUpdated(connections, timeout, sql, binder).map(rows -> rows > 0);
  }

  /** A non-null {@code byte[]} column. */
  public static byte[] bytes(Readable row, String column) {
    return Objects.requireNonNull(row.get(column, byte[].class), column);
  }

  /** Checks a statement timeout: positive. */
  public static Duration requirePositive(Duration timeout) {
    Objects.requireNonNull(timeout, "statementTimeout");
    if (timeout.isZero() || timeout.isNegative()) {
      throw new IllegalArgumentException("The statement timeout must be positive, was " + timeout);
    }
    return timeout;
  }

  private static <T> Flux<T> run(ConnectionFactory connections, Duration timeout, String sql,
      Function<Connection, Publisher<T>> statement) {
    return Flux.defer(() -> {
      AtomicBoolean answered = new AtomicBoolean();
      return Flux.usingWhen(connections.create(),
          connection -> withDeadline(Flux.from(statement.apply(connection)), timeout)
              .doOnNext(item -> answered.set(true))
              .onErrorMap(TimeoutException.class, e -> new R2dbcTimeoutException(
                  "No answer within " + timeout.toMillis() + " ms to " + shortened(sql)
                      + " (the connection is given up)", e)),
          Connection::close,
          (connection, error) -> error instanceof R2dbcTimeoutException
              ? giveUp(connection, "timed out") : connection.close(),
          connection -> answered.get() ? connection.close()
              : giveUp(connection, "cancelled before the server answered"));
    });
  }

  /**
   * Fails with {@link TimeoutException} unless {@code rows} completes within {@code timeout}.
   * One timer per statement, not one per row: {@code timeout(Mono.delay(...))} per row scheduled
   * and cancelled a timer task for every row read (async-profiler: ~0.4 µs per row).
   */
  private static <T> Flux<T> withDeadline(Flux<T> rows, Duration timeout) {
    return Flux.defer(() -> {
      Sinks.One<Boolean> passed = Sinks.one();
      Mono<Boolean> deadline = passed.asMono();
      Disposable timer = Schedulers.parallel().schedule(() -> passed.tryEmitValue(true),
          timeout.toNanos(), TimeUnit.NANOSECONDS);
      return rows.timeout(deadline, item -> deadline).doFinally(signal -> timer.dispose());
    });
  }

  /**
   * Closes the physical connection under {@code connection}, then {@code connection} itself, so
   * that a pool drops it instead of handing it out again. Never fails.
   */
  static Mono<Void> giveUp(Connection connection, String why) {
    return Mono.defer(() -> {
      log.warn("Giving up a database connection ({}): it is closed, not reused", why);
      Object physical = connection instanceof Wrapped<?> wrapped ? wrapped.unwrap() : null;
      Mono<Void> closePhysical = physical instanceof Connection inner && inner != connection
          ? Mono.from(inner.close()).timeout(CLOSE_TIMEOUT)
              .onErrorResume(e -> {
                log.debug("Closing the physical connection failed", e);
                return Mono.empty();
              })
          : Mono.empty();
      return closePhysical
          .then(Mono.from(connection.close()))
          .timeout(CLOSE_TIMEOUT)
          .onErrorResume(e -> {
            log.debug("Closing a given-up connection failed", e);
            return Mono.empty();
          });
    });
  }

  private static String shortened(String sql) {
    return sql.length() <= SQL_IN_MESSAGES ? sql : sql.substring(0, SQL_IN_MESSAGES) + "...";
  }
}
