package dev.outbox.r2dbc.internal;

import dev.outbox.r2dbc.OutboxTable;

import io.r2dbc.spi.ConnectionFactory;
import io.r2dbc.spi.Readable;
import io.r2dbc.spi.Statement;
import java.time.Duration;
import java.time.Instant;
import java.util.Base64;
import java.util.Comparator;
import java.util.HashSet;
import java.util.List;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.UUID;
import java.util.function.Function;
import org.jspecify.annotations.Nullable;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * Internal: the relay's protocol with the outbox table, not part of the public API (it changes
 * with the relay). Operators use {@link dev.outbox.r2dbc.OutboxStore}.
 *
 * <p>The relay's side of the outbox table: claim due batches under a lease, then settle each claim
 * exactly once by deleting, retrying later, releasing or dead-lettering it.
 *
 * <pre>{@code
 * RelayStore store = RelayStore.create(pool, OutboxTable.of("order_outbox"));
 * store.claim(100, Duration.ofSeconds(30), "relay-1")
 *      .concatMap(batch -> publish(batch)
 *          .then(store.delete(batch))                       // false: lease lost, row kept
 *          .onErrorResume(e -> store.retryLater(batch, e.toString(), Duration.ofSeconds(1))));
 * }</pre>
 *
 * <p><b>Fencing.</b> Every claim gets a new lease token, and every settlement matches on it. Once
 * a lease has expired and another relay has claimed the batch, the token has changed and the old
 * holder's settlement affects nothing (it returns {@code false}). A holder whose lease expired
 * but whose batch nobody has claimed yet may still settle it: that is safe, since the claim and
 * the settlement both lock the row and whichever comes second sees the other's effect.
 *
 * <p>Each operation runs in its own auto-commit statement on a connection taken from the factory
 * (use a pool), bounded by the statement timeout; a connection whose statement timed out is
 * closed, never reused. Times ({@code now()}) are the database's, so relays need no synchronized clocks.
 * Immutable and thread-safe.
 */
public final class RelayStore {
  private static final int ERROR_TEXT_LIMIT = 255;

  /**
   * The lease token of a row taken without a claim (WAL mode publishes a row as the log carries
   * it): its settlements match the row only while no one holds a lease on it. A replication slot
   * streams to one relay at a time, which is what keeps two relays from publishing such a row
   * at once; a predecessor that lost the slot can only publish it again (a duplicate).
   */
  public static final UUID UNLEASED = new UUID(0, 0);
  /**
   * The lease token of a row that is not in the table: its writer deleted it in the transaction
   * that inserted it ({@code OutboxWriter.Builder#deleteOnceLogged}), so the log holds its only
   * copy. Nothing is deleted when it is published; a retry waits in the relay's memory; a dead
   * letter is inserted from what the log carried ({@link #deadLetterLogged}).
   */
  public static final UUID LOGGED_ONLY = new UUID(0, 1);
  /** The lease token a settlement matches: the row's, or {@link #UNLEASED} for a row without. */
  private static String token(String alias) {
    return "coalesce(" + alias + "lease_token, '00000000-0000-0000-0000-000000000000'::uuid)";
  }

  private final ConnectionFactory connections;
  private final OutboxTable table;
  private final Duration statementTimeout;
  private final String claimSql;
  private final String orderedClaimSql;
  private final String deleteSql;
  private final String claimByIdSql;
  private final String claimByIdsSql;
  private final String absentByIdsSql;
  private final String committedSql;
  private final String deleteAllSql;
  private final String deleteAllPairsSql;
  private final String retrySql;
  private final String releaseSql;
  private final String releaseHeldSql;
  private final String deadLetterSql;
  private final String deadLetterLoggedSql;
  private final String renewSql;

  private RelayStore(ConnectionFactory connections, OutboxTable table, Duration statementTimeout) {
    this.connections = connections;
    this.table = table;
    this.statementTimeout = statementTimeout;
    String t = table.qualifiedName();
    String dl = table.deadLetterQualifiedName();
    // Candidates are locked in insert order; the running message total then decides which of
    // them this claim takes. Locked but untaken rows are unlocked when the statement commits.
    claimSql = claimSql(t, false);
    orderedClaimSql = claimSql(t, true);
    deleteSql = "DELETE FROM " + t + " WHERE batch_id = $1 AND " + token("") + " = $2";
    // Rows whose writing transaction has ended (below the commit watermark), in insert order.
    // (Listing every committed row instead, above the watermark too, left a row unpublished for
    // ~15 s at a WAL relay's start under load, cause not found: the WAL sweep is instead
    // remembered only when nothing could be above the watermark, see WalSource.)
    committedSql = "SELECT batch_id, insert_seq FROM " + t + " WHERE insert_seq > $1"
        + " AND writer_xid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY insert_seq LIMIT $2";
    claimByIdSql = "UPDATE " + t + " SET in_flight = TRUE, lease_owner = $2, lease_token = $3,"
        + " lease_expires_at = now() + $4 * INTERVAL '1 millisecond'"
        + " WHERE batch_id = $1 AND (lease_expires_at IS NULL OR lease_expires_at <= now())"
        + " RETURNING batch_id, insert_seq, message_count, write_retries, " + rawDataAsText("")
        + ", " + times("");
    // WAL mode: many ids in one statement. Rows another holder's lease covers come back
    // unclaimed (claimed = FALSE, no bytes) with their keys, so the relay can keep their place in
    // per-key order while it waits; ids of rows that are gone do not come back. The second part
    // reads the statement's snapshot, from before the UPDATE: a row claimed here is left out of
    // it by the NOT EXISTS on what the UPDATE returned.
    // The log can deliver a commit before the committing backend is out of the snapshots of
    // others (the commit record is flushed first, then the transaction leaves the proc array):
    // a row of it is then not visible yet and would look gone. So the statement also checks, in
    // its own snapshot, that the transactions the log named are visible ($5, 32-bit xids as
    // the log carries them, widened to the full xid nearest the snapshot's xmax); if one is not,
    // nothing is claimed and one row with claimed = NULL says so.
    claimByIdsSql = "WITH vis AS (SELECT coalesce(bool_and(pg_visible_in_snapshot("
        + widenedXid("x", "m.xmax") + "::text::xid8, m.s)), TRUE) AS ok"
        + " FROM (SELECT s, pg_snapshot_xmax(s)::text::bigint AS xmax FROM pg_current_snapshot() AS s) AS m,"
        + " unnest($5::bigint[]) AS x),"
        + " wanted AS (SELECT DISTINCT w.batch_id FROM unnest($1::bpchar[]) AS w(batch_id), vis WHERE vis.ok),"
        + " taken AS (UPDATE " + t + " AS o SET in_flight = TRUE, lease_owner = $2,"
        + " lease_token = $3, lease_expires_at = now() + $4 * INTERVAL '1 millisecond'"
        + " FROM wanted WHERE o.batch_id = wanted.batch_id"
        + " AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= now())"
        + " RETURNING o.batch_id, o.insert_seq, o.message_count, o.write_retries, "
        + rawDataAsText("o.") + ", " + times("o.") + ", o.message_keys)"
        + " SELECT TRUE AS claimed, taken.* FROM taken"
        + " UNION ALL SELECT FALSE, o.batch_id, o.insert_seq, o.message_count, o.write_retries,"
        + " NULL::text, " + times("o.") + ", o.message_keys FROM " + t + " AS o"
        + " JOIN wanted ON o.batch_id = wanted.batch_id"
        + " WHERE NOT EXISTS (SELECT 1 FROM taken WHERE taken.batch_id = o.batch_id)"
        + " UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM vis WHERE NOT vis.ok";
    // Which of the ids are gone from the table, under the same visibility check; reads only.
    // Only the missing ones come back (usually none): a row per id present cost the relay a
    // decoded row per published row.
    absentByIdsSql = "WITH vis AS (SELECT coalesce(bool_and(pg_visible_in_snapshot("
        + widenedXid("x", "m.xmax") + "::text::xid8, m.s)), TRUE) AS ok"
        + " FROM (SELECT s, pg_snapshot_xmax(s)::text::bigint AS xmax FROM pg_current_snapshot() AS s) AS m,"
        + " unnest($2::bigint[]) AS x)"
        + " SELECT TRUE AS visible, wanted.batch_id FROM unnest($1::bpchar[]) AS wanted(batch_id), vis"
        + " WHERE vis.ok AND NOT EXISTS (SELECT 1 FROM " + t + " AS o"
        + " WHERE o.batch_id = wanted.batch_id)"
        + " UNION ALL SELECT FALSE, NULL FROM vis WHERE NOT vis.ok";
    // Only the ids not deleted come back (usually none), as for absentByIdsSql.
    // Batches of one lease token (WAL mode's logged rows all hold UNLEASED; a claim's batches its
    // token), found by insert_seq, sorted: a settlement group (published in commit order) lies
    // close together in that index, so "= ANY" walks a few neighbouring pages (PostgreSQL 17
    // advances through the sorted array within a page; earlier versions descend once an element,
    // into pages just read). Found by batch_id instead, each id is a descent of its own into a
    // page of its own, since KSUIDs are random within their second: 200,000 rows in groups of
    // 500 cost 3.8-5.2 µs of executor time a row against 2.4-2.8 (PostgreSQL 17,
    // pg_stat_statements); in a WAL drain that DELETE was most of the backends' 7.7 µs a row
    // (perf: btree descents and bpchar comparisons through the collation). insert_seq alone
    // would not do: a table dropped and created again numbers its rows from 1, and an
    // unleased row carries no token to tell it from the published one. So each row's id must
    // be the one named with its insert_seq, at the position width_bucket finds by binary search
    // in the sorted insert_seqs. (Looking the id up with "batch_id::text = ANY($2)" searched the
    // array row by row in the prepared statement's generic plan: 6.2 µs a row.) The subscript
    // walks the text array to its position, so the cost grows with the group's square: fine
    // at RelayPipeline's 500, not at thousands.
    // The misses are looked for only when fewer rows went than were named.
    deleteAllSql = "WITH gone AS (DELETE FROM " + t + " AS o WHERE o.insert_seq = ANY($1::int8[])"
        + " AND o.batch_id::text = ($2::text[])[width_bucket(o.insert_seq, $1::int8[])]"
        + " AND " + token("o.") + " = $3::uuid RETURNING o.batch_id::text AS batch_id)"
        + " SELECT held.batch_id FROM unnest($2::text[]) AS held(batch_id)"
        + " WHERE (SELECT count(*) FROM gone) < cardinality($2::text[])"
        + " AND NOT EXISTS (SELECT 1 FROM gone WHERE gone.batch_id = held.batch_id)";
    // Batches of several tokens: each fenced by its own, still in one statement (one transaction).
    // bpchar[], the column's own type: against text[] the primary key is not used, and every
    // settlement read the whole table (1-2.5 s per DELETE with a 1,000,000-row backlog).
    deleteAllPairsSql = "WITH settled AS (SELECT * FROM unnest($1::bpchar[], $2::uuid[])"
        + " AS s(batch_id, lease_token)), gone AS (DELETE FROM " + t + " AS o USING settled"
        + " WHERE o.batch_id = settled.batch_id AND " + token("o.") + " = settled.lease_token"
        + " RETURNING o.batch_id)"
        + " SELECT settled.batch_id FROM settled"
        + " WHERE NOT EXISTS (SELECT 1 FROM gone WHERE gone.batch_id = settled.batch_id)";
    // SKIP LOCKED: a row locked now is being settled (deleted, given back) by this relay, so it
    // needs no renewal; waiting for it instead deadlocked against grouped DELETEs that lock
    // the same rows in another order.
    renewSql = "UPDATE " + t + " AS o SET lease_expires_at = now() + $3 * INTERVAL '1 millisecond'"
        + " FROM (SELECT e.batch_id FROM " + t + " AS e"
        + " JOIN unnest($1::bpchar[], $2::uuid[]) AS held(batch_id, lease_token)"
        + " ON e.batch_id = held.batch_id AND e.lease_token = held.lease_token"
        + " FOR UPDATE OF e SKIP LOCKED) AS free"
        + " WHERE o.batch_id = free.batch_id"
        + " RETURNING o.batch_id";
    String unlease = "in_flight = FALSE, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL";
    retrySql = "UPDATE " + t + " SET " + unlease + ", write_retries = write_retries + $5,"
        + " last_write_error = left($3, " + ERROR_TEXT_LIMIT + "),"
        + " next_attempt_at = now() + $4 * INTERVAL '1 millisecond'"
        + " WHERE batch_id = $1 AND " + token("") + " = $2";
    releaseSql = "UPDATE " + t + " SET " + unlease + " WHERE batch_id = $1 AND lease_token = $2";
    releaseHeldSql = "UPDATE " + t + " AS o SET " + unlease
        + " FROM unnest($1::bpchar[], $2::uuid[]) AS held(batch_id, lease_token)"
        + " WHERE o.batch_id = held.batch_id AND o.lease_token = held.lease_token";
    deadLetterSql = "WITH moved AS (DELETE FROM " + t + " WHERE batch_id = $1 AND " + token("") + " = $2"
        + " RETURNING batch_id, message_count, write_retries, raw_data, insert_time, message_keys)"
        + " INSERT INTO " + dl + " (batch_id, message_count, write_retries, reason, raw_data,"
        + " insert_time, message_keys)"
        + " SELECT batch_id, message_count, write_retries + 1, $3, raw_data, insert_time,"
        + " message_keys FROM moved"
        + " ON CONFLICT (batch_id) DO UPDATE SET message_count = EXCLUDED.message_count,"
        + " write_retries = EXCLUDED.write_retries, reason = EXCLUDED.reason,"
        + " raw_data = EXCLUDED.raw_data, message_keys = EXCLUDED.message_keys,"
        + " dead_lettered_at = now()";
    // A row only the log holds: already dead-lettered (published again after a restart), it
    // keeps the first reason.
    deadLetterLoggedSql = "INSERT INTO " + dl + " (batch_id, message_count, write_retries, reason,"
        + " raw_data, insert_time, message_keys) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        + " ON CONFLICT (batch_id) DO NOTHING";
  }

  /**
   * Candidates are locked in insert order; the running message total then decides which of them
   * this claim takes. Locked but untaken rows are unlocked when the statement commits. The
   * ordered variant takes only rows below the commit watermark (every transaction that could
   * still commit an earlier row has ended) and no row that shares a key with an earlier row still
   * in the table (unpublished: in flight, waiting for a retry, or not yet claimed).
   */
  private static String claimSql(String t, boolean ordered) {
    // Per key, the earliest row still in the table (computed once per claim: one scan and a
    // hash aggregate, so a claim costs time linear in the backlog). A row may go only if it is
    // the head of every key it carries. Checking "no earlier row shares a key" row by row
    // instead cost seconds per claim with a backlog of a few thousand rows. (Aggregating only
    // the oldest rows was faster but let one stuck key with a long queue block every key.)
    String heads = !ordered ? "" : "heads AS (SELECT k, min(e.insert_seq) AS first_seq FROM " + t
        + " AS e, unnest(e.message_keys) AS k GROUP BY k), ";
    String orderedOnly = !ordered ? "" : " AND o.writer_xid < pg_snapshot_xmin(pg_current_snapshot())"
        + " AND (o.message_keys = '{}' OR o.insert_seq IN (SELECT first_seq FROM heads))"
        + " AND NOT EXISTS (SELECT 1 FROM heads AS h"
        + " WHERE h.k = ANY (o.message_keys) AND h.first_seq < o.insert_seq)";
    // octet_length of a bytea reads the TOAST header, not the value.
    return "WITH " + heads + "candidates AS (SELECT o.batch_id, o.insert_seq, o.message_count,"
        + " octet_length(o.raw_data) AS bytes FROM "
        + t + " AS o"
        + " WHERE o.next_attempt_at <= now()"
        + " AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= now())" + orderedOnly
        + " ORDER BY o.insert_seq LIMIT $1 FOR UPDATE SKIP LOCKED),"
        + " sized AS (SELECT batch_id, sum(message_count) OVER (ORDER BY insert_seq) AS running,"
        + " sum(bytes) OVER (ORDER BY insert_seq) AS running_bytes,"
        + " row_number() OVER (ORDER BY insert_seq) AS position FROM candidates)"
        + " UPDATE " + t + " AS o SET in_flight = TRUE, lease_owner = $2, lease_token = $3,"
        + " lease_expires_at = now() + $4 * INTERVAL '1 millisecond'"
        + " FROM sized WHERE o.batch_id = sized.batch_id"
        + " AND ((sized.running <= $5 AND sized.running_bytes <= $7)"
        + " OR (sized.position = 1 AND $6))"
        + " RETURNING o.batch_id, o.insert_seq, o.message_count, o.write_retries, "
        + rawDataAsText("o.") + ", " + times("o.");
  }

  /**
   * SQL: the full (64-bit) transaction id of the 32-bit {@code xid32} that lies nearest {@code
   * xmax} (a full id, a snapshot's xmax), within 2^31 either way, as PostgreSQL itself widens
   * 32-bit ids. Not simply xmax's epoch: a transaction still committing is at or past xmax, and
   * taking it for the previous epoch made it look long visible (review finding). At least 2
   * (frozen), so that an id from before the first epoch still reads as visible.
   */
  public static String widenedXid(String xid32, String xmax) {
    return "greatest(" + xmax + " + (((" + xid32 + " - (" + xmax + " & 4294967295) + 2147483648)"
        + " % 4294967296 + 4294967296) % 4294967296) - 2147483648, 2)";
  }

  /**
   * The two timestamps of a claimed row as microseconds since the epoch: r2dbc parses timestamp
   * text with a general formatter, several microseconds per value (async-profiler), per row.
   */
  private static String times(String alias) {
    return "(date_part('epoch', " + alias + "insert_time) * 1e6)::int8 AS insert_micros,"
        + " (date_part('epoch', " + alias + "lease_expires_at) * 1e6)::int8 AS lease_micros";
  }

  private static @Nullable Instant micros(@Nullable Long epochMicros) {
    return epochMicros == null ? null : Instant.EPOCH.plus(epochMicros, java.time.temporal.ChronoUnit.MICROS);
  }

  /**
   * A store over {@code table}, taking connections from {@code connections} (a pool), with the
   * default statement timeout ({@link Sql#DEFAULT_STATEMENT_TIMEOUT}, 30 s).
   */
  public static RelayStore create(ConnectionFactory connections, OutboxTable table) {
    return create(connections, table, Sql.DEFAULT_STATEMENT_TIMEOUT);
  }

  /**
   * A store over {@code table}, taking connections from {@code connections} (a pool). Every
   * statement must complete within {@code statementTimeout} (from execution to its last row);
   * otherwise it fails with {@link io.r2dbc.spi.R2dbcTimeoutException} and its connection is
   * closed instead of being returned to the pool for reuse (see {@link Sql}). The same holds
   * when a statement is cancelled before the server answered anything.
   *
   * @throws IllegalArgumentException when {@code statementTimeout} is not positive
   */
  public static RelayStore create(ConnectionFactory connections, OutboxTable table,
      Duration statementTimeout) {
    return new RelayStore(Objects.requireNonNull(connections, "connections"),
        Objects.requireNonNull(table, "table"), Sql.requirePositive(statementTimeout));
  }

  public OutboxTable table() {
    return table;
  }

  /** How long each statement may take before it fails and its connection is given up. */
  public Duration statementTimeout() {
    return statementTimeout;
  }

  /**
   * Claims up to {@code limit} due batches (not leased, or with an expired lease, and past
   * {@code next_attempt_at}) in insert order, skipping rows another relay has locked. All
   * batches of one claim share one new lease token. Emitted in insert order.
   */
  public Flux<ClaimedBatch> claim(int limit, Duration lease, String owner) {
    return Flux.defer(() -> claim(ClaimRequest.of(limit, lease, owner)));
  }

  /** Claims as {@link ClaimRequest} describes; see {@link #claim(int, Duration, String)}. */
  public Flux<ClaimedBatch> claim(ClaimRequest request) {
    return Flux.defer(() -> {
      UUID token = Entropy.randomUuid();
      return query(request.ordered() ? orderedClaimSql : claimSql,
          s -> s.bind(0, request.maxBatches()).bind(1, request.owner()).bind(2, token)
              .bind(3, request.lease().toMillis()).bind(4, (long) request.maxMessages())
              .bind(5, request.admitOversizedFirst()).bind(6, request.maxBytes()),
          row -> claimed(row, token))
          // RETURNING does not keep the ORDER BY of the CTE.
          .collectSortedList(Comparator.comparingLong(ClaimedBatch::insertSeq))
          .flatMapIterable(batches -> batches);
    });
  }

  /** A row's id and insert position. */
  public record RowPosition(String batchId, long insertSeq) {}

  /**
   * Up to {@code limit} rows after insert position {@code afterSeq}, in insert order, whose
   * writing transaction has ended and every older one too (below the commit watermark): a
   * committed row of a younger transaction than one still open elsewhere is left out. No lock,
   * no lease.
   */
  public Flux<RowPosition> committedAfter(long afterSeq, int limit) {
    return query(committedSql, s -> s.bind(0, afterSeq).bind(1, limit),
        row -> new RowPosition(row.get("batch_id", String.class), row.get("insert_seq", Long.class)));
  }

  /**
   * Claims one batch by id, whatever its {@code next_attempt_at}, unless another relay holds an
   * unexpired lease on it; empty when it is gone (already published) or leased.
   */
  public Mono<ClaimedBatch> claimById(String batchId, Duration lease, String owner) {
    return Mono.defer(() -> {
      UUID token = Entropy.randomUuid();
      return query(claimByIdSql,
          s -> s.bind(0, batchId).bind(1, owner).bind(2, token).bind(3, lease.toMillis()),
          row -> claimed(row, token))
          .next();
    });
  }

  /**
   * One row asked for by {@link #claimByIds}: claimed ({@code claim} set), or covered by another
   * holder's unexpired lease ({@code claim} null). {@code keys}: the row's message keys.
   */
  public record IdClaim(String batchId, @Nullable ClaimedBatch claim, List<String> keys) {}

  /**
   * Claims many batches by id in one statement, as {@link #claimById} does one (whatever their
   * {@code next_attempt_at}), all under one new lease token. Emits one answer per row still in
   * the table, in no particular order; ids of rows that are gone are left out.
   */
  public Flux<IdClaim> claimByIds(List<String> batchIds, Duration lease, String owner) {
    return claimCommittedByIds(batchIds, List.of(), lease, owner)
        .flatMapIterable(IdClaims::answers);
  }

  /**
   * What {@link #claimCommittedByIds} answered: {@code committedVisible} false when one of the
   * transactions was not visible yet, and then nothing was claimed ({@code answers} empty).
   */
  public record IdClaims(boolean committedVisible, List<IdClaim> answers) {}

  /**
   * {@link #claimByIds}, but only once every transaction in {@code committedXids} (32-bit ids of
   * transactions the log reported committed) is visible to the statement's snapshot; until
   * then nothing is claimed. A row of such a transaction that is missing once it is visible is
   * gone, not merely unseen.
   */
  public Mono<IdClaims> claimCommittedByIds(List<String> batchIds, List<Long> committedXids,
      Duration lease, String owner) {
    if (batchIds.isEmpty()) {
      return Mono.just(new IdClaims(true, List.of()));
    }
    return Mono.defer(() -> {
      UUID token = Entropy.randomUuid();
      String[] ids = batchIds.toArray(String[]::new);
      Long[] xids = committedXids.toArray(Long[]::new);
      return query(claimByIdsSql,
          s -> s.bind(0, ids).bind(1, owner).bind(2, token).bind(3, lease.toMillis()).bind(4, xids),
          row -> {
            if (row.get("claimed", Boolean.class) == null) {
              return Optional.<IdClaim>empty(); // a transaction named is not visible yet
            }
            String[] keys = row.get("message_keys", String[].class);
            boolean claimed = Boolean.TRUE.equals(row.get("claimed", Boolean.class));
            return Optional.of(new IdClaim(Objects.requireNonNull(row.get("batch_id", String.class), "batch_id"),
                claimed ? claimed(row, token) : null, keys == null ? List.of() : List.of(keys)));
          })
          .collectList()
          .map(rows -> rows.stream().anyMatch(Optional::isEmpty)
              ? new IdClaims(false, List.of())
              : new IdClaims(true, rows.stream().map(Optional::orElseThrow).toList()));
    });
  }

  /**
   * Which of {@code batchIds} are still in the table, once every transaction in {@code
   * committedXids} (as for {@link #claimCommittedByIds}) is visible to the statement's snapshot;
   * empty while one is not. Reads only: no lock, no lease.
   */
  public Mono<Optional<Set<String>>> presentCommittedByIds(List<String> batchIds,
      List<Long> committedXids) {
    if (batchIds.isEmpty()) {
      return Mono.just(Optional.of(Set.of()));
    }
    String[] ids = batchIds.toArray(String[]::new);
    Long[] xids = committedXids.toArray(Long[]::new);
    return query(absentByIdsSql, s -> s.bind(0, ids).bind(1, xids),
        row -> Boolean.TRUE.equals(row.get("visible", Boolean.class))
            ? Objects.requireNonNull(row.get("batch_id", String.class), "batch_id").strip() : "")
        .collectList()
        .map(absent -> {
          if (absent.contains("")) {
            return Optional.<Set<String>>empty();
          }
          Set<String> present = new HashSet<>(batchIds);
          absent.forEach(present::remove);
          return Optional.of(present);
        });
  }

  /** Deletes a published batch; {@code false} when the lease was lost (row left alone). */
  public Mono<Boolean> delete(ClaimedBatch batch) {
    return update(deleteSql, s -> s.bind(0, batch.batchId()).bind(1, batch.leaseToken()));
  }

  /**
   * Deletes many published batches in one statement, each fenced by its own lease token as in
   * {@link #delete}. Emits the ids that were <em>not</em> deleted (their lease was lost, or the
   * row is gone), usually none: the database sends back one row per miss, not per batch. Batches
   * of one token are found by {@link ClaimedBatch#insertSeq}, which must be the row's own: a row
   * whose id does not go with the {@code insert_seq} named stays, and its id is emitted.
   */
  public Flux<String> deleteAll(List<ClaimedBatch> batches) {
    if (batches.isEmpty()) {
      return Flux.empty();
    }
    UUID token = batches.get(0).leaseToken();
    boolean oneToken = batches.stream().allMatch(b -> b.leaseToken().equals(token));
    Function<Readable, String> missed =
        row -> Objects.requireNonNull(row.get("batch_id", String.class), "batch_id").strip();
    if (oneToken) {
      // Ascending insert_seq, as width_bucket's binary search needs; ids in the same order.
      ClaimedBatch[] sorted = batches.stream()
          .sorted(Comparator.comparingLong(ClaimedBatch::insertSeq))
          .toArray(ClaimedBatch[]::new);
      Long[] seqs = new Long[sorted.length];
      String[] sortedIds = new String[sorted.length];
      for (int i = 0; i < sorted.length; i++) {
        seqs[i] = sorted[i].insertSeq();
        sortedIds[i] = sorted[i].batchId().stripTrailing(); // as batch_id::text reads it
      }
      return query(deleteAllSql, s -> s.bind(0, seqs).bind(1, sortedIds).bind(2, token), missed);
    }
    String[] ids = batches.stream().map(ClaimedBatch::batchId).toArray(String[]::new);
    UUID[] tokens = batches.stream().map(ClaimedBatch::leaseToken).toArray(UUID[]::new);
    return query(deleteAllPairsSql, s -> s.bind(0, ids).bind(1, tokens), missed);
  }

  /**
   * Extends the leases of batches still held to {@code lease} from now, in one statement, each
   * fenced by its own lease token. Emits the ids renewed; a missing id means that lease was lost.
   */
  public Flux<String> renewLeases(List<ClaimedBatch> batches, Duration lease) {
    if (batches.isEmpty()) {
      return Flux.empty();
    }
    String[] ids = batches.stream().map(ClaimedBatch::batchId).toArray(String[]::new);
    UUID[] tokens = batches.stream().map(ClaimedBatch::leaseToken).toArray(UUID[]::new);
    return query(renewSql, s -> s.bind(0, ids).bind(1, tokens).bind(2, lease.toMillis()),
        row -> row.get("batch_id", String.class));
  }

  /**
   * Gives a claim back after a failed attempt: {@code write_retries + 1}, the error text
   * (truncated to 255 characters) in {@code last_write_error}, and no new claim before {@code
   * delay} has passed. {@code false} when the lease was lost.
   */
  public Mono<Boolean> retryLater(ClaimedBatch batch, String error, Duration delay) {
    return retryLater(batch, error, delay, true);
  }

  /**
   * As above; {@code attempted} false for a batch that was held back, not tried (an earlier
   * batch sent with it failed): its {@code write_retries} stays.
   */
  public Mono<Boolean> retryLater(ClaimedBatch batch, String error, Duration delay, boolean attempted) {
    return update(retrySql, s -> s.bind(0, batch.batchId()).bind(1, batch.leaseToken())
        .bind(2, error).bind(3, Math.max(0, delay.toMillis())).bind(4, attempted ? 1 : 0));
  }

  /** Gives a claim back untouched (it was not attempted), e.g. on shutdown. */
  public Mono<Boolean> release(ClaimedBatch batch) {
    return update(releaseSql, s -> s.bind(0, batch.batchId()).bind(1, batch.leaseToken()));
  }

  /**
   * Gives back the batches listed, each fenced by its own lease token, in one statement (by
   * primary key: no scan of the table). Returns how many were released.
   */
  public Mono<Long> releaseAll(List<ClaimedBatch> batches) {
    if (batches.isEmpty()) {
      return Mono.just(0L);
    }
    String[] ids = batches.stream().map(ClaimedBatch::batchId).toArray(String[]::new);
    UUID[] tokens = batches.stream().map(ClaimedBatch::leaseToken).toArray(UUID[]::new);
    return rowsUpdated(releaseHeldSql, s -> s.bind(0, ids).bind(1, tokens));
  }

  /**
   * Moves a claimed batch to the dead-letter table with {@code reason}, in one statement.
   * {@code false} when the lease was lost.
   */
  public Mono<Boolean> deadLetter(ClaimedBatch batch, String reason) {
    return update(deadLetterSql, s -> s.bind(0, batch.batchId()).bind(1, batch.leaseToken())
        .bind(2, reason));
  }

  /**
   * Inserts a batch only the log holds ({@link #LOGGED_ONLY}: its writer deleted its row) into
   * the dead-letter table with {@code reason}, its {@code keys} and {@code failedAttempts};
   * {@code true} also when it is there already.
   */
  public Mono<Boolean> deadLetterLogged(ClaimedBatch batch, List<String> keys, int failedAttempts,
      String reason) {
    return rowsUpdated(deadLetterLoggedSql, s -> s.bind(0, batch.batchId())
            .bind(1, batch.messageCount()).bind(2, failedAttempts).bind(3, reason)
            .bind(4, batch.rawData())
            .bind(5, batch.insertTime().atOffset(java.time.ZoneOffset.UTC))
            .bind(6, keys.toArray(String[]::new)))
        .thenReturn(true);
  }

  /**
   * {@code raw_data} as base64 text: r2dbc-postgresql receives {@code bytea} as hex text and
   * decodes it through a regular expression, which cost about a quarter of the relay's CPU;
   * base64 is a third smaller on the wire and the JDK decodes it fast. (PostgreSQL breaks the
   * text into lines, which the MIME decoder skips.)
   */
  private static String rawDataAsText(String qualifier) {
    return "encode(" + qualifier + "raw_data, 'base64') AS raw_data_base64";
  }

  private static byte[] fromBase64(Readable row) {
    String text = Objects.requireNonNull(row.get("raw_data_base64", String.class), "raw_data");
    return Base64.getMimeDecoder().decode(text);
  }

  private static ClaimedBatch claimed(Readable row, UUID token) {
    return new ClaimedBatch(
        row.get("batch_id", String.class),
        row.get("insert_seq", Long.class),
        row.get("message_count", Integer.class),
        row.get("write_retries", Integer.class),
        fromBase64(row),
        micros(row.get("insert_micros", Long.class)),
        token,
        micros(row.get("lease_micros", Long.class)));
  }

  private Mono<Boolean> update(String sql, Function<Statement, Statement> binder) {
    return Sql.updated(connections, statementTimeout, sql, binder);
  }

  private Mono<Long> rowsUpdated(String sql, Function<Statement, Statement> binder) {
    return Sql.rowsUpdated(connections, statementTimeout, sql, binder);
  }

  private <T> Flux<T> query(String sql, Function<Statement, Statement> binder,
      Function<Readable, @Nullable T> mapper) {
    return Sql.query(connections, statementTimeout, sql, binder, mapper);
  }
}
