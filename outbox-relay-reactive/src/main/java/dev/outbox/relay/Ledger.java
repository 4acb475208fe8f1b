package dev.outbox.relay;

import dev.outbox.r2dbc.internal.ClaimedBatch;
import dev.outbox.r2dbc.internal.RelayStore;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import org.jspecify.annotations.Nullable;

/**
 * The one owner of claimed-but-unsettled work: what this relay holds (for renewal and release)
 * and how much of the record and byte budgets it uses. A batch enters when its claim returns,
 * before anything else can fail, and leaves exactly once ({@link #release}, {@link
 * #releaseAll}), so the budgets cannot leak whatever happens in between. Thread-safe.
 */
final class Ledger {
  /** What the next claim may take; see {@link Ledger#room()}. */
  record Room(int records, long bytes, boolean empty) {}

  private final int maxRecords;
  private final long maxBytes;
  private final RelayMetrics metrics;
  private final Runnable onRelease;
  private final Set<BatchInFlight> held = ConcurrentHashMap.newKeySet();
  private final AtomicLong records = new AtomicLong();
  private final AtomicLong bytes = new AtomicLong();
  /** Records acknowledged by Kafka whose settlement has not ended (no longer budgeted). */
  private final AtomicLong settling = new AtomicLong();
  /** Bumped by {@link #releaseAll}: a claim started before it may no longer register. */
  private final AtomicLong generation = new AtomicLong();

  /**
   * @param onRelease called after batches leave (room was freed: time to claim again)
   */
  Ledger(int maxRecords, long maxBytes, RelayMetrics metrics, Runnable onRelease) {
    this.maxRecords = maxRecords;
    this.maxBytes = maxBytes;
    this.metrics = metrics;
    this.onRelease = onRelease;
  }

  /**
   * What a claim may take now, or {@code null} when less than half of either budget is free (a
   * settlement will call {@code onRelease}). When nothing is held, a claim may take one batch
   * larger than the budgets, so that such a batch still makes progress.
   */
  @Nullable Room room() {
    return room(2);
  }

  /**
   * What a claim may take now, or {@code null} when less than {@code 1/share} of either budget is
   * free; as {@link #room()} otherwise.
   */
  @Nullable Room room(int share) {
    long heldRecords = records.get();
    long heldBytes = bytes.get();
    boolean empty = heldRecords == 0 && heldBytes == 0;
    long freeRecords = maxRecords - heldRecords;
    long freeBytes = maxBytes - heldBytes;
    if (!empty && (freeRecords < Math.max(1, maxRecords / share)
        || freeBytes < Math.max(1, maxBytes / share))) {
      return null;
    }
    return new Room((int) Math.max(1, freeRecords), Math.max(1, freeBytes), empty);
  }

  /** To pass to {@link #register} for a claim about to start. */
  long generation() {
    return generation.get();
  }

  /**
   * Takes claimed batches into the ledger; each is released exactly once later. {@code null}
   * when everything was released ({@link #releaseAll}) since the claim started: the pipeline that
   * asked for it is gone, so the caller must give those leases back itself. {@code awaited}: the
   * caller will wait for each batch's settlement ({@link BatchInFlight#onSettled}).
   */
  @Nullable List<BatchInFlight> register(List<ClaimedBatch> claimed, long claimGeneration,
      boolean awaited) {
    return register(claimed, null, claimGeneration, awaited);
  }

  /** As {@link #register(List, long, boolean)}, each batch with its fence (PARTITIONED). */
  @Nullable List<BatchInFlight> register(List<ClaimedBatch> claimed,
      BatchInFlight.@Nullable Fence @Nullable [] fences, long claimGeneration, boolean awaited) {
    return register(claimed, fences, null, claimGeneration, awaited);
  }

  /** As {@link #register(List, BatchInFlight.Fence[], long, boolean)}, each with its send group. */
  @Nullable List<BatchInFlight> register(List<ClaimedBatch> claimed,
      BatchInFlight.@Nullable Fence @Nullable [] fences,
      BatchInFlight.@Nullable SendGroup @Nullable [] groups, long claimGeneration, boolean awaited) {
    List<BatchInFlight> batches = new ArrayList<>(claimed.size());
    long addedRecords = 0;
    long addedBytes = 0;
    synchronized (generation) {
      if (generation.get() != claimGeneration) {
        return null;
      }
      for (int i = 0; i < claimed.size(); i++) {
        ClaimedBatch claim = claimed.get(i);
        BatchInFlight batch = new BatchInFlight(claim, awaited, fences == null ? null : fences[i],
            groups == null ? null : groups[i]);
        held.add(batch);
        batches.add(batch);
        addedRecords += claim.messageCount();
        addedBytes += batch.bytes;
      }
    }
    metrics.inFlight(records.addAndGet(addedRecords));
    metrics.inFlightBytes(bytes.addAndGet(addedBytes));
    return batches;
  }

  /** One batch leaves (settled, or its settlement failed); false when it had already left. */
  boolean release(BatchInFlight batch) {
    if (!leave(batch)) {
      return false;
    }
    onRelease.run();
    return true;
  }

  /** Every batch still held leaves; returns them (for releasing their leases). */
  List<BatchInFlight> releaseAll() {
    List<BatchInFlight> left = new ArrayList<>();
    synchronized (generation) {
      generation.incrementAndGet();
    }
    for (BatchInFlight batch : held) {
      if (leave(batch)) {
        left.add(batch);
      }
    }
    if (!left.isEmpty()) {
      onRelease.run();
    }
    return left;
  }

  private boolean leave(BatchInFlight batch) {
    if (!held.remove(batch)) {
      return false;
    }
    if (batch.uncount()) {
      metrics.inFlight(records.addAndGet(-batch.claim().messageCount()));
      metrics.inFlightBytes(bytes.addAndGet(-batch.bytes));
    } else {
      settling.addAndGet(-batch.claim().messageCount());
    }
    return true;
  }

  /**
   * Every record of {@code batch} is acknowledged by Kafka: it stops counting against the
   * budgets (nothing of it is held in memory any more) although it stays in the ledger, with
   * its keys and ids, until its settlement ends. Bounded: while more records than the record
   * budget wait for their settlement, a batch keeps counting until it is settled, so a slow
   * database slows reading down instead of letting settlements pile up.
   */
  void acknowledged(BatchInFlight batch) {
    int count = batch.claim().messageCount();
    if (settling.get() + count > maxRecords || !batch.uncount()) {
      return;
    }
    // Whoever uncounts a batch takes it off the budgets; leave() takes an uncounted one off
    // settling (in whichever order the two run, the totals end the same).
    settling.addAndGet(count);
    metrics.inFlight(records.addAndGet(-count));
    metrics.inFlightBytes(bytes.addAndGet(-batch.bytes));
    onRelease.run();
  }

  /** Whether {@code batch} is held now. */
  boolean holds(BatchInFlight batch) {
    return held.contains(batch);
  }

  /** Everything held now. */
  List<BatchInFlight> held() {
    return List.copyOf(held);
  }

  /** The leases held now, for renewal. */
  List<ClaimedBatch> leases() {
    return held.stream().map(BatchInFlight::claim)
        .filter(claim -> !RelayStore.UNLEASED.equals(claim.leaseToken())
            && !RelayStore.LOGGED_ONLY.equals(claim.leaseToken()))
        .toList();
  }

  long records() {
    return records.get();
  }

  long bytes() {
    return bytes.get();
  }
}
