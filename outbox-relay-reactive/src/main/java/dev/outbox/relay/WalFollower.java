package dev.outbox.relay;

import dev.outbox.r2dbc.internal.ClaimedBatch;
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
import reactor.core.publisher.SynchronousSink;
import org.jspecify.annotations.Nullable;

/**
 * Follows committed INSERTs into one table through a logical replication slot (pgoutput in
 * binary mode + a publication restricted to that table, inserts only, and - PostgreSQL 15+ -
 * only the columns a relay publishes from, {@link #LOGGED_COLUMNS}): each insert arrives with
 * its row, so publishing it needs no read of the table. An insert decoded from WAL written
 * before the publication carried those columns (it carried {@code batch_id} only) arrives
 * without its row.
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
   * Creates the publication unless it exists (inserts only, only {@code columns}, PG 15+), puts
   * {@code table} back into it when it is missing (a table dropped and created again leaves the
   * publication, and nothing of the new table would reach the slot), and widens its column list
   * when it lacks one of {@code columns} (a publication of an earlier version carried {@code
   * batch_id} only). {@code beforeJoining} runs before the table is added. Emits whether the
   * table joined the publication in this call: rows committed before then never reach the slot.
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
        + " AS narrow";
    String columnList = " (" + String.join(", ", columns) + ")";
    return Mono.usingWhen(regular.create(),
        c -> Flux.from(c.createStatement(state).bind("$1", publication).bind("$2", table)
                .bind("$3", columns.toArray(String[]::new)).execute())
            .concatMap(r -> r.map(row -> new boolean[] {
                Boolean.TRUE.equals(row.get("publication", Boolean.class)),
                Boolean.TRUE.equals(row.get("member", Boolean.class)),
                Boolean.TRUE.equals(row.get("narrow", Boolean.class))}))
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
                      + " WITH (publish = 'insert')"
                  : "ALTER PUBLICATION " + publication + " ADD TABLE " + table + columnList;
              if (found[0]) {
                log.warn("Publication {} did not include {} (dropped and created again?): adding"
                    + " it; rows written meanwhile are published by the start-up sweep",
                    publication, table);
              }
              return beforeJoining.then(ddl(c, ddl)).thenReturn(true);
            }),
        Connection::close);
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
    ReplicationRequest request = ReplicationRequest.logical()
        .slotName(slot)
        .startPosition(LogSequenceNumber.valueOf(0)) // 0/0 = resume at the slot's confirmed_flush
        .slotOption("proto_version", "1")
        .slotOption("publication_names", publication)
        .slotOption("binary", "true")
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
                  .handle(decoder::assemble)
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

  private sealed interface Msg permits Begin, Commit, Relation, Insert, Other {}
  private record Begin(long finalLsn, int xid) implements Msg {}
  private record Commit(long commitLsn, long endLsn) implements Msg {}
  private record Relation(int relId, String namespace, String name, List<String> columns)
      implements Msg {}
  /** {@code row}: null when the relation does not carry {@link #LOGGED_COLUMNS}. */
  private record Insert(int relId, String batchId, @Nullable ClaimedBatch row, List<String> keys)
      implements Msg {}
  private record Other(char type) implements Msg {}

  /** Per-subscription state: relation cache and the transaction being assembled. */
  private final class Decoder {
    private final Map<Integer, Relation> relations = new HashMap<>();
    private @Nullable Begin begin;
    private final List<Insert> inserts = new ArrayList<>();

    Msg decode(ByteBuf buf) { // runs on the Netty event loop; buf is released after return
      decoded.incrementAndGet();
      char type = (char) buf.readByte();
      switch (type) {
        case 'B': {
          long finalLsn = buf.readLong();
          buf.skipBytes(8); // commit timestamp
          return new Begin(finalLsn, buf.readInt());
        }
        case 'C': {
          buf.skipBytes(1); // flags
          long commitLsn = buf.readLong();
          long endLsn = buf.readLong();
          return new Commit(commitLsn, endLsn);
        }
        case 'R': {
          int relId = buf.readInt();
          String ns = cstring(buf);
          String name = cstring(buf);
          buf.skipBytes(1); // replica identity
          int n = buf.readShort();
          List<String> cols = new ArrayList<>(n);
          for (int i = 0; i < n; i++) {
            buf.skipBytes(1); // flags
            cols.add(cstring(buf));
            buf.skipBytes(8); // type oid, typmod
          }
          Relation relation = new Relation(relId, ns, name, cols);
          relations.put(relId, relation); // decoded in order: the inserts after it use it
          return relation;
        }
        case 'I': {
          int relId = buf.readInt();
          buf.skipBytes(1); // 'N'
          Relation relation = relations.get(relId);
          if (relation == null || !relation.name().equals(table)) {
            return new Other(type); // another table (the publication has only ours)
          }
          return insert(relation, buf);
        }
        default:
          return new Other(type); // 'O' origin, 'Y' type, 'U', 'D', 'T', 'M'
      }
    }

    /**
     * The row of an insert: binary values (the stream asks for binary) of the columns the
     * relation message listed. Without all of {@link #LOGGED_COLUMNS} (a publication of an
     * earlier version) or in text form, only the id is taken: the relay reads the row itself.
     */
    private Insert insert(Relation relation, ByteBuf buf) {
      int n = buf.readShort();
      String batchId = null;
      long insertSeq = 0;
      int messageCount = 0;
      int writeRetries = 0;
      byte[] rawData = null;
      Instant insertTime = null;
      List<String> keys = null;
      int complete = 0;
      for (int i = 0; i < n; i++) {
        char kind = (char) buf.readByte();
        if (kind != 't' && kind != 'b') {
          continue; // 'n' null, 'u' unchanged TOAST: none of the columns taken is either
        }
        int len = buf.readInt();
        String column = i < relation.columns().size() ? relation.columns().get(i) : "";
        if (kind == 't') {
          String text = buf.readCharSequence(len, StandardCharsets.UTF_8).toString();
          if (column.equals("batch_id")) {
            batchId = text.strip();
          }
          continue;
        }
        int end = buf.readerIndex() + len;
        switch (column) {
          case "batch_id" -> batchId = buf.readCharSequence(len, StandardCharsets.UTF_8)
              .toString().strip(); // CHAR(n) is blank-padded
          case "insert_seq" -> { insertSeq = buf.readLong(); complete++; }
          case "message_count" -> { messageCount = buf.readInt(); complete++; }
          case "write_retries" -> { writeRetries = buf.readInt(); complete++; }
          case "raw_data" -> {
            rawData = new byte[len];
            buf.readBytes(rawData);
            complete++;
          }
          case "insert_time" -> {
            insertTime = Instant.EPOCH.plus(POSTGRES_EPOCH_MICROS + buf.readLong(), ChronoUnit.MICROS);
            complete++;
          }
          case "message_keys" -> { keys = textArray(buf); complete++; }
          default -> { }
        }
        buf.readerIndex(end);
      }
      if (batchId == null) {
        throw new IllegalStateException("batch_id not published for " + table);
      }
      if (complete < LOGGED_COLUMNS.size() - 1 || rawData == null || insertTime == null
          || keys == null) {
        return new Insert(relation.relId(), batchId, null, List.of());
      }
      ClaimedBatch row = new ClaimedBatch(batchId, insertSeq, messageCount, writeRetries, rawData,
          insertTime, RelayStore.UNLEASED, insertTime);
      return new Insert(relation.relId(), batchId, row, keys);
    }

    void assemble(Msg msg, SynchronousSink<List<WalInsert>> sink) {
      if (msg instanceof Begin b) {
        begin = b;
        inserts.clear();
        synchronized (pending) {
          inTransaction = true;
        }
      } else if (msg instanceof Insert i) {
        inserts.add(i);
      } else if (msg instanceof Commit c) {
        if (!inserts.isEmpty()) {
          LogSequenceNumber commitLsn = LogSequenceNumber.valueOf(c.commitLsn());
          LogSequenceNumber endLsn = LogSequenceNumber.valueOf(c.endLsn());
          long xid = begin == null ? 0 : Integer.toUnsignedLong(begin.xid());
          List<WalInsert> out = new ArrayList<>(inserts.size());
          for (Insert i : inserts) {
            out.add(new WalInsert(i.batchId(), xid, commitLsn, endLsn, i.row(), i.keys()));
          }
          synchronized (pending) {
            pending.put(c.endLsn(), new int[] {out.size()});
            inTransaction = false;
          }
          inserts.clear();
          sink.next(out);
        } else {
          synchronized (pending) {
            inTransaction = false;
          }
        }
        begin = null;
      }
    }
  }

  /** A {@code text[]} in binary form: dimensions, then each element's length and bytes. */
  private static List<String> textArray(ByteBuf buf) {
    int dimensions = buf.readInt();
    buf.skipBytes(8); // has-nulls flag, element type
    if (dimensions == 0) {
      return List.of();
    }
    int size = buf.readInt();
    buf.skipBytes(4); // lower bound
    for (int d = 1; d < dimensions; d++) {
      size *= buf.readInt();
      buf.skipBytes(4);
    }
    List<String> values = new ArrayList<>(size);
    for (int i = 0; i < size; i++) {
      int len = buf.readInt();
      values.add(len < 0 ? "" : buf.readCharSequence(len, StandardCharsets.UTF_8).toString());
    }
    return List.copyOf(values);
  }

  private static String cstring(ByteBuf buf) {
    int end = buf.indexOf(buf.readerIndex(), buf.writerIndex(), (byte) 0);
    String s = buf.readCharSequence(end - buf.readerIndex(), StandardCharsets.UTF_8).toString();
    buf.skipBytes(1);
    return s;
  }
}
