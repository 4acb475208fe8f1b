package dev.outbox.relay;

import reactor.core.publisher.Flux;

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

  /** No more claims. */
  void stop();
}
