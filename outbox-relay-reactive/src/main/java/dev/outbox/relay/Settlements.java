package dev.outbox.relay;

import dev.outbox.r2dbc.internal.ClaimedBatch;
import dev.outbox.r2dbc.internal.PartitionStore;
import dev.outbox.r2dbc.internal.RelayStore;
import java.time.Duration;
import java.util.List;
import java.util.Objects;
import java.util.stream.Collectors;
import java.util.function.BiConsumer;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * How the {@link Settler} changes the table, fenced the way the mode claims: by each batch's
 * lease token (PARALLEL, ORDERED, WAL) or by its partition's epoch (PARTITIONED). Every method
 * answers {@code false} ({@link #deleteAll}: emits the id) when the fence no longer holds.
 */
interface Settlements {

  /**
   * Whether a published {@code batch} has a row to delete ({@code false}: only the log held it,
   * {@link RelayStore#LOGGED_ONLY}); those are not passed to {@link #deleteAll}.
   */
  default boolean hasRow(BatchInFlight batch) {
    return true;
  }

  /** Deletes published batches; emits the ids <em>not</em> deleted (their fence no longer held). */
  Flux<String> deleteAll(List<BatchInFlight> batches);

  /** {@code attempted} false: held back, not tried; its attempts are not counted. */
  Mono<Boolean> retryLater(BatchInFlight batch, String reason, Duration wait, boolean attempted);

  Mono<Boolean> deadLetter(BatchInFlight batch, String reason);

  /** Gives back what was claimed and not attempted; how many. */
  Mono<Long> releaseAll(List<BatchInFlight> batches);

  /**
   * {@code batch} is about to leave the ledger unpublished and still in the table: its
   * settlement failed or its fence no longer held. Leases need nothing (the row is claimed again
   * when its lease expires).
   */
  default void returned(BatchInFlight batch) {}

  /**
   * Leases on rows ({@link RelayStore}). A batch only the log holds ({@link
   * RelayStore#LOGGED_ONLY}: its writer deleted its row) changes nothing in the table: published,
   * there is nothing to delete; a retry is kept by the relay (WAL mode claims it from memory);
   * a dead letter is inserted from its bytes.
   */
  static Settlements leased(RelayStore store) {
    return new Settlements() {
      @Override
      public boolean hasRow(BatchInFlight batch) {
        return !loggedOnly(batch);
      }

      @Override
      public Flux<String> deleteAll(List<BatchInFlight> batches) {
        List<ClaimedBatch> inTable = claims(batches);
        return inTable.isEmpty() ? Flux.empty() : store.deleteAll(inTable);
      }

      @Override
      public Mono<Boolean> retryLater(BatchInFlight batch, String reason, Duration wait,
          boolean attempted) {
        return loggedOnly(batch) ? Mono.just(true)
            : store.retryLater(batch.claim(), reason, wait, attempted);
      }

      @Override
      public Mono<Boolean> deadLetter(BatchInFlight batch, String reason) {
        ClaimedBatch claim = batch.claim();
        return loggedOnly(batch)
            ? store.deadLetterLogged(claim, batch.loggedKeys, claim.writeRetries() + 1, reason)
            : store.deadLetter(claim, reason);
      }

      @Override
      public Mono<Long> releaseAll(List<BatchInFlight> batches) {
        List<ClaimedBatch> inTable = claims(batches);
        return inTable.isEmpty() ? Mono.just(0L) : store.releaseAll(inTable);
      }

      /** The claims of the batches whose rows are in the table. */
      private List<ClaimedBatch> claims(List<BatchInFlight> batches) {
        return batches.stream().filter(b -> !loggedOnly(b)).map(BatchInFlight::claim).toList();
      }

      private boolean loggedOnly(BatchInFlight batch) {
        return RelayStore.LOGGED_ONLY.equals(batch.claim().leaseToken());
      }
    };
  }

  /**
   * Partition ownership ({@link PartitionStore}); reading claimed nothing, so nothing to give
   * back. {@code onReturned} hears of each batch that leaves the ledger unpublished (a retry
   * kept, with its wait; a settlement that failed or was refused, with no wait) before it leaves.
   */
  static Settlements partitioned(PartitionStore store, String relay,
      BiConsumer<BatchInFlight, Duration> onReturned) {
    return new Settlements() {
      @Override
      public void returned(BatchInFlight batch) {
        onReturned.accept(batch, Duration.ZERO);
      }

      @Override
      public Flux<String> deleteAll(List<BatchInFlight> batches) {
        return store.deleteAll(relay, batches.stream().map(b -> b.claim().batchId()).toList(),
                batches.stream().map(b -> fence(b).epoch()).toList(),
                batches.stream().map(b -> fence(b).partition()).toList())
            .map(String::strip)
            .collect(Collectors.toSet())
            .flatMapIterable(deleted -> batches.stream().map(b -> b.claim().batchId().strip())
                .filter(id -> !deleted.contains(id)).toList());
      }

      @Override
      public Mono<Boolean> retryLater(BatchInFlight batch, String reason, Duration wait,
          boolean attempted) {
        return store.retryLater(relay, batch.claim().batchId(), fence(batch).partition(),
            fence(batch).epoch(), reason, wait, attempted)
            .doOnNext(kept -> {
              if (kept) {
                onReturned.accept(batch, wait);
              }
            });
      }

      @Override
      public Mono<Boolean> deadLetter(BatchInFlight batch, String reason) {
        return store.deadLetter(relay, batch.claim().batchId(), fence(batch).partition(),
            fence(batch).epoch(), reason);
      }

      @Override
      public Mono<Long> releaseAll(List<BatchInFlight> batches) {
        return Mono.just(0L);
      }

      private BatchInFlight.Fence fence(BatchInFlight batch) {
        return Objects.requireNonNull(batch.fence, "a PARTITIONED batch has a fence");
      }
    };
  }
}
