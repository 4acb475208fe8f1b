package dev.outbox.relay;

import dev.outbox.r2dbc.InvalidConfigurationException;
import dev.outbox.r2dbc.internal.ClaimedBatch;
import dev.outbox.r2dbc.internal.Entropy;
import dev.outbox.r2dbc.internal.RelayStore;
import dev.outbox.r2dbc.internal.RelayStore.IdClaim;
import dev.outbox.r2dbc.internal.RelayStore.IdClaims;
import dev.outbox.r2dbc.internal.Sql;
import dev.outbox.relay.RelayOutcome.Kind;
import dev.outbox.relay.WalFollower.WalInsert;
import io.r2dbc.postgresql.PostgresqlConnectionFactory;
import io.r2dbc.postgresql.replication.LogSequenceNumber;
import io.r2dbc.spi.ConnectionFactory;
import io.r2dbc.spi.R2dbcException;
import io.r2dbc.spi.R2dbcNonTransientResourceException;
import io.r2dbc.spi.R2dbcTransientResourceException;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicBoolean;
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
import reactor.core.scheduler.Schedulers;

/**
 * WAL mode: first the rows already committed when the slot is ready (in insert order), then
 * committed inserts in commit order, many batches in flight at once within the ledger's budgets.
 *
 * <p>Rows from the log: an insert committed while the relay streams is published as the log
 * carries it (the publication carries the row's columns), with no claim and no read; its
 * settlement is fenced by "no lease on the row" ({@link RelayStore#UNLEASED}). A replayed insert
 * committed before streaming started is taken from the log once a read-only lookup finds it still
 * in the table (a predecessor may have published it), unless the slot has confirmed all the
 * previous start sent ({@link WalStarts}). Rows of the start-up sweep, rows whose log
 * entry carries only the id, and every retry are claimed by id ({@link
 * RelayStore#claimCommittedByIds}), many per statement. Lookups run for up to {@link
 * #LOOKUPS_AHEAD} groups at once and are applied in arrival order: a round trip overlaps the
 * next group's arrival instead of stopping it.
 *
 * <p>Order: the batches of a key wait in line (claimed, in the ledger). The first goes to the
 * pipeline together with the claimed batches right behind it on that one key, as one unit (at
 * most {@code rowsPerKeyInFlight}; SendGuard across the unit); each leaves the line once Kafka
 * has acknowledged it, not only once it is settled (a batch whose DELETE then fails is published
 * again after the later ones: a duplicate). A retry, a settlement that failed or a lost lease
 * keeps the keys held until the batch is claimed and sent again (or found gone); a dead letter
 * lets them go.
 * Batches without keys are unordered.
 *
 * <p>Log position: each insert is acknowledged to the {@link WalFollower} once its batch is
 * settled for good; the follower confirms only up to the end of the oldest transaction not yet
 * fully acknowledged.
 */
final class WalSource implements BatchSource {
  private static final Logger log = LoggerFactory.getLogger(WalSource.class);
  /** How often confirmed positions are reported to the server. */
  private static final Duration STATUS_INTERVAL = Duration.ofMillis(500);
  /** How long to wait before claiming again a batch another holder's lease still covers. */
  private static final Duration LEASED_WAIT = Duration.ofSeconds(1);
  /** Rows read per statement by the start-up sweep. */
  private static final int SWEEP_PAGE = 500;
  /** Most ids claimed by one statement, and how long arrivals wait to fill a group. */
  private static final int CLAIM_GROUP = 256;
  private static final Duration CLAIM_WINDOW = Duration.ofMillis(2);
  /** Parts of arrivals asked about at once (each a round trip), answered in arrival order. */
  private static final int LOOKUPS_AHEAD = 2;
  /** First wait, doubling up to the most, for a committed transaction to become visible. */
  private static final Duration NOT_VISIBLE_WAIT = Duration.ofMillis(1);
  private static final Duration MAX_NOT_VISIBLE_WAIT = Duration.ofMillis(200);
  /**
   * A batch waiting at least this long to be claimed again (a retry's backoff, another holder's
   * lease) parks the batches behind it on its keys: they give their room in the budgets back
   * and are claimed again once first in line, so one key's long retry does not stop the others.
   */
  private static final Duration PARKS_BEHIND = Duration.ofSeconds(1);

  /**
   * A batch id to publish: from the slot ({@code insert} set; {@code fromLog}: published as the
   * log carries its row, without a claim, once found still in the table if {@link #checkFirst})
   * or from the start-up sweep; or the sweep's end ({@code sweepComplete}: it may be
   * remembered).
   */
  private record Arrival(String batchId, @Nullable WalInsert insert, boolean fromLog,
      boolean endOfSweep, boolean sweepComplete) {
    /** Ids as the claim answers them: a CHAR(27) id shorter than 27 comes padded otherwise. */
    Arrival {
      batchId = batchId.strip();
    }

    static Arrival swept(String batchId) {
      return new Arrival(batchId, null, false, false, false);
    }

    /** {@code complete}: the sweep may be remembered (see {@link #sweep}). */
    static Arrival sweepEnd(boolean complete) {
      return new Arrival("", null, false, true, complete);
    }

    /**
     * An insert from the slot. Committed before the sweep's end, it may be a row the sweep took
     * too: claimed, so that one already published (and deleted) is found gone, not published
     * again. Later: taken from the log ({@link #checkFirst}).
     */
    static Arrival logged(WalInsert insert, long sweptBelow) {
      boolean fromLog = insert.row() != null
          && (insert.commitLsn().asLong() >= sweptBelow || loggedOnly(insert.row()));
      return new Arrival(insert.batchId(), insert, fromLog, false, false);
    }

    /**
     * Taken from the log and committed before {@code checkBelow} (where this start streamed,
     * unless the slot is past all a predecessor sent: {@link WalStarts}): a predecessor may
     * have published it, so it is taken once found still in the table (one read, no write).
     */
    boolean checkFirst(long checkBelow) {
      return fromLog && insert != null && insert.commitLsn().asLong() < checkBelow
          && !loggedOnly(insert.row());
    }
  }

  /**
   * A row its writer deleted once logged ({@link RelayStore#LOGGED_ONLY}): never in the table,
   * so never claimed, checked or swept; the relay holds it until it is settled for good.
   */
  private static boolean loggedOnly(@Nullable ClaimedBatch row) {
    return row != null && RelayStore.LOGGED_ONLY.equals(row.leaseToken());
  }

  private final ConnectionFactory unpooled;
  private final int batchesPerKeyInFlight;
  private final RelayStore store;
  private final Ledger ledger;
  private final RelayOptions options;
  private final Sinks.One<Boolean> stopped = Sinks.one();
  private volatile boolean stopping;
  /** Completed (once) when room is freed in the ledger; set while a claim waits for room. */
  private final AtomicReference<Sinks.@Nullable Empty<Void>> roomWaiter = new AtomicReference<>();

  /**
   * @param batchesPerKeyInFlight most claimed batches of one key handed over as one unit (1
   *     behind a sink that ignores {@link SendGuard})
   */
  WalSource(ConnectionFactory unpooled, RelayStore store, Ledger ledger, RelayOptions options,
      int batchesPerKeyInFlight) {
    this.batchesPerKeyInFlight = batchesPerKeyInFlight;
    this.unpooled = unpooled;
    this.store = store;
    this.ledger = ledger;
    this.options = options;
  }

  @Override
  public Flux<List<BatchInFlight>> batches() {
    if (!(unpooled instanceof PostgresqlConnectionFactory postgres)) {
      return Flux.error(new InvalidConfigurationException(
          "WAL mode needs an r2dbc-postgresql ConnectionFactory, got " + unpooled.getClass()));
    }
    return Flux.defer(() -> {
      WalSweeps sweeps = new WalSweeps(unpooled, options.table(), options.walSlot());
      WalStarts starts = new WalStarts(unpooled, options.table(), options.walSlot());
      UUID start = Entropy.randomUuid();
      AtomicBoolean pastPredecessor = new AtomicBoolean();
      // Replayed rows committed below it are checked first; known once this start streams.
      Sinks.One<Long> bound = Sinks.one();
      AtomicLong checkBelow = new AtomicLong(Long.MAX_VALUE);
      AtomicReference<@Nullable Run> runs = new AtomicReference<>();
      WalFollower follower = new WalFollower(postgres, options.walSlot(), options.walPublication(),
          options.table().name(), STATUS_INTERVAL, () -> {
            Run started = runs.get();
            if (started != null) {
              started.rememberSweep();
            }
            starts.checkBelow(start, pastPredecessor.get())
                .onErrorResume(error -> {
                  log.debug("Outbox relay {} checks every replayed row: {}", options.instanceId(),
                      error.toString());
                  return Mono.empty();
                })
                .defaultIfEmpty(Long.MAX_VALUE)
                .subscribe(below -> {
                  if (below < 0) { // renamed by another start: start again, named anew
                    bound.tryEmitError(new IllegalStateException("another relay started on slot "
                        + options.walSlot() + " meanwhile; starting again"));
                    return;
                  }
                  checkBelow.set(below);
                  bound.tryEmitValue(below);
                  log.info("Outbox relay {} on slot {}: {}", options.instanceId(),
                      options.walSlot(), below == 0 ? "the slot is past all its previous start"
                          + " sent; replayed rows are taken unchecked"
                          : "replayed rows committed before this start are checked");
                });
          });
      Run run = new Run(follower, sweeps);
      runs.set(run);
      AtomicLong sweptBelow = new AtomicLong();
      Flux<Arrival> arrivals = WalFollower.ensurePublication(unpooled, options.walPublication(),
              options.table().qualifiedName(), WalFollower.LOGGED_COLUMNS, sweeps.forget())
          .then(WalFollower.ensureSlot(unpooled, options.walSlot(), "pgoutput",
              sweeps.forget().then(starts.forget())))
          .then(starts.started(start))
          .doOnNext(pastPredecessor::set)
          .then(sweeps.swept())
          .flatMapMany(swept -> (swept ? Flux.<Arrival>empty() : sweep(sweptBelow))
              .concatWith(Flux.defer(follower::follow)
                  .map(insert -> Arrival.logged(insert, sweptBelow.get()))))
          .takeUntilOther(stopped.asMono());
      // Parts are asked about a few at a time (each is a round trip), and answered in order.
      Mono<Void> claiming = arrivals
          .bufferTimeout(CLAIM_GROUP, CLAIM_WINDOW, true)
          // Inserts from the slot wait for this start's check bound (one round trip).
          .concatMap(group -> (group.stream().anyMatch(a -> a.insert() != null)
              ? bound.asMono().takeUntilOther(stopped.asMono())
                  .map(below -> run.admit(group, below))
              : Mono.fromCallable(() -> run.admit(group, Long.MAX_VALUE)))
              .flatMapMany(ids -> parts(run, ids)), 1)
          // An answer dropped on a cancel or an earlier lookup's failure: while its claim still
          // runs, the claim's cancel hook gives the leases back; once answered and waiting in
          // line (flatMapSequential drops queued ones silently, without a cancel reaching them),
          // the run does when it ends (Run#cancel).
          .flatMapSequential(part -> ask(run, part).doOnNext(run::answered), LOOKUPS_AHEAD, 1)
          .doOnNext(run::apply)
          .then(Mono.fromRunnable(run::complete));
      // When this start ends, nothing more is sent (what it sent arrived before), and it leaves
      // its mark: what this start and its predecessors may have sent (what arrived, the sweep,
      // and, when it checked, everything committed before it streamed). A start that never
      // streamed (its bound unknown) leaves none: the next start checks. Ending gracefully (a
      // stop), the source completes only once the mark is written, so a process that exits
      // when stop() returns keeps it; on an error or a cancel it is written in the background.
      AtomicBoolean ended = new AtomicBoolean();
      java.util.function.Supplier<Mono<Void>> end = () -> {
        if (!ended.compareAndSet(false, true)) {
          return Mono.empty();
        }
        run.cancel();
        long below = checkBelow.get();
        if (below == Long.MAX_VALUE) {
          return Mono.empty();
        }
        return starts.stopped(start, Math.max(Math.max(run.arrivedUpTo(), sweptBelow.get()), below))
            .onErrorResume(error -> {
              log.debug("Outbox relay {} could not leave its start mark on slot {}; the next"
                  + " start checks replayed rows: {}", options.instanceId(), options.walSlot(),
                  error.toString());
              return Mono.empty();
            });
      };
      return Flux.merge(run.out.asFlux(), claiming.thenMany(Flux.<List<BatchInFlight>>empty()))
          .concatWith(Mono.defer(end).then(Mono.empty()))
          .doOnError(error -> end.get().subscribe())
          .doOnCancel(() -> end.get().subscribe());
    });
  }

  /**
   * The start-up sweep, unless one finished on this slot before ({@link WalSweeps}): rows already
   * committed when the slot is ready (before its consistent point they never reach it: rows
   * written before the relay first started, while the slot waited for open transactions, or
   * while the table was out of the publication), in insert order, ahead of everything from the
   * slot. Rows of transactions still open are left to the slot, which sees them commit. Then
   * the end marker, after {@code sweptBelow} is set to the WAL position at the sweep's end:
   * every row the sweep read committed before it, so the slot's inserts committed before it are
   * claimed (a row the sweep published is gone by then and skipped, or, still in flight, the
   * same batch), and only later ones are published as the log carries them.
   *
   * <p>The sweep lists rows below the commit watermark only, so a committed row of a
   * transaction younger than one still open elsewhere is left to the slot; should it have
   * committed before the slot was ready (or the table rejoined the publication), only a later
   * sweep finds it. So the end marker says the sweep is complete (may be remembered) only when,
   * as it began, no committed row was above the watermark (the watermark only rises, so none of
   * the rows committed by then was left out; later ones commit after the slot is ready and reach
   * it). Otherwise the next start sweeps again, as every start did before the mark (review
   * finding). The check reads the table once (no index on writer_xid).
   */
  private Flux<Arrival> sweep(AtomicLong sweptBelow) {
    return Sql.query(unpooled, "SELECT NOT EXISTS (SELECT 1 FROM " + options.table().qualifiedName()
            + " WHERE writer_xid >= pg_snapshot_xmin(pg_current_snapshot())) AS complete", st -> st,
            row -> Boolean.TRUE.equals(row.get("complete", Boolean.class)))
        .next()
        .flatMapMany(complete -> committedBefore(-1)
            .concatWith(WalFollower.currentInsertLsn(unpooled)
                .map(lsn -> {
                  sweptBelow.set(lsn.asLong());
                  return Arrival.sweepEnd(complete);
                })));
  }

  private Flux<Arrival> committedBefore(long afterSeq) {
    return store.committedAfter(afterSeq, SWEEP_PAGE)
        .collectList()
        .flatMapMany(page -> page.isEmpty() ? Flux.empty()
            : Flux.fromIterable(page).map(row -> Arrival.swept(row.batchId()))
                .concatWith(Flux.defer(() -> committedBefore(page.get(page.size() - 1).insertSeq()))));
  }

  @Override
  public void wake() {
    Sinks.Empty<Void> waiter = roomWaiter.getAndSet(null);
    if (waiter != null) {
      waiter.tryEmitEmpty();
    }
  }

  @Override
  public void stop() {
    stopping = true;
    stopped.tryEmitValue(true);
    wake();
  }

  /**
   * Splits {@code ids} into parts, in order, each as large as the ledger has room for when it is
   * cut, less the parts asked ahead and not applied yet (at least one batch, and each batch has
   * at least one record); waits for room in between. Batches can still exceed the record budget
   * by their extra messages, and the byte budget by the parts asked ahead ({@link
   * #LOOKUPS_AHEAD}): sizes are known, and batches registered, only once a part is answered.
   */
  private Flux<Part> parts(Run run, List<String> ids) {
    if (ids.isEmpty()) {
      return Flux.empty();
    }
    return room(run).flatMapMany(free -> {
      int n = Math.min(ids.size(), free);
      run.asking(n);
      List<String> now = List.copyOf(ids.subList(0, n));
      List<String> rest = List.copyOf(ids.subList(n, ids.size()));
      Part part = new Part(now, run.toCheck(now), run.toClaim(now), ledger.generation());
      return Flux.just(part).concatWith(Flux.defer(() -> parts(run, rest)));
    });
  }

  /**
   * Asks the table about one part: which of its rows to check first are still there, and
   * claims the others. Read-only for the rows taken from the log; the answers are applied in
   * arrival order ({@link Run#claimed}), whatever order they come back in.
   */
  private Mono<Answered> ask(Run run, Part part) {
    ClaimHandoff handoff = new ClaimHandoff();
    Mono<Set<String>> present = part.toCheck().isEmpty() ? Mono.just(Set.of())
        : whenVisible(run.transactionsOf(part.toCheck()), NOT_VISIBLE_WAIT,
            xids -> store.presentCommittedByIds(part.toCheck(), xids));
    Mono<List<IdClaim>> claims = part.toClaim().isEmpty() ? Mono.just(List.of())
        : whenVisible(run.transactionsOf(part.toClaim()), NOT_VISIBLE_WAIT,
            xids -> givenBackIfCancelled(store.claimCommittedByIds(part.toClaim(), xids,
                    options.leaseDuration(), options.instanceId()), handoff)
                .map(answer -> answer.committedVisible() ? Optional.of(answer.answers())
                    : Optional.<List<IdClaim>>empty()));
    return present.zipWhen(found -> claims,
            (found, claimed) -> new Answered(part, found, claimed, handoff))
        .defaultIfEmpty(new Answered(part, null, null, handoff)); // the relay stopped meanwhile
  }

  /** {@code claim} whose leases go back if it is cancelled before the relay takes them. */
  private Mono<IdClaims> givenBackIfCancelled(Mono<IdClaims> claim, ClaimHandoff handoff) {
    return handoff.givenBackIfCancelled(claim, answer -> answer.answers().stream()
        .map(IdClaim::claim).filter(Objects::nonNull).toList(), store, options.instanceId());
  }

  /** Ids to look up together: those to check first, those to claim; the ledger's generation. */
  private record Part(List<String> ids, List<String> toCheck, List<String> toClaim,
      long generation) {}

  /**
   * A part's answer: its rows found still there, its claims; both null when it was dropped (the
   * relay stopped while a transaction it names was not visible yet).
   */
  private record Answered(Part part, @Nullable Set<String> present,
      @Nullable List<IdClaim> claims, ClaimHandoff handoff) {
    boolean dropped() {
      return claims == null;
    }

    /** The leases its claims took. */
    List<ClaimedBatch> leases() {
      return claims == null ? List.of()
          : claims.stream().map(IdClaim::claim).filter(Objects::nonNull).toList();
    }
  }

  /**
   * Asks {@code ask} once the transactions the slot named ({@code xids}) are visible to its
   * statement's snapshot (the slot can report a commit a moment before other sessions see it; a
   * row not seen then would be taken for gone): until then it answers empty, and is asked again
   * after a wait (doubling); the groups after it are applied after it, so per-key commit order
   * holds. Empty when the relay stops meanwhile: then no later group is applied ({@link
   * Run#apply}).
   */
  private <T> Mono<T> whenVisible(List<Long> xids, Duration wait,
      java.util.function.Function<List<Long>, Mono<Optional<T>>> ask) {
    return ask.apply(xids).flatMap(answer -> {
      if (answer.isPresent()) {
        return Mono.just(answer.get());
      }
      if (stopping) {
        return Mono.empty();
      }
      log.debug("Outbox relay {}: a committed transaction is not visible yet; asking again in {}",
          options.instanceId(), wait);
      Duration next = wait.multipliedBy(2).compareTo(MAX_NOT_VISIBLE_WAIT) > 0 ? MAX_NOT_VISIBLE_WAIT
          : wait.multipliedBy(2);
      return Mono.delay(wait).then(Mono.defer(() -> whenVisible(xids, next, ask)));
    });
  }

  /**
   * How many batches the next part may ask for: the ledger's records of room, less those asked
   * for ahead, once that is some (or nothing is asked ahead: then at least one), and fewer than
   * the most entries are parked; empty when the relay stops first.
   */
  private Mono<Integer> room(Run run) {
    return Mono.defer(() -> {
      if (stopping) {
        return Mono.empty();
      }
      int free = run.freeToAsk();
      if (free > 0) {
        return Mono.just(free);
      }
      Sinks.Empty<Void> waiter = Sinks.empty();
      roomWaiter.set(waiter);
      // Room freed between the check and setting the waiter finds no waiter: check again.
      if (run.freeToAsk() > 0 || stopping) {
        wake();
      }
      return waiter.asMono().publishOn(Schedulers.parallel()).then(room(run));
    });
  }

  /**
   * Whether {@code error} says the server cannot be used now: it is shutting down or was shut
   * down (SQLSTATE 57P01, 57P02, 57P03), or the connection failed (class 08; or, without a
   * SQLSTATE, the driver's resource failures: refused, closed). Decided by the SQLSTATE when
   * there is one: r2dbc-postgresql raises most server errors (a statement timeout, a lock
   * timeout) as resource failures too, and those do not mean the server is going away.
   */
  static boolean serverUnavailable(Throwable error) {
    Throwable e = error;
    for (int depth = 0; e != null && depth < 10; depth++, e = e.getCause()) {
      String state = e instanceof R2dbcException r2dbc ? r2dbc.getSqlState() : null;
      if (state != null && !state.isEmpty()) {
        return state.startsWith("08") || state.equals("57P01") || state.equals("57P02")
            || state.equals("57P03");
      }
      if (e instanceof R2dbcNonTransientResourceException
          || e instanceof R2dbcTransientResourceException) {
        return true;
      }
    }
    return false;
  }

  /**
   * Whether {@code error} says for sure that the server is shutting down or the connection
   * failed: SQLSTATE 57P02, 57P03 or class 08. Narrower than {@link #serverUnavailable}: a
   * settlement that failed otherwise (57P01 also ends one terminated session; a pooled
   * connection found dead has no SQLSTATE) is claimed again a second later on a fresh
   * connection, which decides.
   */
  static boolean serverShuttingDown(Throwable error) {
    Throwable e = error;
    for (int depth = 0; e != null && depth < 10; depth++, e = e.getCause()) {
      String state = e instanceof R2dbcException r2dbc ? r2dbc.getSqlState() : null;
      if (state != null && !state.isEmpty()) {
        return state.startsWith("08") || state.equals("57P02") || state.equals("57P03");
      }
    }
    return false;
  }

  /** One batch id from arrival until it is settled for good (published or dead-lettered). */
  private static final class Entry {
    final String batchId;
    /** Its inserts from the slot, acknowledged when it is settled for good (none: the sweep). */
    final List<WalInsert> inserts = new ArrayList<>(1);
    /** Its keys, once its row has been seen; null before. */
    @Nullable List<String> keys;
    /** Its row as the log carried it, until taken in (then it is published without a claim). */
    @Nullable ClaimedBatch logged;
    List<String> loggedKeys = List.of();
    /**
     * Its row, when only the log holds it ({@link RelayStore#LOGGED_ONLY}), until settled for
     * good: a retry is taken from here (with its attempts so far), not claimed.
     */
    @Nullable ClaimedBatch loggedOnly;
    /** Take {@link #logged} only once its row is found still in the table. */
    boolean checkFirst;
    /** Listed by the start-up sweep. */
    boolean swept;
    /** Claimed and in the ledger, not yet settled; null while waiting to be claimed (again). */
    @Nullable BatchInFlight batch;
    /** Whether {@link #batch} was handed to the pipeline. */
    boolean sent;
    /**
     * Published once (Kafka has all of it), so it no longer stands in line on its keys: their
     * next batches go on while its DELETE runs; should that fail, it is published again out of
     * line (a duplicate after them; first deliveries stay in commit order).
     */
    boolean outOfLine;
    /** Waits at least {@link #PARKS_BEHIND} to be claimed again: the batches behind it park. */
    boolean longWait;
    /**
     * Behind a {@link #longWait} on one of its keys: not claimed, not in the budgets (its row
     * stays in the table); claimed again once first in line ({@link Run#send}).
     */
    boolean parked;
    /**
     * How often it joined its keys' lines and has not left them yet (0 or 1): leaving is then a
     * no-op without scanning the lines. A published entry leaves them before it is settled, and
     * a scan of a long line for an entry no longer in it cost 2 % of a drain's samples.
     */
    int inLines;

    Entry(String batchId) {
      this.batchId = batchId;
    }
  }

  /**
   * The state of one subscription to {@link #batches()} (a pipeline restart starts another):
   * the batches between arrival and settlement and, per key, those waiting their turn, oldest
   * first. Guarded by its own monitor; nothing in it blocks (emissions go to an unbounded
   * unicast buffer, bounded in practice by the ledger).
   */
  private final class Run {
    private final WalFollower follower;
    private final WalSweeps sweeps;
    /** Rows of the sweep not settled for good yet; whether all are listed; whether remembered. */
    private int sweepLeft;
    private boolean sweepListed;
    private boolean sweepComplete;
    private boolean sweepRemembered;
    final Sinks.Many<List<BatchInFlight>> out = Sinks.many().unicast().onBackpressureBuffer();
    private final Map<String, Entry> entries = new HashMap<>();
    private final Map<String, ArrayDeque<Entry>> turns = new HashMap<>();
    private final Disposable.Composite timers = Disposables.composite();
    /** Cancelled (the pipeline restarts or stops): nothing more is claimed, emitted or acknowledged. */
    private boolean over;
    /** The source completed (stop): nothing more is emitted. */
    private boolean completed;
    /** A part was dropped (stop): no later one is applied. */
    private boolean partDropped;
    /** The end of the newest transaction an arrival came from: all this run may have sent. */
    private long arrivedUpTo;
    /** Entries parked now (see {@link Entry#parked}); at {@link #parkedMost}, claims wait. */
    private int parkedCount;
    /** Entries waiting long now (see {@link Entry#longWait}): none, and none parked, is quick. */
    private int longWaits;
    /** Whether this run logged reaching {@link #parkedMost} (once a run). */
    private boolean parkedCapLogged;
    /** Answers in, waiting in line to be applied (identity: each is one lookup's). */
    private final Set<Answered> unapplied =
        java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>());
    /** Ids of the parts cut and not applied yet: the next part's room leaves them out. */
    private int asked;

    /** Most entries parked at once: ten times the record budget (each is an id and its keys). */
    private final long parkedMost = 10L * options.maxInFlight();
    /**
     * Bytes of rows only the log holds that entries keep until settled for good ({@link
     * Entry#loggedOnly}): in the ledger, and also while they wait for a retry or are parked,
     * which the ledger does not count. Past {@link #loggedHeldMost}, claims wait.
     */
    private long loggedHeld;
    private final long loggedHeldMost = 2L * options.maxInFlightBytes();
    private boolean loggedCapLogged;

    Run(WalFollower follower, WalSweeps sweeps) {
      this.follower = follower;
      this.sweeps = sweeps;
    }

    /**
     * Takes a group of arrivals in; returns the ids to look up, in order. {@code checkBelow}:
     * see {@link Arrival#checkFirst}.
     */
    synchronized List<String> admit(List<Arrival> group, long checkBelow) {
      LinkedHashMap<String, Entry> fresh = new LinkedHashMap<>();
      for (Arrival arrival : group) {
        if (arrival.endOfSweep()) {
          sweepListed = true;
          sweepComplete = arrival.sweepComplete();
          rememberSweep();
          continue;
        }
        WalInsert insert = arrival.insert();
        Entry entry = entries.get(arrival.batchId());
        if (entry == null) {
          entry = new Entry(arrival.batchId());
          entries.put(arrival.batchId(), entry);
          fresh.put(arrival.batchId(), entry);
          if (insert == null) {
            entry.swept = true;
            sweepLeft++;
          } else if (arrival.fromLog()) {
            entry.logged = insert.row();
            entry.loggedKeys = insert.keys();
            entry.checkFirst = arrival.checkFirst(checkBelow);
            if (loggedOnly(insert.row())) {
              entry.loggedOnly = insert.row();
              loggedHeld += insert.row().rawData().length;
            }
          }
        }
        if (insert != null) { // the sweep's row, or a duplicate, in flight already
          entry.inserts.add(insert.withoutRow()); // the row is held once, in logged
          arrivedUpTo = Math.max(arrivedUpTo, insert.endLsn().asLong());
        }
      }
      return over ? List.of() : List.copyOf(fresh.keySet());
    }

    /** Of {@code ids}, those to claim: all but the rows taken from the log. */
    synchronized List<String> toClaim(List<String> ids) {
      return ids.stream().filter(id -> {
        Entry entry = entries.get(id);
        return entry == null || entry.logged == null;
      }).toList();
    }

    /** Of {@code ids}, the rows taken from the log once found still in the table. */
    synchronized List<String> toCheck(List<String> ids) {
      return ids.stream().filter(id -> {
        Entry entry = entries.get(id);
        return entry != null && entry.logged != null && entry.checkFirst;
      }).toList();
    }

    /**
     * Once every row the sweep listed is settled for good, and this relay streams from the slot
     * (so the slot was ready, not still being created by another relay, when the sweep read the
     * table), the next start needs none.
     */
    synchronized void rememberSweep() {
      if (!sweepListed || !sweepComplete || sweepLeft > 0 || sweepRemembered || over
          || !follower.streaming()) {
        return;
      }
      sweepRemembered = true;
      sweeps.remember().subscribe(done -> {}, error -> log.warn("Outbox relay {} could not"
          + " record that slot {} is swept; its next start sweeps again: {}", options.instanceId(),
          options.walSlot(), error.toString()));
    }

    /** The transaction ids the slot reported for {@code ids} (none for the sweep's rows). */
    synchronized List<Long> transactionsOf(List<String> ids) {
      List<Long> xids = new ArrayList<>();
      for (String id : ids) {
        Entry entry = entries.get(id);
        if (entry != null) {
          entry.inserts.stream().mapToLong(WalInsert::xid).filter(xid -> xid != 0)
              .forEach(xids::add);
        }
      }
      return xids;
    }

    /**
     * A group's claim answered: each batch takes its turn on its keys, in the group's order.
     * {@code present}: the rows to check first that are still in the table.
     */
    void claimed(List<String> ids, List<IdClaim> answers, Set<String> present, long generation) {
      Map<String, IdClaim> byId = byId(answers);
      synchronized (this) {
        if (over) { // abandoned meanwhile: give the leases back (rows from the log hold none)
          giveBack(byId.values().stream().map(IdClaim::claim).filter(Objects::nonNull).toList());
          return;
        }
        List<Entry> taken = new ArrayList<>(ids.size());
        List<ClaimedBatch> claims = new ArrayList<>(ids.size());
        for (String id : ids) {
          takeTurn(id, byId.get(id), present, taken, claims);
        }
        register(taken, claims, generation);
      }
    }

    private Map<String, IdClaim> byId(List<IdClaim> answers) {
      if (answers.isEmpty()) {
        return Map.of();
      }
      Map<String, IdClaim> byId = new HashMap<>();
      for (IdClaim answer : answers) {
        byId.put(answer.batchId().strip(), answer);
      }
      return byId;
    }

    /**
     * One id of an answered group takes its turn on its keys: its row as the log carried it
     * (unless checked and found gone), or as claimed ({@code answer}; none: gone, published
     * before by the sweep or before a restart). Kept apart from the loop so that the JIT
     * compiles the per-row work as one small method, not the loop again and again (OSR).
     */
    private void takeTurn(String id, @Nullable IdClaim answer, Set<String> present,
        List<Entry> taken, List<ClaimedBatch> claims) {
      Entry entry = entries.get(id);
      if (entry == null) {
        if (answer != null && answer.claim() != null) {
          giveBack(List.of(answer.claim()));
        }
        return;
      }
      ClaimedBatch claim;
      List<String> keys;
      ClaimedBatch logged = entry.logged;
      if (logged != null) { // no claim: its row as the log carried it, unless gone
        entry.logged = null;
        if (entry.checkFirst && !present.contains(id)) {
          finish(entry);
          return;
        }
        claim = logged;
        keys = entry.loggedKeys;
      } else if (answer == null) {
        finish(entry);
        return;
      } else {
        claim = answer.claim();
        keys = answer.keys();
      }
      entry.keys = keys;
      for (String key : keys) {
        turns.computeIfAbsent(key, k -> new ArrayDeque<>()).addLast(entry);
      }
      entry.inLines++;
      place(entry, claim, taken, claims);
    }

    /**
     * An entry in line whose claim was answered: to register ({@code taken}, {@code claims});
     * parked behind a long wait (its lease given back); or, leased by another holder ({@code
     * claim} null), claimed again later, keeping its place.
     */
    private void place(Entry entry, @Nullable ClaimedBatch claim, List<Entry> taken,
        List<ClaimedBatch> claims) {
      if (claim == null) {
        again(entry, LEASED_WAIT);
      } else if (waitsBehindALongWait(entry)) {
        giveBack(List.of(claim));
        park(entry);
      } else {
        taken.add(entry);
        claims.add(claim);
      }
    }

    /** Registers the claims of {@code taken} (in order) and sends those first in line. */
    private void register(List<Entry> taken, List<ClaimedBatch> claims, long generation) {
      if (claims.isEmpty()) {
        return;
      }
      List<BatchInFlight> registered = ledger.register(claims, generation, true);
      if (registered == null) { // abandoned meanwhile: give the leases back
        giveBack(claims);
        return;
      }
      for (int i = 0; i < taken.size(); i++) {
        take(taken.get(i), registered.get(i));
      }
      sendAll(taken);
    }

    /**
     * Applies a part's answer, in arrival order. Once a part was dropped, the later ones are not
     * applied (their leases go back): a later row of a key would otherwise go out before the
     * dropped one, which the next start replays (review finding).
     */
    void apply(Answered answered) {
      synchronized (this) {
        unapplied.remove(answered);
      }
      try {
        applyAnswer(answered);
      } finally {
        synchronized (this) {
          asked -= answered.part().ids().size(); // registered by now, or given back
        }
        wake();
      }
    }

    private void applyAnswer(Answered answered) {
      if (!answered.dropped() && !answered.leases().isEmpty() && !answered.handoff().take()) {
        return; // cancelled meanwhile: its leases are given back, nothing more is applied
      }
      synchronized (this) {
        if (answered.dropped()) {
          partDropped = true;
          return;
        }
        if (partDropped) {
          giveBack(answered.leases());
          return;
        }
      }
      claimed(answered.part().ids(), Objects.requireNonNull(answered.claims()),
          Objects.requireNonNull(answered.present()), answered.part().generation());
    }

    /**
     * Batches claimed again (after a retry's wait, a failed settlement, a lease; or parked ones
     * now first in line), in line order.
     */
    void reclaimed(List<Entry> group, List<IdClaim> answers, long generation) {
      Map<String, IdClaim> byId = byId(answers);
      synchronized (this) {
        List<Entry> taken = new ArrayList<>();
        List<ClaimedBatch> claims = new ArrayList<>();
        for (Entry entry : group) {
          IdClaim answer = byId.get(entry.batchId);
          ClaimedBatch claim = answer == null ? null : answer.claim();
          longWait(entry, false);
          if (over || entries.get(entry.batchId) != entry) {
            giveBack(claim == null ? List.of() : List.of(claim));
          } else if (answer == null) {
            finish(entry);
          } else {
            place(entry, claim, taken, claims);
          }
        }
        register(taken, claims, generation);
      }
    }

    private void take(Entry entry, BatchInFlight batch) {
      entry.batch = batch;
      if (entry.loggedOnly != null && entry.keys != null) {
        batch.loggedKeys = entry.keys; // for its dead letter
      }
      entry.sent = false;
      batch.onPublished(() -> published(entry, batch));
      batch.onSettled(outcome -> settled(entry, batch, outcome));
    }

    /** Kafka has all of the entry's batch: its keys' next batches go now, not after its DELETE. */
    private synchronized void published(Entry entry, BatchInFlight batch) {
      if (over || entry.batch != batch || entry.outOfLine) {
        return;
      }
      entry.outOfLine = true;
      sendAll(leaveLines(entry));
    }

    /**
     * Hands the batches of {@code ready} that may go (see {@link #send}) to the pipeline as one
     * group.
     */
    private void sendAll(List<Entry> ready) {
      if (ready.isEmpty()) {
        return;
      }
      List<BatchInFlight> group = new ArrayList<>();
      for (Entry entry : ready) {
        send(entry, group);
      }
      if (!group.isEmpty() && out.tryEmitNext(group).isFailure()) {
        // cancelled meanwhile: the ledger gives them back
        log.debug("Outbox relay {} could not hand {} batches to its pipeline",
            options.instanceId(), group.size());
      }
    }

    /**
     * Adds the entry's batch to {@code group} when it is claimed and first in line on its keys;
     * unparks it when it is parked and first in line.
     */
    private void send(Entry entry, List<BatchInFlight> group) {
      if (entry.parked) {
        if (!over && !completed && !stopping && firstInLine(entry)) {
          unpark(entry);
        }
        return;
      }
      BatchInFlight batch = entry.batch;
      if (batch == null || entry.sent || over || completed || !firstInLine(entry)) {
        return;
      }
      entry.sent = true;
      group.add(batch);
      // The claimed batches right behind it on its one key go with it, as one unit: once a
      // record of the unit fails, its later records are not sent (SendGuard), as for the
      // messages of one batch; each stays in line until Kafka has acknowledged it.
      List<String> keys = entry.keys;
      ArrayDeque<Entry> line = keys != null && keys.size() == 1 && !entry.outOfLine
          ? turns.get(keys.get(0)) : null;
      if (line == null) {
        return;
      }
      int unit = 1;
      boolean behind = false;
      for (Entry next : line) {
        if (next == entry) {
          behind = true;
          continue;
        }
        if (!behind) {
          continue;
        }
        BatchInFlight later = next.batch;
        if (unit >= batchesPerKeyInFlight || later == null || next.sent || next.keys == null
            || !next.keys.equals(keys)) {
          break;
        }
        later.joinGroupOf(batch);
        next.sent = true;
        unit++;
        group.add(later);
      }
    }

    private boolean firstInLine(Entry entry) {
      List<String> keys = entry.keys;
      if (keys == null) {
        return false;
      }
      if (entry.outOfLine) {
        return true;
      }
      for (String key : keys) {
        ArrayDeque<Entry> line = turns.get(key);
        if (line == null || line.peekFirst() != entry) {
          return false;
        }
      }
      return true;
    }

    private synchronized void settled(Entry entry, BatchInFlight batch,
        Optional<RelayOutcome> outcome) {
      if (entry.batch != batch) {
        return;
      }
      if (over) { // draining after the stream ended: nothing goes on, but the slot may move
        Kind kind = outcome.map(RelayOutcome::kind).orElse(Kind.RELEASED);
        if (kind == Kind.PUBLISHED || kind == Kind.DEAD_LETTERED) {
          entry.inserts.forEach(follower::acknowledge);
        }
        return;
      }
      entry.batch = null;
      entry.sent = false;
      if (outcome.isEmpty()) { // not settled (database error, released): the row is still there
        Throwable failure = batch.settlementFailure();
        if (failure != null && serverShuttingDown(failure)) {
          endRun(failure, "could not settle " + batch);
          return;
        }
        again(entry, LEASED_WAIT);
        return;
      }
      RelayOutcome settled = outcome.get();
      if (settled.kind() == Kind.LEASE_LOST) {
        // Not settled for good: another relay holds a lease on the row (or, taken from the log,
        // its commit is not visible to others yet: the log reports it a moment early). Claimed
        // again until it is found (published again), gone (the other holder published it), or
        // dead-lettered; its keys stay held meanwhile. Finishing it here let the slot and the
        // sweep mark pass a row that other holder might still give back (review finding).
        again(entry, RelayStore.UNLEASED.equals(batch.claim().leaseToken()) ? NOT_VISIBLE_WAIT
            : LEASED_WAIT);
        return;
      }
      if (settled.kind() == Kind.RETRY_SCHEDULED && settled.retryIn() != null) {
        ClaimedBatch kept = entry.loggedOnly;
        if (kept != null) { // the attempts a row in the table counts in write_retries
          entry.loggedOnly = new ClaimedBatch(kept.batchId(), kept.insertSeq(),
              kept.messageCount(), settled.failedAttempts(), kept.rawData(), kept.insertTime(),
              kept.leaseToken(), kept.leaseExpiresAt());
        }
        again(entry, settled.retryIn()); // its keys stay held until then
        return;
      }
      finish(entry); // published or dead-lettered
    }

    /**
     * Claims the entry again after {@code wait}, unless the relay stops meanwhile; parks it
     * instead when it waits behind a long wait, and parks the batches behind it when its own
     * wait is long ({@link #PARKS_BEHIND}).
     */
    private void again(Entry entry, Duration wait) {
      if (over || stopping) {
        return;
      }
      if (waitsBehindALongWait(entry)) {
        park(entry);
        return;
      }
      if (wait.compareTo(PARKS_BEHIND) >= 0) {
        longWait(entry, true);
        parkBehind(entry);
      }
      claimAgain(List.of(entry), wait);
    }

    /**
     * A parked entry is first in line: claims it again now, with the parked batches right
     * behind it on its one key (as many as the record budget has room for, at most a claim
     * group), in one statement, so that they go out as a unit again.
     */
    private void unpark(Entry first) {
      List<Entry> group = new ArrayList<>();
      group.add(first);
      List<String> keys = first.keys;
      ArrayDeque<Entry> line = keys != null && keys.size() == 1 ? turns.get(keys.get(0)) : null;
      if (line != null) {
        Ledger.Room room = ledger.room();
        int most = Math.min(CLAIM_GROUP, room == null ? 1 : Math.max(1, room.records()));
        boolean behind = false;
        for (Entry next : line) {
          if (next == first) {
            behind = true;
            continue;
          }
          if (!behind) {
            continue;
          }
          if (group.size() >= most || !next.parked || !keys.equals(next.keys)) {
            break;
          }
          group.add(next);
        }
      }
      group.forEach(e -> e.parked = false);
      parkedCount -= group.size();
      wake(); // claims may have waited for parked entries to go
      claimAgain(group, Duration.ZERO);
    }

    private void longWait(Entry entry, boolean longWait) {
      if (entry.longWait != longWait) {
        entry.longWait = longWait;
        longWaits += longWait ? 1 : -1;
      }
    }

    /** Whether an entry ahead of {@code entry} on one of its keys waits long, or is parked. */
    private boolean waitsBehindALongWait(Entry entry) {
      List<String> keys = entry.keys;
      if (keys == null || entry.outOfLine || longWaits == 0 && parkedCount == 0) {
        return false;
      }
      for (String key : keys) {
        ArrayDeque<Entry> line = turns.get(key);
        if (line == null) {
          continue;
        }
        for (Entry ahead : line) {
          if (ahead == entry) {
            break;
          }
          if (ahead.longWait || ahead.parked) {
            return true;
          }
        }
      }
      return false;
    }

    /**
     * Parks the entry (its batch, if claimed and not sent, gives its room in the budgets and its
     * lease back) and what is claimed behind it (see {@link #parkBehind}).
     */
    private void park(Entry entry) {
      parkOne(entry);
      parkBehind(entry);
    }

    /**
     * The claimed, unsent batches behind {@code from} on its keys give their room in the budgets
     * back and park: otherwise a long retry of one key holds the room for the others' batches
     * until it ends. Those sent come back through their settlement and park then. A batch of
     * several keys parked so parks, in turn, what is behind it on its other keys. Each line is
     * walked once from where parking starts on it, plus once per batch of several keys.
     */
    private void parkBehind(Entry from) {
      ArrayDeque<Entry> work = new ArrayDeque<>();
      work.add(from);
      while (!work.isEmpty()) {
        Entry start = work.poll();
        List<String> keys = start.keys;
        if (keys == null || start.outOfLine) {
          continue;
        }
        for (String key : keys) {
          ArrayDeque<Entry> line = turns.get(key);
          if (line == null) {
            continue;
          }
          boolean behind = false;
          for (Entry next : line) {
            if (next == start) {
              behind = true;
            } else if (behind && next.batch != null && !next.sent) {
              parkOne(next);
              if (next.keys != null && next.keys.size() > 1) {
                work.add(next);
              }
            }
          }
        }
      }
    }

    private void parkOne(Entry entry) {
      if (entry.parked) {
        return;
      }
      BatchInFlight batch = entry.batch;
      if (batch != null) {
        entry.batch = null;
        if (ledger.release(batch)) {
          giveBack(List.of(batch.claim()));
        }
      }
      entry.parked = true;
      if (++parkedCount >= parkedMost && !parkedCapLogged) {
        parkedCapLogged = true;
        log.warn("Outbox relay {} has {} batches parked behind long waits on their keys (retries,"
            + " leases); it claims nothing more until some of them go", options.instanceId(),
            parkedCount);
      }
    }

    /**
     * Batches the next part may ask for: the ledger's room less the parts asked for and not
     * applied yet (at least one when none is); 0 while the ledger has no room, or as many
     * entries are parked as may be.
     */
    synchronized int freeToAsk() {
      Ledger.Room room = ledger.room();
      if (room == null || parkedCount >= parkedMost) {
        return 0;
      }
      if (loggedHeld > loggedHeldMost) {
        if (!loggedCapLogged) {
          loggedCapLogged = true;
          log.warn("Outbox relay {} holds {} bytes of rows only the log has (retries, parked"
              + " batches); it takes nothing more from the slot until some of them are settled",
              options.instanceId(), loggedHeld);
        }
        return 0;
      }
      return asked == 0 ? Math.max(1, room.records()) : Math.max(0, room.records() - asked);
    }

    /** A part of {@code batches} ids is cut: they count until it is applied. */
    synchronized void asking(int batches) {
      asked += batches;
    }

    /**
     * Claims {@code group} (in line order) again after {@code wait}, in one statement; takes
     * those only the log holds from memory instead.
     */
    private void claimAgain(List<Entry> group, Duration wait) {
      if (group.stream().anyMatch(e -> e.loggedOnly != null)) {
        List<Entry> inTable = group.stream().filter(e -> e.loggedOnly == null).toList();
        List<Entry> inMemory = group.stream().filter(e -> e.loggedOnly != null).toList();
        if (!inTable.isEmpty()) {
          claimAgain(inTable, wait);
        }
        later(inMemory, wait, () -> Mono.fromRunnable(() -> reclaimed(inMemory,
            inMemory.stream().map(e -> new IdClaim(e.batchId, e.loggedOnly, e.loggedKeys))
                .toList(), ledger.generation())));
        return;
      }
      later(group, wait, () -> {
        long generation = ledger.generation();
        List<String> ids = group.stream().map(e -> e.batchId).toList();
        ClaimHandoff handoff = new ClaimHandoff();
        return givenBackIfCancelled(store.claimCommittedByIds(ids, transactionsOf(ids),
                options.leaseDuration(), options.instanceId()), handoff)
            .doOnNext(answer -> {
              boolean leased = answer.answers().stream().anyMatch(a -> a.claim() != null);
              if (leased && !handoff.take()) {
                return; // cancelled meanwhile: its leases are given back
              }
              if (answer.committedVisible()) {
                reclaimed(group, answer.answers(), generation);
              } else {
                synchronized (this) {
                  group.forEach(e -> again(e, MAX_NOT_VISIBLE_WAIT));
                }
              }
            });
      });
    }

    /**
     * Runs {@code work} (taking {@code group} again) after {@code wait}, unless the relay stops
     * first; on its failure, the group is taken again after {@link #LEASED_WAIT}.
     */
    private void later(List<Entry> group, Duration wait,
        java.util.function.Supplier<Mono<?>> work) {
      AtomicReference<@Nullable Disposable> self = new AtomicReference<>();
      Disposable timer = Mono.delay(wait)
          .takeUntilOther(stopped.asMono())
          .flatMap(tick -> work.get())
          .doFinally(signal -> {
            Disposable me = self.get();
            if (me != null) {
              timers.remove(me);
            }
          })
          .subscribe(answers -> {}, error -> {
            synchronized (this) {
              if (serverUnavailable(error)) {
                endRun(error, "could not claim batch " + group.get(0).batchId + " again");
                return;
              }
              log.warn("Outbox relay {} could not claim batch {} again; trying again in {}: {}",
                  options.instanceId(), group.get(0).batchId, LEASED_WAIT, error.toString());
              group.forEach(e -> {
                longWait(e, false);
                again(e, LEASED_WAIT);
              });
            }
          });
      self.set(timer);
      timers.add(timer);
    }

    /**
     * Ends this run because the server is unavailable: its replication connection closes with
     * it. A walsender of a server shutting down waits for its client to confirm all it sent,
     * which this run cannot while its rows are unsettled, and so would hold up a fast shutdown
     * for good (the fault suite's restart). Unconfirmed rows come again after the restart.
     */
    private void endRun(Throwable error, String what) {
      if (!over && !stopping && out.tryEmitError(error).isSuccess()) {
        log.warn("Outbox relay {} {}: the server is not available; ending its replication"
            + " stream: {}", options.instanceId(), what, error.toString());
      }
    }

    /** Settled for good: its keys go on, its inserts are acknowledged to the slot. */
    private void finish(Entry entry) {
      entries.remove(entry.batchId);
      ClaimedBatch kept = entry.loggedOnly;
      if (kept != null) {
        entry.loggedOnly = null;
        boolean wasOver = loggedHeld > loggedHeldMost;
        loggedHeld -= kept.rawData().length;
        if (wasOver && loggedHeld <= loggedHeldMost) {
          wake(); // claims waited for these bytes
        }
      }
      if (entry.swept) {
        sweepLeft--;
        rememberSweep();
      }
      List<Entry> next = leaveLines(entry);
      entry.inserts.forEach(follower::acknowledge);
      sendAll(next);
    }

    /** Takes the entry out of its keys' lines; returns the entries now first in them. */
    private List<Entry> leaveLines(Entry entry) {
      if (entry.inLines == 0) {
        return List.of();
      }
      entry.inLines--;
      List<Entry> next = new ArrayList<>(1);
      List<String> keys = entry.keys;
      if (keys != null) {
        for (String key : keys) {
          ArrayDeque<Entry> line = turns.get(key);
          if (line == null || !line.remove(entry)) {
            continue;
          }
          if (line.isEmpty()) {
            turns.remove(key);
          } else {
            next.add(line.peekFirst());
          }
        }
      }
      return next;
    }

    void giveBack(List<ClaimedBatch> claims) {
      List<ClaimedBatch> leased = claims.stream()
          .filter(claim -> !RelayStore.UNLEASED.equals(claim.leaseToken())
              && !loggedOnly(claim)).toList();
      if (!leased.isEmpty()) {
        store.releaseAll(leased).onErrorResume(e -> Mono.empty()).subscribe();
      }
    }

    synchronized long arrivedUpTo() {
      return arrivedUpTo;
    }

    synchronized void complete() {
      completed = true;
      out.tryEmitComplete();
    }

    /** A part's answer is in: it waits in line to be applied (see {@link #cancel}). */
    void answered(Answered answered) {
      synchronized (this) {
        if (!over) {
          unapplied.add(answered);
          return;
        }
      }
      giveBackUnapplied(List.of(answered));
    }

    void cancel() {
      List<Answered> left;
      synchronized (this) {
        over = true;
        left = new ArrayList<>(unapplied);
        unapplied.clear();
      }
      timers.dispose();
      giveBackUnapplied(left);
    }

    /** The leases of answers never applied, unless {@link #apply} took them first. */
    private void giveBackUnapplied(List<Answered> left) {
      for (Answered answered : left) {
        if (!answered.dropped() && !answered.leases().isEmpty() && answered.handoff().take()) {
          giveBack(answered.leases());
        }
      }
    }
  }
}
