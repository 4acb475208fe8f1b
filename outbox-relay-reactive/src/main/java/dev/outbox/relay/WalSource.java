package dev.outbox.relay;

import dev.outbox.r2dbc.InvalidConfigurationException;
import dev.outbox.r2dbc.OutboxStore;
import dev.outbox.r2dbc.internal.RelayStore;
import dev.outbox.relay.RelayOutcome.Kind;
import io.r2dbc.postgresql.PostgresqlConnectionFactory;
import io.r2dbc.spi.ConnectionFactory;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.publisher.Sinks;

/**
 * WAL mode: first the rows already committed when the slot is ready (in insert order), then
 * committed inserts in commit order, one batch at a time. Each batch is claimed by id
 * and handed to the pipeline; the next waits until it is settled (a retry is waited out in
 * place), and a transaction's log position is confirmed only once all its batches are.
 */
final class WalSource implements BatchSource {
  /** How often confirmed positions are reported to the server. */
  private static final Duration STATUS_INTERVAL = Duration.ofMillis(500);
  /** How long to wait before claiming again a batch another holder's lease still covers. */
  private static final Duration LEASED_WAIT = Duration.ofSeconds(1);
  /** Rows read per statement by the start-up sweep. */
  private static final int SWEEP_PAGE = 500;

  private final ConnectionFactory unpooled;
  private final RelayStore store;
  private final OutboxStore rows;
  private final Ledger ledger;
  private final RelayOptions options;
  private final Sinks.One<Boolean> stopped = Sinks.one();

  WalSource(ConnectionFactory unpooled, RelayStore store, OutboxStore rows, Ledger ledger,
      RelayOptions options) {
    this.unpooled = unpooled;
    this.store = store;
    this.rows = rows;
    this.ledger = ledger;
    this.options = options;
  }

  @Override
  public Flux<BatchInFlight> batches() {
    if (!(unpooled instanceof PostgresqlConnectionFactory postgres)) {
      return Flux.error(new InvalidConfigurationException(
          "WAL mode needs an r2dbc-postgresql ConnectionFactory, got " + unpooled.getClass()));
    }
    WalFollower follower = new WalFollower(postgres, options.walSlot(), options.walPublication(),
        options.table().name(), "batch_id", STATUS_INTERVAL);
    return WalFollower.ensurePublication(unpooled, options.walPublication(),
            options.table().qualifiedName(), "batch_id")
        .then(WalFollower.ensureSlot(unpooled, options.walSlot(), "pgoutput"))
        .thenMany(committedBefore(-1).takeUntilOther(stopped.asMono()))
        .concatWith(Flux.defer(follower::follow).takeUntilOther(stopped.asMono())
            .concatMap(insert -> inCommitOrder(insert.batchId())
                .concatWith(Mono.fromRunnable(() -> follower.acknowledge(insert))), 1));
  }

  /**
   * The start-up sweep: rows already committed when the slot is ready (before its consistent
   * point they never reach it: rows written before the relay first started, while the slot
   * waited for open transactions, or while the table was out of the publication), in insert
   * order, each settled before the next. Rows of transactions still open are left to the slot,
   * which sees them commit. A row the slot also delivers later is gone by then and skipped.
   */
  private Flux<BatchInFlight> committedBefore(long afterSeq) {
    return store.committedAfter(afterSeq, SWEEP_PAGE)
        .collectList()
        .flatMapMany(page -> page.isEmpty() ? Flux.empty()
            : Flux.fromIterable(page)
                .concatMap(row -> inCommitOrder(row.batchId()), 1)
                .concatWith(Flux.defer(() -> committedBefore(page.get(page.size() - 1).insertSeq()))));
  }

  @Override
  public void stop() {
    stopped.tryEmitValue(true);
  }

  /**
   * The batch, and again after each retry it needs, until it is settled for good; empty when it
   * is already gone (published before).
   */
  private Flux<BatchInFlight> inCommitOrder(String batchId) {
    return Flux.defer(() -> {
      long generation = ledger.generation();
      return store.claimById(batchId, options.leaseDuration(), options.instanceId())
          .flatMapMany(claimed -> {
            List<BatchInFlight> registered = ledger.register(List.of(claimed), generation, true);
            if (registered == null) { // the pipeline was abandoned meanwhile: give it back
              return store.releaseAll(List.of(claimed)).onErrorResume(e -> Mono.empty())
                  .thenMany(Flux.empty());
            }
            BatchInFlight batch = registered.get(0);
            return Flux.just(batch).concatWith(batch.settlement()
                .flatMapMany(outcome -> again(batchId, outcome)));
          })
          .switchIfEmpty(Flux.defer(() -> rows.find(batchId)
              // Still there but not claimable: another holder's lease; wait for it to expire.
              .flatMapMany(row -> after(LEASED_WAIT, batchId))));
    });
  }

  private Flux<BatchInFlight> again(String batchId, Optional<RelayOutcome> outcome) {
    if (outcome.isEmpty()) { // not settled (database error, released): the row is still there
      return after(LEASED_WAIT, batchId);
    }
    RelayOutcome settled = outcome.get();
    if (settled.kind() == Kind.RETRY_SCHEDULED && settled.retryIn() != null) {
      return after(settled.retryIn(), batchId);
    }
    return Flux.empty();
  }

  /** The batch again after {@code wait}, unless the relay stops meanwhile. */
  private Flux<BatchInFlight> after(Duration wait, String batchId) {
    return Mono.delay(wait).takeUntilOther(stopped.asMono())
        .flatMapMany(tick -> inCommitOrder(batchId));
  }
}
