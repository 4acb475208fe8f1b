package dev.outbox.benchmarks;

import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.relay.OutboxRelay;
import dev.outbox.relay.RelayHandle;
import dev.outbox.relay.RelayMode;
import dev.outbox.relay.RelayOptions;
import dev.outbox.relay.RelayOutcome;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Collectors;
import reactor.core.Disposable;
import reactor.core.publisher.Flux;

/**
 * One to four PARALLEL relays draining the same backlog (200,000 messages, batches of 10,
 * 200-byte payloads, as {@link RelayBenchmark}), in this JVM, each with its own connection pool
 * (12) and its own Kafka producer (the relay's default sink). The baseline is one relay, in the
 * same run. Duplicates = records in the topic − messages (message ids are unique and the relay
 * loses none, so every record beyond the count is a second copy).
 */
final class ScalingBenchmark {
  private static final int MESSAGES = Results.scaled(Integer.getInteger("bench.scaling.messages", 200_000), 10_000);
  private static final int BATCH = 10;
  private static final int PAYLOAD = 200;
  private static final int MAX_RELAYS = Integer.getInteger("bench.scaling.maxRelays", 4);

  private ScalingBenchmark() {}

  public static void main(String[] args) {
    TestPostgres postgres = TestPostgres.get();
    TestKafka kafka = TestKafka.get();
    int rows = MESSAGES / BATCH;
    List<String> table = new ArrayList<>();
    table.add("| relays (PARALLEL, in one JVM) | seconds | msgs/s | ratio vs 1 relay | duplicates | lease lost | share per relay |");
    table.add("|---|---|---|---|---|---|---|");
    double single = Double.NaN;
    for (int n = 1; n <= MAX_RELAYS; n++) {
      String name = "bench_scale_" + n;
      String topic = "bench-scale-" + n + "-" + System.nanoTime();
      kafka.createTopic(topic, 6);
      postgres.execute("DROP TABLE IF EXISTS " + name, "DROP TABLE IF EXISTS " + name + "_dead_letter");
      OutboxTable outbox = OutboxTable.of(name);
      ConnectionPool setup = postgres.newPool(2);
      OutboxSchema.createIfMissing(setup, outbox).block();
      setup.dispose();
      Backlog.fill(postgres, outbox, topic, rows, BATCH, PAYLOAD);

      List<ConnectionPool> pools = new ArrayList<>();
      List<OutboxRelay> relays = new ArrayList<>();
      List<AtomicLong> published = new ArrayList<>();
      AtomicLong total = new AtomicLong();
      AtomicLong leaseLost = new AtomicLong();
      List<Disposable> counters = new ArrayList<>();
      for (int i = 0; i < n; i++) {
        ConnectionPool pool = postgres.newPool(12);
        pools.add(pool);
        OutboxRelay relay = OutboxRelay.create(pool, RelayOptions.builder().table(outbox)
            .mode(RelayMode.PARALLEL)
            .instanceId("bench-relay-" + i)
            .kafka(kafka.producerProperties())
            .maxInFlight(DrainChild.MAX_IN_FLIGHT)
            .claimSize(DrainChild.CLAIM_SIZE)
            .pollInterval(Duration.ofMillis(100))
            .build());
        AtomicLong mine = new AtomicLong();
        published.add(mine);
        counters.add(relay.outcomes().subscribe(o -> {
          if (o.kind() == RelayOutcome.Kind.PUBLISHED) {
            mine.addAndGet(o.messageCount());
            total.addAndGet(o.messageCount());
          } else if (o.kind() == RelayOutcome.Kind.LEASE_LOST) {
            leaseLost.incrementAndGet();
          }
        }));
        relays.add(relay);
      }
      long t0 = System.nanoTime();
      List<RelayHandle> handles = relays.stream().map(OutboxRelay::start).toList();
      long deadline = t0 + Duration.ofMinutes(10).toNanos();
      while ((total.get() < MESSAGES || postgres.queryLong("SELECT count(*) FROM " + name) > 0)
          && System.nanoTime() < deadline) {
        RelayBenchmark.sleep(20);
      }
      double seconds = (System.nanoTime() - t0) / 1e9;
      Flux.fromIterable(handles).flatMap(h -> h.stop(Duration.ofSeconds(10))).blockLast();
      counters.forEach(Disposable::dispose);
      pools.forEach(ConnectionPool::dispose);
      long left = postgres.queryLong("SELECT count(*) FROM " + name);
      postgres.execute("DROP TABLE IF EXISTS " + name, "DROP TABLE IF EXISTS " + name + "_dead_letter");
      long records = kafka.recordCount(topic);
      long duplicates = records - MESSAGES;
      double rate = MESSAGES / seconds;
      if (n == 1) {
        single = rate;
      }
      String shares = published.stream()
          .map(p -> String.format(Locale.ROOT, "%.0f%%", 100.0 * p.get() / Math.max(1, total.get())))
          .collect(Collectors.joining("/"));
      table.add(String.format(Locale.ROOT, "| %d | %.2f | %,.0f | %.3f | %,d | %d | %s |",
          n, seconds, rate, rate / single, duplicates, leaseLost.get(), shares));
      String notes = String.format(Locale.ROOT,
          "%,d records in the topic for %,d messages: %,d duplicates; %d lease lost; shares %s%s",
          records, MESSAGES, duplicates, leaseLost.get(), shares,
          left == 0 ? "" : String.format(Locale.ROOT, "; NOT drained: %,d rows left", left));
      if (n == 1) {
        notes += "; this row is the baseline of the rows below; relays in one JVM, own pool (12) and producer each";
      }
      Results.add(String.format(Locale.ROOT, "scaling: %d PARALLEL relay%s, %,d msgs (batches of %d)",
              n, n == 1 ? "" : "s", MESSAGES, BATCH),
          Results.rate(rate, "msgs/s") + String.format(Locale.ROOT, " (%.1f s)", seconds),
          Results.rate(single, "msgs/s") + ", 1 relay",
          Results.ratio(rate, single), notes);
    }
    System.out.println();
    System.out.printf(Locale.ROOT, "%,d messages (batches of %d, %d-byte payloads), maxInFlight %d, claimSize %d each%n",
        MESSAGES, BATCH, PAYLOAD, DrainChild.MAX_IN_FLIGHT, DrainChild.CLAIM_SIZE);
    table.forEach(System.out::println);
  }
}
