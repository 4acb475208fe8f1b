package dev.outbox.relay;

/** How relay instances share one outbox table. */
public enum RelayMode {
  /**
   * Any number of relays claim disjoint batches ({@code FOR UPDATE SKIP LOCKED} with leases).
   * Records of one key keep their order within a batch; there is no order across batches.
   */
  PARALLEL,
}
