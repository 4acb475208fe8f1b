package dev.outbox.relay;

import dev.outbox.r2dbc.BacklogStats;
import java.time.Duration;

/**
 * Receives the relay's measurements. {@link #none()} discards them; {@link
 * MicrometerRelayMetrics} records them as Micrometer meters (Micrometer is an optional
 * dependency: only that class needs it). Implementations must be thread-safe and must not
 * block.
 */
public interface RelayMetrics {

  /** A claim returned {@code batches} batches holding {@code records} records. */
  default void claimed(int batches, int records, Duration latency) {}

  /** Records claimed and not yet settled, now. */
  default void inFlight(long records) {}

  /** Bytes of stored batch data claimed and not yet settled, now. */
  default void inFlightBytes(long bytes) {}

  /** {@code count} outcomes were dropped because an {@code outcomes()} subscriber lagged. */
  default void outcomesDropped(long count) {}

  /** One record was acknowledged {@code latency} after it was handed to the sink. */
  default void published(Duration latency) {}

  /** One record failed. */
  default void failed(boolean fatal) {}

  /** A batch of {@code records} records was dead-lettered. */
  default void deadLettered(int records) {}

  /** This instance became (true) or stopped being (false) the ORDERED leader. */
  default void leadership(boolean leader) {}

  /**
   * PARTITIONED mode, after each ownership round: how many partitions this relay reads now, and
   * how many it acquired in that round (free, handed over, or taken after an owner's expiry).
   */
  default void partitions(int read, int takenOver) {}

  /** A periodic reading of the table. */
  default void backlog(BacklogStats stats) {}

  /** The relay's health checks answered UP (true) or DOWN (false); see {@link RelayHealth}. */
  default void health(boolean up) {}

  /**
   * ORDERED and WAL mode: how long the oldest running transaction that holds publication back
   * has been running ({@link Duration#ZERO} when none is over the threshold).
   */
  default void heldBack(Duration age) {}

  /** WAL mode: whether the replication slot does not exist (yet). */
  default void walSlotMissing(boolean missing) {}

  /**
   * WAL mode: bytes of WAL between the server's current position and the replication slot's
   * confirmed position ({@code pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)}); -1
   * while the slot does not exist. It counts all WAL written since, also that of other tables.
   */
  default void walLagBytes(long bytes) {}

  /**
   * WAL mode: how long the oldest row still in the outbox table has waited (the database's clock
   * minus its {@code insert_time}; {@link Duration#ZERO} when the table is empty). A row is
   * deleted only once its messages are published, and the slot confirms a transaction only
   * after that, so this is how far publication runs behind the writers, in time.
   */
  default void walLagAge(Duration age) {}

  /** Discards everything. */
  static RelayMetrics none() {
    return new RelayMetrics() {};
  }
}
