package dev.outbox.benchmarks;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import io.r2dbc.spi.Connection;
import java.time.Duration;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.BiFunction;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * Transactions per second of (business insert + outbox write of one 200-byte message) against
 * (business insert + plain insert of the same 200 bytes), through one r2dbc-pool with 8
 * concurrent workers, in the same run and on the same server.
 */
final class WriterBenchmark {
  private static final int WORKERS = 8;
  private static final int PAYLOAD_BYTES = 200;

  private WriterBenchmark() {}

  public static void main(String[] args) {
    Duration measure = Duration.ofSeconds(Long.getLong("bench.seconds", Results.scaled(20, 4)));
    Duration warmup = Duration.ofSeconds(Results.scaled(5, 1));
    TestPostgres postgres = TestPostgres.get();
    ConnectionPool pool = postgres.newPool(WORKERS);
    OutboxTable table = OutboxTable.of("bench_outbox");
    postgres.execute("DROP TABLE IF EXISTS bench_outbox", "DROP TABLE IF EXISTS bench_outbox_dead_letter",
        "DROP TABLE IF EXISTS bench_orders", "DROP TABLE IF EXISTS bench_plain",
        "CREATE TABLE bench_orders (id BIGINT PRIMARY KEY, customer TEXT NOT NULL, total NUMERIC NOT NULL)",
        "CREATE TABLE bench_plain (id BIGSERIAL PRIMARY KEY, payload BYTEA NOT NULL)");
    OutboxSchema.createIfMissing(pool, table).block();
    // -Dbench.writer.sql="DROP INDEX x; ..." to try the writer against a changed table.
    String extra = System.getProperty("bench.writer.sql", "");
    if (!extra.isBlank()) {
      postgres.execute(extra.split(";"));
    }
    OutboxWriter writer = OutboxWriter.builder().table(table).build();
    byte[] payload = new byte[PAYLOAD_BYTES];
    ThreadLocalRandom.current().nextBytes(payload);
    AtomicLong orderIds = new AtomicLong();

    BiFunction<Connection, Long, Mono<Void>> plain = (c, id) -> order(c, id)
        .then(exec(c.createStatement("INSERT INTO bench_plain (payload) VALUES ($1)").bind(0, payload)));
    BiFunction<Connection, Long, Mono<Void>> outbox = (c, id) -> order(c, id)
        .then(writer.write(Message.builder().stream("orders").key(Long.toString(id)).data(payload).build()));

    run(pool, plain, orderIds, warmup);
    run(pool, outbox, orderIds, warmup);
    // Alternate four rounds of each so that drift (JIT, table growth, autovacuum) hits both alike.
    Duration round = measure.dividedBy(4);
    double baselineSum = 0;
    double oursSum = 0;
    for (int i = 0; i < 4; i++) {
      baselineSum += run(pool, plain, orderIds, round);
      oursSum += run(pool, outbox, orderIds, round);
    }
    double baseline = baselineSum / 4;
    double ours = oursSum / 4;

    System.out.println();
    System.out.println("| workload (" + WORKERS + " workers, " + measure.toSeconds() + " s each, 4 alternating rounds) | tx/s |");
    System.out.println("|---|---|");
    System.out.printf("| business insert + plain 200-byte insert (baseline) | %.0f |%n", baseline);
    System.out.printf("| business insert + OutboxWriter.write (1 message, 200 bytes) | %.0f |%n", ours);
    System.out.printf("| ratio outbox / baseline | %.3f |%n", ours / baseline);
    Results.add("writer: business insert + OutboxWriter.write (1 msg, " + PAYLOAD_BYTES + " B)",
        Results.rate(ours, "tx/s"),
        Results.rate(baseline, "tx/s") + ", business insert + plain " + PAYLOAD_BYTES + "-byte insert",
        Results.ratio(ours, baseline),
        WORKERS + " workers, one r2dbc-pool, " + measure.toSeconds() + " s each in 4 alternating rounds");
    pool.dispose();
  }

  private static Mono<Void> order(Connection c, long id) {
    return exec(c.createStatement("INSERT INTO bench_orders (id, customer, total) VALUES ($1, $2, $3)")
        .bind(0, id).bind(1, "customer-" + (id % 1000)).bind(2, new java.math.BigDecimal("42.50")));
  }

  private static Mono<Void> exec(io.r2dbc.spi.Statement statement) {
    return Flux.from(statement.execute()).concatMap(r -> r.getRowsUpdated()).then();
  }

  /** Runs {@code work} in transactions from {@link #WORKERS} workers until the time is up. */
  private static double run(ConnectionPool pool, BiFunction<Connection, Long, Mono<Void>> work,
      AtomicLong ids, Duration duration) {
    long end = System.nanoTime() + duration.toNanos();
    long start = System.nanoTime();
    Long count = Flux.range(0, WORKERS)
        .flatMap(w -> OutboxTransactions.inTransaction(pool, c -> work.apply(c, ids.incrementAndGet()).thenReturn(1))
            .repeat(() -> System.nanoTime() < end)
            .count(), WORKERS)
        .reduce(0L, Long::sum)
        .block();
    return count / ((System.nanoTime() - start) / 1e9);
  }
}
