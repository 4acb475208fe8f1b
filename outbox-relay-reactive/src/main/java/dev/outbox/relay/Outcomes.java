package dev.outbox.relay;

import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.publisher.BufferOverflowStrategy;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Sinks;
import reactor.core.scheduler.Scheduler;
import reactor.core.scheduler.Schedulers;

/**
 * Hands outcomes to {@link RelayHandle#outcomes()} subscribers without ever making the relay
 * wait for them. Emitting only appends to each subscriber's bounded buffer (settlement and
 * Kafka's I/O threads call it); subscribers run on their own worker. When a subscriber falls
 * {@code buffer} outcomes behind, newer outcomes are dropped for it and counted (once per
 * subscriber that missed them). Thread-safe.
 */
final class Outcomes {
  private static final Logger log = LoggerFactory.getLogger(Outcomes.class);

  private final Sinks.Many<RelayOutcome> sink = Sinks.many().multicast().directBestEffort();
  private final int buffer;
  private final AtomicLong dropped = new AtomicLong();
  private final Scheduler delivery = Schedulers.boundedElastic();
  private volatile RelayMetrics metrics = RelayMetrics.none();

  Outcomes(int buffer) {
    this.buffer = buffer;
  }

  /** Where drops are counted; set when the relay starts. */
  void metrics(RelayMetrics metrics) {
    this.metrics = metrics;
  }

  Flux<RelayOutcome> flux() {
    return sink.asFlux()
        .onBackpressureBuffer(buffer, this::drop, BufferOverflowStrategy.DROP_LATEST)
        .publishOn(delivery, 1);
  }

  void emit(RelayOutcome outcome) {
    // Emissions come from several threads; the sink needs them serialized. Only a buffer append
    // runs under the lock.
    synchronized (sink) {
      sink.tryEmitNext(outcome);
    }
  }

  void complete() {
    synchronized (sink) {
      sink.tryEmitComplete();
    }
  }

  /** Outcomes dropped so far because a subscriber was too slow. */
  long dropped() {
    return dropped.get();
  }

  private void drop(RelayOutcome outcome) {
    long total = dropped.incrementAndGet();
    metrics.outcomesDropped(1);
    if (Long.bitCount(total) == 1) { // 1, 2, 4, 8, ...: a trace without a log line per drop
      log.warn("An outcomes() subscriber is {} outcomes behind; {} dropped so far (latest: {})",
          buffer, total, outcome);
    }
  }
}
