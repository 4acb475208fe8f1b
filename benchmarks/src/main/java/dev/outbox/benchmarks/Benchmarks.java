package dev.outbox.benchmarks;

import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.time.ZonedDateTime;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Entry point: {@code
 * Benchmarks [all|writer|relay|latency|scaling|heap|keyfailure|partitioned-scaling|debezium|wal-lag]} (default
 * {@code all}). Each benchmark prints its own detailed table as it finishes; at the end the
 * summary table (every figure against a baseline measured in the same run) is printed and written
 * to {@code -Dbench.output} (default {@code target/benchmark-results.md}). Never fails on a
 * figure; a benchmark that throws is reported as a row and the others still run, and the JVM
 * always exits (status 1 if a benchmark failed), stopping the in-JVM broker first.
 */
public final class Benchmarks {
  /** Benchmarks in the order {@code all} runs them. */
  private static final Map<String, Benchmark> ALL = new LinkedHashMap<>();

  static {
    ALL.put("writer", WriterBenchmark::main);
    ALL.put("relay", RelayBenchmark::main);
    ALL.put("latency", TriggerLatencyBenchmark::main);
    ALL.put("scaling", ScalingBenchmark::main);
    ALL.put("heap", HeapBenchmark::main);
    ALL.put("keyfailure", KeyFailureBenchmark::main);
    ALL.put("partitioned-scaling", PartitionedScalingBenchmark::main);
    ALL.put("debezium", DebeziumPeerBenchmark::main);
    ALL.put("wal-lag", WalLagBenchmark::main);
    ALL.put("settle-delete", SettleDeleteBenchmark::main);
  }

  @FunctionalInterface
  private interface Benchmark {
    void run(String[] args) throws Exception;
  }

  private Benchmarks() {}

  public static void main(String[] args) throws Exception {
    String which = args.length == 0 ? "all" : args[0];
    List<String> selected = which.equals("all") ? List.copyOf(ALL.keySet()) : List.of(which.split(","));
    for (String name : selected) {
      if (!ALL.containsKey(name)) {
        throw new IllegalArgumentException("Unknown benchmark '" + name
            + "'; expected all or one (or a comma-separated list) of " + String.join(", ", ALL.keySet()));
      }
    }
    // The in-JVM broker's threads are not daemons: whatever happens (a benchmark throwing an
    // Error such as NoClassDefFoundError, the servers failing to start, writing the results),
    // stop the broker and exit, or the JVM (and mvn) would hang.
    int status = 1;
    try {
      status = run(which, selected);
    } catch (Throwable e) {
      e.printStackTrace();
    } finally {
      try {
        TestKafka.closeIfStarted();
      } catch (Throwable e) {
        e.printStackTrace();
      } finally {
        System.exit(status);
      }
    }
  }

  /** Runs the selection, prints and writes the summary; 0 if every benchmark completed. */
  private static int run(String which, List<String> selected) {
    ZonedDateTime started = ZonedDateTime.now();
    long t0 = System.nanoTime();
    double loadBefore = Results.loadAverage();
    String servers = servers(selected);
    int status = 0;
    for (String name : selected) {
      long t = System.nanoTime();
      System.out.println();
      System.out.println("=== " + name + " ===");
      try {
        ALL.get(name).run(new String[0]);
      } catch (Exception | LinkageError | AssertionError | OutOfMemoryError e) {
        // LinkageError: e.g. a class missing from the class path of one benchmark's peer
        e.printStackTrace();
        String message = String.valueOf(e.getMessage()).lines().findFirst().orElse("");
        Results.add(name, "failed", "—", "—", e.getClass().getSimpleName() + ": "
            + (message.length() > 300 ? message.substring(0, 300) + "…" : message));
        status = 1;
      }
      System.out.printf("=== %s: %d s ===%n", name, (System.nanoTime() - t) / 1_000_000_000L);
    }
    String markdown = Results.render(which, Results.machine(servers), started,
        Duration.ofNanos(System.nanoTime() - t0), loadBefore, Results.loadAverage());
    Path output = Paths.get(System.getProperty("bench.output", "target/benchmark-results.md"));
    Results.write(output, markdown);
    System.out.println();
    System.out.println(markdown);
    System.out.println("(written to " + output.toAbsolutePath() + ")");
    return status;
  }

  /** The server versions, for the header line (starts the servers the selection needs). */
  private static String servers(List<String> selected) {
    StringBuilder out = new StringBuilder();
    TestPostgres postgres = TestPostgres.get();
    String version = String.valueOf(postgres.queryColumn("SHOW server_version").get(0));
    out.append(postgres.isEmbedded() ? "embedded PostgreSQL " : "PostgreSQL ").append(version)
        .append(postgres.isEmbedded() ? " (fsync=off, synchronous_commit=off)" : "");
    if (!selected.equals(List.of("writer"))) {
      TestKafka kafka = TestKafka.get();
      out.append(kafka.isEmbedded() ? ", in-JVM Kafka broker " : ", Kafka broker, clients ")
          .append(org.apache.kafka.common.utils.AppInfoParser.getVersion());
    }
    return out.toString();
  }
}
