package dev.outbox.relay;

import io.r2dbc.spi.ConnectionFactory;
import io.r2dbc.spi.Wrapped;
import java.util.Objects;
import java.util.concurrent.atomic.AtomicBoolean;
import reactor.core.publisher.Flux;

/**
 * Publishes committed outbox batches to Kafka: claims due batches under a lease, streams their
 * records through a backpressured pipeline into the {@link RecordSink}, then deletes each batch
 * once every record is acknowledged, schedules a retry, or dead-letters it.
 *
 * <pre>{@code
 * OutboxRelay relay = OutboxRelay.create(connectionPool, RelayOptions.builder()
 *     .table(OutboxTable.of("order_outbox"))
 *     .kafka(Map.of("bootstrap.servers", "localhost:9092"))
 *     .build());
 * relay.outcomes().subscribe(outcome -> log.debug("{}", outcome));   // before start: miss nothing
 * RelayHandle running = relay.start();
 * ...
 * running.stop(Duration.ofSeconds(10)).block();   // on shutdown
 * }</pre>
 *
 * <p>Delivery is at least once: a record may be published more than once (after a lost lease, a
 * failed settlement or a crash), never lost. Consumers deduplicate on the {@code message_id}
 * header. An instance runs once: {@link #start()} may be called once; create another instance to
 * run again. Thread-safe.
 */
public final class OutboxRelay {
  private final ConnectionFactory connections;
  private final RelayOptions options;
  private final Outcomes outcomes;
  private final AtomicBoolean started = new AtomicBoolean();

  private OutboxRelay(ConnectionFactory connections, RelayOptions options) {
    this.connections = connections;
    this.options = options.forOneRelay();
    this.outcomes = new Outcomes(options.outcomeBuffer());
  }

  /**
   * @param connections where the outbox table lives; use a pool (the relay runs up to {@code
   *     settleConcurrency + 2} statements at once). The connections the relay holds on its own
   *     (ORDERED mode's leadership lock, WAL mode's replication stream, LISTEN) come from the
   *     factory behind every {@code Wrapped} layer (pool, proxy), not from the pool.
   */
  public static OutboxRelay create(ConnectionFactory connections, RelayOptions options) {
    return new OutboxRelay(Objects.requireNonNull(connections, "connections"),
        Objects.requireNonNull(options, "options"));
  }

  /**
   * The factory behind every wrapper ({@code Wrapped}: r2dbc-pool, r2dbc-proxy, and Spring Boot's
   * {@code OptionsCapableConnectionFactory} around its pool), or the factory itself. One level
   * was not enough: behind Boot's two, WAL mode found a pool, not the driver, and never started.
   */
  static ConnectionFactory unpooled(ConnectionFactory connections) {
    ConnectionFactory factory = connections;
    for (int depth = 0; depth < MAX_WRAPPERS; depth++) {
      if (!(factory instanceof Wrapped<?> wrapped && wrapped.unwrap() instanceof ConnectionFactory inner)
          || inner == factory) {
        break;
      }
      factory = inner;
    }
    return factory;
  }

  /** Wrappers unwrapped at most (a guard against a wrapper that unwraps to a cycle). */
  private static final int MAX_WRAPPERS = 16;

  public RelayOptions options() {
    return options;
  }

  /** Same as {@link RelayHandle#outcomes()}; subscribe before {@link #start()} to see everything. */
  public Flux<RelayOutcome> outcomes() {
    return outcomes.flux();
  }

  /**
   * Starts relaying in the background; returns at once.
   *
   * @throws IllegalStateException when called a second time
   */
  public RelayHandle start() {
    if (!started.compareAndSet(false, true)) {
      throw new IllegalStateException("This OutboxRelay was already started; create a new one");
    }
    return RunningRelay.start(connections, unpooled(connections), options, outcomes);
  }
}
