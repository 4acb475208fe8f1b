package dev.outbox.relay;

import dev.outbox.r2dbc.BacklogStats;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.Tags;
import io.micrometer.core.instrument.Timer;
import java.time.Duration;
import java.time.Instant;
import java.util.concurrent.atomic.AtomicLong;

/**
 * {@link RelayMetrics} as Micrometer meters, tagged with the outbox table:
 *
 * <table>
 *   <caption>Meters</caption>
 *   <tr><td>{@code outbox.relay.backlog.rows}</td><td>gauge: rows not yet published</td></tr>
 *   <tr><td>{@code outbox.relay.backlog.oldest.age}</td><td>gauge, seconds: age of the oldest row</td></tr>
 *   <tr><td>{@code outbox.relay.dead.letters}</td><td>gauge: rows in the dead-letter table</td></tr>
 *   <tr><td>{@code outbox.relay.in.flight}</td><td>gauge: records claimed, not yet settled</td></tr>
 *   <tr><td>{@code outbox.relay.in.flight.bytes}</td><td>gauge, bytes: stored batch data claimed, not yet settled</td></tr>
 *   <tr><td>{@code outbox.relay.outcomes.dropped}</td><td>counter: outcomes a lagging {@code outcomes()} subscriber missed</td></tr>
 *   <tr><td>{@code outbox.relay.leader}</td><td>gauge: 1 while this instance is the ORDERED leader</td></tr>
 *   <tr><td>{@code outbox.relay.partitions}</td><td>gauge: PARTITIONED mode, partitions this
 *       relay reads now</td></tr>
 *   <tr><td>{@code outbox.relay.partitions.taken.over}</td><td>counter: PARTITIONED mode,
 *       partitions this relay acquired (free, handed over, or after an owner's expiry)</td></tr>
 *   <tr><td>{@code outbox.relay.records.published}</td><td>counter</td></tr>
 *   <tr><td>{@code outbox.relay.records.failed}</td><td>counter, tag {@code fatal}</td></tr>
 *   <tr><td>{@code outbox.relay.records.dead.lettered}</td><td>counter</td></tr>
 *   <tr><td>{@code outbox.relay.publish.latency}</td><td>timer: hand-off to acknowledgement</td></tr>
 *   <tr><td>{@code outbox.relay.claim.latency}</td><td>timer: one claim statement</td></tr>
 *   <tr><td>{@code outbox.relay.health}</td><td>gauge: 1 while the health checks say UP, 0 when
 *       DOWN (also 0 before the first check)</td></tr>
 *   <tr><td>{@code outbox.relay.held.back.age}</td><td>gauge, seconds: ORDERED and WAL mode, age
 *       of the oldest transaction holding publication back (0 when none)</td></tr>
 *   <tr><td>{@code outbox.relay.wal.slot.missing}</td><td>gauge: WAL mode, 1 while the
 *       replication slot does not exist</td></tr>
 *   <tr><td>{@code outbox.relay.wal.lag.bytes}</td><td>gauge, bytes: WAL mode, WAL written
 *       after the slot's confirmed position (NaN while the slot does not exist)</td></tr>
 *   <tr><td>{@code outbox.relay.wal.lag.seconds}</td><td>gauge, seconds: WAL mode, age of the
 *       oldest row still in the outbox table (0 when it is empty)</td></tr>
 * </table>
 *
 * <pre>{@code
 * RelayOptions.builder()...metrics(MicrometerRelayMetrics.create(registry, table)).build();
 * }</pre>
 */
public final class MicrometerRelayMetrics implements RelayMetrics {
  private final AtomicLong backlogRows = new AtomicLong();
  private final AtomicLong oldestEpochMillis = new AtomicLong();
  private final AtomicLong deadLetters = new AtomicLong();
  private final AtomicLong inFlight = new AtomicLong();
  private final AtomicLong inFlightBytes = new AtomicLong();
  private final AtomicLong leader = new AtomicLong();
  private final AtomicLong partitionsRead = new AtomicLong();
  private final Counter partitionsTakenOver;
  private final AtomicLong healthUp = new AtomicLong();
  private final AtomicLong heldBackSeconds = new AtomicLong();
  private final AtomicLong walSlotMissing = new AtomicLong();
  private final AtomicLong walLagBytes = new AtomicLong();
  private final AtomicLong walLagMillis = new AtomicLong();
  private final Counter published;
  private final Counter failedRetriable;
  private final Counter failedFatal;
  private final Counter deadLettered;
  private final Counter outcomesDropped;
  private final Timer publishLatency;
  private final Timer claimLatency;

  private MicrometerRelayMetrics(MeterRegistry registry, String table) {
    Tags tags = Tags.of("table", table);
    Gauge.builder("outbox.relay.backlog.rows", backlogRows, AtomicLong::get).tags(tags)
        .register(registry);
    Gauge.builder("outbox.relay.backlog.oldest.age", oldestEpochMillis, oldest -> oldest.get() == 0
            ? 0 : (System.currentTimeMillis() - oldest.get()) / 1000.0)
        .baseUnit("seconds").tags(tags).register(registry);
    Gauge.builder("outbox.relay.dead.letters", deadLetters, AtomicLong::get).tags(tags)
        .register(registry);
    Gauge.builder("outbox.relay.in.flight", inFlight, AtomicLong::get).tags(tags)
        .register(registry);
    Gauge.builder("outbox.relay.in.flight.bytes", inFlightBytes, AtomicLong::get).baseUnit("bytes")
        .tags(tags).register(registry);
    Gauge.builder("outbox.relay.leader", leader, AtomicLong::get).tags(tags).register(registry);
    Gauge.builder("outbox.relay.partitions", partitionsRead, AtomicLong::get).tags(tags)
        .register(registry);
    partitionsTakenOver = Counter.builder("outbox.relay.partitions.taken.over").tags(tags)
        .register(registry);
    Gauge.builder("outbox.relay.health", healthUp, AtomicLong::get).tags(tags).register(registry);
    Gauge.builder("outbox.relay.held.back.age", heldBackSeconds, AtomicLong::get)
        .baseUnit("seconds").tags(tags).register(registry);
    Gauge.builder("outbox.relay.wal.slot.missing", walSlotMissing, AtomicLong::get).tags(tags)
        .register(registry);
    Gauge.builder("outbox.relay.wal.lag.bytes", walLagBytes,
            bytes -> bytes.get() < 0 ? Double.NaN : bytes.get())
        .baseUnit("bytes").tags(tags).register(registry);
    Gauge.builder("outbox.relay.wal.lag.seconds", walLagMillis, millis -> millis.get() / 1000.0)
        .baseUnit("seconds").tags(tags).register(registry);
    published = Counter.builder("outbox.relay.records.published").tags(tags).register(registry);
    failedRetriable = Counter.builder("outbox.relay.records.failed").tags(tags).tag("fatal", "false")
        .register(registry);
    failedFatal = Counter.builder("outbox.relay.records.failed").tags(tags).tag("fatal", "true")
        .register(registry);
    deadLettered = Counter.builder("outbox.relay.records.dead.lettered").tags(tags)
        .register(registry);
    outcomesDropped = Counter.builder("outbox.relay.outcomes.dropped").tags(tags)
        .register(registry);
    publishLatency = Timer.builder("outbox.relay.publish.latency").tags(tags).register(registry);
    claimLatency = Timer.builder("outbox.relay.claim.latency").tags(tags).register(registry);
  }

  public static MicrometerRelayMetrics create(MeterRegistry registry, String table) {
    return new MicrometerRelayMetrics(registry, table);
  }

  @Override
  public void claimed(int batches, int records, Duration latency) {
    claimLatency.record(latency);
  }

  @Override
  public void inFlight(long records) {
    inFlight.set(records);
  }

  @Override
  public void inFlightBytes(long bytes) {
    inFlightBytes.set(bytes);
  }

  @Override
  public void outcomesDropped(long count) {
    outcomesDropped.increment(count);
  }

  @Override
  public void published(Duration latency) {
    published.increment();
    publishLatency.record(latency);
  }

  @Override
  public void failed(boolean fatal) {
    (fatal ? failedFatal : failedRetriable).increment();
  }

  @Override
  public void deadLettered(int records) {
    deadLettered.increment(records);
  }

  @Override
  public void partitions(int read, int takenOver) {
    partitionsRead.set(read);
    if (takenOver > 0) {
      partitionsTakenOver.increment(takenOver);
    }
  }

  @Override
  public void leadership(boolean isLeader) {
    leader.set(isLeader ? 1 : 0);
  }

  @Override
  public void backlog(BacklogStats stats) {
    backlogRows.set(stats.rows());
    deadLetters.set(stats.deadLetters());
    Instant oldest = stats.oldestInsertTime();
    oldestEpochMillis.set(oldest == null ? 0 : oldest.toEpochMilli());
  }

  @Override
  public void health(boolean up) {
    healthUp.set(up ? 1 : 0);
  }

  @Override
  public void heldBack(Duration age) {
    heldBackSeconds.set(age.toSeconds());
  }

  @Override
  public void walSlotMissing(boolean missing) {
    walSlotMissing.set(missing ? 1 : 0);
  }

  @Override
  public void walLagBytes(long bytes) {
    walLagBytes.set(bytes < 0 ? -1 : bytes);
  }

  @Override
  public void walLagAge(Duration age) {
    walLagMillis.set(Math.max(0, age.toMillis()));
  }
}
