package dev.outbox.relay;

import java.time.Duration;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * Where claimed batches come from: the claim loop (PARALLEL, ORDERED) or the WAL follower. A
 * source only produces batches, each already registered in the {@link Ledger}; sending and
 * settling are the pipeline's and the {@link Settler}'s.
 */
interface BatchSource {

  /**
   * Claimed batches until {@link #stop()}; then completes (a batch already emitted is still
   * sent and settled). May be subscribed again after an error (the pipeline restarts).
   */
  Flux<BatchInFlight> batches();

  /** Room was freed in the ledger: a good moment to claim. */
  default void wake() {}

  /** Called once when the relay starts, before {@link #batches()}. */
  default void open() {}

  /** No more claims. */
  void stop();

  /**
   * After the relay drained and released what it held: gives up what the source owns so that
   * other relays take over at once (PARTITIONED: its partitions). Bounded by {@code timeout}.
   */
  default Mono<Void> handOver(Duration timeout) {
    return Mono.empty();
  }
}
