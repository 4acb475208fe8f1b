package dev.outbox.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.outbox.relay.RelayMode;
import dev.outbox.testing.Poll;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import java.util.function.Consumer;
import java.util.function.Function;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * Faults injected while an application writes and relays publish; after each scenario the
 * consumer-side check ({@link DeliveryChecker}) must hold: every committed message delivered at
 * least once, nothing from a rolled-back transaction, per-key order in ORDERED, WAL and
 * PARTITIONED mode. Duplicates are counted and reported ({@code target/fault-report.txt}), not
 * failed: delivery is at least once.
 *
 * <p>The short form (every build) runs each scenario in one mode, and the SIGKILL (five kills),
 * PostgreSQL restart, broker restart and relay-PostgreSQL network cut scenarios again in WAL mode
 * ({@code wal...}); {@code -Dfaults.long=true} runs every scenario in both PARALLEL and ORDERED
 * mode (the broker restart, PostgreSQL restart and both network cuts also in PARTITIONED mode)
 * and every WAL scenario (also the relay-Kafka network cut) with longer outages and more load.
 * In WAL mode the checker holds each key's first deliveries to commit order, as in ORDERED.
 * {@code -Dfaults.modes=PARTITIONED} (comma-separated names) runs only those modes of the
 * scenarios that loop over modes, e.g. to replay one mode of the long form.
 *
 * <p>PARTITIONED mode ({@code partitioned...}, preview; both forms) runs on a table with
 * partitions enabled ({@code OutboxSchema.enablePartitions}), relays sharing its 32 partitions
 * through {@code <table>_partitions} (owner, epoch, expiry) and {@code <table>_relays}
 * (heartbeats); the checker holds each key's first deliveries to ascending {@code seq}:
 * <ul>
 *   <li>SIGKILL five times, each followed by a restart: the new launch takes the partitions once
 *       the killed one's ownership expires ({@link FaultRun#LEASE});
 *   <li>rebalancing: one relay publishes alone and owns all 32 partitions; a second joins and
 *       partitions must move to it (both own some, read from {@code <table>_partitions}); then
 *       the first stops on SIGTERM (exit status 0) and the survivor must own all 32 and keep
 *       publishing;
 *   <li>two of three relays frozen (SIGSTOP) for twice {@link FaultRun#LEASE}: the third must
 *       take over all 32 partitions and keep publishing; the frozen ones resume (SIGCONT; what
 *       they still settle under the old epochs is fenced) and must own partitions again.
 * </ul>
 * The last two add the owners and how long the partitions took to move to the report line.
 * The writer uses 16 keys per thread in PARTITIONED mode (so that most partitions hold keys)
 * and, in the short form, pauses 25 ms between transactions.
 */
class FaultScenariosTest {
  private static final Duration PROGRESS = Duration.ofSeconds(120);
  private static final Duration OUTAGE = Duration.ofSeconds(FaultRun.LONG ? 15 : 5);
  /** Runs every silent-network scenario in its short form: -Dfaults.silent=true. */
  private static final boolean SILENT_ALL = Boolean.getBoolean("faults.silent");
  /**
   * After a silent network returns, the relay must have published everything written before
   * within this long: the relay's statement timeout (30 s by default) and the Kafka producer's
   * {@code request.timeout.ms} (30 s) plus reconnecting. Without them the relay never catches up
   * (the wedge: no progress 90 s after the network returned). Kafka never-return took
   * 56 s here.
   */
  private static final Duration CATCH_UP = Duration.ofSeconds(90);
  /**
   * PARTITIONED mode: partitions must have moved within this long after a relay joined, left or
   * froze. A relay JVM takes several seconds to start here, and a frozen or killed owner's
   * partitions move only after {@link FaultRun#LEASE}.
   */
  private static final Duration MOVE = Duration.ofSeconds(60);
  /**
   * Runs only these modes of the scenarios that loop over {@link #modes}, e.g. {@code
   * -Dfaults.modes=PARTITIONED -Dfaults.long=true} to replay one mode of the long form.
   */
  private static final String ONLY_MODES = System.getProperty("faults.modes", "");

  /**
   * The short form's mode, or in the long form PARALLEL and ORDERED and then {@code
   * alsoInLongForm}; only those named by {@code -Dfaults.modes} when set.
   */
  private static List<RelayMode> modes(RelayMode shortForm, RelayMode... alsoInLongForm) {
    List<RelayMode> modes = new ArrayList<>(List.of(shortForm));
    if (FaultRun.LONG) {
      modes = new ArrayList<>(List.of(RelayMode.PARALLEL, RelayMode.ORDERED));
      modes.addAll(List.of(alsoInLongForm));
    }
    if (!ONLY_MODES.isBlank()) {
      List<String> only = List.of(ONLY_MODES.toUpperCase(Locale.ROOT).split("\\s*,\\s*"));
      modes.removeIf(mode -> !only.contains(mode.name()));
    }
    return modes;
  }

  @Test
  void relayKilledWithSigkillTenTimesAndRestarted() {
    for (RelayMode mode : modes(RelayMode.ORDERED)) {
      killAndRestart(mode, 10);
    }
  }

  @Test
  void kafkaBrokerStoppedAndRestarted() {
    for (RelayMode mode : modes(RelayMode.PARTITIONED, RelayMode.PARTITIONED)) {
      brokerRestart(mode);
    }
  }

  @Test
  void postgresStoppedAndRestarted() {
    for (RelayMode mode : modes(RelayMode.PARTITIONED, RelayMode.PARTITIONED)) {
      postgresRestart(mode);
    }
  }

  // ------------------------------------------------------------------ WAL mode
  // The same scenarios with the relay following the slot (OUTBOX_MODE=WAL). WAL publishes in
  // commit order, so the checker holds each key's first deliveries to commit order; the run drops
  // its slot and publication when it ends (FaultRun#close).

  @Test
  void walRelayKilledWithSigkillFiveTimesAndRestarted() {
    killAndRestart(RelayMode.WAL, 5);
  }

  /** The same with writers that delete their rows once logged: replays come from the log only. */
  @Test
  void walRowsOnlyInTheLogRelayKilledWithSigkillFiveTimesAndRestarted() {
    killAndRestart(RelayMode.WAL, 5, true);
  }

  @Test
  void walKafkaBrokerStoppedAndRestarted() {
    brokerRestart(RelayMode.WAL);
  }

  @Test
  void walPostgresStoppedAndRestarted() {
    postgresRestart(RelayMode.WAL);
  }

  @Test
  void walNetworkToPostgresCutAndRestored() {
    cutAndRestore("postgres-network", RelayMode.WAL, world -> world.postgresProxy);
  }

  /**
   * Long form only (-Dfaults.long=true): the short form's WAL scenarios already take about two
   * minutes, and the broker restart covers the WAL relay losing Kafka.
   */
  @Test
  void walNetworkToKafkaCutAndRestored() {
    assumeTrue(FaultRun.LONG, "long form only (-Dfaults.long=true)");
    cutAndRestore("kafka-network", RelayMode.WAL, world -> world.kafkaProxy);
  }

  // ------------------------------------------------------------------ PARTITIONED mode
  // Relays share the table's 32 partitions (OUTBOX_MODE=PARTITIONED, a table with partitions
  // enabled); each key's first deliveries must come in seq order, as in ORDERED.

  @Test
  void partitionedRelayKilledWithSigkillFiveTimesAndRestarted() {
    killAndRestart(RelayMode.PARTITIONED, 5);
  }

  /**
   * One relay publishes alone and owns every partition; a second joins and takes some over; the
   * first stops on SIGTERM and the survivor takes over every partition and keeps publishing.
   */
  @Test
  void partitionedRelayJoinsThenOneLeavesGracefully() {
    try (FaultRun run = FaultRun.start("rebalance", RelayMode.PARTITIONED)) {
      run.startRelay("a");
      run.awaitProgress(run.progress, PROGRESS);
      run.awaitPartitions("relay a owns all " + FaultRun.PARTITIONS + " partitions", MOVE,
          owners -> run.partitionsOf(owners, "a") == FaultRun.PARTITIONS);
      run.startRelay("b");
      double joined = run.awaitPartitions("partitions moved to relay b, relay a kept some", MOVE,
          owners -> run.partitionsOf(owners, "a") > 0 && run.partitionsOf(owners, "b") > 0);
      run.note(String.format(Locale.ROOT, "moved to the joining relay %.1f s after its JVM"
          + " was launched (owners then %s)", joined, run.partitionOwners()));
      run.awaitProgress(run.progress, PROGRESS);
      long stopping = System.nanoTime();
      run.stopRelay("a");
      double stopSeconds = (System.nanoTime() - stopping) / 1e9;
      double left = run.awaitPartitions("relay b owns all " + FaultRun.PARTITIONS
          + " partitions", MOVE, owners -> run.partitionsOf(owners, "b") == FaultRun.PARTITIONS);
      run.note(String.format(Locale.ROOT, "relay a stopped in %.1f s, moved to the survivor %.1f"
          + " s after it exited", stopSeconds, left));
      run.awaitProgress(run.progress, PROGRESS);
      run.finish();
    }
  }

  /**
   * Two of three relays frozen past their ownership: the third takes over every partition and
   * keeps publishing; the frozen ones resume (their late settlements fenced) and rejoin.
   */
  @Test
  void partitionedTwoOfThreeRelaysFrozenPastTheirOwnershipThenResumed() {
    try (FaultRun run = FaultRun.start("sigstop-two", RelayMode.PARTITIONED)) {
      RelayProcess a = run.startRelay("a");
      RelayProcess b = run.startRelay("b");
      run.startRelay("c");
      run.awaitProgress(run.progress, PROGRESS);
      run.awaitPartitions("all three relays own partitions", MOVE, owners ->
          Stream.of("a", "b", "c").allMatch(name -> run.partitionsOf(owners, name) > 0));
      String before = run.partitionOwners().toString();
      a.freeze();
      b.freeze();
      long frozenAt = System.nanoTime();
      double takenOver = run.awaitPartitions("relay c owns all " + FaultRun.PARTITIONS
          + " partitions", MOVE, owners -> run.partitionsOf(owners, "c") == FaultRun.PARTITIONS);
      run.note(String.format(Locale.ROOT, "owners %s, then a and b frozen: moved to c %.1f s"
          + " after", before, takenOver));
      run.awaitProgress(run.progress, PROGRESS);
      Poll.until("the frozen relays' ownership has expired", Duration.ofSeconds(60),
          () -> System.nanoTime() - frozenAt > FaultRun.LEASE.multipliedBy(2).toNanos());
      a.resume();
      b.resume();
      double rejoined = run.awaitPartitions("the resumed relays own partitions again", MOVE,
          owners -> Stream.of("a", "b", "c").allMatch(name -> run.partitionsOf(owners, name) > 0));
      run.note(String.format(Locale.ROOT, "after SIGCONT every relay owned partitions within"
          + " %.1f s (owners then %s)", rejoined, run.partitionOwners()));
      run.awaitProgress(run.progress, PROGRESS);
      run.finish();
    }
  }

  // ------------------------------------------------------------------ scenario bodies

  /**
   * SIGKILL at random moments ({@code -Dfaults.seed=N} replays one; the seed is printed),
   * {@code kills} times, each followed by a restart.
   */
  private static void killAndRestart(RelayMode mode, int kills) {
    killAndRestart(mode, kills, false);
  }

  private static void killAndRestart(RelayMode mode, int kills, boolean deleteOnceLogged) {
    long seed = Long.getLong("faults.seed", System.nanoTime());
    Random random = new Random(seed);
    System.out.println("FAULT relay kills (" + mode + "): random seed " + seed);
    try (FaultRun run = FaultRun.start(deleteOnceLogged ? "sigkill-logged" : "sigkill", mode,
        deleteOnceLogged)) {
      run.note("seed " + seed);
      run.startRelay("a");
      for (int kill = 1; kill <= kills; kill++) {
        run.awaitProgress(20, PROGRESS); // the relay is up and publishing
        FaultRun.hold(Duration.ofMillis(random.nextInt(FaultRun.LONG ? 3_000 : 1_000)));
        run.relay("a").kill();
        run.startRelay("a");
      }
      run.awaitProgress(20, PROGRESS);
      run.finish();
    }
  }

  private static void brokerRestart(RelayMode mode) {
    outage("broker-restart", mode, w -> w.kafka.stopBroker(), w -> w.kafka.startBroker());
  }

  private static void postgresRestart(RelayMode mode) {
    outage("postgres-restart", mode, w -> w.postgres.stopServer(), w -> w.postgres.startServer());
  }

  /** Progress, then a server down for {@code OUTAGE} and up again, then progress again. */
  private static void outage(String name, RelayMode mode, Consumer<FaultWorld> down,
      Consumer<FaultWorld> up) {
    try (FaultRun run = FaultRun.start(name, mode)) {
      run.startRelay("a");
      run.awaitProgress(run.progress, PROGRESS);
      down.accept(run.world);
      FaultRun.hold(OUTAGE);
      up.accept(run.world);
      run.awaitProgress(run.progress, PROGRESS);
      run.finish();
    }
  }

  @Test
  void networkToPostgresCutAndRestored() {
    cutAndRestore("postgres-network", RelayMode.ORDERED, world -> world.postgresProxy);
  }

  @Test
  void networkToKafkaCutAndRestored() {
    cutAndRestore("kafka-network", RelayMode.PARTITIONED, world -> world.kafkaProxy);
  }

  private static void cutAndRestore(String scenario, RelayMode shortForm,
      Function<FaultWorld, TcpProxy> proxyOf) {
    List<RelayMode> modes = shortForm == RelayMode.WAL ? List.of(RelayMode.WAL)
        : modes(shortForm, RelayMode.PARTITIONED);
    for (RelayMode mode : modes) {
      try (FaultRun run = FaultRun.start(scenario, mode)) {
        TcpProxy proxy = proxyOf.apply(run.world);
        run.startRelay("a");
        run.awaitProgress(run.progress, PROGRESS);
        long refusedBefore = proxy.refusedConnections();
        proxy.cut();
        FaultRun.hold(OUTAGE);
        proxy.restore();
        assertThat(proxy.refusedConnections())
            .as("the relay tried to reconnect while the network was cut")
            .isGreaterThan(refusedBefore);
        run.awaitProgress(run.progress, PROGRESS);
        run.finish();
      }
    }
  }

  /** The short form runs this one: it is where a relay without statement timeouts wedges. */
  @Test
  void networkToPostgresSilentThenOnlyNewConnectionsWork() {
    silenceThenReturn("postgres-silent-never", RelayMode.PARTITIONED, w -> w.postgresProxy, true);
  }

  /** Long form only (-Dfaults.long=true), or -Dfaults.silent=true for the short silent ones. */
  @Test
  void networkToPostgresSilentThenResumed() {
    assumeTrue(FaultRun.LONG || SILENT_ALL, "long form only (-Dfaults.long=true or -Dfaults.silent=true)");
    silenceThenReturn("postgres-silent-resume", RelayMode.PARTITIONED, w -> w.postgresProxy, false);
  }

  /** Long form only (-Dfaults.long=true), or -Dfaults.silent=true for the short silent ones. */
  @Test
  void networkToKafkaSilentThenOnlyNewConnectionsWork() {
    assumeTrue(FaultRun.LONG || SILENT_ALL, "long form only (-Dfaults.long=true or -Dfaults.silent=true)");
    silenceThenReturn("kafka-silent-never", RelayMode.PARTITIONED, w -> w.kafkaProxy, true);
  }

  /** Long form only (-Dfaults.long=true), or -Dfaults.silent=true for the short silent ones. */
  @Test
  void networkToKafkaSilentThenResumed() {
    assumeTrue(FaultRun.LONG || SILENT_ALL, "long form only (-Dfaults.long=true or -Dfaults.silent=true)");
    silenceThenReturn("kafka-silent-resume", RelayMode.PARTITIONED, w -> w.kafkaProxy, false);
  }

  /**
   * The network to one server goes silent (a black hole: connections stay open, nothing
   * forwarded, nothing reset) while the writer goes on; then either every connection forwards
   * again, or only new connections do and the old ones stay silent for good. Reports how long
   * after the network returned every row written before was published.
   */
  private static void silenceThenReturn(String scenario, RelayMode shortForm,
      Function<FaultWorld, TcpProxy> proxyOf, boolean neverReturn) {
    for (RelayMode mode : modes(shortForm, RelayMode.PARTITIONED)) {
      try (FaultRun run = FaultRun.start(scenario, mode)) {
        TcpProxy proxy = proxyOf.apply(run.world);
        try {
          run.startRelay("a");
          run.awaitProgress(run.progress, PROGRESS);
          proxy.silence();
          FaultRun.hold(OUTAGE);
          assertThat(proxy.silentConnections()).as("connections held silent").isPositive();
          long mark = run.insertedSoFar();
          if (neverReturn) {
            proxy.resumeNewConnectionsOnly();
          } else {
            proxy.resume();
          }
          double seconds = run.awaitCaughtUp(mark, CATCH_UP);
          run.note(String.format(java.util.Locale.ROOT, "silent %d s then %s: caught up %.1f s"
                  + " after the network returned", OUTAGE.toSeconds(),
              neverReturn ? "only new connections work" : "resumed", seconds));
          run.finish();
        } finally {
          proxy.restore(); // resets connections left silent, for the next scenario
        }
      }
    }
  }

  @Test
  void relayFrozenPastItsLeaseThenResumed() {
    for (RelayMode mode : modes(RelayMode.PARALLEL)) {
      try (FaultRun run = FaultRun.start("sigstop", mode)) {
        RelayProcess frozen = run.startRelay("a");
        run.startRelay("b");
        run.awaitProgress(run.progress, PROGRESS);
        frozen.freeze();
        long frozenAt = System.nanoTime();
        if (mode == RelayMode.PARALLEL) {
          // The other relay keeps publishing, and takes over the frozen one's leases.
          run.awaitProgress(run.progress, PROGRESS);
        }
        Poll.until("the frozen relay's leases have expired", Duration.ofSeconds(60),
            () -> System.nanoTime() - frozenAt > FaultRun.LEASE.multipliedBy(2).toNanos());
        frozen.resume();
        run.awaitProgress(run.progress, PROGRESS);
        run.finish();
      }
    }
  }
}
