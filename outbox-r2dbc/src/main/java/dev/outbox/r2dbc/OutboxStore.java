package dev.outbox.r2dbc;

import dev.outbox.r2dbc.internal.Sql;
import io.r2dbc.spi.ConnectionFactory;
import io.r2dbc.spi.Readable;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Objects;
import java.util.UUID;
import org.jspecify.annotations.Nullable;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * The operator's view of an outbox table: backlog, stored batches, dead letters and redrive.
 * (How relays claim and settle batches is internal to the relay.)
 *
 * <pre>{@code
 * OutboxStore store = OutboxStore.create(pool, OutboxTable.of("order_outbox"));
 * store.deadLetters(50)
 *     .filter(letter -> letter.reason().contains("RecordTooLargeException"))
 *     .concatMap(letter -> store.redrive(letter.batchId(), shrink(letter)));
 * }</pre>
 *
 * <p>Each operation runs in its own auto-commit statement on a connection taken from the factory
 * (use a pool). Immutable and thread-safe.
 */
public final class OutboxStore {
  /** Rows per statement of {@link #deleteDeadLettersOlderThan(Duration)}. */
  public static final int PURGE_BATCH = 1_000;

  private final ConnectionFactory connections;
  private final OutboxTable table;
  private final String redriveSql;
  private final String findSql;
  private final String findDeadLetterSql;
  private final String deadLettersSql;
  private final String statsSql;
  private final String deleteDeadLetterSql;
  private final String deleteDeadLettersOlderThanSql;

  private OutboxStore(ConnectionFactory connections, OutboxTable table) {
    this.connections = connections;
    this.table = table;
    String t = table.qualifiedName();
    String dl = table.deadLetterQualifiedName();
    redriveSql = "WITH moved AS (DELETE FROM " + dl + " WHERE batch_id = $1"
        + " RETURNING batch_id, message_count, raw_data, insert_time, message_keys)"
        + " INSERT INTO " + t + " (batch_id, message_count, raw_data, insert_time, message_keys)"
        + " SELECT batch_id, COALESCE($3, message_count), COALESCE($2, raw_data), insert_time,"
        + " COALESCE($4, message_keys) FROM moved";
    findSql = "SELECT batch_id, insert_seq, in_flight, message_count, write_retries,"
        + " last_write_error, raw_data, insert_time, next_attempt_at, lease_owner, lease_token,"
        + " lease_expires_at FROM " + t + " WHERE batch_id = $1";
    String deadLetterColumns = "SELECT batch_id, message_count, write_retries, reason, raw_data,"
        + " insert_time, dead_lettered_at FROM " + dl;
    findDeadLetterSql = deadLetterColumns + " WHERE batch_id = $1";
    deadLettersSql = deadLetterColumns + " ORDER BY dead_lettered_at, batch_id LIMIT $1";
    deleteDeadLetterSql = "DELETE FROM " + dl + " WHERE batch_id = $1";
    // Bounded, oldest first, so one call never holds locks on (or waits for) a whole table of
    // dead letters; SKIP LOCKED leaves rows a concurrent redrive or purge is moving.
    deleteDeadLettersOlderThanSql = "DELETE FROM " + dl + " WHERE batch_id IN (SELECT batch_id"
        + " FROM " + dl + " WHERE dead_lettered_at < now() - $1 * interval '1 millisecond'"
        + " ORDER BY dead_lettered_at LIMIT $2 FOR UPDATE SKIP LOCKED)";
    // Everything indexed or bounded: a backlog of millions must not make this slow (a relay
    // reads it every few seconds). Counts stop at EXACT_UP_TO + 1 rows; above that the
    // planner's estimate stands in. The first row in insert order comes from the insert_seq
    // index (min(insert_time) has no index and read the whole table).
    long bound = BacklogStats.EXACT_UP_TO + 1;
    statsSql = "SELECT (SELECT count(*) FROM (SELECT 1 FROM " + t + " LIMIT " + bound + ") AS r)"
        + " AS rows_counted, " + estimate("$1") + " AS rows_estimated,"
        + " (SELECT insert_time FROM " + t + " ORDER BY insert_seq LIMIT 1) AS oldest,"
        + " (SELECT count(*) FROM (SELECT 1 FROM " + dl + " LIMIT " + bound + ") AS d)"
        + " AS dead_letters_counted, " + estimate("$2") + " AS dead_letters_estimated";
  }

  /** A store over {@code table}, taking connections from {@code connections} (a pool). */
  public static OutboxStore create(ConnectionFactory connections, OutboxTable table) {
    return new OutboxStore(Objects.requireNonNull(connections, "connections"),
        Objects.requireNonNull(table, "table"));
  }

  public OutboxTable table() {
    return table;
  }

  /**
   * Moves a dead-lettered batch back into the outbox, due at once, keeping its id; {@code false}
   * when no such dead letter exists. It goes to the end of the insert order.
   */
  public Mono<Boolean> redrive(String batchId) {
    return Sql.updated(connections, redriveSql, s -> s.bind(0, batchId)
        .bindNull(1, byte[].class).bindNull(2, Integer.class).bindNull(3, String[].class));
  }

  /**
   * As {@link #redrive(String)}, replacing the batch's messages with {@code replacement} (for a
   * batch that was dead-lettered because of its content), encoded with the protobuf codec. The
   * stored message count and keys follow the replacement.
   */
  public Mono<Boolean> redrive(String batchId, List<Message> replacement) {
    return redrive(batchId, replacement, Codec.protobuf());
  }

  /** As {@link #redrive(String, List)}, encoded with {@code codec} (the relay's codec). */
  public Mono<Boolean> redrive(String batchId, List<Message> replacement, Codec codec) {
    return Mono.defer(() -> {
      if (replacement.isEmpty()) {
        return Mono.error(new InvalidMessageException("A replacement batch needs a message"));
      }
      byte[] raw = codec.encode(replacement);
      String[] keys = MessageKeys.of(replacement);
      return Sql.updated(connections, redriveSql, s -> s.bind(0, batchId).bind(1, raw)
          .bind(2, replacement.size()).bind(3, keys));
    });
  }

  /**
   * Deletes the dead letter of {@code batchId} for good (its messages are never published);
   * {@code false} when no such dead letter exists.
   *
   * <pre>{@code
   * store.deleteDeadLetter(batchId)
   *     .doOnNext(deleted -> log.info("purged {}: {}", batchId, deleted));
   * }</pre>
   */
  public Mono<Boolean> deleteDeadLetter(String batchId) {
    Objects.requireNonNull(batchId, "batchId");
    return Sql.updated(connections, deleteDeadLetterSql, s -> s.bind(0, batchId));
  }

  /**
   * Deletes up to {@code limit} dead letters that were dead-lettered more than {@code age} ago
   * (by the database's clock), oldest first; emits how many it deleted. Call it again while it
   * returns {@code limit} to delete them all, as {@link #deleteDeadLettersOlderThan(Duration)}
   * does. Rows that another statement is moving or deleting at the same moment are skipped.
   *
   * <pre>{@code
   * store.deleteDeadLettersOlderThan(Duration.ofDays(30), 1_000)
   *     .doOnNext(count -> log.info("deleted {} dead letters older than 30 days", count));
   * }</pre>
   *
   * <p>Fails with {@link InvalidConfigurationException} when {@code age} is negative or {@code
   * limit} is below 1.
   */
  public Mono<Long> deleteDeadLettersOlderThan(Duration age, int limit) {
    Objects.requireNonNull(age, "age");
    return Mono.defer(() -> {
      if (age.isNegative()) {
        return Mono.error(new InvalidConfigurationException(
            "The age of dead letters to delete must not be negative, was " + age));
      }
      if (limit < 1) {
        return Mono.error(new InvalidConfigurationException(
            "The most dead letters to delete must be at least 1, was " + limit));
      }
      long millis = saturatedMillis(age);
      return Sql.rowsUpdated(connections, deleteDeadLettersOlderThanSql,
          s -> s.bind(0, millis).bind(1, limit));
    });
  }

  /**
   * Deletes every dead letter that was dead-lettered more than {@code age} ago, in statements of
   * {@value #PURGE_BATCH} rows one after another (none holds locks for long); emits the total.
   * Fails with {@link InvalidConfigurationException} when {@code age} is negative.
   */
  public Mono<Long> deleteDeadLettersOlderThan(Duration age) {
    Mono<Long> batch = deleteDeadLettersOlderThan(age, PURGE_BATCH);
    return batch.expand(deleted -> deleted < PURGE_BATCH ? Mono.empty() : batch)
        .reduce(0L, Long::sum);
  }

  /** The outbox row of {@code batchId}; empty when there is none. */
  public Mono<StoredBatch> find(String batchId) {
    return Sql.query(connections, findSql, s -> s.bind(0, batchId), row -> new StoredBatch(
        row.get("batch_id", String.class),
        row.get("insert_seq", Long.class),
        row.get("in_flight", Boolean.class),
        row.get("message_count", Integer.class),
        row.get("write_retries", Integer.class),
        row.get("last_write_error", String.class),
        Sql.bytes(row, "raw_data"),
        row.get("insert_time", Instant.class),
        row.get("next_attempt_at", Instant.class),
        row.get("lease_owner", String.class),
        row.get("lease_token", UUID.class),
        row.get("lease_expires_at", Instant.class))).next();
  }

  /** The dead letter of {@code batchId}; empty when there is none. */
  public Mono<DeadLetter> findDeadLetter(String batchId) {
    return Sql.query(connections, findDeadLetterSql, s -> s.bind(0, batchId),
        OutboxStore::deadLetter).next();
  }

  /** Up to {@code limit} dead letters, oldest first. */
  public Flux<DeadLetter> deadLetters(int limit) {
    return Sql.query(connections, deadLettersSql, s -> s.bind(0, limit), OutboxStore::deadLetter);
  }

  /**
   * Backlog size, oldest row and dead-letter count, in one statement that stays fast whatever
   * the backlog: exact counts up to {@value BacklogStats#EXACT_UP_TO} rows, the planner's
   * estimate above (see {@link BacklogStats}).
   */
  public Mono<BacklogStats> stats() {
    return Sql.query(connections, statsSql,
        s -> s.bind(0, table.qualifiedName()).bind(1, table.deadLetterQualifiedName()),
        row -> new BacklogStats(
            count(row.get("rows_counted", Long.class), row.get("rows_estimated", Long.class)),
            row.get("oldest", Instant.class),
            count(row.get("dead_letters_counted", Long.class),
                row.get("dead_letters_estimated", Long.class)))).single();
  }

  /** The statement behind {@link #stats()} ($1, $2: table names), for tests that explain it. */
  String statsSql() {
    return statsSql;
  }

  /** The planner's row estimate of the table named by {@code parameter}; null when unknown. */
  private static String estimate(String parameter) {
    return "(SELECT CASE WHEN c.reltuples >= 0 AND c.relpages > 0"
        + " THEN (c.reltuples / c.relpages * (pg_relation_size(c.oid)"
        + " / current_setting('block_size')::float8))::bigint END"
        + " FROM pg_class AS c WHERE c.oid = to_regclass(" + parameter + "))";
  }

  /** Exact below the bound; above it the estimate, never below the bound. */
  private static long count(@Nullable Long counted, @Nullable Long estimated) {
    long exact = counted == null ? 0 : counted;
    if (exact <= BacklogStats.EXACT_UP_TO) {
      return exact;
    }
    return Math.max(exact, estimated == null ? 0 : estimated);
  }

  /** Longer ages are cut to 1,000 years (now() minus more could leave the timestamp range). */
  private static long saturatedMillis(Duration age) {
    try {
      return Math.min(age.toMillis(), MAX_AGE_MILLIS);
    } catch (ArithmeticException e) {
      return MAX_AGE_MILLIS;
    }
  }

  private static final long MAX_AGE_MILLIS = Duration.ofDays(365L * 1_000).toMillis();

  private static DeadLetter deadLetter(Readable row) {
    return new DeadLetter(
        row.get("batch_id", String.class),
        row.get("message_count", Integer.class),
        row.get("write_retries", Integer.class),
        row.get("reason", String.class),
        Sql.bytes(row, "raw_data"),
        row.get("insert_time", Instant.class),
        row.get("dead_lettered_at", Instant.class));
  }
}
