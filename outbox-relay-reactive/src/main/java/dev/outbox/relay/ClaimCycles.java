package dev.outbox.relay;

import java.time.Duration;
import java.util.function.Supplier;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Sinks;
import reactor.core.scheduler.Schedulers;

/**
 * When a polling source claims: at every poll interval, at every wake-up (room freed in the
 * ledger, a full claim, leadership or ownership gained) and at the end of each debounce window
 * of external triggers (notifications, heartbeats); one claim at a time, off the thread that
 * woke it, until stopped. Shared by {@link ClaimLoop} and {@link PartitionedSource}.
 */
final class ClaimCycles {
  private final RelayOptions options;
  private final Flux<Long> externalWakeups;
  private final Sinks.Many<Long> wakeups = Sinks.many().multicast().directBestEffort();
  private final Sinks.One<Boolean> stopped = Sinks.one();
  private volatile boolean stopping;

  ClaimCycles(RelayOptions options, Flux<Long> externalWakeups) {
    this.options = options;
    this.externalWakeups = externalWakeups;
  }

  /** Runs {@code claim} once per cycle, one at a time, until {@link #stop()}. */
  <T> Flux<T> run(Supplier<Flux<T>> claim) {
    // Notifications and heartbeats count once per debounce window, at its end.
    Flux<Long> external = externalWakeups.sample(options.triggers().debounce());
    return Flux.merge(Flux.interval(Duration.ZERO, options.pollInterval()), wakeups.asFlux(), external)
        .onBackpressureLatest()
        .takeUntilOther(stopped.asMono())
        .publishOn(Schedulers.parallel(), 1)
        .concatMap(tick -> claim.get(), 1);
  }

  /**
   * Asks for a cycle. A wake that fails because another thread is emitting at that moment is not
   * needed: that concurrent wake's cycle runs later and sees the same budget. Polling is the
   * fallback for anything else.
   */
  void wake() {
    synchronized (wakeups) {
      wakeups.tryEmitNext(System.nanoTime());
    }
  }

  void stop() {
    stopping = true;
    stopped.tryEmitValue(true);
  }

  /** Whether {@link #stop()} was called: a cycle already queued must not claim any more. */
  boolean stopping() {
    return stopping;
  }
}
