package dev.outbox.relay;

import dev.outbox.r2dbc.InvalidConfigurationException;
import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.UndecodableBatchException;
import dev.outbox.r2dbc.internal.ClaimedBatch;
import dev.outbox.relay.BatchInFlight.RecordRef;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.function.BooleanSupplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.publisher.SynchronousSink;
import reactor.core.scheduler.Schedulers;
import reactor.util.retry.Retry;

/**
 * Sends what a {@link BatchSource} claims and has it settled, the same for every mode:
 *
 * <pre>
 * source.batches() (groups) → (parallel scheduler) decode, build records → sink.send
 *   → per-record answers → a batch's last answer → groups of batches → settler
 * </pre>
 *
 * <p>Decoding and building records run on Reactor's parallel scheduler, never on the database
 * driver's event loop that delivered the rows. If the sink fails as a whole, everything still
 * held is released and the pipeline restarts with backoff, unless the relay is stopping.
 */
final class RelayPipeline {
  private static final Logger log = LoggerFactory.getLogger(RelayPipeline.class);

  /**
   * Most batches settled by one statement, and how long to wait to fill a group. A group costs
   * a statement whatever its size: draining 200,000 one-message rows in WAL mode, groups of up to
   * 500 over 20 ms cost 55 µs of CPU a row (JVM and PostgreSQL, two runs) against 60-65 µs with
   * groups of 100 over 5 ms. In WAL and PARTITIONED mode the wait delays only the DELETE: a
   * key's next batch goes out once Kafka has acknowledged the previous one. In ORDERED mode it
   * waits for that DELETE (and PARALLEL is left as it was): groups of 100 over 5 ms there.
   */
  private static final int SETTLE_GROUP = 500;
  private static final Duration SETTLE_WINDOW = Duration.ofMillis(20);
  private static final int SETTLE_GROUP_CLAIMED = 100;
  private static final Duration SETTLE_WINDOW_CLAIMED = Duration.ofMillis(5);
  /** Groups of claimed batches queued ahead of decoding (already bounded by the ledger's budgets). */
  private static final int DECODE_QUEUE = 32;

  private final BatchSource source;
  private final RecordSink sink;
  private final Settler settler;
  private final Ledger ledger;
  private final RelayOptions options;
  private final BooleanSupplier stopping;

  RelayPipeline(BatchSource source, RecordSink sink, Settler settler, Ledger ledger,
      RelayOptions options, BooleanSupplier stopping) {
    this.ledger = ledger;
    this.source = source;
    this.sink = sink;
    this.settler = settler;
    this.options = options;
    this.stopping = stopping;
  }

  /** Runs until the source completes (after stop) and everything sent is settled. */
  Mono<Void> run() {
    return Mono.defer(() -> sink.send(records())
            .handle(this::answered)
            // Settle in groups: one DELETE for many published batches, not one per batch.
            .bufferTimeout(settleGroup(), settleWindow(), true)
            .flatMap(settler::settle, options.settleConcurrency())
            .then())
        .onErrorResume(error -> settler.abandonAll(options.statementTimeout()).then(Mono.error(error)))
        .retryWhen(Retry.backoff(Long.MAX_VALUE, Duration.ofSeconds(1))
            .maxBackoff(Duration.ofSeconds(30))
            .filter(error -> !stopping.getAsBoolean()
                && !(error instanceof InvalidConfigurationException))
            .doBeforeRetry(signal -> log.warn("Outbox relay {} restarting its pipeline after: {}",
                options.instanceId(), signal.failure().toString())));
  }

  private boolean keysFreedAtAck() {
    return options.mode() == RelayMode.WAL || options.mode() == RelayMode.PARTITIONED;
  }

  private int settleGroup() {
    return keysFreedAtAck() ? SETTLE_GROUP : SETTLE_GROUP_CLAIMED;
  }

  private Duration settleWindow() {
    return keysFreedAtAck() ? SETTLE_WINDOW : SETTLE_WINDOW_CLAIMED;
  }

  private Flux<OutboundRecord<RecordRef>> records() {
    return source.batches()
        .publishOn(Schedulers.parallel(), DECODE_QUEUE)
        // Prefetch 0: each group is requested, so delivered, on the parallel worker once the
        // previous one is done; a queued group would otherwise be decoded on whichever thread
        // finished the previous step (the driver's, after a dead-letter) or asked for more (the
        // sink's). One group is decoded at a time.
        .concatMap(this::decode, 0);
  }

  /**
   * The group's records, in order; its undecodable batches are dead-lettered instead (no
   * records), after the group's records, and the next group waits for those dead letters.
   */
  private Flux<OutboundRecord<RecordRef>> decode(List<BatchInFlight> group) {
    List<OutboundRecord<RecordRef>> records = new ArrayList<>(group.size());
    List<Mono<Void>> deadLetters = null;
    for (BatchInFlight batch : group) {
      ClaimedBatch claimed = batch.claim();
      List<Message> messages;
      try {
        messages = options.codec().decode(claimed.rawData());
        if (messages.size() != claimed.messageCount()) {
          // raw_data cut at a message boundary still decodes; the count catches the lost tail.
          throw new UndecodableBatchException("raw_data holds " + messages.size()
              + " messages but the row's message_count is " + claimed.messageCount());
        }
        if (messages.isEmpty()) { // nothing would ever answer for it
          throw new UndecodableBatchException("raw_data holds no messages");
        }
      } catch (RuntimeException error) {
        if (deadLetters == null) {
          deadLetters = new ArrayList<>(1);
        }
        deadLetters.add(settler.undecodable(batch, error));
        continue;
      }
      records.addAll(batch.records(messages, options.recordInterceptor()));
    }
    Flux<OutboundRecord<RecordRef>> sent = Flux.fromIterable(records);
    return deadLetters == null ? sent
        : sent.concatWith(Flux.concat(deadLetters).then(Mono.empty()));
  }

  /** Accounts one record's answer; emits its batch when this was the batch's last record. */
  private void answered(SendResult<RecordRef> result, SynchronousSink<BatchInFlight> done) {
    BatchInFlight batch = result.correlation().batch();
    Throwable error = result.error();
    BatchInFlight.answered(result.correlation(), error);
    if (error == null) {
      options.metrics().published(
          Duration.ofNanos(System.nanoTime() - result.correlation().handedOffNanos()));
    } else {
      boolean fatal = options.failureClassifier().isFatal(error);
      options.metrics().failed(fatal);
      batch.failed(error, fatal);
    }
    if (batch.answered()) {
      if (batch.fullyPublished()) {
        batch.markPublished();
        ledger.acknowledged(batch); // its budget is free before its DELETE
      }
      done.next(batch);
    }
  }
}
