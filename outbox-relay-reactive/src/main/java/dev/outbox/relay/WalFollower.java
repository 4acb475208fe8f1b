package dev.outbox.relay;

import dev.outbox.r2dbc.internal.ClaimedBatch;
import dev.outbox.r2dbc.internal.LoggedBatch;
import dev.outbox.r2dbc.internal.RelayStore;
import dev.outbox.r2dbc.internal.Sql;
import io.netty.buffer.ByteBuf;
import io.r2dbc.postgresql.PostgresqlConnectionFactory;
import io.r2dbc.postgresql.api.PostgresqlReplicationConnection;
import io.r2dbc.postgresql.replication.LogSequenceNumber;
import io.r2dbc.postgresql.replication.ReplicationRequest;
import io.r2dbc.postgresql.replication.ReplicationStream;
import io.r2dbc.spi.Connection;
import io.r2dbc.spi.ConnectionFactory;
import io.r2dbc.spi.R2dbcException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.Disposable;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import org.jspecify.annotations.Nullable;

/**
 * Follows committed INSERTs into one table through a logical replication slot (pgoutput in
 * binary mode + a publication restricted to that table, inserts and deletes, and - PostgreSQL
 * 15+ - only the columns a relay publishes from, {@link #LOGGED_COLUMNS}): each insert arrives
 * with its row, so publishing it needs no read of the table. An insert decoded from WAL written
 * before the publication carried those columns (it carried {@code batch_id} only) arrives
 * without its row. A batch its writer logged as a message ({@code deleteOnceLogged}, {@link
 * LoggedBatch}; PostgreSQL 14+, pgoutput's {@code messages}) and an insert whose row the same
 * transaction deleted (writers of earlier versions) arrive as {@link RelayStore#LOGGED_ONLY}:
 * the log holds its only copy.
 *
 * <p>Inserts are emitted in commit order, grouped per transaction (emitted when the COMMIT arrives).
 * The slot's confirmed_flush_lsn advances through {@link #acknowledge}: to the end LSN of the
 * newest transaction whose batches - and those of every earlier transaction - have all been
 * acknowledged; and, while nothing delivered is unacknowledged, to the server's reported position
 * (see {@link #confirmIdle}). Unacknowledged transactions are re-delivered after a restart.
 */
final class WalFollower {
  private static final Logger log = LoggerFactory.getLogger(WalFollower.class);

  /** The columns the publication carries: what a relay needs to publish a row. */
  static final List<String> LOGGED_COLUMNS = List.of("batch_id", "insert_seq", "message_count",
      "write_retries", "raw_data", "insert_time", "message_keys");
  /** PostgreSQL's epoch (2000-01-01) in microseconds since the Unix epoch. */
  private static final long POSTGRES_EPOCH_MICROS = 946_684_800_000_000L;

  /**
   * One inserted row. {@code endLsn} is the position to confirm (end of the commit record).
   * {@code row}: the row as the log carries it, unleased ({@link RelayStore#UNLEASED}), with its
   * {@code keys}; null when the log carried only its id.
   */
  record WalInsert(String batchId, long xid, LogSequenceNumber commitLsn,
      LogSequenceNumber endLsn, @Nullable ClaimedBatch row, List<String> keys) {
    /** This insert without its row (what acknowledging it needs), not to hold raw_data twice. */
    WalInsert withoutRow() {
      return row == null ? this : new WalInsert(batchId, xid, commitLsn, endLsn, null, List.of());
    }
  }

  private final PostgresqlConnectionFactory factory;
  private final String slot;
  private final String publication;
  private final String table; // unqualified relation name as in pg_class
  /** The prefix of this slot's logical decoding messages ({@link LoggedBatch#prefix}). */
  private final String messagePrefix;
  private final Duration statusInterval;
  private final Runnable onStreaming;

  private final AtomicReference<@Nullable ReplicationStream> stream = new AtomicReference<>();
  private static final int SLOT_ADVANCE_TRIES = 10;
  private static final Duration SLOT_ADVANCE_WAIT = Duration.ofMillis(200);
  private final AtomicBoolean advancing = new AtomicBoolean();
  private final AtomicLong advancedAfterClose = new AtomicLong();
  /** endLsn -> batches of that transaction not yet acknowledged (0 = done, waiting for older). */
  private final TreeMap<Long, int[]> pending = new TreeMap<>();
  private long confirmed;
  /** Guarded by pending: the newest position {@link #acknowledge} confirmed on this stream. */
  private long acknowledgedUpTo;
  /** Guarded by pending: a transaction's BEGIN is decoded and its COMMIT is not yet. */
  private boolean inTransaction;
  /** Messages decoded so far (see {@link #confirmIdle}). */
  private final AtomicLong decoded = new AtomicLong();
  /** Guarded by pending: what the previous idle check saw (received position, messages decoded). */
  private long idleReceived;
  private long idleDecoded = -1;

  /**
   * @param onStreaming runs once streaming has started (the slot is this relay's)
   */
  WalFollower(PostgresqlConnectionFactory factory, String slot, String publication,
      String table, Duration statusInterval, Runnable onStreaming) {
    this.onStreaming = onStreaming;
    this.factory = factory;
    this.slot = slot;
    this.messagePrefix = LoggedBatch.prefix(slot);
    this.publication = publication;
    this.table = table;
    this.statusInterval = statusInterval;
  }

  // ---------------------------------------------------------------- setup

  /**
   * Creates the logical slot unless it exists (waits for running write transactions to end);
   * {@code beforeCreating} runs first when it is missing. Emits whether this call created it.
   */
  static Mono<Boolean> ensureSlot(ConnectionFactory regular, String slot, String plugin,
      Mono<Void> beforeCreating) {
    return Mono.usingWhen(regular.create(),
        c -> Flux.from(c.createStatement(
                "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1) AS found")
                .bind("$1", slot).execute())
            .concatMap(r -> r.map(row -> Boolean.TRUE.equals(row.get("found", Boolean.class))))
            .next()
            .flatMap(found -> found ? Mono.just(false) : beforeCreating.then(
                Flux.from(c.createStatement("SELECT pg_create_logical_replication_slot($1, $2)")
                        .bind("$1", slot).bind("$2", plugin).execute())
                    .flatMap(r -> r.getRowsUpdated())
                    .then(Mono.just(true))
                    .onErrorResume(e -> e instanceof R2dbcException r
                        && "42710".equals(r.getSqlState()), // created concurrently by another relay
                        e -> Mono.just(false)))),
        Connection::close);
  }

  /**
   * Creates the publication unless it exists (only {@code columns}, PG 15+), puts {@code table}
   * back into it when it is missing (a table dropped and created again leaves the publication,
   * and nothing of the new table would reach the slot), and widens its column list when it
   * lacks one of {@code columns} (a publication of an earlier version carried {@code batch_id}
   * only). {@code beforeJoining} runs before the table is added. Emits whether the table joined
   * the publication in this call: rows committed before then never reach the slot.
   *
   * <p>Then, if it can do so without touching anything else, has the publication carry deletes
   * too (they tell the relay which rows writers of earlier versions deleted once logged): only a
   * publication of this table alone, and only while the table's replica identity is its primary
   * key, {@code batch_id} (otherwise every DELETE from it could fail, or its deletes not name
   * the row). It publishes inserts and deletes when created so; a publication of an earlier
   * version (inserts only) is altered; a failed ALTER is logged. Last, it marks the publication
   * as read by a relay that reads logged batches ({@link #markReadsMessages}).
   */
  static Mono<Boolean> ensurePublication(ConnectionFactory regular, String publication,
      String table, List<String> columns, Mono<Void> beforeJoining) {
    String state = "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1) AS publication,"
        + " EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid"
        + " WHERE p.pubname = $1 AND r.prrelid = to_regclass($2)) AS member,"
        + " EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid,"
        + " unnest($3::text[]) AS wanted(name) WHERE p.pubname = $1 AND r.prrelid = to_regclass($2)"
        + " AND r.prattrs IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_attribute a"
        + " WHERE a.attrelid = r.prrelid AND a.attname = wanted.name AND a.attnum = ANY (r.prattrs)))"
        + " AS narrow,"
        + " EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass($2) AND relreplident = 'd')"
        + " AS keyed";
    String onlyInserts = "SELECT concat_ws(', ', 'insert', 'delete', CASE WHEN pubupdate THEN"
        + " 'update' END, CASE WHEN pubtruncate THEN 'truncate' END) AS publish FROM pg_publication p"
        + " WHERE pubname = $1 AND NOT pubdelete AND NOT puballtables AND (SELECT count(*)"
        + " FROM pg_publication_rel r WHERE r.prpubid = p.oid) = 1";
    String columnList = " (" + String.join(", ", columns) + ")";
    return Mono.usingWhen(regular.create(),
        c -> Flux.from(c.createStatement(state).bind("$1", publication).bind("$2", table)
                .bind("$3", columns.toArray(String[]::new)).execute())
            .concatMap(r -> r.map(row -> new boolean[] {
                Boolean.TRUE.equals(row.get("publication", Boolean.class)),
                Boolean.TRUE.equals(row.get("member", Boolean.class)),
                Boolean.TRUE.equals(row.get("narrow", Boolean.class)),
                Boolean.TRUE.equals(row.get("keyed", Boolean.class))}))
            .next()
            .flatMap(found -> {
              if (found[0] && found[1] && !found[2]) {
                return Mono.just(false);
              }
              if (found[2]) {
                log.info("Publication {} carried only some columns of {}: publishing {} from now"
                    + " on", publication, table, columns);
                // One implicit transaction (a simple query of two statements): no insert falls
                // between them; and other tables of a shared publication stay in it.
                return ddl(c, "ALTER PUBLICATION " + publication + " DROP TABLE " + table
                    + "; ALTER PUBLICATION " + publication + " ADD TABLE " + table + columnList)
                    .thenReturn(false);
              }
              String ddl = !found[0]
                  ? "CREATE PUBLICATION " + publication + " FOR TABLE " + table + columnList
                      + " WITH (publish = '" + (found[3] ? "insert, delete" : "insert") + "')"
                  : "ALTER PUBLICATION " + publication + " ADD TABLE " + table + columnList;
              if (found[0]) {
                log.warn("Publication {} did not include {} (dropped and created again?): adding"
                    + " it; rows written meanwhile are published by the start-up sweep",
                    publication, table);
              }
              return beforeJoining.then(ddl(c, ddl)).thenReturn(true);
            })
            .flatMap(joined -> Flux.from(c.createStatement(onlyInserts).bind("$1", publication)
                    .execute())
                .concatMap(r -> r.map(row -> String.valueOf(row.get("publish", String.class))))
                .next()
                .filterWhen(publish -> keyed(c, table))
                .flatMap(publish -> {
                  log.info("Publication {} did not publish deletes: publishing {} from now on",
                      publication, publish);
                  return ddl(c, "ALTER PUBLICATION " + publication + " SET (publish = '"
                      + publish + "')")
                      .onErrorResume(error -> {
                        log.warn("Publication {} could not be altered to publish deletes;"
                            + " rows written by writers of earlier versions with"
                            + " deleteOnceLogged stay in the table: {}",
                            publication, error.toString());
                        return Mono.empty();
                      });
                })
                .then(markReadsMessages(c, publication))
                .thenReturn(joined)),
        Connection::close);
  }

  /**
   * Comments the publication with {@link LoggedBatch#READER_MARK} (PostgreSQL 14+, and only
   * when it has no comment of someone else's): writers with {@code deleteOnceLogged} log their
   * batches as messages only once a relay that reads them has set it.
   */
  private static Mono<Void> markReadsMessages(Connection c, String publication) {
    return Flux.from(c.createStatement("SELECT obj_description(oid, 'pg_publication') AS note,"
            + " current_setting('server_version_num')::int >= 140000 AS messages"
            + " FROM pg_publication WHERE pubname = $1").bind("$1", publication).execute())
        .concatMap(r -> r.map(row -> new Object[] {row.get("note", String.class),
            Boolean.TRUE.equals(row.get("messages", Boolean.class))}))
        .next()
        .flatMap(found -> {
          String note = (String) found[0];
          if (!(Boolean) found[1] || LoggedBatch.READER_MARK.equals(note)) {
            return Mono.empty();
          }
          if (note != null) {
            log.warn("Publication {} has a comment of its own; writers with deleteOnceLogged"
                + " keep inserting rows (they log batches only under the relay's mark)",
                publication);
            return Mono.empty();
          }
          return ddl(c, "COMMENT ON PUBLICATION " + publication + " IS '"
                  + LoggedBatch.READER_MARK + "'")
              .onErrorResume(error -> {
                log.warn("Publication {} could not be marked as read by this relay; writers"
                    + " with deleteOnceLogged keep inserting rows: {}", publication,
                    error.toString());
                return Mono.empty();
              });
        });
  }

  /** Whether {@code table}'s replica identity is its primary key (the default). */
  private static Mono<Boolean> keyed(Connection c, String table) {
    return Flux.from(c.createStatement("SELECT EXISTS (SELECT 1 FROM pg_class WHERE oid ="
            + " to_regclass($1) AND relreplident = 'd') AS keyed").bind("$1", table)
            .execute())
        .concatMap(r -> r.map(row -> Boolean.TRUE.equals(row.get("keyed", Boolean.class))))
        .next()
        .defaultIfEmpty(false);
  }

  /** Runs {@code ddl}; 42710 (created or added concurrently by another relay) counts as done. */
  private static Mono<Void> ddl(Connection c, String ddl) {
    return Flux.from(c.createStatement(ddl).execute()).flatMap(r -> r.getRowsUpdated())
        .then()
        .onErrorResume(e -> e instanceof R2dbcException r && "42710".equals(r.getSqlState()),
            e -> Mono.empty());
  }

  /** Whether this follower streams from the slot now. */
  boolean streaming() {
    return stream.get() != null;
  }

  /** The server's current WAL insert position. */
  static Mono<LogSequenceNumber> currentInsertLsn(ConnectionFactory regular) {
    return Sql.query(regular, "SELECT pg_current_wal_insert_lsn()::text AS lsn", st -> st,
            row -> LogSequenceNumber.valueOf(
                java.util.Objects.requireNonNull(row.get("lsn", String.class), "lsn")))
        .next();
  }

  // ---------------------------------------------------------------- following

  /**
   * Streams committed inserts, starting after the slot's confirmed_flush_lsn. Cancelling closes
   * the replication stream and connection. Only one subscription at a time (the slot is exclusive).
   */
  Flux<WalInsert> follow() {
    // messages: batches a writer logged only (LoggedBatch); pgoutput has the option from
    // PostgreSQL 14, and WAL mode needs 15+ (publication column lists) anyway.
    ReplicationRequest request = ReplicationRequest.logical()
        .slotName(slot)
        .startPosition(LogSequenceNumber.valueOf(0)) // 0/0 = resume at the slot's confirmed_flush
        .slotOption("proto_version", "1")
        .slotOption("publication_names", publication)
        .slotOption("binary", "true")
        .slotOption("messages", "true")
        .statusInterval(statusInterval)
        .build();
    // Never call ReplicationStream#close() here: in 1.1.3 it re-subscribes the driver's internal
    // share()d flux, whose source (a windowUntil window) accepts one subscriber only, so close()
    // fails (NPE in FluxPublish, onErrorDropped) and its Mono never completes. Ending the
    // replication connection (Terminate) ends the walsender and releases the slot instead.
    return Flux.usingWhen(factory.replication(),
        (PostgresqlReplicationConnection conn) -> conn.startReplication(request)
            .flatMapMany(s -> {
              synchronized (pending) {
                pending.clear();
                confirmed = 0;
                acknowledgedUpTo = 0;
                inTransaction = false;
                idleReceived = 0;
                idleDecoded = -1;
              }
              stream.set(s);
              onStreaming.run();
              Decoder decoder = new Decoder();
              Disposable idleChecks = Flux.interval(statusInterval)
                  .subscribe(tick -> confirmIdle(s));
              return s.map(decoder::decode)
                  .concatMapIterable(list -> list)
                  .doFinally(signal -> {
                    idleChecks.dispose();
                    // The last status update may not carry the newest position: send it now.
                    // Only after acknowledgements: a position confirmed while idle went out with
                    // the status updates, and advancing holds the slot a moment, which a
                    // successor's START_REPLICATION would meet as "slot is active" (review).
                    if (stream.compareAndSet(s, null) && acknowledgedUpTo() > 0) {
                      advanceClosedSlot(SLOT_ADVANCE_TRIES);
                    }
                  });
            }),
        PostgresqlReplicationConnection::close);
  }

  /**
   * Marks one delivered insert as done. The slot advances past a transaction once all its inserts,
   * and all those of earlier transactions, are acknowledged. The position reaches the server with
   * the next status update (every statusInterval, or when the server asks for a reply).
   */
  void acknowledge(WalInsert insert) {
    long advanceTo = 0;
    ReplicationStream s;
    synchronized (pending) {
      int[] left = pending.get(insert.endLsn().asLong());
      if (left == null || left[0] == 0) {
        return; // already confirmed, or a duplicate acknowledgement
      }
      left[0]--;
      while (!pending.isEmpty() && pending.firstEntry().getValue()[0] == 0) {
        advanceTo = pending.pollFirstEntry().getKey();
      }
      if (advanceTo > confirmed) {
        confirmed = advanceTo;
        acknowledgedUpTo = advanceTo;
      } else {
        advanceTo = 0;
      }
      s = stream.get();
      // Inside the lock: with confirmIdle, the position reported never goes down.
      if (advanceTo != 0 && s != null) {
        LogSequenceNumber lsn = LogSequenceNumber.valueOf(advanceTo);
        s.setFlushedLSN(lsn);
        s.setAppliedLSN(lsn);
      }
    }
    if (advanceTo != 0 && s == null) {
      advanceClosedSlot(SLOT_ADVANCE_TRIES);
    }
  }

  /**
   * While nothing of this table is in flight, confirms the position the server reported at the
   * previous check (its keepalive's end of WAL: past WAL of other tables, checkpoints):
   * otherwise an idle relay holds the slot at its last commit, so the server keeps all later
   * WAL (seen: 1 MB of another table's WAL stayed as lag behind an idle relay until the next
   * outbox row). Only when both checks, one status interval apart, saw no transaction pending
   * or half-decoded, and no message was decoded in between: a message the driver had received
   * before that position was read was decoded by then (the driver queues messages only while
   * the relay asks for none, that is while something is pending), so the position lies past no
   * commit still owed, and a restart skips nothing.
   */
  private void confirmIdle(ReplicationStream s) {
    long received = s.getLastReceiveLSN().asLong(); // read before the state it goes with
    long seen = decoded.get();
    synchronized (pending) {
      if (stream.get() != s) {
        return; // a tick of a stream that ended: its position is not this stream's
      }
      boolean idle = pending.isEmpty() && !inTransaction;
      long candidate = idleReceived;
      if (idle && seen == idleDecoded && candidate > confirmed) {
        confirmed = candidate;
        LogSequenceNumber lsn = LogSequenceNumber.valueOf(candidate);
        s.setFlushedLSN(lsn);
        s.setAppliedLSN(lsn);
      }
      idleReceived = idle ? received : 0;
      idleDecoded = idle ? seen : -1;
    }
  }

  private long acknowledgedUpTo() {
    synchronized (pending) {
      return acknowledgedUpTo;
    }
  }

  /**
   * Batches settled after the stream closed (a stop: what was in flight drains after streaming
   * ends), and those settled since the last status update before it closed, would leave the
   * slot at that update, and the next start would replay them.
   * So the position is moved with {@code pg_replication_slot_advance} once the slot is free
   * (a few tries while the server still ends the walsender); never backwards, and not at all
   * once another relay streams from the slot (it replays them then; its read skips them).
   */
  private void advanceClosedSlot(int tries) {
    if (!advancing.compareAndSet(false, true)) {
      return;
    }
    Mono.delay(SLOT_ADVANCE_WAIT)
        .then(Mono.defer(() -> {
          long target;
          synchronized (pending) {
            target = confirmed;
          }
          if (target <= advancedAfterClose.get()) {
            return Mono.just(true);
          }
          return Sql.query(factory, "SELECT pg_replication_slot_advance($1, $2::pg_lsn) IS NOT NULL AS moved",
                  st -> st.bind(0, slot).bind(1, LogSequenceNumber.valueOf(target).asString()),
                  row -> Boolean.TRUE.equals(row.get("moved", Boolean.class)))
              .next()
              .doOnNext(moved -> advancedAfterClose.accumulateAndGet(target, Math::max));
        }))
        .onErrorResume(error -> {
          log.debug("Could not move slot {} to its last settled transaction yet: {}", slot,
              error.toString());
          return Mono.just(false);
        })
        .subscribe(done -> {
          advancing.set(false);
          long target;
          synchronized (pending) {
            target = confirmed;
          }
          if (target > advancedAfterClose.get() && (done || tries > 1)) {
            advanceClosedSlot(done ? tries : tries - 1);
          }
        });
  }

  // ---------------------------------------------------------------- pgoutput decoding

  /** What most messages decode to: nothing to emit. */
  private static final List<WalInsert> NOTHING = List.of();

  private record Relation(int relId, String namespace, String name, List<String> columns) {}

  /** An insert of the table before its COMMIT; {@code row} null when the log carried the id only. */
  private record Inserted(String batchId, @Nullable ClaimedBatch row, List<String> keys) {}

  /**
   * Per-subscription state: relation cache and the transaction being assembled. Each message
   * is read through one NIO view of its bytes: the Netty buffer's class varies from message to
   * message (pooled, sliced, composite), and each new one deoptimized the code compiled for the
   * others (JFR: class_check at every call on it, at every relay start).
   */
  private final class Decoder {
    private final Map<Integer, Relation> relations = new HashMap<>();
    private long xid;
    private final List<Inserted> inserts = new ArrayList<>();
    /**
     * Ids of rows the transaction being assembled inserted and then deleted (usually none); an
     * id inserted again after its delete leaves it (that row stays in the table).
     */
    private final java.util.Set<String> deleted = new java.util.HashSet<>();
    /** The transaction's inserted ids, listed once a delete arrives (null before). */
    private java.util.@Nullable Set<String> insertedIds;

    /**
     * Decodes one pgoutput message (on the Netty event loop; {@code buf} is released after
     * return): the transaction's inserts once its COMMIT arrives, nothing otherwise.
     */
    List<WalInsert> decode(ByteBuf buf) {
      decoded.incrementAndGet();
      ByteBuffer in = buf.nioBuffer();
      byte type = in.get();
      if (type == 'I') {
        insert(in);
        return NOTHING;
      }
      if (type == 'C') {
        return commit(in);
      }
      if (type == 'B') {
        in.getLong(); // final LSN
        in.getLong(); // commit timestamp
        xid = Integer.toUnsignedLong(in.getInt());
        inserts.clear();
        deleted.clear();
        insertedIds = null;
        synchronized (pending) {
          inTransaction = true;
        }
        return NOTHING;
      }
      if (type == 'D') {
        if (!inserts.isEmpty()) { // a relay's own DELETEs come in transactions of their own
          delete(in);
        }
        return NOTHING;
      }
      if (type == 'M') {
        message(in);
        return NOTHING;
      }
      if (type == 'R') {
        relation(in);
      }
      return NOTHING; // 'O' origin, 'Y' type, 'U', 'T'
    }

    /**
     * A logical decoding message: a batch its writer put into the log only ({@link LoggedBatch},
     * {@code deleteOnceLogged}) when the prefix is this slot's and the message transactional;
     * anything else (another slot's, another tool's) is not ours.
     */
    private void message(ByteBuffer in) {
      byte flags = in.get();
      in.getLong(); // the message's LSN
      String prefix = cstring(in);
      int length = in.getInt();
      if ((flags & 1) == 0 || !prefix.equals(messagePrefix)) {
        return;
      }
      LoggedBatch.Decoded batch;
      try {
        batch = LoggedBatch.decode(in, length);
      } catch (IllegalArgumentException e) {
        // Never skipped: the stream ends here and the slot is not confirmed past it, so the
        // batch comes again (for a relay that can read it) rather than being lost.
        throw new IllegalStateException("Outbox batch logged on slot " + slot + " in transaction "
            + xid + " cannot be read by this relay: " + e.getMessage(), e);
      }
      inserted(new Inserted(batch.row().batchId(), batch.row(), batch.keys()));
    }

    private void relation(ByteBuffer in) {
      int relId = in.getInt();
      String namespace = cstring(in);
      String name = cstring(in);
      in.get(); // replica identity
      int n = in.getShort();
      List<String> columns = new ArrayList<>(n);
      for (int i = 0; i < n; i++) {
        in.get(); // flags
        columns.add(cstring(in));
        in.position(in.position() + 8); // type oid, typmod
      }
      relations.put(relId, new Relation(relId, namespace, name, columns)); // the inserts after it use it
    }

    /**
     * The row of an insert: binary values (the stream asks for binary) of the columns the
     * relation message listed. Without all of {@link #LOGGED_COLUMNS} (a publication of an
     * earlier version) or in text form, only the id is taken: the relay reads the row itself.
     */
    private void insert(ByteBuffer in) {
      Relation relation = relations.get(in.getInt());
      in.get(); // 'N'
      if (relation == null || !relation.name().equals(table)) {
        return; // another table (the publication has only ours)
      }
      int n = in.getShort();
      String batchId = null;
      long insertSeq = 0;
      int messageCount = 0;
      int writeRetries = 0;
      byte[] rawData = null;
      Instant insertTime = null;
      List<String> keys = null;
      int complete = 0;
      for (int i = 0; i < n; i++) {
        byte kind = in.get();
        if (kind != 't' && kind != 'b') {
          continue; // 'n' null, 'u' unchanged TOAST: none of the columns taken is either
        }
        int len = in.getInt();
        int end = in.position() + len;
        String column = i < relation.columns().size() ? relation.columns().get(i) : "";
        if (kind == 't') {
          if (column.equals("batch_id")) {
            batchId = utf8(in, len).strip();
          }
          in.position(end);
          continue;
        }
        switch (column) {
          case "batch_id" -> batchId = utf8(in, len).strip(); // CHAR(n) is blank-padded
          case "insert_seq" -> { insertSeq = in.getLong(); complete++; }
          case "message_count" -> { messageCount = in.getInt(); complete++; }
          case "write_retries" -> { writeRetries = in.getInt(); complete++; }
          case "raw_data" -> {
            rawData = new byte[len];
            in.get(rawData);
            complete++;
          }
          case "insert_time" -> {
            insertTime = Instant.EPOCH.plus(POSTGRES_EPOCH_MICROS + in.getLong(), ChronoUnit.MICROS);
            complete++;
          }
          case "message_keys" -> { keys = textArray(in); complete++; }
          default -> { }
        }
        in.position(end);
      }
      if (batchId == null) {
        throw new IllegalStateException("batch_id not published for " + table);
      }
      if (complete < LOGGED_COLUMNS.size() - 1 || rawData == null || insertTime == null
          || keys == null) {
        inserted(new Inserted(batchId, null, List.of()));
        return;
      }
      ClaimedBatch row = new ClaimedBatch(batchId, insertSeq, messageCount, writeRetries, rawData,
          insertTime, RelayStore.UNLEASED, insertTime);
      inserted(new Inserted(batchId, row, keys));
    }

    private void inserted(Inserted row) {
      inserts.add(row);
      if (insertedIds != null) {
        insertedIds.add(row.batchId());
        deleted.remove(row.batchId()); // inserted again after its delete: in the table
      }
    }

    /**
     * A delete of the table's row in a transaction that inserted rows: the writer deleted its own
     * row once logged ({@code OutboxWriter.Builder#deleteOnceLogged}). The key (replica identity:
     * the primary key, {@code batch_id}) is all the message carries.
     */
    private void delete(ByteBuffer in) {
      Relation relation = relations.get(in.getInt());
      in.get(); // 'K' key or 'O' old row
      if (relation == null || !relation.name().equals(table)) {
        return;
      }
      int n = in.getShort();
      for (int i = 0; i < n; i++) {
        byte kind = in.get();
        if (kind != 't' && kind != 'b') {
          continue;
        }
        int len = in.getInt();
        int end = in.position() + len;
        if (i < relation.columns().size() && relation.columns().get(i).equals("batch_id")) {
          String id = utf8(in, len).strip();
          java.util.Set<String> ids = insertedIds;
          if (ids == null) {
            ids = new java.util.HashSet<>();
            for (Inserted inserted : inserts) {
              ids.add(inserted.batchId());
            }
            insertedIds = ids;
          }
          if (ids.contains(id)) { // a row of another transaction's is the relay's business
            deleted.add(id);
          }
          return;
        }
        in.position(end);
      }
    }

    private List<WalInsert> commit(ByteBuffer in) {
      in.get(); // flags
      long commitLsn = in.getLong();
      long endLsn = in.getLong();
      if (inserts.isEmpty()) {
        synchronized (pending) {
          inTransaction = false;
        }
        return NOTHING;
      }
      LogSequenceNumber commit = LogSequenceNumber.valueOf(commitLsn);
      LogSequenceNumber end = LogSequenceNumber.valueOf(endLsn);
      List<WalInsert> out = new ArrayList<>(inserts.size());
      for (Inserted i : inserts) {
        ClaimedBatch row = i.row();
        if (!deleted.isEmpty() && deleted.contains(i.batchId())) {
          if (row == null) { // cannot happen with this version's publication: say so if it does
            log.error("Outbox row {} of {} was deleted by its writer, and the log carries only its"
                + " id (publication {} lacks columns): it cannot be published", i.batchId(), table,
                publication);
          } else {
            row = new ClaimedBatch(row.batchId(), row.insertSeq(), row.messageCount(),
                row.writeRetries(), row.rawData(), row.insertTime(), RelayStore.LOGGED_ONLY,
                row.leaseExpiresAt());
          }
        }
        out.add(new WalInsert(i.batchId(), xid, commit, end, row, i.keys()));
      }
      inserts.clear();
      deleted.clear();
      insertedIds = null;
      synchronized (pending) {
        pending.put(endLsn, new int[] {out.size()});
        inTransaction = false;
      }
      return out;
    }
  }

  /** A {@code text[]} in binary form: dimensions, then each element's length and bytes. */
  private static List<String> textArray(ByteBuffer in) {
    int dimensions = in.getInt();
    in.position(in.position() + 8); // has-nulls flag, element type
    if (dimensions == 0) {
      return List.of();
    }
    int size = in.getInt();
    in.getInt(); // lower bound
    for (int d = 1; d < dimensions; d++) {
      size *= in.getInt();
      in.getInt();
    }
    List<String> values = new ArrayList<>(size);
    for (int i = 0; i < size; i++) {
      int len = in.getInt();
      values.add(len < 0 ? "" : utf8(in, len));
    }
    return List.copyOf(values);
  }

  private static String utf8(ByteBuffer in, int len) {
    byte[] bytes = new byte[len];
    in.get(bytes);
    return new String(bytes, StandardCharsets.UTF_8);
  }

  private static String cstring(ByteBuffer in) {
    int start = in.position();
    int end = start;
    while (in.get(end) != 0) {
      end++;
    }
    String value = utf8(in, end - start);
    in.get(); // the terminating zero
    return value;
  }
}
