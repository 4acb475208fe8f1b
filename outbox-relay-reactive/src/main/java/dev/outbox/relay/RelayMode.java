package dev.outbox.relay;

/** How relay instances share one outbox table. */
public enum RelayMode {
  /**
   * Any number of relays claim disjoint batches ({@code FOR UPDATE SKIP LOCKED} with leases).
   * Records of one batch keep their order; there is no order across batches.
   */
  PARALLEL,

  /**
   * One relay per table publishes at a time (a PostgreSQL advisory lock held on a dedicated
   * connection; the others stand by and take over when it is released). Batches go out in
   * insert order among committed transactions (commit watermark), and a batch is held back while
   * an earlier batch with one of its keys is unpublished (in flight or waiting for a retry), so
   * each key's messages arrive in order. Batches with other keys keep flowing.
   */
  ORDERED,
}
