package dev.outbox.relay;

import java.time.Duration;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/** A running relay, from {@link OutboxRelay#start()}. Thread-safe. */
public interface RelayHandle {

  /**
   * What the relay does with each batch, as it happens; completes when the relay has stopped.
   * Hot and best-effort: subscribe before the work you want to observe ({@link
   * OutboxRelay#outcomes()} before starting), and request without bound (a subscriber that does not keep up
   * misses outcomes; the relay never waits for it).
   */
  Flux<RelayOutcome> outcomes();

  /** Records claimed and not yet settled, now. */
  long inFlightRecords();

  /**
   * The last answer of the relay's periodic health checks (see {@link RelayHealth}); DOWN before
   * the first check completes and once stopped. Never blocks.
   */
  RelayHealth health();

  /**
   * Stops the relay: no more claims, then waits for records already handed to Kafka to be
   * acknowledged and settled; whatever is not settled when {@code drain} is nearly spent is
   * abandoned and its leases released, so other relays can take it at once. Completes within
   * about {@code drain}. Idempotent.
   */
  Mono<Void> stop(Duration drain);
}
