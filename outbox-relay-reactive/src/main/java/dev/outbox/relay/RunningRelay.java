package dev.outbox.relay;

import dev.outbox.r2dbc.OutboxStore;
import dev.outbox.r2dbc.internal.ClaimedBatch;
import dev.outbox.r2dbc.internal.PartitionStore;
import dev.outbox.r2dbc.internal.RelayStore;
import io.r2dbc.spi.ConnectionFactory;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.jspecify.annotations.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.Disposable;
import reactor.core.Disposables;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.publisher.Sinks;

/**
 * The lifecycle of one running relay: creates what it owns when it starts (the Kafka sink built
 * from {@link RelayOptions#kafka()}, timers, the leadership connection, wake-up triggers) and
 * closes all of it when it stops, whatever happens on the way. The work itself is the {@link
 * RelayPipeline} over a {@link BatchSource}, with a {@link Ledger} and a {@link Settler}.
 */
final class RunningRelay implements RelayHandle {
  private static final Logger log = LoggerFactory.getLogger(RunningRelay.class);

  private final RelayOptions options;
  private final Outcomes outcomes;
  private final ConnectionFactory unpooled;
  private final RelayStore store;
  private final OutboxStore rows;
  private final Ledger ledger;
  private final Settler settler;
  private final BatchSource source;
  private final RecordSink sink;
  private final boolean ownsSink;
  private final @Nullable Leadership leadership;
  /** Whether this instance may claim: always in PARALLEL and WAL, only as leader in ORDERED. */
  private final AtomicBoolean mayClaim = new AtomicBoolean();
  private final Sinks.Many<Long> externalWakeups = Sinks.many().multicast().directBestEffort();
  private final Sinks.Empty<Void> terminated = Sinks.empty();
  private final Disposable.Swap pipeline = Disposables.swap();
  private final Disposable.Swap stats = Disposables.swap();
  private final Disposable.Swap renewals = Disposables.swap();
  private final Disposable.Swap leading = Disposables.swap();
  private final Disposable.Swap triggers = Disposables.swap();
  private final AtomicReference<@Nullable Mono<Void>> stopping = new AtomicReference<>();
  private final HealthProbe health;
  private final AtomicBoolean sinkClosing = new AtomicBoolean();
  private final Sinks.Empty<Void> sinkClosed = Sinks.empty();

  private RunningRelay(ConnectionFactory connections, ConnectionFactory unpooled,
      RelayOptions options, Outcomes outcomes) {
    this.options = options;
    this.outcomes = outcomes;
    this.unpooled = unpooled;
    this.store = RelayStore.create(connections, options.table(), options.statementTimeout());
    this.rows = OutboxStore.create(connections, options.table());
    this.leadership = options.mode() == RelayMode.ORDERED
        ? new Leadership(unpooled, "dev.outbox.relay:" + options.table().qualifiedName(),
            options.instanceId(), options.leadershipRetry(), options.leadershipRetry().multipliedBy(2))
        : null;
    this.mayClaim.set(leadership == null);
    RecordSink given = options.sink();
    this.ownsSink = given == null;
    Map<String, Object> producer = given == null ? producerProperties(options) : null;
    this.sink = given != null ? given : ReactorKafkaSink.create(producer, options.maxInFlight());
    // Kafka and the producer thread are checked only for the producer this relay owns.
    this.health = new HealthProbe(connections, options.table(), options.mode(),
        producer == null ? null : KafkaRecords.producerProperties(producer), options.walSlot(),
        options.walPublication(), options.metrics(), HealthProbe.DEFAULT_INTERVAL, HealthProbe.DEFAULT_TIMEOUT);
    BatchSource[] wakeTarget = new BatchSource[1];
    this.ledger = new Ledger(options.maxInFlight(), options.maxInFlightBytes(), options.metrics(),
        () -> wakeTarget[0].wake());
    if (options.mode() == RelayMode.PARTITIONED) {
      PartitionStore partitions = PartitionStore.create(connections, options.table(),
          options.statementTimeout());
      String owner = options.instanceId() + "#"
          + Long.toString(ThreadLocalRandom.current().nextLong() & Long.MAX_VALUE, 36);
      // Several rows of a key go out as one unit only behind a sink that honours SendGuard.
      PartitionedSource partitioned = new PartitionedSource(partitions, ledger, options,
          externalWakeups.asFlux(), owner,
          sink.checksSendGuard() ? options.rowsPerKeyInFlight() : 1);
      this.settler = new Settler(Settlements.partitioned(partitions, owner,
          partitioned::returned), ledger, outcomes, options);
      this.source = partitioned;
    } else {
      this.settler = new Settler(Settlements.leased(store), ledger, outcomes, options);
      this.source = options.mode() == RelayMode.WAL
          ? new WalSource(unpooled, store, ledger, options,
              sink.checksSendGuard() ? options.rowsPerKeyInFlight() : 1)
          : new ClaimLoop(store, ledger, options, externalWakeups.asFlux(), mayClaim);
    }
    wakeTarget[0] = source;
  }

  /** The relay's own producer: the user's properties, with a client id that names this relay. */
  private static Map<String, Object> producerProperties(RelayOptions options) {
    Map<String, Object> props = new HashMap<>(options.kafka());
    props.putIfAbsent(ProducerConfig.CLIENT_ID_CONFIG, "outbox-relay-" + options.instanceId());
    return props;
  }

  static RunningRelay start(ConnectionFactory connections, ConnectionFactory unpooled,
      RelayOptions options, Outcomes outcomes) {
    RunningRelay relay = new RunningRelay(connections, unpooled, options, outcomes);
    relay.start();
    return relay;
  }

  private void start() {
    log.info("Outbox relay {} starting on {} (mode {}, maxInFlight {} records / {} bytes,"
            + " claimSize {}, lease {}, renewed every {})", options.instanceId(), options.table(),
        options.mode(), options.maxInFlight(), options.maxInFlightBytes(), options.claimSize(),
        options.leaseDuration(), options.leaseRenewal());
    outcomes.metrics(options.metrics());
    if (leadership != null) {
      leading.update(leadership.states().subscribe(isLeader -> {
        mayClaim.set(isLeader); // losing it stops claiming at once; leases fence late settlements
        options.metrics().leadership(isLeader);
        if (isLeader) {
          source.wake();
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
    source.open();
    pipeline.update(new RelayPipeline(source, sink, settler, ledger, options, () -> stopping.get() != null)
        .run()
        .subscribe(done -> {}, error -> {
          if (stopping.get() == null) {
            log.error("Outbox relay {} stopped on an unexpected error", options.instanceId(), error);
          } else {
            log.warn("Outbox relay {} pipeline ended with an error while stopping: {}",
                options.instanceId(), error.toString());
          }
          terminated.tryEmitEmpty();
        }, terminated::tryEmitEmpty));
    // PARTITIONED rows carry no lease: the source renews its partitions itself.
    if (!options.leaseRenewal().isZero() && options.mode() != RelayMode.PARTITIONED) {
      renewals.update(Flux.interval(options.leaseRenewal())
          .onBackpressureDrop()
          .concatMap(tick -> renewLeases())
          .subscribe());
    }
    stats.update(Flux.interval(Duration.ZERO, options.statsInterval())
        .onBackpressureDrop()
        .concatMap(tick -> rows.stats()
            .timeout(options.statementTimeout())
            .doOnNext(options.metrics()::backlog)
            .onErrorResume(e -> {
              log.debug("Could not read outbox backlog stats", e);
              return Mono.empty();
            }))
        .subscribe());
    health.start();
  }

  /**
   * Extends the leases of every batch this relay holds, so that a slow Kafka does not let
   * another relay publish them again; a crashed, frozen or cut-off relay stops renewing.
   */
  private Mono<Void> renewLeases() {
    List<ClaimedBatch> held = ledger.leases();
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

  @Override
  public Flux<RelayOutcome> outcomes() {
    return outcomes.flux();
  }

  @Override
  public long inFlightRecords() {
    return ledger.records();
  }

  @Override
  public RelayHealth health() {
    return health.health();
  }

  @Override
  public Mono<Void> stop(Duration drain) {
    Mono<Void> stop = stopping(drain).cache();
    return stopping.compareAndSet(null, stop) ? stop : stopping.get();
  }

  /**
   * Stops triggers and claims, waits for the drain, releases what is still held, closes what the
   * relay owns. Each step is bounded, and the timers, the leadership connection, the owned sink
   * and the outcomes are closed whatever happens on the way (a step that times out or fails).
   */
  private Mono<Void> stopping(Duration drain) {
    // Keep a little of the drain time for releasing leases and closing the sink.
    Duration reserve = drain.dividedBy(4).compareTo(Duration.ofSeconds(2)) < 0
        ? drain.dividedBy(4) : Duration.ofSeconds(2);
    Duration waitForDrain = drain.minus(reserve);
    Duration step = reserve.dividedBy(2);
    return Mono.defer(() -> {
      log.info("Outbox relay {} stopping (drain {})", options.instanceId(), drain);
      health.dispose(); // before the producer closes: its ended thread is not a failure
      triggers.dispose(); // stop triggers first
      source.stop();
      return terminated.asMono()
          .timeout(waitForDrain, Mono.fromRunnable(() -> {
            log.warn("Outbox relay {} did not drain within {}; abandoning {} records in flight",
                options.instanceId(), waitForDrain, ledger.records());
            pipeline.dispose();
          }))
          .then(Mono.fromRunnable(this::stopTimers))
          .then(settler.abandonAll(step))
          .then(Mono.defer(() -> source.handOver(step)))
          .onErrorResume(error -> {
            log.warn("Outbox relay {} stop: {}", options.instanceId(), error.toString());
            return Mono.empty();
          })
          // Closing runs whatever happened before; waiting for it is bounded, the close is not
          // cancelled when the wait ends.
          .then(Mono.defer(() -> closeOwnedSink().timeout(step, Mono.fromRunnable(() ->
              log.warn("Outbox relay {} is still closing its Kafka producer after {}",
                  options.instanceId(), step)))))
          .doFinally(signal -> {
            health.dispose();
            pipeline.dispose();
            stopTimers();
            leading.dispose(); // closes the lock connection: a standby takes over
            closeOwnedSink();
            outcomes.complete();
            log.info("Outbox relay {} stopped", options.instanceId());
          });
    });
  }

  private void stopTimers() {
    triggers.dispose();
    stats.dispose();
    renewals.dispose();
  }

  /**
   * Starts closing the sink if the relay created it (once; later calls return the same close),
   * and returns its completion. Subscribed here, so a caller that stops waiting does not cancel
   * the close.
   */
  private Mono<Void> closeOwnedSink() {
    if (!ownsSink) {
      return Mono.empty();
    }
    if (sinkClosing.compareAndSet(false, true)) {
      sink.close()
          .doOnError(error -> log.warn("Outbox relay {} could not close its Kafka producer: {}",
              options.instanceId(), error.toString()))
          .subscribe(done -> {}, error -> sinkClosed.tryEmitEmpty(), sinkClosed::tryEmitEmpty);
    }
    return sinkClosed.asMono();
  }
}
