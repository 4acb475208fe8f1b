package dev.outbox.benchmarks;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.r2dbc.HeartbeatNotifier;
import dev.outbox.relay.OutboundRecord;
import dev.outbox.relay.OutboxRelay;
import dev.outbox.relay.ReactorKafkaSink;
import dev.outbox.relay.RecordSink;
import dev.outbox.relay.RelayHandle;
import dev.outbox.relay.RelayOptions;
import dev.outbox.relay.SendResult;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.UnaryOperator;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.reactivestreams.Publisher;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.kafka.sender.KafkaSender;
import reactor.kafka.sender.SenderOptions;
import reactor.kafka.sender.SenderRecord;

/**
 * Commit → Kafka acknowledgement latency per trigger at a steady ~1,000 messages/s (a
 * transaction of 10 one-message batches every 10 ms), against the plain producer's own send →
 * acknowledgement latency in the same run (10 records every 10 ms, each group waiting for its
 * acknowledgements, so it sends somewhat less than 1,000/s).
 */
final class TriggerLatencyBenchmark {
  /** Length of each latency run (also the Debezium peer's, {@link DebeziumPeerBenchmark}). */
  static final Duration RUN = Duration.ofSeconds(Long.getLong("bench.seconds", Results.scaled(10, 2)));

  private TriggerLatencyBenchmark() {}

  public static void main(String[] args) throws Exception {
    TestPostgres postgres = TestPostgres.get();
    TestKafka kafka = TestKafka.get();
    ConnectionPool pool = postgres.newPool(16);
    String topic = "bench-latency-" + System.nanoTime();
    kafka.createTopic(topic, 3);

    Map<String, List<Long>> runs = new LinkedHashMap<>();
    String baselineName = "plain KafkaSender, send → ack (baseline)";
    runs.put(baselineName, plainProducer(kafka, topic));
    runs.put("relay, polling every 100 ms", relay(pool, kafka, topic, "lat_poll100",
        b -> b.pollInterval(Duration.ofMillis(100)), false, null));
    runs.put("relay, polling every 1 s", relay(pool, kafka, topic, "lat_poll1s",
        b -> b.pollInterval(Duration.ofSeconds(1)), false, null));
    OutboxTable notifyTable = OutboxTable.of("lat_notify");
    runs.put("relay, LISTEN/NOTIFY (poll 1 s as fallback)", relay(pool, kafka, topic, "lat_notify",
        b -> b.pollInterval(Duration.ofSeconds(1)).listen(notifyTable.notifyChannel()), true, null));
    InetSocketAddress udp = new InetSocketAddress("127.0.0.1", freePort());
    runs.put("relay, UDP heartbeat after commit (poll 1 s as fallback)", relay(pool, kafka, topic,
        "lat_heartbeat", b -> b.pollInterval(Duration.ofSeconds(1)).heartbeatUdp(udp), false,
        HeartbeatNotifier.udp(udp)));

    runs.put("relay, WAL mode (logical replication, commit order)", relay(pool, kafka, topic,
        "lat_wal", b -> b.mode(dev.outbox.relay.RelayMode.WAL), false, null));
    postgres.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'lat_wal_relay'",
        "DROP PUBLICATION IF EXISTS lat_wal_relay");

    System.out.println();
    System.out.println("| ~1,000 msgs/s for " + RUN.toSeconds() + " s each | p50 ms | p99 ms | messages |");
    System.out.println("|---|---|---|---|");
    runs.forEach((name, latencies) -> System.out.println(row(name, latencies)));

    List<Long> baseline = sorted(runs.get(baselineName));
    double baseP50 = percentile(baseline, 0.5) / 1000.0;
    double baseP99 = percentile(baseline, 0.99) / 1000.0;
    runs.forEach((name, latencies) -> {
      if (name.equals(baselineName)) {
        return;
      }
      List<Long> ours = sorted(latencies);
      double p50 = percentile(ours, 0.5) / 1000.0;
      double p99 = percentile(ours, 0.99) / 1000.0;
      int expected = (int) (RUN.toMillis() / 10 * 10);
      Results.add("latency p99, commit → ack: " + name,
          String.format(Locale.ROOT, "%.1f ms (p50 %.1f)", p99, p50),
          String.format(Locale.ROOT, "%.1f ms (p50 %.1f), plain KafkaSender send → ack", baseP99, baseP50),
          Results.ratio(p99, baseP99),
          String.format(Locale.ROOT, "p50 ratio %.2f; ~1,000 msgs/s for %d s; %,d of ~%,d messages acknowledged in the window",
              p50 / baseP50, RUN.toSeconds(), ours.size(), expected));
    });

    pool.dispose();
  }

  static List<Long> sorted(List<Long> latenciesMicros) {
    List<Long> sorted = new ArrayList<>(latenciesMicros);
    Collections.sort(sorted);
    return sorted;
  }

  private static String row(String name, List<Long> latenciesMicros) {
    List<Long> sorted = sorted(latenciesMicros);
    return String.format("| %s | %.1f | %.1f | %d |", name, percentile(sorted, 0.5) / 1000.0,
        percentile(sorted, 0.99) / 1000.0, sorted.size());
  }

  /**
   * The latency baseline: a plain {@link KafkaSender}'s send → acknowledgement latencies in
   * microseconds, 10 records (keys k0..k9, 200 bytes) every 10 ms for {@link #RUN}, each group
   * waiting for its acknowledgements.
   */
  static List<Long> plainProducer(TestKafka kafka, String topic) {
    Map<String, Object> props = RelayBenchmark.withRelayProducerDefaults(kafka.producerProperties());
    KafkaSender<String, byte[]> sender = KafkaSender.create(SenderOptions.create(props));
    List<Long> latencies = Collections.synchronizedList(new ArrayList<>());
    long end = System.nanoTime() + RUN.toNanos();
    Flux.interval(Duration.ofMillis(10))
        .takeWhile(t -> System.nanoTime() < end)
        .onBackpressureDrop()
        .concatMap(t -> sender.send(Flux.range(0, 10).map(i -> SenderRecord.create(
                new ProducerRecord<>(topic, "k" + i, new byte[200]), System.nanoTime())))
            .doOnNext(r -> latencies.add((System.nanoTime() - r.correlationMetadata()) / 1_000))
            .then())
        .blockLast();
    sender.close();
    return latencies;
  }

  private static List<Long> relay(ConnectionPool pool, TestKafka kafka, String topic, String name,
      UnaryOperator<RelayOptions.Builder> trigger, boolean notifying, HeartbeatNotifier heartbeat) {
    String only = System.getProperty("bench.latency.only");
    if (only != null && !name.contains(only)) {
      return List.of();
    }
    OutboxTable table = OutboxTable.of(name);
    TestPostgres.get().execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            + " WHERE slot_name = '" + name + "_relay'", "DROP PUBLICATION IF EXISTS " + name + "_relay",
        "DROP TABLE IF EXISTS " + name, "DROP TABLE IF EXISTS " + name + "_dead_letter");
    OutboxSchema.createIfMissing(pool, table).block();
    OutboxWriter writer = OutboxWriter.builder().table(table)
        .notifyChannel(notifying ? table.notifyChannel() : null).build();
    Map<String, Long> committedAt = new ConcurrentHashMap<>();
    List<Long> latencies = Collections.synchronizedList(new ArrayList<>());
    RecordSink sink = acknowledgements(ReactorKafkaSink.create(kafka.producerProperties(), 1_000),
        (id, ackNanos) -> {
          Long committed = committedAt.get(id);
          if (committed != null) {
            latencies.add((ackNanos - committed) / 1_000);
          }
        });
    RelayHandle relay = OutboxRelay.create(pool, trigger.apply(RelayOptions.builder().table(table)
        .mode(RelayBenchmark.MODE).sink(sink)).build()).start();
    if (name.equals("lat_wal")) {
      // Steady state: a WAL relay's start (publication, slot, sweep check) takes a few hundred
      // ms on this box; rows committed meanwhile would measure the start, not the stream.
      long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
      while (TestPostgres.get().queryLong("SELECT count(*) FROM pg_replication_slots s"
          + " JOIN pg_stat_activity a ON a.pid = s.active_pid WHERE a.backend_type = 'walsender'"
          + " AND s.slot_name = '" + name + "_relay'") == 0 && System.nanoTime() < deadline) {
        Mono.delay(Duration.ofMillis(20)).block();
      }
    }
    long end = System.nanoTime() + RUN.toNanos();
    Flux.interval(Duration.ofMillis(10))
        .takeWhile(t -> System.nanoTime() < end)
        .onBackpressureDrop()
        .flatMap(t -> {
          List<Message> messages = new ArrayList<>();
          for (int i = 0; i < 10; i++) {
            messages.add(Message.builder().stream(topic).key("k" + i).data(new byte[200]).build());
          }
          // The test server runs with synchronous_commit=off, so a commit reaches the WAL (and
          // logical replication) only when the WAL writer flushes it, up to wal_writer_delay
          // (200 ms) later. These transactions commit as with PostgreSQL's default (on).
          Mono<Void> commit = OutboxTransactions.inTransaction(pool, c -> Flux.from(c.createStatement(
                      "SET LOCAL synchronous_commit = on").execute())
                  .concatMap(r -> r.getRowsUpdated())
                  .thenMany(Flux.fromIterable(messages).concatMap(m -> writer.write(m))).then())
              .doOnSuccess(v -> {
                long now = System.nanoTime();
                messages.forEach(m -> committedAt.put(m.id(), now));
              });
          return heartbeat == null ? commit
              : commit.then(heartbeat.notifyWork().onErrorResume(e -> Mono.empty()));
        }, 4)
        .blockLast();
    Mono.delay(Duration.ofSeconds(2)).block(); // let the tail drain
    relay.stop(Duration.ofSeconds(5)).block();
    Mono.delay(Duration.ofSeconds(1)).block(); // the replication connection closes after stop
    sink.close().block();
    return latencies;
  }

  /** Wraps a sink to report each record's acknowledgement time by message id. */
  private static RecordSink acknowledgements(RecordSink delegate,
      java.util.function.BiConsumer<String, Long> acked) {
    return new RecordSink() {
      @Override
      public <T> Flux<SendResult<T>> send(Publisher<OutboundRecord<T>> records) {
        Map<Object, List<String>> ids = new ConcurrentHashMap<>();
        return delegate.send(Flux.from(records).doOnNext(r -> ids.computeIfAbsent(r.correlation(),
                k -> Collections.synchronizedList(new ArrayList<>())).add(r.headers().get("message_id"))))
            .doOnNext(result -> {
              long now = System.nanoTime();
              List<String> batch = ids.remove(result.correlation());
              if (batch != null && result.acknowledged()) {
                batch.forEach(id -> acked.accept(id, now));
              }
            });
      }

      @Override
      public Mono<Void> close() {
        return delegate.close();
      }

      @Override
      public boolean checksSendGuard() {
        return delegate.checksSendGuard(); // records go to it unchanged
      }
    };
  }

  private static int freePort() throws Exception {
    try (ServerSocket socket = new ServerSocket(0)) {
      return socket.getLocalPort();
    }
  }

  static double percentile(List<Long> sorted, double p) {
    if (sorted.isEmpty()) {
      return Double.NaN;
    }
    return sorted.get(Math.min(sorted.size() - 1, (int) Math.ceil(p * sorted.size()) - 1));
  }
}
