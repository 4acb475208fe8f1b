package dev.outbox.r2dbc.internal;

import dev.outbox.r2dbc.OutboxTable;
import io.r2dbc.spi.ConnectionFactory;
import io.r2dbc.spi.Readable;
import io.r2dbc.spi.Statement;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Objects;
import java.util.function.Function;
import org.jspecify.annotations.Nullable;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * Internal: the PARTITIONED relay's protocol with the outbox table, not part of the public API.
 *
 * <p>Relays share the table's partitions through two small tables: {@code <table>_relays} (one
 * heartbeat row per live relay) and {@code <table>_partitions} (owner, epoch, expiry per
 * partition). A relay reads the rows of the partitions it owns, in insert order, below the commit
 * watermark, and writes nothing to claim them. Every settlement presents the partition's epoch it
 * read under and locks the partition row ({@code FOR SHARE}); taking a partition over raises its
 * epoch and waits for settlements in progress, so a relay that lost a partition (frozen, cut off,
 * late) changes nothing after the takeover. Immutable and thread-safe.
 */
public final class PartitionStore {
  /** One partition held: its number and the epoch settlements must present. */
  public record Owned(int partition, long epoch) {}

  /**
   * One row read by {@link #read}: {@code rawData} is {@code null} while the row waits for a
   * retry ({@code waitingUntil} in the future), when its transaction is above the commit
   * watermark ({@code pending}: not published yet, but it holds its keys), for a key held for a
   * retry, and past the budgets.
   */
  public record ReadRow(String batchId, int partition, long insertSeq, int messageCount,
      int writeRetries, List<String> keys, boolean pending, @Nullable Instant waitingUntil,
      byte @Nullable [] rawData, Instant insertTime) {}

  private static final int ERROR_TEXT_LIMIT = 255;

  private final ConnectionFactory connections;
  private final Duration statementTimeout;
  private final String heartbeatSql;
  private final String liveSql;
  private final String forgetSql;
  private final String partitionCountSql;
  private final String acquireSql;
  private final String releaseSql;
  private final String releaseAllSql;
  private final String readSql;
  private final String deleteAllSql;
  private final String retrySql;
  private final String deadLetterSql;

  private PartitionStore(ConnectionFactory connections, OutboxTable table, Duration statementTimeout) {
    this.connections = connections;
    this.statementTimeout = statementTimeout;
    String t = table.qualifiedName();
    String parts = table.partitionsQualifiedName();
    String relays = table.relaysQualifiedName();
    String dl = table.deadLetterQualifiedName();
    heartbeatSql = "INSERT INTO " + relays + " (relay_id, heartbeat_at) VALUES ($1, now())"
        + " ON CONFLICT (relay_id) DO UPDATE SET heartbeat_at = now()";
    liveSql = "SELECT relay_id FROM " + relays
        + " WHERE heartbeat_at > now() - $1 * INTERVAL '1 millisecond' ORDER BY relay_id";
    forgetSql = "DELETE FROM " + relays + " WHERE relay_id = $1";
    partitionCountSql = "SELECT count(*) AS partitions FROM " + parts;
    // Renews what the relay owns and takes what is free or expired; a change of owner raises
    // the epoch (the row lock makes it wait for settlements in progress under the old one).
    acquireSql = "UPDATE " + parts + " SET epoch = CASE WHEN owner = $1 THEN epoch ELSE epoch + 1 END,"
        + " owner = $1, expires_at = now() + $3 * INTERVAL '1 millisecond'"
        + " WHERE outbox_partition = ANY($2::smallint[])"
        + " AND (owner IS NULL OR owner = $1 OR expires_at < now())"
        + " RETURNING outbox_partition, epoch";
    releaseAllSql = "UPDATE " + parts + " SET owner = NULL, expires_at = NULL WHERE owner = $1";
    releaseSql = "UPDATE " + parts + " SET owner = NULL, expires_at = NULL"
        + " WHERE owner = $1 AND outbox_partition = ANY($2::smallint[]) RETURNING outbox_partition";
    // One index walk in insert order after the relay's read position, only in partitions this
    // relay still owns (by the database's clock, so a read issued late cannot outlive a
    // takeover). The first row returned carries the snapshot's xmin and a fence (alone when
    // nothing is read): a transaction id taken for this read after its snapshot, so every
    // transaction open at the snapshot has a lower id (the snapshot's xmax is not enough: an
    // open transaction newer than the last completed one is at or above it). The relay moves
    // its position past rows only once a later snapshot's xmin has reached that fence (see
    // PartitionedSource). The price: each read uses one transaction id and writes a commit
    // record. Which rows to take is decided by
    // the relay (key holding, budgets); the database flags each row: above the commit watermark
    // (pending), waiting for a retry; rows in flight here are left out. Stored
    // bytes go out only for rows that may be taken, within the message and byte budgets
    // (running totals over the rows read, not counting rows of keys held for a retry).
    readSql = "WITH owned AS (SELECT coalesce(array_agg(outbox_partition), '{}') AS parts FROM " + parts
        + " WHERE owner = $1 AND expires_at > now() AND outbox_partition = ANY($2::smallint[])),"
        + " start AS (SELECT pg_snapshot_xmin(s) AS xmin, pg_current_xact_id() AS fence"
        + " FROM pg_current_snapshot() AS s)"
        + " SELECT start.xmin::text AS snapshot_xmin, start.fence::text AS fence,"
        + " r.batch_id, r.outbox_partition, r.insert_seq, r.message_count, r.write_retries,"
        + " r.message_keys, r.pending, (date_part('epoch', r.insert_time) * 1e6)::int8 AS insert_micros,"
        // A row parked at next_attempt_at = 'infinity' waits for ever, not fails every read.
        + " CASE WHEN isfinite(r.waiting_until) THEN (date_part('epoch', r.waiting_until) * 1e6)::int8"
        + " WHEN r.waiting_until IS NOT NULL THEN 9223372036854775807 END AS waiting_micros,"
        + " CASE WHEN r.pending OR r.waiting_until IS NOT NULL OR r.held"
        + " OR ((r.running_bytes > $6 OR r.running_records > $8)"
        + " AND NOT ($7 AND r.running_bytes = r.bytes)) THEN NULL"
        + " ELSE encode(r.raw_data, 'base64') END AS raw_data_base64"
        + " FROM start LEFT JOIN LATERAL (SELECT c.*, sum(CASE WHEN c.pending"
        + " OR c.waiting_until IS NOT NULL OR c.held THEN 0 ELSE c.bytes END) OVER w AS running_bytes,"
        + " sum(CASE WHEN c.pending OR c.waiting_until IS NOT NULL OR c.held"
        + " THEN 0 ELSE c.message_count END) OVER w AS running_records FROM ("
        + "SELECT o.batch_id, o.outbox_partition, o.insert_seq, o.message_count, o.write_retries,"
        + " o.message_keys, o.insert_time, o.raw_data, octet_length(o.raw_data) AS bytes,"
        + " o.writer_xid >= start.xmin AS pending,"
        + " CASE WHEN o.next_attempt_at > now() THEN o.next_attempt_at END AS waiting_until,"
        + " cardinality($9::text[]) > 0 AND o.message_keys && $9::text[] AS held"
        + " FROM " + t + " AS o, owned"
        + " WHERE o.outbox_partition = ANY(owned.parts) AND o.insert_seq > $3"
        + " AND NOT (o.insert_seq = ANY($4::bigint[]))"
        + " ORDER BY o.insert_seq LIMIT $5) AS c WINDOW w AS (ORDER BY c.insert_seq)) AS r ON true";
    // Only the partitions settled are locked, in partition order (no deadlock with a takeover
    // that locks several), so settlements cannot starve this relay's own renewal.
    String owned = "owned AS (SELECT outbox_partition, epoch FROM " + parts
        + " WHERE owner = $OWNER AND outbox_partition = ANY($PARTS::smallint[])"
        + " ORDER BY outbox_partition FOR SHARE)";
    // Each settled row names its partition and epoch, so the fence is one hash join on both and
    // each row one primary-key lookup (joined on the epoch alone, every row met every owned
    // partition: 24 times the lookups for 24 partitions, EXPLAIN (ANALYZE, BUFFERS)).
    deleteAllSql = "WITH " + owned.replace("$OWNER", "$3").replace("$PARTS", "$4")
        + " DELETE FROM " + t + " AS o"
        + " USING unnest($1::bpchar[], $2::bigint[], $5::smallint[]) AS settled(batch_id, epoch, outbox_partition)"
        + " JOIN owned ON owned.outbox_partition = settled.outbox_partition AND owned.epoch = settled.epoch"
        + " WHERE o.batch_id = settled.batch_id AND o.outbox_partition = settled.outbox_partition"
        + " RETURNING o.batch_id";
    retrySql = "WITH " + owned.replace("$OWNER", "$3").replace("$PARTS", "$6") + " UPDATE " + t + " AS o"
        + " SET write_retries = o.write_retries + $7, last_write_error = left($4, " + ERROR_TEXT_LIMIT
        + "), next_attempt_at = now() + $5 * INTERVAL '1 millisecond' FROM owned"
        + " WHERE o.batch_id = $1 AND owned.outbox_partition = o.outbox_partition"
        + " AND owned.epoch = $2";
    deadLetterSql = "WITH " + owned.replace("$OWNER", "$3").replace("$PARTS", "$5") + ", moved AS (DELETE FROM " + t
        + " AS o USING owned WHERE o.batch_id = $1 AND owned.outbox_partition = o.outbox_partition"
        + " AND owned.epoch = $2"
        + " RETURNING o.batch_id, o.message_count, o.write_retries, o.raw_data, o.insert_time,"
        + " o.message_keys)"
        + " INSERT INTO " + dl + " (batch_id, message_count, write_retries, reason, raw_data,"
        + " insert_time, message_keys)"
        + " SELECT batch_id, message_count, write_retries + 1, $4, raw_data, insert_time,"
        + " message_keys FROM moved"
        + " ON CONFLICT (batch_id) DO UPDATE SET message_count = EXCLUDED.message_count,"
        + " write_retries = EXCLUDED.write_retries, reason = EXCLUDED.reason,"
        + " raw_data = EXCLUDED.raw_data, message_keys = EXCLUDED.message_keys,"
        + " dead_lettered_at = now()";
  }

  public static PartitionStore create(ConnectionFactory connections, OutboxTable table,
      Duration statementTimeout) {
    return new PartitionStore(Objects.requireNonNull(connections, "connections"),
        Objects.requireNonNull(table, "table"), Sql.requirePositive(statementTimeout));
  }

  /** How many partitions the table has. */
  public Mono<Integer> partitionCount() {
    return query(partitionCountSql, s -> s, row -> row.get("partitions", Long.class))
        .single().map(Long::intValue);
  }

  /** Records that {@code relay} is alive now. */
  public Mono<Void> heartbeat(String relay) {
    return Sql.rowsUpdated(connections, statementTimeout, heartbeatSql, s -> s.bind(0, relay)).then();
  }

  /** The relays that sent a heartbeat within {@code within}, sorted by id. */
  public Mono<List<String>> liveRelays(Duration within) {
    return query(liveSql, s -> s.bind(0, within.toMillis()), row -> row.get("relay_id", String.class))
        .collectList();
  }

  /** Removes {@code relay} from the live relays (a graceful stop). */
  public Mono<Void> forget(String relay) {
    return Sql.rowsUpdated(connections, statementTimeout, forgetSql, s -> s.bind(0, relay)).then();
  }

  /**
   * Renews the partitions of {@code wanted} that {@code relay} owns and takes those that are
   * free or expired, each for {@code ttl}; emits what it holds afterwards.
   */
  public Flux<Owned> acquire(String relay, List<Integer> wanted, Duration ttl) {
    if (wanted.isEmpty()) {
      return Flux.empty();
    }
    Short[] parts = wanted.stream().map(Integer::shortValue).toArray(Short[]::new);
    return query(acquireSql, s -> s.bind(0, relay).bind(1, parts).bind(2, ttl.toMillis()),
        row -> new Owned(row.get("outbox_partition", Short.class), row.get("epoch", Long.class)));
  }

  /** Gives up every partition {@code relay} owns (a graceful stop); how many. */
  public Mono<Long> releaseAll(String relay) {
    return Sql.rowsUpdated(connections, statementTimeout, releaseAllSql, s -> s.bind(0, relay));
  }

  /** Gives partitions up at once (handover); emits those released. */
  public Flux<Integer> release(String relay, List<Integer> partitions) {
    if (partitions.isEmpty()) {
      return Flux.empty();
    }
    Short[] parts = partitions.stream().map(Integer::shortValue).toArray(Short[]::new);
    return query(releaseSql, s -> s.bind(0, relay).bind(1, parts),
        row -> (int) row.get("outbox_partition", Short.class));
  }

  /**
   * What one {@link #read} saw: its snapshot's xmin, its fence (a transaction id above every
   * transaction open at its snapshot), both as numbers, and the rows in insert order.
   */
  public record Read(long snapshotXmin, long fence, List<ReadRow> rows) {}

  /**
   * Reads at most {@code limit} rows of {@code partitions} (those {@code relay} still owns) with
   * {@code insert_seq > afterSeq}, in insert order, leaving out those whose sequence is in {@code
   * skipSeqs} (in flight). Rows above the commit watermark, rows waiting for a retry, rows
   * carrying one of {@code heldKeys}, and rows past {@code maxMessages} or {@code
   * maxBytes} of stored bytes, counted over the rows that may be taken (the first of them may
   * exceed the budgets when {@code admitOversizedFirst}). Writes nothing.
   */
  public Mono<Read> read(String relay, List<Integer> partitions, long afterSeq, long[] skipSeqs,
      List<String> heldKeys, int limit, int maxMessages, long maxBytes,
      boolean admitOversizedFirst) {
    Short[] parts = partitions.stream().map(Integer::shortValue).toArray(Short[]::new);
    Long[] skip = boxed(skipSeqs);
    String[] held = heldKeys.toArray(String[]::new);
    return Sql.query(connections, statementTimeout, readSql, s -> s.bind(0, relay).bind(1, parts)
                .bind(2, afterSeq).bind(3, skip).bind(4, limit).bind(5, maxBytes)
                .bind(6, admitOversizedFirst).bind(7, (long) maxMessages).bind(8, held),
            row -> new Object[] {row.get("snapshot_xmin", String.class),
                row.get("fence", String.class),
                row.get("batch_id", String.class) == null ? null : readRow(row)})
        .collectList()
        .map(rows -> {
          List<ReadRow> read = new ArrayList<>(rows.size());
          for (Object[] r : rows) {
            if (r[2] != null) {
              read.add((ReadRow) r[2]);
            }
          }
          // Sorted here, not by the statement: a final ORDER BY would hold every row back until
          // the last is computed; without it they stream while the client decodes.
          read.sort(java.util.Comparator.comparingLong(ReadRow::insertSeq));
          Object[] first = rows.get(0);
          return new Read(Long.parseLong((String) first[0]), Long.parseLong((String) first[1]), read);
        });
  }

  private static Long[] boxed(long[] values) {
    Long[] boxed = new Long[values.length];
    for (int i = 0; i < values.length; i++) {
      boxed[i] = values[i];
    }
    return boxed;
  }

  /**
   * Deletes published rows, each only while its partition still has the epoch given ({@code
   * epochs} and {@code partitions}: one per row, in the order of {@code batchIds}).
   */
  public Flux<String> deleteAll(String relay, List<String> batchIds, List<Long> epochs,
      List<Integer> partitions) {
    if (batchIds.isEmpty()) {
      return Flux.empty();
    }
    Short[] parts = partitions.stream().distinct().map(Integer::shortValue).toArray(Short[]::new);
    Short[] rowParts = partitions.stream().map(Integer::shortValue).toArray(Short[]::new);
    return query(deleteAllSql, s -> s.bind(0, batchIds.toArray(String[]::new))
            .bind(1, epochs.toArray(Long[]::new)).bind(2, relay).bind(3, parts).bind(4, rowParts),
        row -> row.get("batch_id", String.class));
  }

  /** A failed attempt: retries + 1, the error, not read again before {@code delay}; fenced. */
  public Mono<Boolean> retryLater(String relay, String batchId, int partition, long epoch,
      String error, Duration delay) {
    return retryLater(relay, batchId, partition, epoch, error, delay, true);
  }

  /**
   * As above; {@code attempted} false for a row that was held back, not tried (an earlier row
   * sent with it failed): its {@code write_retries} stays.
   */
  public Mono<Boolean> retryLater(String relay, String batchId, int partition, long epoch,
      String error, Duration delay, boolean attempted) {
    return Sql.updated(connections, statementTimeout, retrySql, s -> s.bind(0, batchId)
        .bind(1, epoch).bind(2, relay).bind(3, error).bind(4, Math.max(0, delay.toMillis()))
        .bind(5, new Short[] {(short) partition}).bind(6, attempted ? 1 : 0));
  }

  /** Moves a row to the dead letters with {@code reason}; fenced. */
  public Mono<Boolean> deadLetter(String relay, String batchId, int partition, long epoch,
      String reason) {
    return Sql.updated(connections, statementTimeout, deadLetterSql, s -> s.bind(0, batchId)
        .bind(1, epoch).bind(2, relay).bind(3, reason).bind(4, new Short[] {(short) partition}));
  }

  private static ReadRow readRow(Readable row) {
    String text = row.get("raw_data_base64", String.class);
    String[] keys = row.get("message_keys", String[].class);
    return new ReadRow(
        row.get("batch_id", String.class),
        row.get("outbox_partition", Short.class),
        row.get("insert_seq", Long.class),
        row.get("message_count", Integer.class),
        row.get("write_retries", Integer.class),
        keys == null ? List.of() : List.of(keys),
        Boolean.TRUE.equals(row.get("pending", Boolean.class)),
        instant(row.get("waiting_micros", Long.class)),
        text == null ? null : Base64.getMimeDecoder().decode(text),
        java.util.Objects.requireNonNull(instant(row.get("insert_micros", Long.class))));
  }

  /**
   * Timestamps are read as microseconds since the epoch: r2dbc parses timestamp text with a
   * general formatter, several microseconds per value (async-profiler), for every row read.
   */
  private static @Nullable Instant instant(@Nullable Long epochMicros) {
    return epochMicros == null ? null : Instant.EPOCH.plus(epochMicros, java.time.temporal.ChronoUnit.MICROS);
  }

  private <T> Flux<T> query(String sql, Function<Statement, Statement> binder,
      Function<Readable, @Nullable T> mapper) {
    return Sql.query(connections, statementTimeout, sql, binder, mapper);
  }
}
