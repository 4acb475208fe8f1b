package dev.outbox.relay;

/** How relay instances share one outbox table. */
public enum RelayMode {
  /**
   * Any number of relays claim disjoint batches ({@code FOR UPDATE SKIP LOCKED} with leases).
   * Records of one batch keep their order; there is no order across batches.
   *
   * @deprecated {@link #PARTITIONED}, the default, also runs any number of relays and keeps
   *     per-key order; kept for deployments that already run this mode
   */
  @Deprecated
  PARALLEL,

  /**
   * One relay per table publishes at a time (a PostgreSQL advisory lock held on a dedicated
   * connection; the others stand by and take over when it is released). Batches go out in
   * insert order among committed transactions (commit watermark), and a batch is held back while
   * an earlier batch with one of its keys is unpublished (in flight or waiting for a retry), so
   * each key's messages arrive in order. Batches with other keys keep flowing.
   *
   * @deprecated {@link #PARTITIONED}, the default, keeps the same per-key order with any number
   *     of relays; kept for deployments that already run this mode
   */
  @Deprecated
  ORDERED,

  /**
   * The relay follows inserts into the outbox table through PostgreSQL logical replication
   * ({@code pgoutput}, a publication on the table's {@code batch_id}, a replication slot) and
   * publishes batches one after another in <em>commit order</em>, confirming each transaction's
   * log position only after its batches are published and settled. After a restart it resumes
   * from the slot: nothing is lost; what was published but not yet confirmed is published again.
   * One relay per slot (the slot is exclusive). No polling: a retriable failure is retried in
   * place, holding back everything after it, until it succeeds or is dead-lettered.
   */
  WAL,

  /**
   * Relays share the table's partitions (32, from each row's first message key, or its batch id
   * when it has none); each live relay owns about 32/n of them, through heartbeats and an owner
   * table in PostgreSQL, rebalanced when relays join or leave. An owner reads its partitions'
   * rows in insert order below the commit watermark and writes nothing to claim them; every
   * settlement is fenced by the partition's epoch, so a relay that lost a partition changes
   * nothing. One batch per key is in flight at a time, and a key waiting for a retry holds only
   * that key back, so each key's messages arrive in order with any number of relays. The
   * default. Requires schema version 3, which {@code OutboxSchema.createIfMissing} applies
   * ({@code OutboxSchema.enablePartitions} upgrades an existing table); see the README for what
   * is not done yet.
   */
  PARTITIONED,
}
