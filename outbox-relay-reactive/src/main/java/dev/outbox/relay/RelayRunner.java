package dev.outbox.relay;

import dev.outbox.r2dbc.internal.ClaimRequest;
import dev.outbox.r2dbc.internal.ClaimedBatch;
import dev.outbox.r2dbc.InvalidConfigurationException;
import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.internal.RelayStore;
import dev.outbox.r2dbc.UndecodableBatchException;
import dev.outbox.relay.BatchInFlight.RecordRef;
import dev.outbox.relay.RelayOutcome.Kind;
import io.r2dbc.postgresql.PostgresqlConnectionFactory;
import io.r2dbc.spi.ConnectionFactory;
import java.time.Duration;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.jspecify.annotations.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.Disposable;
import reactor.core.Disposables;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.publisher.Sinks;
import reactor.core.publisher.SynchronousSink;
import reactor.core.scheduler.Schedulers;
import reactor.util.retry.Retry;

/**
 * One running relay. The pipeline, as one Flux:
 *
 * <pre>
 * ticks (poll interval ∪ wake-ups, latest only)
 *   → claim within the record budget → decode (undecodable: dead-letter)
 *   → records → sink.send → per-record result → last record of a batch
 *   → groups of answered batches → settle (one DELETE per group) → outcomes
 * </pre>
 *
 * <p>The record budget ({@code maxInFlight} minus records claimed and not yet settled) is what
 * bounds memory and claims: nothing is claimed while less than half of it is free, and each
 * settlement wakes the claim loop. Stopping completes the ticks, so the pipeline drains and
 * completes by itself; a drain that takes too long is cancelled and the leases released.
 */
final class RelayRunner implements RelayHandle {
  private static final Logger log = LoggerFactory.getLogger(OutboxRelay.class);

  /** Most batches settled by one statement, and how long to wait to fill a group. */
  private static final int SETTLE_GROUP = 100;
  private static final Duration SETTLE_WINDOW = Duration.ofMillis(5);
  /** WAL mode: how often confirmed positions are reported to the server. */
  private static final Duration WAL_STATUS_INTERVAL = Duration.ofMillis(500);

  private final RelayOptions options;
  private final RelayStore store;
  private final dev.outbox.r2dbc.OutboxStore admin;
  private final RelayMetrics metrics;
  private final AtomicLong inFlight = new AtomicLong();
  private final Set<BatchInFlight> unsettled = ConcurrentHashMap.newKeySet();
  private final Sinks.Many<Long> wakeups = Sinks.many().multicast().directBestEffort();
  private final Sinks.Many<RelayOutcome> outcomes;
  private final Sinks.One<Boolean> stopClaiming = Sinks.one();
  private final Sinks.Empty<Void> terminated = Sinks.empty();
  private final Disposable.Swap pipeline = Disposables.swap();
  private final Disposable.Swap stats = Disposables.swap();
  private final Disposable.Swap renewals = Disposables.swap();
  private final Disposable.Swap leading = Disposables.swap();
  private final Disposable.Swap triggers = Disposables.swap();
  private final ConnectionFactory unpooled;
  private final Sinks.Many<Long> externalWakeups = Sinks.many().multicast().directBestEffort();
  private final @Nullable Leadership leadership;
  /** Whether this instance may claim: always in PARALLEL, only as leader in ORDERED. */
  private final java.util.concurrent.atomic.AtomicBoolean leader =
      new java.util.concurrent.atomic.AtomicBoolean();
  private final AtomicReference<@Nullable Mono<Void>> stopping = new AtomicReference<>();
  // ---- health: HealthProbe wiring (to move into the relay lifecycle) ----
  private final HealthProbe healthProbe;
  // ---- end health ----

  RelayRunner(ConnectionFactory connections, ConnectionFactory unpooled, RelayOptions options,
      Sinks.Many<RelayOutcome> outcomes) {
    this.options = options;
    this.outcomes = outcomes;
    this.unpooled = unpooled;
    this.leadership = options.mode() == RelayMode.ORDERED
        ? new Leadership(unpooled, "dev.outbox.relay:" + options.table().qualifiedName(),
            options.instanceId(), options.leadershipRetry(), options.leadershipRetry().multipliedBy(2))
        : null;
    this.leader.set(leadership == null);
    this.store = RelayStore.create(connections, options.table());
    this.admin = dev.outbox.r2dbc.OutboxStore.create(connections, options.table());
    this.metrics = options.metrics();
    // ---- health: producer properties are not known here until the relay creates its sink ----
    this.healthProbe = new HealthProbe(connections, options.table(), options.mode(), null,
        options.walSlot(), metrics, HealthProbe.DEFAULT_INTERVAL, HealthProbe.DEFAULT_TIMEOUT);
    // ---- end health ----
  }

  void start() {
    log.info("Outbox relay {} starting on {} (mode {}, maxInFlight {}, claimSize {}, lease {},"
            + " renewed every {})", options.instanceId(), options.table(), options.mode(),
        options.maxInFlight(), options.claimSize(), options.leaseDuration(),
        options.leaseRenewal());
    if (leadership != null) {
      leading.update(leadership.states().subscribe(isLeader -> {
        leader.set(isLeader); // losing it stops claiming at once; leases fence late settlements
        metrics.leadership(isLeader);
        if (isLeader) {
          wake();
        }
      }));
    }
    if (options.triggers().any()) {
      triggers.update(WakeSources.of(options.triggers(), unpooled, options.instanceId())
          .subscribe(signal -> {
                synchronized (externalWakeups) {
                  externalWakeups.tryEmitNext(signal);
                }
              },
              error -> log.error("Outbox relay {} lost a wake-up trigger; polling continues",
                  options.instanceId(), error)));
    }
    pipeline.update((options.mode() == RelayMode.WAL ? followWal() : run()).subscribe(
        done -> {},
        error -> {
          if (stopping.get() == null) {
            log.error("Outbox relay {} stopped on an unexpected error", options.instanceId(), error);
          } else {
            log.warn("Outbox relay {} pipeline ended with an error while stopping: {}",
                options.instanceId(), error.toString());
          }
          terminated.tryEmitEmpty();
        },
        terminated::tryEmitEmpty));
    if (!options.leaseRenewal().isZero()) {
      renewals.update(Flux.interval(options.leaseRenewal())
          .onBackpressureDrop()
          .concatMap(tick -> renewLeases())
          .subscribe());
    }
    stats.update(Flux.interval(Duration.ZERO, options.statsInterval())
        .onBackpressureDrop()
        .concatMap(tick -> admin.stats()
            .doOnNext(metrics::backlog)
            .onErrorResume(e -> {
              log.debug("Could not read outbox backlog stats", e);
              return Mono.empty();
            }))
        .subscribe());
    healthProbe.start(); // ---- health ----
  }

  /** The whole pipeline; restarted with backoff if the sink fails as a whole. */
  private Mono<Void> run() {
    return Mono.defer(() -> options.sink().send(records())
            .handle(this::answered)
            // Settle in groups: one DELETE for many published batches, not one per batch.
            .bufferTimeout(SETTLE_GROUP, SETTLE_WINDOW, true)
            .flatMap(this::settle, options.settleConcurrency())
            .doOnNext(this::emit)
            .then())
        .onErrorResume(error -> abandonUnsettled().then(Mono.error(error)))
        .retryWhen(Retry.backoff(Long.MAX_VALUE, Duration.ofSeconds(1))
            .maxBackoff(Duration.ofSeconds(30))
            .filter(error -> stopping.get() == null)
            .doBeforeRetry(signal -> log.warn("Outbox relay {} restarting its pipeline after: {}",
                options.instanceId(), signal.failure().toString())));
  }

  /**
   * WAL mode: committed inserts in commit order, one batch after another; each transaction's log
   * position is confirmed only after its batches are settled.
   */
  private Mono<Void> followWal() {
    if (!(unpooled instanceof PostgresqlConnectionFactory postgres)) {
      return Mono.error(new InvalidConfigurationException(
          "WAL mode needs an r2dbc-postgresql ConnectionFactory, got " + unpooled.getClass()));
    }
    WalFollower follower = new WalFollower(postgres, options.walSlot(), options.walPublication(),
        options.table().name(), "batch_id", WAL_STATUS_INTERVAL);
    return WalFollower.ensurePublication(unpooled, options.walPublication(),
            options.table().qualifiedName(), "batch_id")
        .then(WalFollower.ensureSlot(unpooled, options.walSlot(), "pgoutput"))
        .thenMany(Flux.defer(follower::follow).takeUntilOther(stopClaiming.asMono()))
        .concatMap(insert -> publishInCommitOrder(insert.batchId())
            .then(Mono.fromRunnable(() -> follower.acknowledge(insert))))
        .then()
        // A batch whose send failed as a whole is given back; held, renewal would keep its
        // lease forever and the replayed insert could never be claimed again.
        .onErrorResume(error -> abandonUnsettled().then(Mono.error(error)))
        .retryWhen(Retry.backoff(Long.MAX_VALUE, Duration.ofSeconds(1))
            .maxBackoff(Duration.ofSeconds(30))
            .filter(error -> stopping.get() == null)
            .doBeforeRetry(signal -> log.warn("Outbox relay {} following the WAL again after: {}",
                options.instanceId(), signal.failure().toString())));
  }

  /** Publishes one batch, waiting out another holder's lease and retrying in place. */
  private Mono<Void> publishInCommitOrder(String batchId) {
    return store.claimById(batchId, options.leaseDuration(), options.instanceId())
        .flatMap(claimed -> {
          metrics.inFlight(inFlight.addAndGet(claimed.messageCount()));
          return sendAndSettle(claimed);
        })
        .map(outcome -> outcome.kind() == Kind.RETRY_SCHEDULED && outcome.retryIn() != null
            ? Mono.delay(outcome.retryIn()).then(Mono.defer(() -> publishInCommitOrder(batchId)))
            : Mono.<Void>empty())
        .switchIfEmpty(Mono.defer(() -> admin.find(batchId)
            // Still there but not claimable: another holder's lease; wait for it to expire.
            .map(row -> Mono.delay(Duration.ofSeconds(1)).then(Mono.defer(() -> publishInCommitOrder(batchId))))))
        .flatMap(next -> next);
  }

  /** Sends one claimed batch and settles it; empty when it was undecodable (dead-lettered). */
  private Mono<RelayOutcome> sendAndSettle(ClaimedBatch claimed) {
    return decode(claimed).flatMap(batch -> options.sink().send(Flux.fromIterable(batch.records()))
        .doOnNext(this::account)
        .then(Mono.defer(() -> batch.fatal() == null && batch.retriable() == null
            ? store.delete(claimed)
                .map(deleted -> outcome(deleted ? Kind.PUBLISHED : Kind.LEASE_LOST, claimed, 0, null, null))
                .doFinally(signal -> settled(batch))
            : settleFailure(batch)))
        .doOnNext(this::emit));
  }

  private Flux<OutboundRecord<RecordRef>> records() {
    // Notifications and heartbeats count once per debounce window, at its end.
    Flux<Long> external = externalWakeups.asFlux().sample(options.triggers().debounce());
    return Flux.merge(Flux.interval(Duration.ZERO, options.pollInterval()), wakeups.asFlux(), external)
        .onBackpressureLatest()
        .takeUntilOther(stopClaiming.asMono())
        // Claims run one at a time, off the thread that woke them.
        .publishOn(Schedulers.parallel(), 1)
        .concatMap(tick -> claim(), 1)
        .concatMapIterable(BatchInFlight::records);
  }

  /** One claim within the free record budget; emits the decoded batches. */
  private Flux<BatchInFlight> claim() {
    return Flux.defer(() -> {
      if (!leader.get()) {
        return Flux.empty();
      }
      long held = inFlight.get();
      long free = options.maxInFlight() - held;
      if (held > 0 && free < Math.max(1, options.maxInFlight() / 2)) {
        return Flux.empty(); // a settlement will wake us when enough is free
      }
      ClaimRequest request = ClaimRequest
          .of(options.claimSize(), options.leaseDuration(), options.instanceId())
          .withMessageBudget((int) Math.max(1, free), held == 0);
      if (options.mode() == RelayMode.ORDERED) {
        request = request.inOrder();
      }
      long started = System.nanoTime();
      return store.claim(request)
          .collectList()
          .flatMapIterable(claimed -> {
            int records = claimed.stream().mapToInt(ClaimedBatch::messageCount).sum();
            metrics.inFlight(inFlight.addAndGet(records));
            metrics.claimed(claimed.size(), records, Duration.ofNanos(System.nanoTime() - started));
            if (claimed.size() == options.claimSize()) {
              wake(); // a full claim: there is probably more
            }
            return claimed;
          })
          .concatMap(this::decode)
          .onErrorResume(error -> {
            log.warn("Outbox relay {} could not claim; trying again at the next poll: {}",
                options.instanceId(), error.toString());
            return Flux.empty();
          });
    });
  }

  private Mono<BatchInFlight> decode(ClaimedBatch claimed) {
    List<Message> messages;
    try {
      messages = options.codec().decode(claimed.rawData());
      if (messages.size() != claimed.messageCount()) {
        // raw_data cut at a message boundary still decodes; the count catches the lost tail.
        throw new UndecodableBatchException("raw_data holds " + messages.size()
            + " messages but the row's message_count is " + claimed.messageCount());
      }
    } catch (RuntimeException error) {
      return deadLetter(claimed, "undecodable raw_data: " + describe(error), claimed.writeRetries() + 1)
          .doOnNext(this::emit)
          .doFinally(signal -> metrics.inFlight(inFlight.addAndGet(-claimed.messageCount())))
          .then(Mono.empty());
    }
    BatchInFlight batch = new BatchInFlight(claimed, messages);
    unsettled.add(batch);
    return Mono.just(batch);
  }

  /**
   * Extends the leases of every batch this relay holds, so that a slow Kafka does not let
   * another relay publish them again; a crashed, frozen or cut-off relay stops renewing.
   */
  private Mono<Void> renewLeases() {
    List<ClaimedBatch> held = unsettled.stream().map(b -> b.claim).toList();
    if (held.isEmpty()) {
      return Mono.empty();
    }
    return store.renewLeases(held, options.leaseDuration())
        .count()
        .timeout(options.leaseRenewal())
        .doOnNext(renewed -> {
          if (renewed < held.size()) {
            log.debug("Outbox relay {} renewed {} of {} leases; the rest were settled or lost",
                options.instanceId(), renewed, held.size());
          }
        })
        .onErrorResume(error -> {
          log.warn("Outbox relay {} could not renew {} leases: {}", options.instanceId(),
              held.size(), error.toString());
          return Mono.empty();
        })
        .then();
  }

  /** Accounts one record's answer; emits its batch when this was the batch's last record. */
  private void answered(SendResult<RecordRef> result, SynchronousSink<BatchInFlight> done) {
    if (account(result)) {
      done.next(result.correlation().batch());
    }
  }

  /** Records one answer in metrics and in its batch; true when it was the batch's last. */
  private boolean account(SendResult<RecordRef> result) {
    BatchInFlight batch = result.correlation().batch();
    Throwable error = result.error();
    if (error == null) {
      metrics.published(Duration.ofNanos(System.nanoTime() - result.correlation().handedOffNanos()));
    } else {
      boolean fatal = options.failureClassifier().isFatal(error);
      metrics.failed(fatal);
      batch.failed(error, fatal);
    }
    return batch.answered();
  }

  /** Settles a group of answered batches: fully published ones with one fenced DELETE. */
  private Flux<RelayOutcome> settle(List<BatchInFlight> group) {
    List<BatchInFlight> published = group.stream()
        .filter(b -> b.fatal() == null && b.retriable() == null).toList();
    Flux<RelayOutcome> deletions = published.isEmpty() ? Flux.empty()
        : store.deleteAll(published.stream().map(b -> b.claim).toList())
            .collect(java.util.stream.Collectors.toSet())
            .flatMapIterable(deleted -> published.stream()
                .map(b -> outcome(deleted.contains(b.claim.batchId()) ? Kind.PUBLISHED : Kind.LEASE_LOST,
                    b.claim, 0, null, null))
                .toList())
            .onErrorResume(error -> {
              log.warn("Outbox relay {} could not delete {} published batches; they will be"
                  + " published again when their leases expire: {}", options.instanceId(),
                  published.size(), error.toString());
              return Flux.empty();
            })
            .doFinally(signal -> published.forEach(this::settled));
    Flux<RelayOutcome> failures = Flux.fromIterable(group)
        .filter(b -> b.fatal() != null || b.retriable() != null)
        .flatMap(this::settleFailure);
    return Flux.merge(deletions, failures);
  }

  private void settled(BatchInFlight batch) {
    unsettled.remove(batch);
    metrics.inFlight(inFlight.addAndGet(-batch.claim.messageCount()));
    wake();
  }

  private Mono<RelayOutcome> settleFailure(BatchInFlight batch) {
    ClaimedBatch claimed = batch.claim;
    Throwable fatal = batch.fatal();
    Throwable retriable = batch.retriable();
    int failedAttempts = claimed.writeRetries() + 1;
    Mono<RelayOutcome> settlement;
    if (fatal != null) {
      settlement = deadLetter(claimed, describe(fatal), failedAttempts);
    } else if (retriable == null) {
      throw new IllegalStateException("batch " + claimed.batchId() + " did not fail");
    } else if (options.retryPolicy().allowsAnotherAttempt(failedAttempts)) {
      Duration wait = options.retryPolicy().backoff(failedAttempts);
      String reason = describe(retriable);
      settlement = store.retryLater(claimed, reason, wait).map(kept -> kept
          ? outcome(Kind.RETRY_SCHEDULED, claimed, failedAttempts, reason, wait)
          : outcome(Kind.LEASE_LOST, claimed, failedAttempts, reason, null));
    } else {
      settlement = deadLetter(claimed, "retries exhausted after " + failedAttempts
          + " attempts; last error: " + describe(retriable), failedAttempts);
    }
    return settlement
        .onErrorResume(error -> {
          log.warn("Outbox relay {} could not settle batch {}; it will be published again when"
              + " its lease expires: {}", options.instanceId(), claimed.batchId(), error.toString());
          return Mono.empty();
        })
        .doFinally(signal -> settled(batch));
  }

  private Mono<RelayOutcome> deadLetter(ClaimedBatch claimed, String reason, int failedAttempts) {
    return store.deadLetter(claimed, reason).map(moved -> {
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

  private static String describe(Throwable error) {
    return error.getClass().getSimpleName() + ": " + error.getMessage();
  }

  /** After the pipeline failed or was cancelled: give every unsettled lease back. */
  private Mono<Void> abandonUnsettled() {
    return store.releaseAll(options.instanceId())
        .doOnNext(released -> {
          if (released > 0) {
            log.info("Outbox relay {} released {} unsettled batches", options.instanceId(), released);
          }
        })
        .onErrorResume(error -> {
          log.warn("Outbox relay {} could not release its leases; they expire in {}: {}",
              options.instanceId(), options.leaseDuration(), error.toString());
          return Mono.empty();
        })
        .doFinally(signal -> {
          for (BatchInFlight batch : unsettled) {
            if (unsettled.remove(batch)) {
              emit(outcome(Kind.RELEASED, batch.claim, 0, null, null));
              metrics.inFlight(inFlight.addAndGet(-batch.claim.messageCount()));
            }
          }
        })
        .then();
  }

  /**
   * Asks for a claim cycle. A wake that fails because another thread is emitting at that moment
   * is not needed: that concurrent wake's cycle runs later and sees the same budget. Polling is
   * the fallback for anything else.
   */
  private void wake() {
    synchronized (wakeups) {
      wakeups.tryEmitNext(System.nanoTime());
    }
  }

  /** Outcomes come from settlement, decode and shutdown paths: serialize them. */
  private void emit(RelayOutcome outcome) {
    synchronized (outcomes) {
      Sinks.EmitResult result = outcomes.tryEmitNext(outcome);
      if (result.isFailure() && result != Sinks.EmitResult.FAIL_ZERO_SUBSCRIBER) {
        log.debug("Outcome not delivered ({}): {}", result, outcome);
      }
    }
  }

  @Override
  public Flux<RelayOutcome> outcomes() {
    return outcomes.asFlux();
  }

  @Override
  public long inFlightRecords() {
    return inFlight.get();
  }

  // ---- health ----
  @Override
  public RelayHealth health() {
    return healthProbe.health();
  }
  // ---- end health ----

  @Override
  public Mono<Void> stop(Duration drain) {
    Mono<Void> stop = stopping(drain).cache();
    return stopping.compareAndSet(null, stop) ? stop : stopping.get();
  }

  private Mono<Void> stopping(Duration drain) {
    // Keep a little of the drain time for releasing leases and closing the sink.
    Duration reserve = drain.dividedBy(4).compareTo(Duration.ofSeconds(2)) < 0
        ? drain.dividedBy(4) : Duration.ofSeconds(2);
    Duration waitForDrain = drain.minus(reserve);
    return Mono.defer(() -> {
      log.info("Outbox relay {} stopping (drain {})", options.instanceId(), drain);
      healthProbe.dispose(); // ---- health: before the sink closes ----
      triggers.dispose(); // stop triggers first
      stopClaiming.tryEmitValue(true);
      return terminated.asMono()
          .timeout(waitForDrain, Mono.defer(() -> {
            log.warn("Outbox relay {} did not drain within {}; abandoning {} records in flight",
                options.instanceId(), waitForDrain, inFlight.get());
            pipeline.dispose();
            return Mono.empty();
          }))
          .then(abandonUnsettled())
          .then(Mono.fromRunnable(() -> {
            stats.dispose();
            renewals.dispose();
            leading.dispose(); // closes the lock connection: a standby takes over
          }))
          .then(options.closeSinkOnStop() ? options.sink().close() : Mono.empty())
          .timeout(drain.plus(Duration.ofSeconds(1)), Mono.empty())
          .doFinally(signal -> {
            synchronized (outcomes) {
              outcomes.tryEmitComplete();
            }
            log.info("Outbox relay {} stopped", options.instanceId());
          });
    });
  }
}
