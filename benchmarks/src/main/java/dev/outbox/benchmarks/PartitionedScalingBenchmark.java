package dev.outbox.benchmarks;

import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.stream.Collectors;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * One, two and four PARTITIONED relays, each in its own JVM ({@link DrainChild} {@code
 * partitioned}, {@code -Xmx256m}, own pool of 12 and producer), draining one backlog: 200,000
 * messages in rows (batches) of 10 with 200-byte payloads over 1,000 keys ({@code key-0} …),
 * each message carrying its per-key sequence number in the header {@value KeyedBacklog#SEQ_HEADER}
 * ({@link KeyedBacklog}, written once into a template table). Per relay count, on a fresh table
 * with partitions: the children start (relay created, pool filled, producer connected by one
 * record to a warm-up topic), then the relays start on the still empty table and the parent waits
 * until they have split its 32 partitions evenly (the steady state; how long that took is
 * reported); then the backlog is copied in with one commit ({@link KeyedBacklog#load}, with
 * {@code ANALYZE}), and the clock runs from that commit until the table is empty. While
 * draining, the partitions table is sampled every 100 ms (live owners and their partition
 * counts). Afterwards the topic is read from where the run started: duplicates =
 * records − messages; an order violation is a key's first delivery of a sequence number lower
 * than one already delivered for that key. Baseline: 1 relay, same run.
 */
final class PartitionedScalingBenchmark {
  private static final int MESSAGES = Results.scaled(Integer.getInteger("bench.partitioned.messages", 200_000), 10_000);
  private static final int BATCH = 10;
  private static final int PAYLOAD = 200;
  private static final int KEYS = 1_000;
  private static final List<Integer> RELAYS = Arrays.stream(System.getProperty("bench.partitioned.relays", "1,2,4")
      .split(",")).map(String::strip).map(Integer::valueOf).toList();
  private static final String CHILD_HEAP = System.getProperty("bench.partitioned.xmx", "256m");
  private static final int PARTITIONS = 32;
  private static final Duration BALANCE_TIMEOUT = Duration.ofMinutes(2);
  private static final Duration DEADLINE = Duration.ofMinutes(Long.getLong("bench.partitioned.timeoutMinutes", 10));

  private PartitionedScalingBenchmark() {}

  public static void main(String[] args) throws Exception {
    TestPostgres postgres = TestPostgres.get();
    TestKafka kafka = TestKafka.get();
    int rows = MESSAGES / BATCH;
    String topic = "bench-pscale-" + System.nanoTime();
    kafka.createTopic(topic, 6);
    kafka.createTopic(topic + "-warm-up", 1);
    OutboxTable source = OutboxTable.of("bench_pscale_source");
    drop(postgres, source);
    ConnectionPool setup = postgres.newPool(2);
    OutboxSchema.createIfMissing(setup, source).block();
    setup.dispose();
    System.out.printf(Locale.ROOT, "partitioned-scaling: writing %,d rows x %d messages over %,d keys...%n", rows, BATCH, KEYS);
    double writeSeconds = KeyedBacklog.write(postgres, source, topic, rows, BATCH, KEYS, PAYLOAD);
    System.out.printf(Locale.ROOT, "partitioned-scaling: backlog written in %.1f s%n", writeSeconds);
    int cores = Runtime.getRuntime().availableProcessors();
    List<String> table = new ArrayList<>();
    table.add("| PARTITIONED relays, one JVM each | seconds | msgs/s | ratio vs 1 relay | split at start (s to balance) | live owners while draining, min–max | partitions per owner | ownership changes (Σ epoch) at start / while draining | published share | duplicates | lost | per-key order violations |");
    table.add("|---|---|---|---|---|---|---|---|---|---|---|---|");
    double single = Double.NaN;
    try {
      for (int n : RELAYS) {
        Run run = run(postgres, kafka, source, topic, n);
        double rate = MESSAGES / run.seconds;
        if (n == RELAYS.get(0)) {
          single = rate;
        }
        long duplicates = run.order.records - MESSAGES;
        long lost = MESSAGES - run.order.distinct;
        table.add(String.format(Locale.ROOT, "| %d | %.2f | %,.0f | %.3f | %s (%.1f s) | %d–%d | %s | %d / %d | %s | %,d | %,d | %,d |",
            n, run.seconds, rate, rate / single, run.balancedSplit, run.balanceSeconds, run.minOwners,
            run.maxOwners, run.perOwner, run.startChanges, run.drainChanges, run.shares, duplicates, lost,
            run.order.violations));
        String notes = String.format(Locale.ROOT,
            "box has %d cores (shared by %d relay JVM%s, this JVM with the broker, and PostgreSQL); "
                + "relays started on the empty table and split its 32 partitions %s in %.1f s (%d ownership changes, Σ epoch), "
                + "then the backlog appeared in one commit (loaded in %.1f s, not timed); while draining, sampled every 100 ms "
                + "(%d samples): %d–%d live owners, partitions per owner %s at the last sample with %d, %d ownership changes; "
                + "published shares %s; %,d records in the topic for %,d messages: %,d duplicates, %,d lost; "
                + "per-key order violations (first deliveries out of sequence) %,d over %,d keys%s; "
                + "lease lost %d, retries %d, dead-lettered %d (table %d)%s",
            cores, n, n == 1 ? "" : "s", run.balancedSplit, run.balanceSeconds, run.startChanges, run.loadSeconds,
            run.samples, run.minOwners, run.maxOwners, run.perOwner, run.maxOwners, run.drainChanges,
            run.shares, run.order.records, MESSAGES, duplicates, lost, run.order.violations, run.order.keys,
            run.order.withoutSeq == 0 ? "" : String.format(Locale.ROOT, " (%,d records without a seq header)", run.order.withoutSeq),
            run.leaseLost, run.retries, run.deadLettered, run.deadLetterRows,
            run.left == 0 ? "" : String.format(Locale.ROOT, "; NOT drained within %s: %,d rows left", DEADLINE, run.left));
        if (n == RELAYS.get(0)) {
          notes += String.format(Locale.ROOT, "; this row is the baseline of the rows below; each relay: -Xmx%s JVM, "
              + "pool 12, own producer, maxInFlight %d, claimSize %d, poll 100 ms; backlog by OutboxWriter (%.0f s), copied per run",
              CHILD_HEAP, DrainChild.MAX_IN_FLIGHT, DrainChild.CLAIM_SIZE, writeSeconds);
        }
        Results.add(String.format(Locale.ROOT, "partitioned-scaling: %d PARTITIONED relay%s (one JVM each), %,d msgs (batches of %d, %,d keys)",
                n, n == 1 ? "" : "s", MESSAGES, BATCH, KEYS),
            Results.rate(rate, "msgs/s") + String.format(Locale.ROOT, " (%.1f s)", run.seconds),
            Results.rate(single, "msgs/s") + ", " + RELAYS.get(0) + " relay" + (RELAYS.get(0) == 1 ? "" : "s"),
            Results.ratio(rate, single), notes);
      }
    } finally {
      drop(postgres, source);
    }
    System.out.println();
    System.out.printf(Locale.ROOT, "%,d messages (batches of %d, %d-byte payloads, %,d keys), %d cores%n",
        MESSAGES, BATCH, PAYLOAD, KEYS, cores);
    table.forEach(System.out::println);
  }

  /** What one relay count measured. */
  private static final class Run {
    double seconds;
    double balanceSeconds;
    String balancedSplit;
    double loadSeconds;
    int samples;
    int maxOwners;
    String perOwner = "—";
    int minOwners = Integer.MAX_VALUE;
    long startChanges;
    long drainChanges;
    String shares;
    long left;
    long deadLetterRows;
    long leaseLost;
    long retries;
    long deadLettered;
    Order order;
  }

  private static Run run(TestPostgres postgres, TestKafka kafka, OutboxTable source, String topic, int n)
      throws Exception {
    OutboxTable outbox = OutboxTable.of("bench_pscale_" + n);
    String name = outbox.qualifiedName();
    drop(postgres, outbox);
    ConnectionPool setup = postgres.newPool(2);
    OutboxSchema.createIfMissing(setup, outbox).block();
    OutboxSchema.enablePartitions(setup, outbox).block();
    setup.dispose();
    Map<TopicPartition, Long> start = endOffsets(kafka, topic);

    Run run = new Run();
    List<DrainChild.Child> children = new ArrayList<>();
    try {
      for (int i = 0; i < n; i++) {
        children.add(DrainChild.Child.start("partitioned-" + n + "-relay-" + i,
            List.of("-Xmx" + CHILD_HEAP, "-XX:+ExitOnOutOfMemoryError", "-Dbench.child.instanceId=relay-" + i,
                "-Dbench.child.warmUpTopic=" + topic + "-warm-up",
                "-Dbench.maxInFlight=" + DrainChild.MAX_IN_FLIGHT, "-Dbench.claimSize=" + DrainChild.CLAIM_SIZE),
            List.of("partitioned", postgres.url(), kafka.bootstrapServers(), name, "-", "0", "0")));
      }
      for (DrainChild.Child child : children) {
        child.awaitLine("READY", Duration.ofMinutes(2));
      }
      String owners = "SELECT coalesce(string_agg(n::text, ' ' ORDER BY n DESC), '') FROM"
          + " (SELECT owner, count(*) AS n FROM " + name + "_partitions"
          + " WHERE owner IS NOT NULL AND expires_at > now() GROUP BY owner) s";
      long started = System.nanoTime();
      for (DrainChild.Child child : children) {
        child.send("go");
      }
      // The relays share the (empty) table's partitions first: the steady state being measured.
      long balanceDeadline = started + BALANCE_TIMEOUT.toNanos();
      String split;
      do {
        RelayBenchmark.sleep(100);
        for (DrainChild.Child child : children) {
          child.checkRunning();
        }
        split = String.valueOf(postgres.queryColumn(owners).get(0));
      } while (!balanced(split, n) && System.nanoTime() < balanceDeadline);
      run.balanceSeconds = (System.nanoTime() - started) / 1e9;
      run.balancedSplit = balanced(split, n) ? split.replace(' ', '/')
          : "NOT balanced within " + BALANCE_TIMEOUT.toSeconds() + " s (" + split.replace(' ', '/') + ")";
      String epochs = "SELECT coalesce(sum(epoch), 0) FROM " + name + "_partitions";
      run.startChanges = postgres.queryLong(epochs);
      run.loadSeconds = KeyedBacklog.load(postgres, source, outbox, Long.MAX_VALUE);
      long t0 = System.nanoTime();
      long deadline = t0 + DEADLINE.toNanos();
      do {
        RelayBenchmark.sleep(100);
        for (DrainChild.Child child : children) {
          child.checkRunning();
        }
        String sample = String.valueOf(postgres.queryColumn(owners).get(0));
        int live = sample.isEmpty() ? 0 : sample.split(" ").length;
        run.samples++;
        run.minOwners = Math.min(run.minOwners, live);
        if (live > 0 && live >= run.maxOwners) {
          run.maxOwners = live;
          run.perOwner = sample.replace(' ', '/');
        }
        run.left = postgres.queryLong("SELECT count(*) FROM " + name);
      } while (run.left > 0 && System.nanoTime() < deadline);
      run.seconds = (System.nanoTime() - t0) / 1e9;
      for (DrainChild.Child child : children) {
        child.send("stop");
      }
      List<Long> published = new ArrayList<>();
      for (DrainChild.Child child : children) {
        Map<String, String> result = child.result(Duration.ofMinutes(1));
        published.add(Long.parseLong(result.get("messages")));
        run.leaseLost += Long.parseLong(result.get("leaseLost"));
        run.retries += Long.parseLong(result.get("retries"));
        run.deadLettered += Long.parseLong(result.get("deadLettered"));
      }
      long total = Math.max(1, published.stream().mapToLong(Long::longValue).sum());
      run.shares = published.stream().map(p -> String.format(Locale.ROOT, "%.0f%%", 100.0 * p / total))
          .collect(Collectors.joining("/"));
    } finally {
      children.forEach(DrainChild.Child::destroy);
    }
    run.drainChanges = postgres.queryLong("SELECT coalesce(sum(epoch), 0) FROM " + name + "_partitions")
        - run.startChanges;
    run.left = postgres.queryLong("SELECT count(*) FROM " + name);
    run.deadLetterRows = postgres.queryLong("SELECT count(*) FROM " + name + "_dead_letter");
    drop(postgres, outbox);
    run.order = Order.check(kafka, topic, start);
    System.out.printf(Locale.ROOT, "partitioned-scaling: %d relay(s): split %s after %.1f s; drained in %.2f s, owners %s (%d-%d), %,d records, %,d order violations%n",
        n, run.balancedSplit, run.balanceSeconds, run.seconds, run.perOwner, run.minOwners, run.maxOwners,
        run.order.records, run.order.violations);
    return run;
  }

  /** {@code split}: live owners' partition counts; balanced when n owners share all 32 evenly. */
  private static boolean balanced(String split, int n) {
    if (split.isEmpty()) {
      return false;
    }
    int[] counts = Arrays.stream(split.split(" ")).mapToInt(Integer::parseInt).toArray();
    int max = Arrays.stream(counts).max().orElse(0);
    int min = Arrays.stream(counts).min().orElse(0);
    return counts.length == n && Arrays.stream(counts).sum() == PARTITIONS && max - min <= 1;
  }

  private static void drop(TestPostgres postgres, OutboxTable table) {
    String name = table.qualifiedName();
    postgres.execute("DROP TABLE IF EXISTS " + name, "DROP TABLE IF EXISTS " + name + "_dead_letter",
        "DROP TABLE IF EXISTS " + name + "_partitions", "DROP TABLE IF EXISTS " + name + "_relays");
  }

  private static Map<String, Object> consumerProperties(TestKafka kafka) {
    return Map.of(
        ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, kafka.bootstrapServers(),
        ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class,
        ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class,
        ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false,
        ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 5_000);
  }

  private static Map<TopicPartition, Long> endOffsets(TestKafka kafka, String topic) {
    try (KafkaConsumer<String, byte[]> consumer = new KafkaConsumer<>(consumerProperties(kafka))) {
      List<TopicPartition> partitions = consumer.partitionsFor(topic, Duration.ofSeconds(30)).stream()
          .map(p -> new TopicPartition(p.topic(), p.partition())).toList();
      return new HashMap<>(consumer.endOffsets(partitions, Duration.ofSeconds(30)));
    }
  }

  /**
   * The topic's records from {@code start} to its end offsets now, checked per key (a key's
   * records are all in one Kafka partition, read in offset order).
   */
  private static final class Order {
    long records;
    long distinct;
    long violations;
    long withoutSeq;
    int keys;

    static Order check(TestKafka kafka, String topic, Map<TopicPartition, Long> start) {
      Order order = new Order();
      Map<String, BitSet> seen = new HashMap<>();
      Map<String, Long> highest = new HashMap<>();
      try (KafkaConsumer<String, byte[]> consumer = new KafkaConsumer<>(consumerProperties(kafka))) {
        List<TopicPartition> partitions = new ArrayList<>(start.keySet());
        consumer.assign(partitions);
        start.forEach(consumer::seek);
        Map<TopicPartition, Long> ends = consumer.endOffsets(partitions, Duration.ofSeconds(30));
        long deadline = System.nanoTime() + Duration.ofMinutes(5).toNanos();
        while (partitions.stream().anyMatch(p -> consumer.position(p, Duration.ofSeconds(30)) < ends.get(p))) {
          if (System.nanoTime() > deadline) {
            throw new IllegalStateException("Could not read " + topic + " to " + ends);
          }
          for (ConsumerRecord<String, byte[]> r : consumer.poll(Duration.ofMillis(200))) {
            if (r.offset() >= ends.get(new TopicPartition(r.topic(), r.partition()))) {
              continue;
            }
            order.records++;
            Header header = r.headers().lastHeader(KeyedBacklog.SEQ_HEADER);
            if (header == null || r.key() == null) {
              order.withoutSeq++;
              continue;
            }
            int seq = Integer.parseInt(new String(header.value(), StandardCharsets.UTF_8));
            BitSet keySeen = seen.computeIfAbsent(r.key(), k -> new BitSet());
            if (keySeen.get(seq)) {
              continue; // a duplicate: counted in records, not an order question
            }
            keySeen.set(seq);
            order.distinct++;
            long high = highest.getOrDefault(r.key(), -1L);
            if (seq < high) {
              order.violations++;
            } else {
              highest.put(r.key(), (long) seq);
            }
          }
        }
      }
      order.keys = seen.size();
      return order;
    }
  }
}
