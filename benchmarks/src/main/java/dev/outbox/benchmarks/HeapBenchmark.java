package dev.outbox.benchmarks;

import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import java.io.IOException;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Draining a 1,000,000-row backlog (one 200-byte message per row) with a relay in its own JVM
 * with {@code -Xmx256m}, against a plain {@code KafkaSender} sending the same 1,000,000 records
 * from its own {@code -Xmx256m} JVM, in the same run, to the same in-JVM broker. Both children
 * run {@link DrainChild} with {@code -XX:+ExitOnOutOfMemoryError} and a GC log under {@code
 * target/}; the parent checks the topic end offsets and that the table is empty.
 */
final class HeapBenchmark {
  private static final int ROWS = Results.scaled(Integer.getInteger("bench.heap.rows", 1_000_000), 10_000);
  private static final int PER_ROW = Integer.getInteger("bench.heap.messagesPerRow", 1);
  private static final int PAYLOAD = 200;
  private static final String CHILD_HEAP = System.getProperty("bench.heap.xmx", "256m");
  /** How long a child may take to drain or send everything. */
  private static final long TIMEOUT_MINUTES = Long.getLong("bench.heap.timeoutMinutes", 60);

  private HeapBenchmark() {}

  public static void main(String[] args) throws Exception {
    TestPostgres postgres = TestPostgres.get();
    TestKafka kafka = TestKafka.get();
    long messages = (long) ROWS * PER_ROW;
    OutboxTable table = OutboxTable.of("bench_heap");
    String relayTopic = "bench-heap-relay-" + System.nanoTime();
    String baselineTopic = "bench-heap-baseline-" + System.nanoTime();
    kafka.createTopic(relayTopic, 6);
    kafka.createTopic(baselineTopic, 6);
    postgres.execute("DROP TABLE IF EXISTS bench_heap", "DROP TABLE IF EXISTS bench_heap_dead_letter");
    ConnectionPool pool = postgres.newPool(2);
    OutboxSchema.createIfMissing(pool, table).block();
    pool.dispose();

    System.out.printf(Locale.ROOT, "heap: writing %,d rows x %d message(s)...%n", ROWS, PER_ROW);
    double fillSeconds = Backlog.fill(postgres, table, relayTopic, ROWS, PER_ROW, PAYLOAD);
    System.out.printf(Locale.ROOT, "heap: backlog written in %.1f s (%,.0f rows/s)%n", fillSeconds, ROWS / fillSeconds);

    Map<String, String> baseline = child("baseline", "-", kafka.bootstrapServers(), "-", baselineTopic, messages);
    long baselineRecords = kafka.recordCount(baselineTopic);
    Map<String, String> relay = child("relay", postgres.url(), kafka.bootstrapServers(),
        table.qualifiedName(), relayTopic, messages);
    long relayRecords = kafka.recordCount(relayTopic);
    long left = postgres.queryLong("SELECT count(*) FROM bench_heap");
    long deadLetters = postgres.queryLong("SELECT count(*) FROM bench_heap_dead_letter");
    postgres.execute("DROP TABLE IF EXISTS bench_heap", "DROP TABLE IF EXISTS bench_heap_dead_letter");

    double relaySeconds = Double.parseDouble(relay.get("seconds"));
    double baselineSeconds = Double.parseDouble(baseline.get("seconds"));
    long relayPublished = Long.parseLong(relay.get("messages"));
    double relayRate = relayPublished / relaySeconds;
    double baselineRate = messages / baselineSeconds;
    long relayPeak = Long.parseLong(relay.get("peakUsedBytes"));
    long baselinePeak = Long.parseLong(baseline.get("peakUsedBytes"));
    long relayLive = Long.parseLong(relay.get("peakAfterGcBytes"));
    long baselineLive = Long.parseLong(baseline.get("peakAfterGcBytes"));
    String size = String.format(Locale.ROOT, "%,d-row backlog", ROWS);
    String what = PER_ROW == 1 ? "1 message of " + PAYLOAD + " bytes per row"
        : PER_ROW + " messages of " + PAYLOAD + " bytes per row";
    boolean drained = "true".equals(relay.get("complete")) && relayRecords >= messages && left == 0
        && deadLetters == 0;

    System.out.println();
    System.out.println("| " + size + ", " + what + ", each side in its own -Xmx" + CHILD_HEAP
        + " JVM | seconds | msgs/s | peak heap used | peak heap after GC | GCs | records in topic |");
    System.out.println("|---|---|---|---|---|---|---|");
    System.out.printf(Locale.ROOT, "| plain KafkaSender (baseline) | %.1f | %,.0f | %s | %s | %s | %,d |%n",
        baselineSeconds, baselineRate, Results.mb(baselinePeak), Results.mb(baselineLive), baseline.get("gcs"), baselineRecords);
    System.out.printf(Locale.ROOT, "| relay | %.1f | %,.0f | %s | %s | %s | %,d |%n",
        relaySeconds, relayRate, Results.mb(relayPeak), Results.mb(relayLive), relay.get("gcs"), relayRecords);

    String sides = "each side in its own -Xmx" + CHILD_HEAP + " JVM (" + relay.get("collectors").replace(",", ", ")
        + "); relay maxInFlight " + DrainChild.MAX_IN_FLIGHT + ", claimSize " + DrainChild.CLAIM_SIZE;
    Results.add("heap: drain " + size + " (" + what + "), throughput",
        Results.rate(relayRate, "msgs/s") + String.format(Locale.ROOT, " (%.1f s)", relaySeconds),
        Results.rate(baselineRate, "msgs/s") + String.format(Locale.ROOT, " (%.1f s), plain KafkaSender", baselineSeconds),
        Results.ratio(relayRate, baselineRate),
        (drained ? "drained: " : String.format(Locale.ROOT, "NOT drained within %d min (rate over the %,d published): ",
            TIMEOUT_MINUTES, relayPublished)) + String.format(Locale.ROOT,
            "%,d of %,d records in the topic (end offsets), %,d rows left, %,d dead letters; no OutOfMemoryError; %s; backlog written in %.0f s by INSERT … SELECT generate_series",
            relayRecords, messages, left, deadLetters, sides, fillSeconds));
    Results.add("heap: peak heap used while draining (-Xmx" + CHILD_HEAP + ")",
        Results.mb(relayPeak), Results.mb(baselinePeak) + ", plain KafkaSender",
        Results.ratio(relayPeak, baselinePeak),
        "sampled every 10 ms, includes uncollected garbage; GCs: relay " + relay.get("gcs")
            + ", baseline " + baseline.get("gcs") + "; lower is better");
    Results.add("heap: peak heap after GC (working set) while draining",
        Results.mb(relayLive), Results.mb(baselineLive) + ", plain KafkaSender",
        Results.ratio(relayLive, baselineLive),
        "highest heap use right after any collection (GC notifications); lower is better");
  }

  /** Runs one {@link DrainChild} to completion and returns its RESULT fields. */
  private static Map<String, String> child(String mode, String url, String bootstrap, String table,
      String topic, long messages) throws IOException, InterruptedException {
    Path gcLog = Paths.get(System.getProperty("bench.outputDir", "target")).resolve("heap-" + mode + "-gc.log");
    DrainChild.Child child = DrainChild.Child.start("heap-" + mode,
        List.of("-Xmx" + CHILD_HEAP, "-XX:+ExitOnOutOfMemoryError", "-Xlog:gc:file=" + gcLog,
            "-Dbench.heap.timeoutMinutes=" + TIMEOUT_MINUTES,
            "-Dbench.maxInFlight=" + DrainChild.MAX_IN_FLIGHT, "-Dbench.claimSize=" + DrainChild.CLAIM_SIZE),
        List.of(mode, url, bootstrap, table, topic, Long.toString(messages), Integer.toString(PAYLOAD)));
    System.out.printf(Locale.ROOT, "heap: %s child (-Xmx%s) running, output in %s%n", mode, CHILD_HEAP, child.log());
    Map<String, String> fields = child.result(Duration.ofMinutes(TIMEOUT_MINUTES + 5));
    System.out.println("heap: RESULT " + fields);
    return fields;
  }
}
