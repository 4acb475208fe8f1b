package dev.outbox.faults;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.outbox.relay.RelayMode;
import dev.outbox.testing.Poll;
import java.time.Duration;
import java.util.List;
import java.util.Random;
import java.util.function.Consumer;
import java.util.function.Function;
import org.junit.jupiter.api.Test;

/**
 * Faults injected while an application writes and relays publish; after each scenario the
 * consumer-side check ({@link DeliveryChecker}) must hold: every committed message delivered at
 * least once, nothing from a rolled-back transaction, per-key order in ORDERED and WAL mode.
 * Duplicates are counted and reported ({@code target/fault-report.txt}), not failed: delivery is
 * at least once.
 *
 * <p>The short form (every build) runs each scenario in one mode, and the SIGKILL (five kills),
 * PostgreSQL restart, broker restart and relay-PostgreSQL network cut scenarios again in WAL mode
 * ({@code wal...}); {@code -Dfaults.long=true} runs every scenario in both PARALLEL and ORDERED
 * mode and every WAL scenario (also the relay-Kafka network cut) with longer outages and more
 * load. In WAL mode the checker holds each key's first deliveries to commit order, as in ORDERED.
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

  private static List<RelayMode> modes(RelayMode shortForm) {
    return FaultRun.LONG ? List.of(RelayMode.PARALLEL, RelayMode.ORDERED) : List.of(shortForm);
  }

  @Test
  void relayKilledWithSigkillTenTimesAndRestarted() {
    for (RelayMode mode : modes(RelayMode.ORDERED)) {
      killAndRestart(mode, 10);
    }
  }

  @Test
  void kafkaBrokerStoppedAndRestarted() {
    for (RelayMode mode : modes(RelayMode.PARALLEL)) {
      brokerRestart(mode);
    }
  }

  @Test
  void postgresStoppedAndRestarted() {
    for (RelayMode mode : modes(RelayMode.PARALLEL)) {
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

  // ------------------------------------------------------------------ scenario bodies

  /**
   * SIGKILL at random moments ({@code -Dfaults.seed=N} replays one; the seed is printed),
   * {@code kills} times, each followed by a restart.
   */
  private static void killAndRestart(RelayMode mode, int kills) {
    long seed = Long.getLong("faults.seed", System.nanoTime());
    Random random = new Random(seed);
    System.out.println("FAULT relay kills (" + mode + "): random seed " + seed);
    try (FaultRun run = FaultRun.start("sigkill", mode)) {
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
    cutAndRestore("kafka-network", RelayMode.PARALLEL, world -> world.kafkaProxy);
  }

  private static void cutAndRestore(String scenario, RelayMode shortForm,
      Function<FaultWorld, TcpProxy> proxyOf) {
    List<RelayMode> modes = shortForm == RelayMode.WAL ? List.of(RelayMode.WAL) : modes(shortForm);
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
    silenceThenReturn("postgres-silent-never", RelayMode.PARALLEL, w -> w.postgresProxy, true);
  }

  /** Long form only (-Dfaults.long=true), or -Dfaults.silent=true for the short silent ones. */
  @Test
  void networkToPostgresSilentThenResumed() {
    assumeTrue(FaultRun.LONG || SILENT_ALL, "long form only (-Dfaults.long=true or -Dfaults.silent=true)");
    silenceThenReturn("postgres-silent-resume", RelayMode.PARALLEL, w -> w.postgresProxy, false);
  }

  /** Long form only (-Dfaults.long=true), or -Dfaults.silent=true for the short silent ones. */
  @Test
  void networkToKafkaSilentThenOnlyNewConnectionsWork() {
    assumeTrue(FaultRun.LONG || SILENT_ALL, "long form only (-Dfaults.long=true or -Dfaults.silent=true)");
    silenceThenReturn("kafka-silent-never", RelayMode.PARALLEL, w -> w.kafkaProxy, true);
  }

  /** Long form only (-Dfaults.long=true), or -Dfaults.silent=true for the short silent ones. */
  @Test
  void networkToKafkaSilentThenResumed() {
    assumeTrue(FaultRun.LONG || SILENT_ALL, "long form only (-Dfaults.long=true or -Dfaults.silent=true)");
    silenceThenReturn("kafka-silent-resume", RelayMode.PARALLEL, w -> w.kafkaProxy, false);
  }

  /**
   * The network to one server goes silent (a black hole: connections stay open, nothing
   * forwarded, nothing reset) while the writer goes on; then either every connection forwards
   * again, or only new connections do and the old ones stay silent for good. Reports how long
   * after the network returned every row written before was published.
   */
  private static void silenceThenReturn(String scenario, RelayMode shortForm,
      Function<FaultWorld, TcpProxy> proxyOf, boolean neverReturn) {
    for (RelayMode mode : modes(shortForm)) {
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
