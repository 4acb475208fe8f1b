package dev.outbox.faults;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.relay.RelayMode;
import dev.outbox.testing.Poll;
import dev.outbox.testing.TestPostgres;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.HashMap;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import java.util.function.Predicate;

/**
 * One fault scenario: a fresh outbox table and topic, the load writer, relay processes, and at
 * the end the drain and the consumer-side check.
 */
final class FaultRun implements AutoCloseable {
  /** Longer outages, more load and more relay modes for every scenario: -Dfaults.long=true. */
  static final boolean LONG = Boolean.getBoolean("faults.long");
  static final Duration LEASE = Duration.ofSeconds(3);
  /** PARTITIONED mode's number of partitions (fixed in {@code V3__partitions.sql}). */
  static final int PARTITIONS = 32;
  /** WAL mode's short-form writer pause; -Dfaults.walPauseMs=N to try another load. */
  private static final long WAL_PAUSE_MS = Long.getLong("faults.walPauseMs", 250);
  private static final Duration DRAIN_DEADLINE = Duration.ofMinutes(15);
  private static final Duration STALL_DEADLINE = Duration.ofSeconds(60);

  final String scenario;
  final RelayMode mode;
  final FaultWorld world;
  final OutboxTable table;
  final String topic;
  /**
   * Records to wait for as a sign that the relay publishes (before and after a fault): 200, or
   * 80 in WAL mode, whose writer writes more slowly. (It was 50; once WAL mode kept up with its
   * writer, a PostgreSQL restart run reached both marks with 96 messages committed, under the
   * "more than 100 committed" check of {@link #finish}.)
   */
  final int progress;
  private final LoadWriter load;
  private final Map<String, RelayProcess> relays = new LinkedHashMap<>();
  /** Relays stopped on purpose before the end ({@link #stopRelay}), still checked at the end. */
  private final List<RelayProcess> stopped = new ArrayList<>();
  private final Map<String, Integer> launches = new HashMap<>();
  private final List<String> notes = new ArrayList<>();
  /** Writers delete their rows once logged: the table stays empty, the slot tells. */
  private final boolean deleteOnceLogged;

  private FaultRun(String scenario, RelayMode mode, FaultWorld world, OutboxTable table,
      String topic, LoadWriter load, boolean deleteOnceLogged) {
    this.deleteOnceLogged = deleteOnceLogged;
    this.scenario = scenario;
    this.mode = mode;
    this.world = world;
    this.table = table;
    this.topic = topic;
    this.progress = mode == RelayMode.WAL ? 80 : 200;
    this.load = load;
  }

  /**
   * Creates the table (in PARTITIONED mode with its partitions: {@code
   * OutboxSchema.enablePartitions}) and topic and starts writing.
   */
  static FaultRun start(String scenario, RelayMode mode) {
    return start(scenario, mode, false);
  }

  /**
   * {@code deleteOnceLogged}: WAL mode with writers that delete their rows once logged
   * ({@code OutboxWriter.Builder#deleteOnceLogged}); rows written before the slot is ready stay
   * in the table for the sweep.
   */
  static FaultRun start(String scenario, RelayMode mode, boolean deleteOnceLogged) {
    FaultWorld world = FaultWorld.get();
    OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("faults"));
    String topic = TestPostgres.uniqueName("faults_" + scenario.replaceAll("[^a-z]", ""));
    if (mode == RelayMode.WAL) {
      assertThat(world.db().queryColumn("SHOW wal_level")).as("the suite's PostgreSQL must run"
          + " with wal_level=logical for WAL mode").containsExactly("logical");
    }
    OutboxSchema.createIfMissing(world.db().connectionFactory(), table)
        .block(Duration.ofSeconds(60));
    if (mode == RelayMode.PARTITIONED) {
      OutboxSchema.enablePartitions(world.db().connectionFactory(), table)
          .block(Duration.ofSeconds(60));
    }
    world.kafka.createTopic(topic, 3);
    LoadWriter load = LoadWriter.start(world.db(), table, topic, LONG ? 4 : 3,
        keysPerWorker(mode), 17, writerPause(mode), deleteOnceLogged);
    return new FaultRun(scenario, mode, world, table, topic, load, deleteOnceLogged);
  }

  /**
   * Keys each writer thread writes: 4, or 16 in PARTITIONED mode. A key's rows all land in one
   * of the 32 partitions, so 12 keys would leave most partitions empty (a relay could own only
   * empty ones), and with one batch per key in flight 12 keys drain a backlog slowly.
   */
  private static int keysPerWorker(RelayMode mode) {
    return mode == RelayMode.PARTITIONED ? 16 : 4;
  }

  /**
   * The writer's pause between transactions. WAL mode publishes one batch at a time: each batch
   * is claimed, sent, acknowledged and deleted before the next (about 20-25 batches/s in this
   * suite, on 2 cores shared with the writer, PostgreSQL, Kafka and a relay JVM under BlockHound
   * and C1 only), so its writer writes about 12 transactions/s: the relay keeps up between faults
   * and each WAL scenario finishes within about 40 s. PARTITIONED mode's short form pauses 25 ms:
   * with 10 ms the five-kill scenario left about 7,000 rows (15 s of draining) written while the
   * relay JVMs restarted, and the writer slowed those restarts on 2 cores.
   */
  private static Duration writerPause(RelayMode mode) {
    if (mode == RelayMode.WAL) {
      return Duration.ofMillis(WAL_PAUSE_MS);
    }
    if (mode == RelayMode.PARTITIONED && !LONG) {
      return Duration.ofMillis(25);
    }
    return Duration.ofMillis(LONG ? 2 : 10);
  }

  /** WAL mode: the replication slot and the publication the relays use (the defaults). */
  String walSlot() {
    return table.name() + "_relay";
  }

  /**
   * Starts (or starts again) the relay called {@code name}. Its instance id is {@code
   * name-launch} ({@link #instanceId}). In PARTITIONED mode the relay renews its ownership every
   * third of {@link #LEASE} (the relay's default, within the mode's limit of half).
   */
  RelayProcess startRelay(String name) {
    int launch = launches.merge(name, 1, Integer::sum);
    Map<String, String> env = Map.ofEntries(
        Map.entry("OUTBOX_DATABASE_URL", world.relayDatabaseUrl()),
        Map.entry("OUTBOX_KAFKA_BOOTSTRAP_SERVERS", world.kafkaBootstrap()),
        Map.entry("OUTBOX_TABLE", table.qualifiedName()),
        Map.entry("OUTBOX_MODE", mode.name()),
        Map.entry("OUTBOX_INSTANCE_ID", name + "-" + launch),
        Map.entry("OUTBOX_POLL_INTERVAL", "100ms"),
        Map.entry("OUTBOX_LEASE", LEASE.toMillis() + "ms"),
        Map.entry("OUTBOX_DRAIN", "2s"),
        Map.entry("OUTBOX_HTTP_PORT", "0"),
        Map.entry("OUTBOX_DB_POOL_SIZE", "4"),
        Map.entry("OUTBOX_KAFKA_LINGER_MS", "5"),
        Map.entry("OUTBOX_KAFKA_RECONNECT_BACKOFF_MAX_MS", "500"));
    Path log = world.directory.resolve(scenario + "-" + mode + "-" + name + ".log");
    RelayProcess relay = RelayProcess.start(name, env, log);
    relays.put(name, relay);
    return relay;
  }

  RelayProcess relay(String name) {
    return relays.get(name);
  }

  /** The instance id of the relay called {@code name}'s latest launch. */
  String instanceId(String name) {
    return name + "-" + launches.get(name);
  }

  /**
   * Stops the relay called {@code name} with SIGTERM before the end of the scenario (it drains,
   * releases what it holds and exits) and checks that it exited with status 0. {@link #finish}
   * still checks its output for BlockHound.
   */
  void stopRelay(String name) {
    RelayProcess relay = relays.remove(name);
    relay.stop();
    stopped.add(relay);
    assertThat(relay.exitValue()).as("%s exit status after SIGTERM; output:%n%s", relay,
        tail(relay)).isZero();
  }

  /**
   * PARTITIONED mode: the partitions each relay owns right now (unexpired ownership, by the
   * database's clock), by instance id (the owner column is the instance id, {@code #} and a
   * random part).
   */
  Map<String, Integer> partitionOwners() {
    Map<String, Integer> owners = new LinkedHashMap<>();
    world.db().queryColumn("SELECT concat(instance, ' ', count(*)) FROM (SELECT"
            + " split_part(owner, '#', 1) AS instance FROM " + table.partitionsQualifiedName()
            + " WHERE owner IS NOT NULL AND expires_at > now()) AS owned"
            + " GROUP BY instance ORDER BY instance")
        .forEach(row -> {
          String[] parts = ((String) row).split(" ");
          owners.put(parts[0], Integer.parseInt(parts[1]));
        });
    return owners;
  }

  /** The partitions the relay called {@code name} (its latest launch) owns in {@code owners}. */
  int partitionsOf(Map<String, Integer> owners, String name) {
    return owners.getOrDefault(instanceId(name), 0);
  }

  /**
   * PARTITIONED mode: waits until {@link #partitionOwners()} satisfies {@code condition};
   * returns the seconds that took. Fails with the diagnostics (owners, relays, output). Asks the
   * database at most every 100 ms (each query opens a connection, on 2 cores shared with the
   * relays).
   */
  double awaitPartitions(String what, Duration deadline,
      Predicate<Map<String, Integer>> condition) {
    long started = System.nanoTime();
    long[] nextQuery = {started};
    try {
      Poll.until(scenario + ": " + what, deadline, () -> {
        if (System.nanoTime() < nextQuery[0]) {
          return false;
        }
        nextQuery[0] = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(100);
        return condition.test(partitionOwners());
      });
    } catch (AssertionError e) {
      throw new AssertionError(e.getMessage() + diagnostics(), e);
    }
    return (System.nanoTime() - started) / 1e9;
  }

  /** Records in the topic so far (through the Kafka proxy, so not while it is cut). */
  long published() {
    return world.kafka.recordCount(topic);
  }

  /** Waits until at least {@code records} more records than now have been published. */
  void awaitProgress(long records, Duration deadline) {
    long target = published() + records;
    try {
      Poll.until(scenario + ": " + records + " more records published", deadline,
          () -> published() >= target);
    } catch (AssertionError e) {
      throw new AssertionError(e.getMessage() + diagnostics(), e);
    }
  }

  /** The last insert position written so far: what {@link #awaitCaughtUp} measures against. */
  long insertedSoFar() {
    return world.db().queryLong("SELECT coalesce(max(insert_seq), 0) FROM "
        + table.qualifiedName());
  }

  /**
   * Waits until no row inserted at or before {@code mark} is left in the table (all of them
   * published and deleted); returns the seconds that took.
   */
  double awaitCaughtUp(long mark, Duration deadline) {
    long started = System.nanoTime();
    try {
      Poll.until(scenario + ": every row written up to insert_seq " + mark + " published",
          deadline, () -> world.db().queryLong("SELECT count(*) FROM " + table.qualifiedName()
              + " WHERE insert_seq <= " + mark) == 0);
    } catch (AssertionError e) {
      throw new AssertionError(e.getMessage() + diagnostics(), e);
    }
    return (System.nanoTime() - started) / 1e9;
  }

  /** Adds {@code text} to this scenario's report line. */
  void note(String text) {
    System.out.println("FAULT " + scenario + " (" + mode + "): " + text);
    notes.add(text);
  }

  /** The table's state, the database sessions and the relays' output, for failure messages. */
  private String diagnostics() {
    StringBuilder text = new StringBuilder();
    String t = table.qualifiedName();
    text.append("\nrows ").append(world.db().queryLong("SELECT count(*) FROM " + t))
        .append(", leased ").append(world.db().queryLong(
            "SELECT count(*) FROM " + t + " WHERE lease_expires_at > now()"))
        .append(", waiting for a retry ").append(world.db().queryLong(
            "SELECT count(*) FROM " + t + " WHERE next_attempt_at > now()"))
        .append(", below the commit watermark ").append(world.db().queryLong(
            "SELECT count(*) FROM " + t
                + " WHERE writer_xid < pg_snapshot_xmin(pg_current_snapshot())"));
    if (mode == RelayMode.WAL) {
      world.db().queryColumn("SELECT concat_ws(' ', slot_name, 'active', active, 'pid', active_pid,"
              + " 'restart_lsn', restart_lsn, 'confirmed_flush_lsn', confirmed_flush_lsn,"
              + " 'current', pg_current_wal_lsn(), 'behind', pg_size_pretty(pg_wal_lsn_diff("
              + "pg_current_wal_lsn(), confirmed_flush_lsn))) FROM pg_replication_slots")
          .forEach(slot -> text.append("\nslot ").append(slot));
    }
    if (mode == RelayMode.PARTITIONED) {
      world.db().queryColumn("SELECT concat_ws(' ', coalesce(owner, '(no owner)'), count(*),"
              + " 'expired', count(*) FILTER (WHERE expires_at <= now()), 'epochs', min(epoch),"
              + " max(epoch), 'partitions', string_agg(outbox_partition::text, ','"
              + " ORDER BY outbox_partition)) FROM " + table.partitionsQualifiedName()
              + " GROUP BY owner ORDER BY owner")
          .forEach(owner -> text.append("\npartition owner ").append(owner));
      world.db().queryColumn("SELECT concat_ws(' ', relay_id, 'heartbeat', now() - heartbeat_at,"
              + " 'ago') FROM " + table.relaysQualifiedName() + " ORDER BY relay_id")
          .forEach(relay -> text.append("\nrelay heartbeat ").append(relay));
    }
    world.db().queryColumn("SELECT concat_ws(' ', pid, state, backend_xid, backend_xmin,"
            + " now() - xact_start, left(query, 100)) FROM pg_stat_activity"
            + " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
        .forEach(session -> text.append("\nsession ").append(session));
    relays.values().forEach(r -> text.append("\n--- ").append(r).append('\n').append(tail(r)));
    stopped.forEach(r -> text.append("\n--- stopped ").append(r).append('\n').append(tail(r)));
    return text.toString();
  }

  /** A fault held for this long: a deliberate outage, not a wait for an outcome. */
  static void hold(Duration outage) {
    LockSupport.parkNanos(outage.toNanos());
  }

  /**
   * Stops the writer, lets the running relays drain the table, stops them with SIGTERM and
   * checks the topic; fails with the report and the relays' output if an invariant broke.
   */
  DeliveryChecker.Report finish() {
    load.stop();
    relays.forEach((name, relay) -> assertThat(relay.isAlive())
        .as("%s is still running; output:%n%s", relay, tail(relay)).isTrue());
    long started = System.nanoTime();
    long backlog = world.db().queryLong("SELECT count(*) FROM " + table.qualifiedName());
    // Rows only the log holds leave the table empty: drained once the slot has confirmed all
    // the WAL written until the writer stopped (it confirms only past settled transactions).
    String confirmedPastWriters = "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '"
        + walSlot() + "' AND confirmed_flush_lsn >= '" + world.db().queryColumn(
            "SELECT pg_current_wal_insert_lsn()::text").get(0) + "'::pg_lsn";
    // ORDERED drains a backlog one batch per key at a time, so a long run can leave minutes of
    // work: fail only when the table stops shrinking.
    long[] last = {Long.MAX_VALUE, System.nanoTime()};
    try {
      Poll.until(scenario + ": the outbox table is drained", DRAIN_DEADLINE, () -> {
        long rows = world.db().queryLong("SELECT count(*) FROM " + table.qualifiedName());
        if (rows < last[0]) {
          last[0] = rows;
          last[1] = System.nanoTime();
        } else if (System.nanoTime() - last[1] > STALL_DEADLINE.toNanos()) {
          throw new AssertionError(rows + " rows left and none published for " + STALL_DEADLINE);
        }
        return rows == 0
            && (!deleteOnceLogged || world.db().queryLong(confirmedPastWriters) == 1);
      });
    } catch (AssertionError e) {
      throw new AssertionError(e.getMessage() + diagnostics(), e);
    }
    long drainMillis = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - started);
    // Retriable send failures the relays still running counted (a failed row is published
    // again): -1 when one did not answer; relays killed or stopped before are not counted.
    String failedRecords = relays.values().stream()
        .map(relay -> String.format(java.util.Locale.ROOT, "%.0f",
            relay.metric("outbox_relay_records_failed_total{fatal=\"false\"")))
        .collect(java.util.stream.Collectors.joining("+"));
    relays.values().forEach(RelayProcess::stop);
    List<RelayProcess> every = new ArrayList<>(stopped);
    every.addAll(relays.values());
    every.forEach(relay -> {
      assertThat(relay.blockHoundInstalled()).as("%s runs under BlockHound; output:%n%s",
          relay, tail(relay)).isTrue();
      assertThat(relay.reportedBlocking()).as("%s blocked a non-blocking thread; output:%n%s",
          relay, violation(relay)).isFalse();
    });
    DeliveryChecker.Report report = DeliveryChecker.check(scenario + " (" + mode + ")",
        world.kafka, topic, load.committedTags(), load.rolledBackTags(), checksKeyOrder(mode));
    long deadLetters = world.db().queryLong("SELECT count(*) FROM "
        + table.deadLetterQualifiedName());
    String line = report + ", dead letters " + deadLetters + ", writer transactions failed by the"
        + " fault " + load.failedTransactions() + ", drained " + backlog + " rows in " + drainMillis
        + " ms after the writer stopped, retriable record failures counted by the running"
        + " relays " + failedRecords
        + notes.stream().map(note -> ", " + note).reduce("", String::concat);
    System.out.println("FAULT REPORT " + line);
    appendToReport(line);
    assertThat(report.holds()).as(line).isTrue();
    assertThat(report.committed()).as("messages committed during the run").isGreaterThan(100);
    assertThat(deadLetters).as("dead letters; " + line).isZero();
    return report;
  }

  /**
   * Whether the mode promises per-key order, so that the checker holds each key's first
   * deliveries to ascending {@code seq}. ORDERED publishes in insert order below the commit
   * watermark; WAL in commit order; PARTITIONED each partition in insert order below the commit
   * watermark, one batch per key in flight, every key in one partition. The writer commits one
   * key's transactions one after another in ascending {@code seq}, so for each key insert order,
   * commit order and {@code seq} agree. PARALLEL promises no order across batches.
   */
  static boolean checksKeyOrder(RelayMode mode) {
    return mode == RelayMode.ORDERED || mode == RelayMode.WAL || mode == RelayMode.PARTITIONED;
  }

  /**
   * Kills whatever is still running: a failed scenario must not leave relay JVMs behind. In WAL
   * mode it then drops the slot and the publication: a slot left behind retains WAL for good.
   */
  @Override
  public void close() {
    relays.values().stream().filter(RelayProcess::isAlive).forEach(RelayProcess::kill);
    load.close();
    if (mode == RelayMode.WAL) {
      dropSlotAndPublication();
    }
  }

  /**
   * Drops this run's slot and publication once no relay uses them. Every relay JVM is gone by
   * now, so a walsender still active on the slot serves a dead client (a killed relay whose
   * connection the server has not noticed yet): it is terminated. Fails if the slot survives.
   */
  private void dropSlotAndPublication() {
    String slot = walSlot();
    String active = "SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name = '"
        + slot + "'";
    Poll.until(scenario + ": no walsender on slot " + slot, Duration.ofSeconds(30), () -> {
      if (world.db().queryLong(active) == 0) {
        return true;
      }
      world.db().queryColumn("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
          + " WHERE active AND slot_name = '" + slot + "'");
      return false;
    });
    world.db().queryColumn("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
        + " WHERE slot_name = '" + slot + "'");
    world.db().execute("DROP PUBLICATION IF EXISTS " + slot);
    assertThat(world.db().queryLong("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '"
        + slot + "'")).as("slot %s dropped", slot).isZero();
    assertThat(world.db().queryLong("SELECT count(*) FROM pg_publication WHERE pubname = '"
        + slot + "'")).as("publication %s dropped", slot).isZero();
  }

  private static String violation(RelayProcess relay) {
    String output = relay.output();
    int at = Math.max(0, output.indexOf(BlockHoundRelayMain.VIOLATION));
    return output.substring(at, Math.min(output.length(), at + 6_000));
  }

  private static String tail(RelayProcess relay) {
    String output = relay.output();
    return output.length() <= 6_000 ? output : output.substring(output.length() - 6_000);
  }

  private static void appendToReport(String line) {
    try {
      Files.writeString(Path.of("target", "fault-report.txt"), line + System.lineSeparator(),
          StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }
}
