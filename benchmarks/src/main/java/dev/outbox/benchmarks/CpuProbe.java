package dev.outbox.benchmarks;

import dev.outbox.testing.TestPostgres;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Stream;

/**
 * CPU time spent by this JVM (which also hosts the broker) and by the embedded PostgreSQL
 * between two snapshots, from {@code /proc}: on a CPU-bound box the CPU a message costs says
 * more than wall time, which moves with whatever else the box runs. PostgreSQL's is its
 * postmaster's own time, its reaped children's and that of every child alive at the snapshot.
 * Linux only; elsewhere, or with an external PostgreSQL, the figures are absent.
 */
final class CpuProbe {
  /** Clock ticks per second of {@code /proc/<pid>/stat} (USER_HZ; 100 on Linux). */
  private static final double TICKS_PER_SECOND = 100.0;

  /** The postmaster's own time with that of its children that exited (their time moves there). */
  private static final String POSTMASTER = "postmaster and exited children";

  private final long postmaster;

  private CpuProbe(long postmaster) {
    this.postmaster = postmaster;
  }

  /**
   * A probe of this JVM and the test PostgreSQL (its postmaster: the parent of the checkpointer,
   * which lives as long as the server; a query's own backend exits with its connection).
   */
  static CpuProbe of(TestPostgres postgres) {
    long postmaster = -1;
    if (postgres.isEmbedded()) {
      long checkpointer = postgres.queryLong(
          "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'");
      long[] stat = stat(checkpointer);
      postmaster = stat == null ? -1 : stat[0];
    }
    return new CpuProbe(postmaster);
  }

  /** CPU seconds so far: this JVM's, PostgreSQL's (NaN when not measurable). */
  Snapshot now() {
    long[] self = stat(ProcessHandle.current().pid());
    double jvm = self == null ? Double.NaN : (self[1] + self[2]) / TICKS_PER_SECOND;
    Map<Long, Child> processes = postgresProcesses();
    double postgres = processes.isEmpty() ? Double.NaN
        : processes.values().stream().mapToLong(Child::ticks).sum() / TICKS_PER_SECOND;
    return new Snapshot(jvm, postgres, processes, jitMillis());
  }

  /** Milliseconds this JVM's JIT compilers spent so far (CompilationMXBean; 0 when unknown). */
  static long jitMillis() {
    java.lang.management.CompilationMXBean jit = java.lang.management.ManagementFactory.getCompilationMXBean();
    return jit != null && jit.isCompilationTimeMonitoringSupported() ? jit.getTotalCompilationTime() : 0;
  }

  /**
   * Extra warm-up rounds at most (default 8), run while the JIT compilers still compiled for more
   * than {@link #QUIET_SHARE} of the last round's wall time: {@code -Dbench.jitRounds}. The
   * Debezium peer was quiet after 2, the relay's WAL drain after 8 (run 72).
   */
  static final int JIT_ROUNDS = Integer.getInteger("bench.jitRounds", 8);
  static final double QUIET_SHARE = 0.25;

  /**
   * Whether a warm-up round of {@code seconds} left the JIT quiet: compiling for at most {@link
   * #QUIET_SHARE} of it. With a single 600,000-message warm-up, C2 still compiled for 4.6 s during
   * a 4.6 s measured WAL drain (JFR jdk.Compilation, run 70): Kafka producer and broker methods
   * called once a request (Sender metrics, RecordAccumulator.partitionReady, ReplicaManager),
   * which reach C2's thresholds late. Whichever side drains first in the JVM paid for them.
   */
  static boolean jitQuiet(String who, int round, long jitMillis, double seconds) {
    boolean quiet = jitMillis <= QUIET_SHARE * seconds * 1000;
    System.out.printf(Locale.ROOT, "%s warm-up round %d: %.2f s, JIT compiled %.2f s (%s)%n", who,
        round, seconds, jitMillis / 1000.0, quiet ? "quiet" : "not quiet yet");
    return quiet;
  }

  /**
   * The postmaster (its own time and its reaped children's) and each child alive now, by pid;
   * empty when not measurable.
   */
  private Map<Long, Child> postgresProcesses() {
    Map<Long, Child> processes = new HashMap<>();
    long[] own = postmaster < 0 ? null : stat(postmaster);
    if (own == null) {
      return processes;
    }
    processes.put(postmaster, new Child(POSTMASTER, own[1] + own[2] + own[3] + own[4]));
    try (Stream<Path> procs = Files.list(Path.of("/proc"))) {
      List<Long> pids = procs.map(p -> p.getFileName().toString())
          .filter(name -> name.chars().allMatch(Character::isDigit))
          .map(Long::parseLong).toList();
      for (long pid : pids) {
        long[] child = stat(pid);
        if (child != null && child[0] == postmaster) {
          processes.put(pid, new Child(role(pid), child[1] + child[2]));
        }
      }
    } catch (IOException e) {
      processes.clear();
    }
    return processes;
  }

  /** What a PostgreSQL child does, from the title it sets ("postgres: walsender …"). */
  private static String role(long pid) {
    try {
      String title = Files.readString(Path.of("/proc", Long.toString(pid), "cmdline"))
          .replace('\0', ' ').strip();
      if (title.startsWith("postgres: ")) {
        title = title.substring("postgres: ".length());
      }
      if (title.startsWith("walsender")) {
        return "walsender";
      }
      if (title.startsWith("autovacuum")) {
        return "autovacuum";
      }
      for (String auxiliary : List.of("checkpointer", "background writer", "walwriter",
          "logical replication launcher", "io worker")) {
        if (title.startsWith(auxiliary)) {
          return "auxiliary";
        }
      }
      return "backends";
    } catch (IOException | RuntimeException e) {
      return "backends";
    }
  }

  /** One PostgreSQL process at a snapshot: its role and CPU ticks so far. */
  private record Child(String role, long ticks) {}

  /** ppid, utime, stime, cutime, cstime of {@code pid}; null when it is gone or unreadable. */
  private static long[] stat(long pid) {
    try {
      String line = Files.readString(Path.of("/proc", Long.toString(pid), "stat"));
      // Fields after the command name, which is in parentheses and may hold spaces.
      String[] f = line.substring(line.lastIndexOf(')') + 2).split(" ");
      return new long[] {Long.parseLong(f[1]), Long.parseLong(f[11]), Long.parseLong(f[12]),
          Long.parseLong(f[13]), Long.parseLong(f[14])};
    } catch (IOException | RuntimeException e) {
      return null;
    }
  }

  /** CPU seconds of this JVM and of PostgreSQL (and of each of its processes) at one moment. */
  record Snapshot(double jvm, double postgres, Map<Long, Child> children, long jitMillis) {
    /**
     * PostgreSQL's CPU a message since {@code before} by role: a process alive at both snapshots
     * counts its difference, one started since counts all of its time; one that exited moved its
     * time into its parent's (the postmaster's) children's time, which is counted less what it
     * had at {@code before}.
     */
    String postgresByRole(Snapshot before, long messages) {
      Map<String, Long> ticks = new TreeMap<>();
      for (Map.Entry<Long, Child> now : children.entrySet()) {
        Child then = before.children.get(now.getKey());
        long spent = now.getValue().ticks - (then == null ? 0 : then.ticks);
        ticks.merge(now.getValue().role, spent, Long::sum);
      }
      for (Map.Entry<Long, Child> then : before.children.entrySet()) {
        if (!children.containsKey(then.getKey())) {
          ticks.merge(POSTMASTER, -then.getValue().ticks, Long::sum);
        }
      }
      StringBuilder out = new StringBuilder("PostgreSQL CPU a message by process:");
      ticks.forEach((role, t) -> out.append(String.format(Locale.ROOT, " %s %.1f µs;", role,
          t / TICKS_PER_SECOND * 1e6 / messages)));
      return out.toString();
    }

    /** "JVM a µs + PostgreSQL b µs = c µs of CPU a message" since {@code before}. */
    String perMessage(Snapshot before, long messages) {
      double jvmMicros = (jvm - before.jvm) * 1e6 / messages;
      double pgMicros = (postgres - before.postgres) * 1e6 / messages;
      return String.format(Locale.ROOT, "CPU a message: JVM %.1f µs + PostgreSQL %.1f µs = %.1f µs"
              + " (JIT compiling %.2f s meanwhile)", jvmMicros, pgMicros, jvmMicros + pgMicros,
          (jitMillis - before.jitMillis) / 1000.0);
    }
  }
}
