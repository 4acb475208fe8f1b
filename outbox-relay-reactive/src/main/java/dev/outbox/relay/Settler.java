package dev.outbox.relay;

import dev.outbox.r2dbc.internal.ClaimedBatch;
import dev.outbox.relay.RelayOutcome.Kind;
import java.time.Duration;
import java.util.List;
import java.util.stream.Collectors;
import org.jspecify.annotations.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.publisher.SignalType;

/**
 * Turns what happened to batches into table changes, for every mode: published batches are
 * deleted (many per statement), failed ones retried later or dead-lettered, undecodable ones
 * dead-lettered, abandoned ones released. Whatever the database answers, every batch leaves the
 * {@link Ledger} exactly once and its outcome is emitted. A settlement the database refused
 * leaves the row leased: it is published again when the lease expires (at least once).
 * Thread-safe.
 */
final class Settler {
  private static final Logger log = LoggerFactory.getLogger(Settler.class);

  private final Settlements store;
  private final Ledger ledger;
  private final Outcomes outcomes;
  private final RelayOptions options;
  private final RelayMetrics metrics;

  Settler(Settlements store, Ledger ledger, Outcomes outcomes, RelayOptions options) {
    this.store = store;
    this.ledger = ledger;
    this.outcomes = outcomes;
    this.options = options;
    this.metrics = options.metrics();
  }

  /** Settles a group of answered batches: the fully published ones with one fenced DELETE. */
  Mono<Void> settle(List<BatchInFlight> group) {
    List<BatchInFlight> published = new java.util.ArrayList<>();
    List<BatchInFlight> onlyLogged = new java.util.ArrayList<>();
    for (BatchInFlight b : group) {
      if (b.fullyPublished()) {
        (store.hasRow(b) ? published : onlyLogged).add(b);
      }
    }
    // Only the log held these: nothing to delete, so no DELETE's failure to share.
    Mono<Void> logged = onlyLogged.isEmpty() ? Mono.empty() : Mono.fromRunnable(() ->
        onlyLogged.forEach(b -> finish(b, outcome(Kind.PUBLISHED, b.claim(), 0, null, null))));
    Mono<Void> deletions = published.isEmpty() ? Mono.empty()
        : store.deleteAll(published)
            .collect(Collectors.toSet())
            .doOnNext(missed -> {
              for (BatchInFlight b : published) {
                boolean lost = !missed.isEmpty() && missed.contains(b.claim().batchId().strip());
                finish(b, outcome(lost ? Kind.LEASE_LOST : Kind.PUBLISHED, b.claim(), 0, null,
                    null));
              }
            })
            .onErrorResume(error -> {
              log.warn("Outbox relay {} could not delete {} published batches; they will be"
                  + " published again when their leases expire: {}", options.instanceId(),
                  published.size(), error.toString());
              for (BatchInFlight b : published) {
                b.settlementFailed(error);
                finish(b, null);
              }
              return Mono.empty();
            })
            // Answered or failed, each batch was finished above; cancelled, it is here.
            .doFinally(signal -> {
              if (signal == SignalType.CANCEL) {
                published.forEach(b -> finish(b, null));
              }
            })
            .then();
    Mono<Void> failures = Flux.fromIterable(group)
        .filter(b -> !b.fullyPublished())
        .flatMap(this::settleFailure)
        .then();
    return Mono.when(logged, deletions, failures);
  }

  /** A batch whose stored bytes cannot be read: dead-lettered at once, never retried. */
  Mono<Void> undecodable(BatchInFlight batch, Throwable error) {
    ClaimedBatch claimed = batch.claim();
    return settled(batch, deadLetter(batch, "undecodable raw_data: " + describe(error),
        claimed.writeRetries() + 1));
  }

  private Mono<Void> settleFailure(BatchInFlight batch) {
    ClaimedBatch claimed = batch.claim();
    Throwable fatal = batch.fatal();
    Throwable retriable = batch.retriable();
    int failedAttempts = claimed.writeRetries() + 1;
    Mono<RelayOutcome> settlement;
    if (fatal == null && retriable instanceof SendGuard.EarlierRecordFailedException) {
      // Held back, not tried: an earlier batch of its unit failed. No attempt is counted (it
      // would be dead-lettered with that batch otherwise) and it is due at once: its keys stay
      // held by that batch's retry, and the read comes back to it when they are free.
      String reason = describe(retriable);
      settlement = store.retryLater(batch, reason, Duration.ZERO, false).map(kept -> kept
          ? outcome(Kind.RETRY_SCHEDULED, claimed, claimed.writeRetries(), reason, Duration.ZERO)
          : outcome(Kind.LEASE_LOST, claimed, claimed.writeRetries(), reason, null));
    } else if (fatal != null) {
      settlement = deadLetter(batch, describe(fatal), failedAttempts);
    } else if (retriable != null && options.retryPolicy().allowsAnotherAttempt(failedAttempts)) {
      Duration wait = options.retryPolicy().backoff(failedAttempts);
      String reason = describe(retriable);
      settlement = store.retryLater(batch, reason, wait, true).map(kept -> kept
          ? outcome(Kind.RETRY_SCHEDULED, claimed, failedAttempts, reason, wait)
          : outcome(Kind.LEASE_LOST, claimed, failedAttempts, reason, null));
    } else {
      settlement = deadLetter(batch, "retries exhausted after " + failedAttempts
          + " attempts; last error: " + describe(retriable), failedAttempts);
    }
    return settled(batch, settlement);
  }

  /** Runs one batch's settlement; the batch leaves the ledger however it ends. */
  private Mono<Void> settled(BatchInFlight batch, Mono<RelayOutcome> settlement) {
    return settlement
        .doOnNext(outcome -> finish(batch, outcome))
        .onErrorResume(error -> {
          log.warn("Outbox relay {} could not settle batch {}; it will be published again when"
              + " its lease expires: {}", options.instanceId(), batch.claim().batchId(),
              error.toString());
          batch.settlementFailed(error);
          return Mono.empty();
        })
        .doFinally(signal -> finish(batch, null))
        .then();
  }

  /**
   * Gives back the leases of everything still in the ledger (after the pipeline failed or was
   * cancelled, or on stop), by primary key, within {@code timeout}; what cannot be released in
   * time expires with its lease.
   */
  Mono<Void> abandonAll(Duration timeout) {
    return Mono.defer(() -> {
      List<BatchInFlight> left = ledger.releaseAll();
      if (left.isEmpty()) {
        return Mono.empty();
      }
      left.forEach(b -> {
        outcomes.emit(outcome(Kind.RELEASED, b.claim(), 0, null, null));
        b.settled(null);
      });
      return store.releaseAll(left)
          .timeout(timeout)
          .doOnNext(released -> log.info("Outbox relay {} released {} unsettled batches",
              options.instanceId(), released))
          .onErrorResume(error -> {
            log.warn("Outbox relay {} could not release {} leases; they expire in {}: {}",
                options.instanceId(), left.size(), options.leaseDuration(), error.toString());
            return Mono.empty();
          })
          .then();
    });
  }

  /** The batch leaves the ledger; the first call per batch also emits its outcome. */
  private void finish(BatchInFlight batch, @Nullable RelayOutcome outcome) {
    if ((outcome == null || outcome.kind() == Kind.LEASE_LOST) && ledger.holds(batch)) {
      store.returned(batch); // before it leaves: no read may pass it meanwhile
    }
    if (ledger.release(batch)) {
      if (outcome != null) {
        outcomes.emit(outcome);
      }
      batch.settled(outcome);
    }
  }

  private Mono<RelayOutcome> deadLetter(BatchInFlight batch, String reason, int failedAttempts) {
    ClaimedBatch claimed = batch.claim();
    return store.deadLetter(batch, reason).map(moved -> {
      if (!moved) {
        return outcome(Kind.LEASE_LOST, claimed, failedAttempts, reason, null);
      }
      metrics.deadLettered(claimed.messageCount());
      log.warn("Outbox relay {} dead-lettered batch {}: {}", options.instanceId(),
          claimed.batchId(), reason);
      return outcome(Kind.DEAD_LETTERED, claimed, failedAttempts, reason, null);
    });
  }

  private static RelayOutcome outcome(Kind kind, ClaimedBatch claimed, int failedAttempts,
      @Nullable String reason, @Nullable Duration retryIn) {
    return new RelayOutcome(kind, claimed.batchId(), claimed.messageCount(), failedAttempts,
        reason, retryIn);
  }

  static String describe(@Nullable Throwable error) {
    return error == null ? "unknown" : error.getClass().getSimpleName() + ": " + error.getMessage();
  }
}
