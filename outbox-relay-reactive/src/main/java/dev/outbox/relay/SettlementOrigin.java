package dev.outbox.relay;

import io.r2dbc.pool.ConnectionPool;
import io.r2dbc.pool.ConnectionPoolConfiguration;
import io.r2dbc.spi.Connection;
import io.r2dbc.spi.ConnectionFactory;
import io.r2dbc.spi.ConnectionFactoryMetadata;
import io.r2dbc.spi.R2dbcException;
import java.time.Duration;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * WAL mode's settlement connection: one connection of the relay's own (from the driver, in a
 * pool of one that only this class uses) whose session carries a replication origin, so that its
 * {@code DELETE}s are marked in the log as the relay's, and a slot streamed with {@code origin
 * 'none'} ({@link WalFollower}) leaves them out. Without it the walsender decoded every row the
 * relay deleted into its reorder buffer and sent it back as a frame of its own, which the relay
 * then read and ignored (one frame in four of a drain of single-row transactions).
 *
 * <p>The pool of one queues the relay's statements (r2dbc-postgresql's statement cache is not
 * made for concurrent use of one connection), gives up a connection {@code Sql} closed under a
 * timeout and opens the next with the origin set up again. Only for {@code RelayStore#deleteAll}:
 * a connection with an origin must never carry a writer's insert (the slot would leave it out).
 * Whenever the origin cannot be set up (PostgreSQL before 16 has no such filter; the functions
 * are for superusers unless granted; every origin state is taken, see {@code
 * max_replication_slots}; another relay holds it), statements go to {@code fallback} for a minute
 * and the relay's deletes are streamed back as before: correct, only dearer. Thread-safe.
 */
final class SettlementOrigin implements ConnectionFactory {
  private static final Logger log = LoggerFactory.getLogger(SettlementOrigin.class);

  /** Every origin a relay creates is named with this prefix (what {@link WalFollower} skips). */
  static final String PREFIX = "outbox-relay:";
  private static final Duration RETRY_AFTER = Duration.ofMinutes(1);

  private final ConnectionFactory unpooled;
  private final ConnectionFactory fallback;
  private final String origin;
  private final String instanceId;
  private final ConnectionPool pool;
  private volatile long unavailableUntil = System.nanoTime();
  private volatile boolean warned;
  private volatile boolean closed;

  /**
   * @param unpooled the driver's factory, behind every wrapper
   * @param fallback where statements go while the origin cannot be used (the relay's pool)
   * @param slot the relay's slot: its origin is {@link #PREFIX} + {@code slot}
   * @param acquireTimeout how long a statement may wait for the connection
   */
  SettlementOrigin(ConnectionFactory unpooled, ConnectionFactory fallback, String slot,
      String instanceId, Duration acquireTimeout) {
    this.unpooled = unpooled;
    this.fallback = fallback;
    this.origin = PREFIX + slot;
    this.instanceId = instanceId;
    this.pool = new ConnectionPool(ConnectionPoolConfiguration.builder(unpooled)
        .name("outbox-relay-settlement-" + instanceId)
        .initialSize(0)
        .minIdle(0)
        .maxSize(1)
        .acquireRetry(0)
        .maxAcquireTime(acquireTimeout)
        .postAllocate(this::setUp)
        .build());
  }

  @Override
  public Mono<Connection> create() {
    if (closed || System.nanoTime() - unavailableUntil < 0) {
      return Mono.from(fallback.create());
    }
    return pool.create().map(c -> (Connection) c).onErrorResume(error -> {
      unavailable(error);
      return Mono.from(fallback.create());
    });
  }

  /** Sets this relay's origin up in a new connection's session (creating it when missing). */
  private Mono<Void> setUp(Connection c) {
    return run(c, "SELECT pg_replication_origin_create($1) WHERE pg_replication_origin_oid($1) IS NULL")
        // Created meanwhile by another start on this slot: there it is.
        .onErrorResume(e -> e instanceof R2dbcException r && "23505".equals(r.getSqlState()),
            e -> Mono.empty())
        // r2dbc-pool runs this on every acquire, not only after allocating: once per session.
        .then(run(c, "SELECT pg_replication_origin_session_setup($1)"
            + " WHERE NOT pg_replication_origin_session_is_setup()"));
  }

  private Mono<Void> run(Connection c, String sql) {
    return Flux.from(c.createStatement(sql).bind("$1", origin).execute())
        .concatMap(r -> r.map((row, meta) -> 1))
        .then();
  }

  private void unavailable(Throwable error) {
    unavailableUntil = System.nanoTime() + RETRY_AFTER.toNanos();
    String message = "Outbox relay {} cannot mark its DELETEs with replication origin {} ({});"
        + " they are streamed back to it from the slot (correct, but dearer); it tries again in"
        + " a minute. On PostgreSQL 16 or later, a superuser can let the relay's user mark them:"
        + " GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text),"
        + " pg_replication_origin_session_setup(text) TO that user";
    if (!warned) {
      warned = true;
      log.warn(message, instanceId, origin, error.toString());
    } else {
      log.debug(message, instanceId, origin, error.toString());
    }
  }

  /**
   * Closes the connection and then drops the origin (which frees the origin state it holds on
   * the server, one of {@code max_replication_slots}), in the background, errors logged and
   * ignored. Later calls of {@link #create} use the fallback.
   */
  void close() {
    closed = true;
    pool.disposeLater()
        .onErrorResume(e -> Mono.empty())
        .then(Mono.usingWhen(unpooled.create(),
            c -> run(c, "SELECT pg_replication_origin_drop($1)"
                + " WHERE pg_replication_origin_oid($1) IS NOT NULL"),
            Connection::close))
        .subscribe(done -> { }, error -> log.debug("Outbox relay {} left replication origin {}"
            + " (a later start on its slot uses it again): {}", instanceId, origin, error.toString()));
  }

  @Override
  public ConnectionFactoryMetadata getMetadata() {
    return unpooled.getMetadata();
  }
}
