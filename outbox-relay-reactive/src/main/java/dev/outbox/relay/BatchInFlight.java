package dev.outbox.relay;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.internal.ClaimedBatch;
import dev.outbox.r2dbc.internal.RelayStore;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Consumer;
import org.jspecify.annotations.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One claimed batch from claim to settlement: registered in the {@link Ledger} when claimed,
 * decoded into records, answered record by record, settled once.
 */
final class BatchInFlight {
  private static final Logger log = LoggerFactory.getLogger(BatchInFlight.class);

  /**
   * Correlation of one record: its batch, when it was handed to the sink, and the {@link
   * RecordInterceptor}'s interception of it ({@code null} without one: the records of a batch
   * then share one ref).
   */
  record RecordRef(BatchInFlight batch, long handedOffNanos,
      RecordInterceptor.@Nullable Interception interception) implements SendGuard {
    @Override
    public boolean sendAbandoned() {
      return batch.group.failed;
    }

    @Override
    public void sendFailed() {
      batch.group.failed = true;
    }
  }

  /**
   * Batches sent as one unit: once a record of one of them failed, the records of all of them
   * not yet handed to the producer are not sent (see {@link SendGuard}). Usually one batch;
   * PARTITIONED joins consecutive rows of one key taken by one read, so that a key's rows go
   * out together with the same guarantee as the messages of one row.
   */
  static final class SendGroup {
    private volatile boolean failed;
    /** Batches in the group; counted by the one read that builds it. */
    int batches;
  }

  /** A record of this batch's group failed in the sink: the rest is not sent (see SendGuard). */
  private volatile SendGroup group;

  /** Whether this batch still counts against the ledger's budgets; see {@link #uncount()}. */
  private final java.util.concurrent.atomic.AtomicBoolean counted =
      new java.util.concurrent.atomic.AtomicBoolean(true);

  /** Stops counting against the budgets; true only for the first call. */
  boolean uncount() {
    return counted.compareAndSet(true, false);
  }

  /** Every record acknowledged by Kafka, none failed; its settlement may still be running. */
  private volatile boolean published;

  /** PARTITIONED mode: the partition a batch was read from, its epoch then, and its keys. */
  record Fence(int partition, long epoch, List<String> keys) {}

  /** PARTITIONED mode only; {@code null} for leased batches. */
  final @Nullable Fence fence;

  /**
   * The keys of a batch only the log holds ({@link RelayStore#LOGGED_ONLY}), for its dead
   * letter; empty otherwise (the table has them).
   */
  volatile List<String> loggedKeys = List.of();

  /** Stored bytes this batch counts against the byte budget (its {@code raw_data}). */
  final long bytes;
  private volatile ClaimedBatch claim;
  private final AtomicInteger pending = new AtomicInteger();
  private final AtomicReference<@Nullable Throwable> fatal = new AtomicReference<>();
  private final AtomicReference<@Nullable Throwable> retriable = new AtomicReference<>();
  /** Whether a source waits for the settlement (WAL): see {@link #onSettled}. */
  private final boolean awaited;
  /** The settlement once known (empty: settling failed); guarded by this. */
  private @Nullable Optional<RelayOutcome> settlement;
  /** Told the settlement once, on the thread that settles; guarded by this. */
  private @Nullable Consumer<Optional<RelayOutcome>> onSettled;

  BatchInFlight(ClaimedBatch claim, boolean awaited) {
    this(claim, awaited, null);
  }

  BatchInFlight(ClaimedBatch claim, boolean awaited, @Nullable Fence fence) {
    this(claim, awaited, fence, null);
  }

  /** {@code group}: the unit it is sent with, {@code null} for a group of its own. */
  BatchInFlight(ClaimedBatch claim, boolean awaited, @Nullable Fence fence,
      @Nullable SendGroup group) {
    this.group = group == null ? new SendGroup() : group;
    this.fence = fence;
    this.claim = claim;
    this.bytes = claim.rawData().length;
    this.awaited = awaited;
  }

  ClaimedBatch claim() {
    return claim;
  }

  /**
   * The Kafka records of this batch, in batch order; from here on the stored bytes are no longer
   * held (they are what the byte budget bounds, and the records carry the payloads).
   */
  List<OutboundRecord<RecordRef>> records(List<Message> messages,
      @Nullable RecordInterceptor interceptor) {
    if (!RelayStore.LOGGED_ONLY.equals(claim.leaseToken())) {
      claim = claim.withoutData(); // a row only the log holds keeps them for its dead letter
    }
    pending.set(messages.size());
    long now = System.nanoTime();
    RecordRef ref = new RecordRef(this, now, null);
    List<OutboundRecord<RecordRef>> records = new ArrayList<>(messages.size());
    for (Message m : messages) {
      Map<String, String> headers = new LinkedHashMap<>(m.headers());
      headers.put(Message.MESSAGE_ID_HEADER, m.id());
      headers.put(Message.CONTENT_TYPE_HEADER, m.contentType());
      RecordRef recordRef = ref;
      if (interceptor != null) {
        RecordInterceptor.Interception interception = intercept(interceptor, m, headers);
        if (interception != null) {
          headers = interception.headers();
          recordRef = new RecordRef(this, now, interception);
        }
      }
      records.add(new OutboundRecord<>(m.stream(), m.key().orElse(null), m.data(), m.time(),
          headers, recordRef));
    }
    return records;
  }

  /** The interceptor's decision; {@code null} (send as built) when it throws. */
  private static RecordInterceptor.@Nullable Interception intercept(RecordInterceptor interceptor,
      Message message, Map<String, String> headers) {
    try {
      RecordInterceptor.Interception interception =
          interceptor.intercept(message, Collections.unmodifiableMap(headers));
      if (interception != null) {
        Objects.requireNonNull(interception.headers(), "Interception.headers()");
      }
      return interception;
    } catch (RuntimeException e) {
      log.warn("RecordInterceptor {} failed for message {}; the record goes as built",
          interceptor, message.id(), e);
      return null;
    }
  }

  /** Tells the record's interception how its send ended, if it has one; never throws. */
  static void answered(RecordRef ref, @Nullable Throwable error) {
    RecordInterceptor.Interception interception = ref.interception();
    if (interception != null) {
      try {
        interception.answered(error);
      } catch (RuntimeException e) {
        log.warn("RecordInterceptor answer callback failed for {}", ref.batch(), e);
      }
    }
  }

  /** Records one failed record; the first failure of each kind is kept as the reason. */
  void failed(Throwable error, boolean isFatal) {
    group.failed = true;
    (isFatal ? fatal : retriable).compareAndSet(null, error);
  }

  /** WAL: sends this batch in {@code other}'s group; before it is handed to the pipeline. */
  void joinGroupOf(BatchInFlight other) {
    group = other.group;
  }

  /** Counts one answered record; true for the last one. */
  boolean answered() {
    return pending.decrementAndGet() == 0;
  }

  boolean fullyPublished() {
    return fatal.get() == null && retriable.get() == null;
  }

  /** Run once when the batch is published (WAL: its keys' next batches may go). */
  private volatile @Nullable Runnable onPublished;

  /** Sets what {@link #markPublished} runs; before the batch is handed to the pipeline. */
  void onPublished(Runnable action) {
    this.onPublished = action;
  }

  /** Called once every record is answered and none failed. */
  void markPublished() {
    published = true;
    Runnable action = onPublished;
    if (action != null) {
      action.run();
    }
  }

  /**
   * Every record is in Kafka (its {@code DELETE} may still be running): a later batch of its
   * keys may go out now without overtaking it.
   */
  boolean published() {
    return published;
  }

  @Nullable Throwable fatal() {
    return fatal.get();
  }

  @Nullable Throwable retriable() {
    return retriable.get();
  }

  /** Why its settlement failed (the statement's error), when it did; see {@link #settlementFailed}. */
  private volatile @Nullable Throwable settlementFailure;

  /** The settler could not run this batch's settlement statement; before {@link #settled}. */
  void settlementFailed(Throwable error) {
    settlementFailure = error;
  }

  @Nullable Throwable settlementFailure() {
    return settlementFailure;
  }

  /** Called by the settler, once per batch; later calls change nothing. */
  void settled(@Nullable RelayOutcome outcome) {
    if (!awaited) {
      return;
    }
    Optional<RelayOutcome> result = Optional.ofNullable(outcome);
    Consumer<Optional<RelayOutcome>> action;
    synchronized (this) {
      if (settlement != null) {
        return;
      }
      settlement = result;
      action = onSettled;
    }
    if (action != null) {
      action.accept(result);
    }
  }

  /**
   * Runs {@code action} once the batch is settled: with its outcome, or empty when settling
   * failed (at once when it already is). A plain callback, not a {@code Mono}: one per batch,
   * on the hot path of WAL mode.
   *
   * @throws IllegalStateException unless registered as awaited
   */
  void onSettled(Consumer<Optional<RelayOutcome>> action) {
    if (!awaited) {
      throw new IllegalStateException(this + " was not registered as awaited");
    }
    Optional<RelayOutcome> done;
    synchronized (this) {
      onSettled = action;
      done = settlement;
    }
    if (done != null) {
      action.accept(done);
    }
  }

  @Override
  public String toString() {
    return "batch " + claim.batchId();
  }
}
