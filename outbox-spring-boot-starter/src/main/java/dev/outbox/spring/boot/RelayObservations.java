package dev.outbox.spring.boot;

import dev.outbox.r2dbc.BacklogStats;
import dev.outbox.relay.RelayMetrics;
import java.time.Duration;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.jspecify.annotations.Nullable;

/**
 * Keeps the last readings the health indicator reports (partitions held, ORDERED leadership, the
 * backlog) and passes every measurement on to {@code delegate} (Micrometer or nothing). The relay
 * exposes these only through {@link RelayMetrics}, so listening there needs no change to it.
 */
final class RelayObservations implements RelayMetrics {
  private final RelayMetrics delegate;
  private final AtomicInteger partitions = new AtomicInteger(-1);
  private final AtomicInteger leader = new AtomicInteger(-1);
  private final AtomicReference<@Nullable BacklogStats> backlog = new AtomicReference<>();

  RelayObservations(RelayMetrics delegate) {
    this.delegate = delegate;
  }

  /** Partitions this relay reads (PARTITIONED); null before its first ownership round. */
  @Nullable Integer partitions() {
    int n = partitions.get();
    return n < 0 ? null : n;
  }

  /** Whether this relay is the ORDERED leader; null before leadership was first decided. */
  @Nullable Boolean leader() {
    int n = leader.get();
    return n < 0 ? null : n == 1;
  }

  /** The last backlog reading; null before the first. */
  @Nullable BacklogStats backlog() {
    return backlog.get();
  }

  @Override
  public void partitions(int read, int takenOver) {
    partitions.set(read);
    delegate.partitions(read, takenOver);
  }

  @Override
  public void leadership(boolean isLeader) {
    leader.set(isLeader ? 1 : 0);
    delegate.leadership(isLeader);
  }

  @Override
  public void backlog(BacklogStats stats) {
    backlog.set(stats);
    delegate.backlog(stats);
  }

  @Override
  public void claimed(int batches, int records, Duration latency) {
    delegate.claimed(batches, records, latency);
  }

  @Override
  public void inFlight(long records) {
    delegate.inFlight(records);
  }

  @Override
  public void inFlightBytes(long bytes) {
    delegate.inFlightBytes(bytes);
  }

  @Override
  public void outcomesDropped(long count) {
    delegate.outcomesDropped(count);
  }

  @Override
  public void published(Duration latency) {
    delegate.published(latency);
  }

  @Override
  public void failed(boolean fatal) {
    delegate.failed(fatal);
  }

  @Override
  public void deadLettered(int records) {
    delegate.deadLettered(records);
  }

  @Override
  public void health(boolean up) {
    delegate.health(up);
  }

  @Override
  public void heldBack(Duration age) {
    delegate.heldBack(age);
  }

  @Override
  public void walSlotMissing(boolean missing) {
    delegate.walSlotMissing(missing);
  }

  @Override
  public void walLagBytes(long bytes) {
    delegate.walLagBytes(bytes);
  }

  @Override
  public void walLagAge(Duration age) {
    delegate.walLagAge(age);
  }
}
