package dev.outbox.relay;

import dev.outbox.r2dbc.internal.ClaimedBatch;
import dev.outbox.r2dbc.internal.PartitionStore;
import dev.outbox.r2dbc.internal.PartitionStore.ReadRow;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.NavigableMap;
import java.util.Set;
import java.util.TreeSet;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedDeque;
import java.util.concurrent.ConcurrentSkipListMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.Disposable;
import reactor.core.Disposables;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * PARTITIONED: owns a share of the table's partitions and reads their rows in insert order.
 *
 * <p>Ownership: every {@code leaseRenewal} the relay sends a heartbeat, lists the live relays
 * (heartbeat within {@code leaseDuration}), and wants its share of the partitions ({@link
 * PartitionAssignment}: balanced, and stable when relays join or leave); it renews or takes those (free or expired ones only), stops reading the ones
 * it no longer wants and releases each once nothing of it is in flight. It reads only while its
 * ownership is fresh (renewed within {@code leaseDuration}), so a relay cut off from the
 * database stops before another takes over; fencing by epoch covers the rest.
 *
 * <p>Order: what one read takes of a key (its consecutive rows there, sent as one {@link
 * BatchInFlight.SendGroup}: once a record of them fails, the rest is not sent) is in flight
 * alone, until Kafka has acknowledged all of it (its DELETEs may still run); a key whose row
 * waits for a retry is held (its later rows are not read) until the retry is due. Rows without
 * keys are independent.
 */
final class PartitionedSource implements BatchSource {
  private static final Logger log = LoggerFactory.getLogger(PartitionedSource.class);
  private static final UUID NO_LEASE = new UUID(0, 0);
  /**
   * A read starts once this share of a budget is free: reads are cheap (no row is written), so
   * the next one need not wait for half of the in-flight work to settle.
   */
  private static final int READ_WHEN_FREE = 8;
  /** Fewest rows a read asks for, so rows it passes cannot starve it. */
  private static final int MIN_READ_ROWS = 32;
  /** Most read positions waiting to be adopted. */
  private static final int MAX_CANDIDATES = 16;

  private final String owner;
  private final PartitionStore store;
  private final Disposable.Swap rounds = Disposables.swap();
  private final AtomicLong round = new AtomicLong();
  /** Partition to the round in which it started draining. */
  private final Map<Integer, Long> drainingSince = new ConcurrentHashMap<>();
  /** The round in which the read now running started; -1 when none runs. */
  private volatile long readingSince = -1;
  private final Ledger ledger;
  private final RelayOptions options;
  private final ClaimCycles cycles;
  private final Duration ttl;
  private final Duration tick;
  /** Partition to epoch, for the partitions this relay reads now. */
  private volatile Map<Integer, Long> readable = Map.of();
  private final Map<Integer, Long> owned = new ConcurrentHashMap<>();
  private volatile long ownedUntilNanos = Long.MIN_VALUE;
  /** Keys waiting for a retry, until when. */
  private final Map<String, Instant> heldKeys = new ConcurrentHashMap<>();
  /**
   * Read position and its bookkeeping, used by one read at a time (see {@link #claim()}): the
   * highest insert_seq up to which nothing is left to read; candidates for it (where earlier
   * reads ended, with their fences), adopted once no open transaction can still commit
   * below them; the partitions and ledger generation it is for; when the last full rescan
   * started; rows passed while waiting for a retry (due time to seq).
   */
  private volatile long cursor;
  /** Candidates: {end of a read, its fence}, ascending. */
  private final Deque<long[]> candidates = new ConcurrentLinkedDeque<>();
  private volatile Map<Integer, Long> cursorParts = Map.of();
  private volatile long cursorGeneration = -1;
  private volatile long lastRescanNanos;
  /** Recent messages per row taken (a moving average), to size reads in rows. */
  private volatile double messagesPerRow = 1;
  private final NavigableMap<Instant, Long> rewinds = new ConcurrentSkipListMap<>();
  private final AtomicInteger partitions = new AtomicInteger();
  /** Most rows of one key one read sends as one unit (1 behind a sink that ignores SendGuard). */
  private final int rowsPerKeyInFlight;

  /**
   * @param owner this relay's owner token: its instance id plus a random part, so that two
   *     processes given the same id (a restart while the old one is frozen) never share epochs
   */
  PartitionedSource(PartitionStore store, Ledger ledger, RelayOptions options,
      Flux<Long> externalWakeups, String owner, int rowsPerKeyInFlight) {
    this.owner = owner;
    this.rowsPerKeyInFlight = rowsPerKeyInFlight;
    this.store = store;
    this.ledger = ledger;
    this.options = options;
    this.cycles = new ClaimCycles(options, externalWakeups);
    this.ttl = options.leaseDuration();
    this.tick = options.leaseRenewal().isZero() ? ttl.dividedBy(3) : options.leaseRenewal();
  }

  /** Ownership rounds run from start until {@link #handOver}, also while the relay drains. */
  @Override
  public void open() {
    rounds.update(Flux.interval(Duration.ZERO, tick)
        .onBackpressureDrop()
        .concatMap(t -> rebalance())
        .subscribe());
  }

  @Override
  public Flux<List<BatchInFlight>> batches() {
    return cycles.run(this::claim);
  }

  @Override
  public void wake() {
    cycles.wake();
  }

  @Override
  public void stop() {
    cycles.stop();
  }


  @Override
  public Mono<Void> handOver(Duration timeout) {
    return Mono.defer(() -> {
      rounds.dispose();
      readable = Map.of();
      return store.releaseAll(owner).flatMap(released -> store.forget(owner).thenReturn(released));
    })
        .timeout(timeout)
        .doOnNext(released -> {
          owned.clear();
          log.info("Outbox relay {} handed over {} partitions", options.instanceId(), released);
        })
        .then()
        .onErrorResume(error -> {
          log.warn("Outbox relay {} could not hand over its partitions; they move when its"
              + " ownership expires in {}: {}", options.instanceId(), ttl, error.toString());
          return Mono.empty();
        });
  }

  /**
   * A batch read here left the ledger unpublished (its retry is scheduled, or its settlement
   * failed or was refused): its keys are held until {@code wait} has passed and the read
   * position comes back to it then. Called before the batch leaves the ledger, so no read can
   * take a later row of its keys in between.
   */
  void returned(BatchInFlight batch, Duration wait) {
    Instant due = Instant.now().plus(wait);
    if (batch.fence != null) {
      hold(batch.fence.keys(), due);
    }
    rewinds.merge(due, batch.claim().insertSeq(), Math::min);
  }

  /** Holds {@code keys} for a retry until {@code until} (or later, if already held longer). */
  private void hold(List<String> keys, Instant until) {
    keys.forEach(k -> heldKeys.merge(k, until, (a, b) -> a.isAfter(b) ? a : b));
  }

  /** The partitions read now (for tests and health). */
  Map<Integer, Long> readablePartitions() {
    return readable;
  }

  /** One ownership round: heartbeat, share, hand over what is no longer ours, take the rest. */
  private Mono<Long> rebalance() {
    long started = System.nanoTime();
    long thisRound = round.incrementAndGet();
    String me = owner;
    Mono<Integer> count = partitions.get() > 0 ? Mono.just(partitions.get())
        : store.partitionCount().doOnNext(partitions::set);
    return store.heartbeat(me)
        .then(count)
        .zipWith(store.liveRelays(ttl))
        .flatMap(countAndLive -> {
          int total = countAndLive.getT1();
          List<String> live = new ArrayList<>(countAndLive.getT2());
          if (!live.contains(me)) {
            live.add(me);
            live.sort(null);
          }
          List<Integer> wanted = new ArrayList<>(PartitionAssignment.wanted(total, live, me));
          wanted.forEach(drainingSince::remove);
          for (Integer p : owned.keySet()) {
            if (!wanted.contains(p)) {
              drainingSince.putIfAbsent(p, thisRound);
            }
          }
          // Not read from now on; released in a later round, once no read that could still see
          // it is running and nothing of it is in flight.
          Map<Integer, Long> stillRead = new HashMap<>(readable);
          stillRead.keySet().removeAll(drainingSince.keySet());
          readable = Map.copyOf(stillRead);
          Set<Integer> busy = new HashSet<>();
          ledger.held().forEach(b -> {
            if (b.fence != null) {
              busy.add(b.fence.partition());
            }
          });
          long reading = readingSince;
          List<Integer> releasable = new ArrayList<>();
          List<Integer> keep = new ArrayList<>(wanted);
          drainingSince.forEach((p, since) -> {
            boolean unseen = since < thisRound && (reading == -1 || reading > since);
            if (unseen && !busy.contains(p)) {
              releasable.add(p);
            } else {
              keep.add(p); // renewed while it drains
            }
          });
          return store.release(me, releasable).collectList()
              .doOnNext(released -> released.forEach(p -> {
                drainingSince.remove(p);
                owned.remove(p);
              }))
              .then(store.acquire(me, keep, ttl).collectList())
              .map(holding -> {
                Map<Integer, Long> now = new HashMap<>();
                holding.forEach(o -> now.put(o.partition(), o.epoch()));
                int takenOver = (int) now.entrySet().stream()
                    .filter(e -> !e.getValue().equals(owned.get(e.getKey()))).count();
                owned.keySet().retainAll(now.keySet());
                owned.putAll(now);
                drainingSince.keySet().retainAll(now.keySet()); // lost ones drain nothing
                Map<Integer, Long> read = new HashMap<>(now);
                read.keySet().removeAll(drainingSince.keySet());
                boolean changed = !read.equals(readable);
                readable = Map.copyOf(read);
                ownedUntilNanos = started + ttl.toNanos() - tick.toNanos();
                options.metrics().partitions(read.size(), takenOver);
                if (changed) {
                  log.info("Outbox relay {} reads partitions {} ({} live relays)",
                      options.instanceId(), new TreeSet<>(read.keySet()), live.size());
                  wake();
                }
                return (long) read.size();
              });
        })
        .onErrorResume(error -> {
          log.warn("Outbox relay {} could not renew its partitions: {}", options.instanceId(),
              error.toString());
          return Mono.empty();
        });
  }

  /**
   * One read within the free budgets; the batches are in the ledger before they are emitted.
   *
   * <p>The relay reads forward from its read position ({@code cursor}): everything at or below
   * it was taken (in flight or settled) or waits for a retry (a rewind is due when the retry
   * is). A read ends where the first row it could not take for a short while stands (above the
   * commit watermark, its key in flight, over the budget); that end becomes the position only
   * after a later read whose snapshot shows that every transaction open at the first one has
   * ended (see {@link #moveTo}), so a transaction that drew an earlier insert_seq and commits
   * later is read in order, never passed (the writer takes its transaction id before its
   * insert_seq for this). Rows after the position that are in flight are left out of reads. A full rescan from the start of the owned partitions whenever they change, when the
   * ledger was emptied by a pipeline restart, and every lease duration as a safety net.
   */
  private Flux<List<BatchInFlight>> claim() {
    return Flux.defer(() -> {
      Map<Integer, Long> parts = readable;
      Ledger.Room room = !cycles.stopping() && !parts.isEmpty() && System.nanoTime() - ownedUntilNanos < 0
          ? ledger.room(READ_WHEN_FREE) : null;
      if (room == null) {
        return Flux.empty();
      }
      Instant now = Instant.now();
      long nowNanos = System.nanoTime();
      long generation = ledger.generation();
      if (!parts.equals(cursorParts) || generation != cursorGeneration
          || nowNanos - lastRescanNanos >= ttl.toNanos()) {
        cursor = 0; // a full rescan
        candidates.clear();
        cursorParts = parts;
        cursorGeneration = generation;
        lastRescanNanos = nowNanos;
      }
      while (!rewinds.isEmpty() && !rewinds.firstKey().isAfter(now)) {
        long seq = rewinds.pollFirstEntry().getValue();
        if (seq <= cursor) {
          cursor = seq - 1;
          candidates.clear();
        }
      }
      heldKeys.values().removeIf(until -> !until.isAfter(now));
      Set<String> inFlightKeys = new HashSet<>();
      long after = cursor;
      List<BatchInFlight> held = ledger.held();
      // Rows in flight after the position are left out by the read (those at or below it are
      // not read at all), so none of them comes back.
      long[] skipSeqs = held.stream().mapToLong(b -> b.claim().insertSeq())
          .filter(seq -> seq > after).toArray();
      for (BatchInFlight b : held) {
        // A batch already in Kafka holds its keys no longer: the next row of a key goes out
        // while the previous one's DELETE runs. Should that DELETE fail, the row is read again
        // and published again after it (a duplicate; the first deliveries stay in order).
        if (b.fence != null && !b.published()) {
          inFlightKeys.addAll(b.fence.keys());
        }
      }
      // Rows, not messages: as many as the free record budget holds at the recent row size.
      int fits = (int) Math.ceil(room.records() / Math.max(1.0, messagesPerRow)) + 1;
      int limit = Math.min(options.claimSize(), Math.max(fits, MIN_READ_ROWS));
      long started = System.nanoTime();
      readingSince = round.get();
      return store.read(owner, List.copyOf(parts.keySet()), after, skipSeqs,
              List.copyOf(heldKeys.keySet()), limit, room.records(), room.bytes(), room.empty())
          .flatMapMany(read -> {
            List<ReadRow> rows = read.rows();
            List<ClaimedBatch> taken = new ArrayList<>();
            List<BatchInFlight.Fence> fences = new ArrayList<>();
            List<BatchInFlight.SendGroup> groups = new ArrayList<>();
            // Keys a later row of this read must not overtake: in flight, taken or passed here.
            Set<String> blocking = new HashSet<>(inFlightKeys);
            // Keys whose every row so far in this read was taken, with the send group they went
            // in: a later row of such a key joins that group instead of waiting a round trip.
            Map<String, BatchInFlight.SendGroup> chainable = new HashMap<>();
            long position = after;
            boolean advancing = true;
            long records = 0;
            for (ReadRow row : rows) {
              long seq = row.insertSeq();
              if (row.pending()) { // may still be overtaken by an earlier transaction's commit
                blocking.addAll(row.keys());
                chainable.keySet().removeAll(row.keys());
                advancing = false;
                continue;
              }
              if (row.waitingUntil() != null) {
                // Passed; read again when due. Its keys wait with it, so later rows of them too.
                hold(row.keys(), row.waitingUntil());
                rewinds.merge(row.waitingUntil(), seq, Math::min);
                blocking.addAll(row.keys());
                chainable.keySet().removeAll(row.keys());
                position = advancing ? seq : position;
                continue;
              }
              if (row.keys().stream().anyMatch(heldKeys::containsKey)) {
                // Come back to it when its keys are free, not only when the row that holds them
                // is due: rows sent as one unit can be due at different times (review finding).
                row.keys().stream().map(heldKeys::get).filter(java.util.Objects::nonNull)
                    .max(java.util.Comparator.naturalOrder())
                    .ifPresent(until -> rewinds.merge(until, seq, Math::min));
                blocking.addAll(row.keys());
                chainable.keySet().removeAll(row.keys());
                position = advancing ? seq : position; // behind a retry: read again with it
                continue;
              }
              Long epoch = parts.get(row.partition());
              BatchInFlight.SendGroup joined = null;
              boolean blocked = false;
              for (String key : row.keys()) {
                if (blocking.contains(key)) {
                  BatchInFlight.SendGroup group = chainable.get(key);
                  // Behind a row not taken, in flight from an earlier read, or in two groups.
                  blocked |= group == null || (joined != null && joined != group)
                      || group.batches >= rowsPerKeyInFlight;
                  joined = group;
                }
              }
              blocking.addAll(row.keys());
              boolean overBudget = row.rawData() == null
                  || (records + row.messageCount() > room.records() && !(taken.isEmpty() && room.empty()));
              if (blocked || epoch == null) {
                chainable.keySet().removeAll(row.keys());
                advancing = false;
                continue;
              }
              if (overBudget) {
                advancing = false;
                break;
              }
              records += row.messageCount();
              messagesPerRow = messagesPerRow * 0.9 + row.messageCount() * 0.1;
              taken.add(new ClaimedBatch(row.batchId(), seq, row.messageCount(),
                  row.writeRetries(), row.rawData(), row.insertTime(), NO_LEASE, Instant.MAX));
              fences.add(new BatchInFlight.Fence(row.partition(), epoch, row.keys()));
              BatchInFlight.SendGroup group = joined != null ? joined : new BatchInFlight.SendGroup();
              group.batches++;
              groups.add(group);
              row.keys().forEach(key -> chainable.put(key, group));
              position = advancing ? seq : position;
            }
            List<BatchInFlight> batches = ledger.register(taken,
                fences.toArray(BatchInFlight.Fence[]::new), groups.toArray(BatchInFlight.SendGroup[]::new),
                generation, false);
            if (batches == null) {
              return Flux.empty(); // abandoned meanwhile: the next read rescans
            }
            moveTo(after, read, position);
            options.metrics().claimed(batches.size(),
                taken.stream().mapToInt(ClaimedBatch::messageCount).sum(),
                Duration.ofNanos(System.nanoTime() - started));
            if (rows.size() == limit && (!taken.isEmpty() || position > after)) {
              wake(); // a full read that got somewhere: there is probably more
            }
            return batches.isEmpty() ? Flux.empty() : Flux.just(batches);
          })
          .doFinally(signal -> readingSince = -1)
          .onErrorResume(error -> {
            log.warn("Outbox relay {} could not read its partitions; trying again at the next"
                + " poll: {}", options.instanceId(), error.toString());
            return Flux.empty();
          });
    });
  }

  /**
   * After a read that started at {@code after} and could pass everything up to {@code end}: the
   * position moves to the furthest earlier end whose read's fence this read's snapshot xmin has
   * reached (every transaction open at that read has ended, so this read saw all rows below it),
   * but not past {@code end}; {@code end} waits as a candidate. Nothing moves when a rescan
   * or rewind reset the position meanwhile.
   */
  private void moveTo(long after, PartitionStore.Read read, long end) {
    if (cursor != after) {
      return;
    }
    long safe = after;
    while (!candidates.isEmpty() && candidates.peekFirst()[1] <= read.snapshotXmin()) {
      safe = Math.max(safe, candidates.pollFirst()[0]);
    }
    cursor = Math.min(safe, end);
    if (end > cursor && (candidates.isEmpty() || end > candidates.peekLast()[0])) {
      if (candidates.size() >= MAX_CANDIDATES) {
        candidates.pollLast(); // the newest moves forward instead
      }
      candidates.addLast(new long[] {end, read.fence()});
    }
  }
}
