package dev.outbox.relay;

import java.time.Duration;
import java.util.List;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * Where claimed batches come from: the claim loop (PARALLEL, ORDERED) or the WAL follower. A
 * source only produces batches, each already registered in the {@link Ledger}; sending and
 * settling are the pipeline's and the {@link Settler}'s.
 */
interface BatchSource {

  /**
   * Claimed batches until {@link #stop()}, in groups handed over together (a claim's answer, a
   * unit of one key), each non-empty and in send order; then completes (a batch already emitted
   * is still sent and settled). May be subscribed again after an error (the pipeline restarts).
   * Groups, not single batches: the pipeline's per-item work (a scheduler hop, a decode step) is
   * paid once a group, not once a row.
   */
  Flux<List<BatchInFlight>> batches();

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
