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

  /** Discards everything. */
  static RelayMetrics none() {
    return new RelayMetrics() {};
  }
}
