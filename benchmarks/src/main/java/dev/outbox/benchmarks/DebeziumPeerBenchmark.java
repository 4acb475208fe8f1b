package dev.outbox.benchmarks;

import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import java.time.Duration;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.ThreadLocalRandom;

/**
 * The Debezium peer (issue #7): the same work through Debezium's embedded engine ({@link
 * DebeziumPeer}: PostgreSQL connector, pgoutput, outbox {@code EventRouter}, a plain {@code
 * KafkaProducer} with the relay's producer defaults), each figure against the plain-sender
 * baseline measured in this benchmark, with the same code and load as our relay's:
 *
 * <ul>
 *   <li>Drain: {@link RelayBenchmark#MESSAGES} messages of {@link RelayBenchmark#PAYLOAD} bytes
 *       into 6 partitions, against {@link RelayBenchmark#plainSenderSeconds}. Debezium's outbox
 *       has one event per row, so its backlog is that many rows in transactions of {@link
 *       RelayBenchmark#BATCH} (the relay's has one row of {@code BATCH} messages per write).
 *   <li>Commit → acknowledgement latency: a transaction of 10 rows every 10 ms for {@link
 *       TriggerLatencyBenchmark#RUN} into 3 partitions, against {@link
 *       TriggerLatencyBenchmark#plainProducer}; with the default {@code poll.interval.ms} (500)
 *       and with 10.
 * </ul>
 *
 * <p>Rows are named {@code "debezium: …"} and placed right after the relay's drain and latency
 * rows when those ran in the same run ({@link Results#addAfter}).
 */
final class DebeziumPeerBenchmark {
  private static final int DRAIN_PARTITIONS = 6;
  private static final int LATENCY_PARTITIONS = 3;

  private DebeziumPeerBenchmark() {}

  public static void main(String[] args) throws Exception {
    DebeziumPeer.quietDebeziumLogs();
    TestPostgres postgres = TestPostgres.get();
    TestKafka kafka = TestKafka.get();
    String version = DebeziumPeer.debeziumVersion();
    drain(postgres, kafka, version);
    latency(postgres, kafka, version);
  }

  private static void drain(TestPostgres postgres, TestKafka kafka, String version) throws Exception {
    int messages = RelayBenchmark.MESSAGES;
    int batch = RelayBenchmark.BATCH;
    int payloadBytes = RelayBenchmark.PAYLOAD;
    byte[] payload = new byte[payloadBytes];
    ThreadLocalRandom.current().nextBytes(payload);
    String baselineTopic = "bench-dbz-baseline-" + System.nanoTime();
    kafka.createTopic(baselineTopic, DRAIN_PARTITIONS);
    double baselineSeconds = RelayBenchmark.plainSenderSeconds(kafka, baselineTopic, messages, payload);
    double baselineRate = messages / baselineSeconds;

    DebeziumPeer.Result dbz = DebeziumPeer.throughput(postgres, kafka, messages, batch, payloadBytes,
        DRAIN_PARTITIONS, Map.of());

    System.out.println();
    System.out.println("| " + messages + " messages (1 per row, transactions of " + batch + ", "
        + payloadBytes + "-byte payloads) | seconds | msgs/s |");
    System.out.println("|---|---|---|");
    System.out.printf(Locale.ROOT, "| plain KafkaSender (baseline) | %.2f | %.0f |%n", baselineSeconds, baselineRate);
    System.out.printf(Locale.ROOT, "| Debezium %s embedded: engine start over the backlog → all acknowledged"
            + " (first ack after %.2f s, %.0f records a batch) | %.2f | %.0f |%n",
        version, dbz.secondsToFirstAck(), dbz.meanBatch(), dbz.seconds(), dbz.msgsPerSecond());
    System.out.printf(Locale.ROOT, "| ratio Debezium / baseline | | %.3f |%n", dbz.msgsPerSecond() / baselineRate);

    Results.addAfter(List.of("relay: drain", "debezium: drain"),
        String.format(Locale.ROOT, "debezium: drain %,d msgs (1 per row, transactions of %d, %d B), in-process",
            messages, batch, payloadBytes),
        Results.rate(dbz.msgsPerSecond(), "msgs/s") + String.format(Locale.ROOT, " (%.1f s)", dbz.seconds())
            + RelayBenchmark.roundsNote(dbz.rounds(), messages),
        Results.rate(baselineRate, "msgs/s") + String.format(Locale.ROOT, " (%.1f s), plain KafkaSender", baselineSeconds),
        Results.ratio(dbz.msgsPerSecond(), baselineRate),
        String.format(Locale.ROOT, "Debezium %s embedded engine (pgoutput, outbox EventRouter) → KafkaProducer"
                + " (idempotence, acks=all, linger.ms=5), offsets committed after each batch's acks;"
                + " default poll.interval.ms=500; " + (DebeziumPeer.WARM_UP ? "after a warm-up drain of "
                + Integer.getInteger("bench.warmup", RelayBenchmark.warmUpFor(messages)) + " messages, as the relay's; "
                : "no warm-up drain; ") + "clock from engine start over the written backlog to the"
                + " last ack, so it includes the connector's start (first ack after %.2f s), poll interval"
                + " and queue batching (%.0f records a batch); %s",
            version, dbz.secondsToFirstAck(), dbz.meanBatch(), dbz.cpu()));
  }

  private static void latency(TestPostgres postgres, TestKafka kafka, String version) throws Exception {
    Duration run = TriggerLatencyBenchmark.RUN;
    String baselineTopic = "bench-dbz-latency-baseline-" + System.nanoTime();
    kafka.createTopic(baselineTopic, LATENCY_PARTITIONS);
    List<Long> baseline = TriggerLatencyBenchmark.sorted(TriggerLatencyBenchmark.plainProducer(kafka, baselineTopic));
    double baseP50 = TriggerLatencyBenchmark.percentile(baseline, 0.5) / 1000.0;
    double baseP99 = TriggerLatencyBenchmark.percentile(baseline, 0.99) / 1000.0;

    DebeziumPeer.LatencyResult byDefault = DebeziumPeer.latency(postgres, kafka, run, LATENCY_PARTITIONS, Map.of());
    DebeziumPeer.LatencyResult tuned = DebeziumPeer.latency(postgres, kafka, run, LATENCY_PARTITIONS,
        Map.of("poll.interval.ms", "10"));

    System.out.println();
    System.out.println("| ~1,000 msgs/s for " + run.toSeconds() + " s each | p50 ms | p99 ms | messages |");
    System.out.println("|---|---|---|---|");
    System.out.printf(Locale.ROOT, "| plain KafkaSender, send → ack (baseline) | %.1f | %.1f | %d |%n",
        baseP50, baseP99, baseline.size());
    System.out.println(detailRow("Debezium " + version + ", commit → ack (default poll.interval.ms=500)", byDefault));
    System.out.println(detailRow("Debezium " + version + ", commit → ack (poll.interval.ms=10)", tuned));

    int expected = (int) (run.toMillis() / 10 * 10);
    addLatencyRow("poll.interval.ms=500 (default)", byDefault, baseP50, baseP99, run, expected, version);
    addLatencyRow("poll.interval.ms=10", tuned, baseP50, baseP99, run, expected, version);
  }

  private static void addLatencyRow(String setting, DebeziumPeer.LatencyResult r, double baseP50,
      double baseP99, Duration run, int expected, String version) {
    Results.addAfter(List.of("latency p99, commit → ack: ", "debezium: latency"),
        "debezium: latency p99, commit → ack, " + setting,
        String.format(Locale.ROOT, "%.1f ms (p50 %.1f)", r.p99Millis(), r.p50Millis()),
        String.format(Locale.ROOT, "%.1f ms (p50 %.1f), plain KafkaSender send → ack", baseP99, baseP50),
        Results.ratio(r.p99Millis(), baseP99),
        String.format(Locale.ROOT, "p50 ratio %.2f; ~1,000 msgs/s for %d s; %,d of ~%,d messages acknowledged;"
                + " Debezium %s embedded engine, %s: includes the connector's poll interval and queue"
                + " batching (%.0f records a batch; commit → change consumer p50 %.1f, p99 %.1f ms)",
            r.p50Millis() / baseP50, run.toSeconds(), r.messages(), expected, version, setting,
            r.meanBatch(), r.deliveredP50Millis(), r.deliveredP99Millis()));
  }

  private static String detailRow(String name, DebeziumPeer.LatencyResult r) {
    return String.format(Locale.ROOT, "| %s | %.1f | %.1f | %d | (commit → change consumer p50 %.1f,"
            + " p99 %.1f ms; %.1f records a batch) |", name, r.p50Millis(), r.p99Millis(), r.messages(),
        r.deliveredP50Millis(), r.deliveredP99Millis(), r.meanBatch());
  }
}
