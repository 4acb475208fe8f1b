package dev.outbox.benchmarks;

import dev.outbox.r2dbc.Ksuid;
import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.internal.ClaimedBatch;
import dev.outbox.r2dbc.internal.RelayStore;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import io.r2dbc.spi.Connection;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * The relay's settlement {@code DELETE} alone ({@code -Dbench=settle-delete}): {@code
 * bench.messages} unleased rows (as WAL mode settles them; default 200,000) deleted in insert
 * order in groups of 500 (the relay's settlement group), one statement at a time, by {@link
 * RelayStore#deleteAll} (ours: found by {@code insert_seq}, each row's id checked) against the
 * statement it replaced (baseline: {@code batch_id = ANY($1::bpchar[])} with the token), on the
 * same ids. Ids are real KSUIDs, 30,000 to a second as busy writers make them: random within
 * their second, so a group's ids are scattered over that second's rows in the primary key. The
 * groups are whole runs of {@code insert_seq}, the best case for ours (a relay's group, in commit
 * order, is close to it). Three rounds each, the order swapped every round (baseline first in
 * rounds 1 and 3), each on a fresh table after a {@code CHECKPOINT}; the first round warms the
 * JIT and is not counted. PostgreSQL's CPU (its processes' {@code /proc} times, so embedded
 * PostgreSQL only) and wall time of the statements, a row. Not a pass/fail test.
 */
final class SettleDeleteBenchmark {
  private static final int ROWS = Integer.getInteger("bench.messages", 200_000);
  private static final int GROUP = 500;
  private static final int IDS_PER_SECOND = 30_000;
  /** The statement RelayStore#deleteAll used before (commit 3b6e244), word for word. */
  private static final String BASELINE_SQL = "WITH gone AS (DELETE FROM %s AS o"
      + " WHERE o.batch_id = ANY($1::bpchar[]) AND coalesce(o.lease_token,"
      + " '00000000-0000-0000-0000-000000000000'::uuid) = $2::uuid RETURNING o.batch_id)"
      + " SELECT held.batch_id FROM unnest($1::bpchar[]) AS held(batch_id)"
      + " WHERE (SELECT count(*) FROM gone) < cardinality($1::bpchar[])"
      + " AND NOT EXISTS (SELECT 1 FROM gone WHERE gone.batch_id = held.batch_id)";

  private SettleDeleteBenchmark() {}

  public static void main(String[] args) {
    TestPostgres postgres = TestPostgres.get();
    ConnectionPool pool = postgres.newPool(2);
    OutboxTable table = OutboxTable.of("bench_settle");
    Instant start = Instant.now();
    List<String> ids = new ArrayList<>(ROWS);
    for (int i = 0; i < ROWS; i++) {
      ids.add(Ksuid.generate(start.plusMillis(i * 1000L / IDS_PER_SECOND)).toString());
    }
    double[][] ours = new double[3][];
    double[][] baseline = new double[3][];
    for (int round = 0; round < 3; round++) {
      boolean baselineFirst = round % 2 == 0;
      if (baselineFirst) {
        baseline[round] = run(postgres, pool, table, ids, false);
      }
      ours[round] = run(postgres, pool, table, ids, true);
      if (!baselineFirst) {
        baseline[round] = run(postgres, pool, table, ids, false);
      }
      System.out.printf(Locale.ROOT, "settle-delete round %d: PostgreSQL CPU ours %.2f µs a row,"
              + " baseline %.2f; wall ours %.2f, baseline %.2f%n", round, ours[round][0],
          baseline[round][0], ours[round][1], baseline[round][1]);
    }
    double oursCpu = Math.min(ours[1][0], ours[2][0]);
    double baselineCpu = Math.min(baseline[1][0], baseline[2][0]);
    Results.add(String.format(Locale.ROOT, "settle-delete: %,d unleased rows, groups of %d", ROWS,
            GROUP),
        String.format(Locale.ROOT, "PostgreSQL CPU %.2f µs a row (%.2f, %.2f); wall %.2f, %.2f",
            oursCpu, ours[1][0], ours[2][0], ours[1][1], ours[2][1]),
        String.format(Locale.ROOT, "%.2f µs a row (%.2f, %.2f); wall %.2f, %.2f; by batch_id",
            baselineCpu, baseline[1][0], baseline[2][0], baseline[1][1], baseline[2][1]),
        String.format(Locale.ROOT, "%.2f", baselineCpu / oursCpu),
        "rounds 2 and 3 of 3 (the first warms up); one statement at a time on one connection;"
            + " KSUIDs " + IDS_PER_SECOND + " a second; ratio = baseline's PostgreSQL CPU ÷ ours"
            + " (higher is better)");
    pool.dispose();
  }

  /**
   * Fills a fresh table with {@code ids} in order and deletes them all: µs a row of PostgreSQL's
   * CPU and of wall time.
   */
  private static double[] run(TestPostgres postgres, ConnectionPool pool, OutboxTable table,
      List<String> ids, boolean ours) {
    postgres.execute("DROP TABLE IF EXISTS " + table.qualifiedName(),
        "DROP TABLE IF EXISTS " + table.deadLetterQualifiedName());
    OutboxSchema.createIfMissing(pool, table).block();
    String insert = "INSERT INTO " + table.qualifiedName()
        + " (batch_id, message_count, raw_data) SELECT id, 1, '\\x00'::bytea"
        + " FROM unnest($1::text[]) WITH ORDINALITY AS u(id, n) ORDER BY n";
    for (int from = 0; from < ids.size(); from += 50_000) {
      String[] chunk = ids.subList(from, Math.min(ids.size(), from + 50_000)).toArray(String[]::new);
      Mono.usingWhen(pool.create(),
          c -> Flux.from(c.createStatement(insert).bind(0, chunk).execute())
              .concatMap(r -> r.getRowsUpdated()).then(),
          Connection::close).block();
    }
    // Statistics as in service; the checkpoint so that neither side meets one (or its full-page
    // images) by chance in its window.
    postgres.execute("ANALYZE " + table.qualifiedName(), "CHECKPOINT");
    long[] seqs = postgres.queryColumn("SELECT insert_seq FROM " + table.qualifiedName()
        + " ORDER BY insert_seq").stream().mapToLong(seq -> ((Number) seq).longValue()).toArray();
    RelayStore store = RelayStore.create(pool, table);
    String baselineSql = String.format(Locale.ROOT, BASELINE_SQL, table.qualifiedName());
    CpuProbe cpu = CpuProbe.of(postgres);
    CpuProbe.Snapshot before = cpu.now();
    long t0 = System.nanoTime();
    for (int from = 0; from < ids.size(); from += GROUP) {
      int to = Math.min(ids.size(), from + GROUP);
      if (ours) {
        List<ClaimedBatch> group = new ArrayList<>(to - from);
        for (int i = from; i < to; i++) {
          group.add(new ClaimedBatch(ids.get(i), seqs[i], 1, 0, new byte[0], Instant.EPOCH,
              RelayStore.UNLEASED, Instant.EPOCH));
        }
        Long missed = store.deleteAll(group).count().block();
        if (missed == null || missed != 0) {
          throw new IllegalStateException(missed + " rows not deleted");
        }
      } else {
        String[] group = ids.subList(from, to).toArray(String[]::new);
        Long missed = Mono.usingWhen(pool.create(),
            c -> Flux.from(c.createStatement(baselineSql).bind(0, group)
                    .bind(1, RelayStore.UNLEASED).execute())
                .concatMap(r -> r.map((row, meta) -> row.get("batch_id", String.class)))
                .count(),
            Connection::close).block();
        if (missed == null || missed != 0) {
          throw new IllegalStateException(missed + " rows not deleted by the baseline");
        }
      }
    }
    double micros = (System.nanoTime() - t0) / 1e3 / ids.size();
    double postgresMicros = (cpu.now().postgres() - before.postgres()) * 1e6 / ids.size();
    long left = postgres.queryLong("SELECT count(*) FROM " + table.qualifiedName());
    if (left != 0) {
      throw new IllegalStateException(left + " rows left after the deletes");
    }
    return new double[] {postgresMicros, micros};
  }
}
