package dev.outbox.benchmarks;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import java.util.List;
import java.util.concurrent.ThreadLocalRandom;
import java.util.stream.IntStream;
import reactor.core.publisher.Flux;

/**
 * A backlog written by {@link OutboxWriter} (unlike {@link Backlog}'s spliced rows), for the
 * benchmarks that need named keys ({@code key-0} … ) and per-key sequence numbers: row {@code r}
 * (0-based) has key {@code key-<r mod keys>}, and its message {@code j} the header {@value
 * #SEQ_HEADER} = {@code (r / keys) * perRow + j}, so each key's messages are numbered 0, 1, 2, …
 * in the order they were written. Each of the concurrent writers owns the keys {@code k} with
 * {@code k mod writers == w} and writes them in row order (200 rows per transaction), so every
 * key's rows are inserted, and get their {@code insert_seq}, in sequence order.
 *
 * <p>Written once into a template table and {@link #copy copied} into the table of each run, so
 * that the runs of a benchmark drain the same rows.
 */
final class KeyedBacklog {
  static final String SEQ_HEADER = "seq";
  private static final int WRITERS = 4;
  private static final int ROWS_PER_TRANSACTION = 200;

  private KeyedBacklog() {}

  static String key(int k) {
    return "key-" + k;
  }

  /** The {@code message_keys} element of {@code key} in {@code topic}, as an SQL literal. */
  static String keySql(String topic, String key) {
    return "'" + topic + "' || chr(31) || '" + key + "'";
  }

  /**
   * Writes {@code rows} rows of {@code perRow} messages with {@code payloadBytes}-byte payloads
   * over {@code keys} keys into {@code table} (which must exist), then {@code VACUUM ANALYZE}s it.
   *
   * @return seconds spent writing
   */
  static double write(TestPostgres postgres, OutboxTable table, String topic, int rows, int perRow,
      int keys, int payloadBytes) {
    byte[] payload = new byte[payloadBytes];
    ThreadLocalRandom.current().nextBytes(payload);
    OutboxWriter writer = OutboxWriter.builder().table(table).build();
    ConnectionPool pool = postgres.newPool(WRITERS);
    long t0 = System.nanoTime();
    try {
      Flux.range(0, WRITERS)
          .flatMap(w -> Flux.range(0, rows)
              .filter(r -> r % keys % WRITERS == w)
              .buffer(ROWS_PER_TRANSACTION)
              .concatMap(group -> OutboxTransactions.inTransaction(pool, c -> Flux.fromIterable(group)
                  .concatMap(r -> writer.write(messages(topic, r, perRow, keys, payload)))
                  .then())), WRITERS)
          .blockLast();
    } finally {
      pool.dispose();
    }
    double seconds = (System.nanoTime() - t0) / 1e9;
    long count = postgres.queryLong("SELECT count(*) FROM " + table.qualifiedName());
    if (count != rows) {
      throw new IllegalStateException("Backlog has " + count + " rows, expected " + rows);
    }
    postgres.execute("VACUUM ANALYZE " + table.qualifiedName());
    return seconds;
  }

  private static List<Message> messages(String topic, int r, int perRow, int keys, byte[] payload) {
    String key = key(r % keys);
    long first = (long) (r / keys) * perRow;
    return IntStream.range(0, perRow)
        .mapToObj(j -> Message.builder().stream(topic).key(key)
            .header(SEQ_HEADER, Long.toString(first + j)).data(payload).build())
        .toList();
  }

  /**
   * Copies every row of {@code source} into {@code target} (existing, empty) with {@link #load},
   * then {@code VACUUM ANALYZE}s {@code target}.
   *
   * @return seconds spent in {@link #load}
   */
  static double copy(TestPostgres postgres, OutboxTable source, OutboxTable target) {
    return copy(postgres, source, target, Long.MAX_VALUE);
  }

  /** As {@link #copy(TestPostgres, OutboxTable, OutboxTable)}, the first {@code limit} rows only. */
  static double copy(TestPostgres postgres, OutboxTable source, OutboxTable target, long limit) {
    double seconds = load(postgres, source, target, limit);
    postgres.execute("VACUUM ANALYZE " + target.qualifiedName());
    return seconds;
  }

  /**
   * Copies the first {@code limit} rows of {@code source} into {@code target} (existing, empty)
   * in {@code insert_seq} order, in one transaction that also checks the count and that the
   * order was kept (fails and rolls back otherwise) and {@code ANALYZE}s {@code target} (its
   * statistics then describe the backlog when it becomes visible): relays already running on
   * {@code target} see the whole backlog appear at once, with statistics.
   *
   * @return seconds, until the commit
   */
  static double load(TestPostgres postgres, OutboxTable source, OutboxTable target, long limit) {
    String from = source.qualifiedName();
    String to = target.qualifiedName();
    String ordered = "SELECT batch_id, row_number() OVER (ORDER BY insert_seq) AS n FROM ";
    long t0 = System.nanoTime();
    postgres.execute("BEGIN",
        "INSERT INTO " + to + " (batch_id, message_count, raw_data, message_keys)"
            + " SELECT batch_id, message_count, raw_data, message_keys FROM " + from
            + " ORDER BY insert_seq LIMIT " + limit,
        "DO $$ DECLARE expected bigint; copied bigint; misplaced bigint; BEGIN"
            + " SELECT least(" + limit + ", count(*)) INTO expected FROM " + from + ";"
            + " SELECT count(*) INTO copied FROM " + to + ";"
            + " SELECT count(*) INTO misplaced FROM (" + ordered + from + ") a JOIN (" + ordered + to
            + ") b USING (batch_id) WHERE a.n <> b.n;"
            + " IF copied <> expected OR misplaced <> 0 THEN RAISE EXCEPTION"
            + " 'copy of " + from + " into " + to + ": % of % rows, % out of insert order',"
            + " copied, expected, misplaced; END IF; END $$",
        "ANALYZE " + to,
        "COMMIT");
    return (System.nanoTime() - t0) / 1e9;
  }
}
