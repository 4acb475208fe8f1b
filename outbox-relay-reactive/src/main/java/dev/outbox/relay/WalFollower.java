package dev.outbox.relay;

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
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicReference;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.publisher.SynchronousSink;
import org.jspecify.annotations.Nullable;

/**
 * Follows committed INSERTs into one table through a logical replication slot (pgoutput + a
 * publication restricted to that table, inserts only, and - PostgreSQL 15+ - only the batch_id
 * column, so raw_data never crosses the wire).
 *
 * <p>Inserts are emitted in commit order, grouped per transaction (emitted when the COMMIT arrives).
 * The slot's confirmed_flush_lsn only advances through {@link #acknowledge}: it moves to the end
 * LSN of the newest transaction whose batches - and those of every earlier transaction - have all
 * been acknowledged. Unacknowledged transactions are re-delivered after a restart.
 */
final class WalFollower {
  private static final Logger log = LoggerFactory.getLogger(WalFollower.class);

  /** One inserted row. {@code endLsn} is the position to confirm (end of the commit record). */
  record WalInsert(String batchId, long xid, LogSequenceNumber commitLsn,
      LogSequenceNumber endLsn) {}

  private final PostgresqlConnectionFactory factory;
  private final String slot;
  private final String publication;
  private final String table; // unqualified relation name as in pg_class
  private final String column;
  private final Duration statusInterval;

  private final AtomicReference<@Nullable ReplicationStream> stream = new AtomicReference<>();
  /** endLsn -> batches of that transaction not yet acknowledged (0 = done, waiting for older). */
  private final TreeMap<Long, int[]> pending = new TreeMap<>();
  private long confirmed;

  WalFollower(PostgresqlConnectionFactory factory, String slot, String publication,
      String table, String column, Duration statusInterval) {
    this.factory = factory;
    this.slot = slot;
    this.publication = publication;
    this.table = table;
    this.column = column;
    this.statusInterval = statusInterval;
  }

  // ---------------------------------------------------------------- setup

  /** Creates the logical slot unless it exists. Waits for running write transactions to end. */
  static Mono<Void> ensureSlot(ConnectionFactory regular, String slot, String plugin) {
    return Mono.usingWhen(regular.create(),
        c -> Flux.from(c.createStatement(
                "SELECT pg_create_logical_replication_slot($1, $2) "
                    + "WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)")
                .bind("$1", slot).bind("$2", plugin).execute())
            .flatMap(r -> r.getRowsUpdated())
            .then()
            .onErrorResume(e -> e instanceof R2dbcException r && "42710".equals(r.getSqlState()),
                e -> Mono.empty()), // created concurrently by another instance
        Connection::close);
  }

  /**
   * Creates the publication unless it exists (inserts only, only {@code column}, PG 15+), and
   * puts {@code table} back into it when it is missing: a table dropped and created again leaves
   * the publication, and nothing of the new table would reach the slot.
   */
  static Mono<Void> ensurePublication(ConnectionFactory regular, String publication,
      String table, String column) {
    String state = "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1) AS publication,"
        + " EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid"
        + " WHERE p.pubname = $1 AND r.prrelid = to_regclass($2)) AS member";
    return Mono.usingWhen(regular.create(),
        c -> Flux.from(c.createStatement(state).bind("$1", publication).bind("$2", table).execute())
            .concatMap(r -> r.map(row -> new boolean[] {
                Boolean.TRUE.equals(row.get("publication", Boolean.class)),
                Boolean.TRUE.equals(row.get("member", Boolean.class))}))
            .next()
            .flatMap(found -> {
              if (found[0] && found[1]) {
                return Mono.empty();
              }
              String ddl = !found[0]
                  ? "CREATE PUBLICATION " + publication + " FOR TABLE " + table + " (" + column
                      + ") WITH (publish = 'insert')"
                  : "ALTER PUBLICATION " + publication + " ADD TABLE " + table + " (" + column + ")";
              if (found[0]) {
                log.warn("Publication {} did not include {} (dropped and created again?): adding"
                    + " it; rows written meanwhile are published by the start-up sweep",
                    publication, table);
              }
              return Flux.from(c.createStatement(ddl).execute()).flatMap(r -> r.getRowsUpdated())
                  .then()
                  // 42710: created or added concurrently by another relay
                  .onErrorResume(e -> e instanceof R2dbcException r
                      && "42710".equals(r.getSqlState()), e -> Mono.empty());
            }),
        Connection::close);
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
              }
              stream.set(s);
              Decoder decoder = new Decoder();
              return s.map(decoder::decode)
                  .handle(decoder::assemble)
                  .concatMapIterable(list -> list)
                  .doFinally(signal -> stream.compareAndSet(s, null));
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
      } else {
        advanceTo = 0;
      }
    }
    ReplicationStream s = stream.get();
    if (advanceTo != 0 && s != null) {
      LogSequenceNumber lsn = LogSequenceNumber.valueOf(advanceTo);
      s.setFlushedLSN(lsn);
      s.setAppliedLSN(lsn);
    }
  }

  // ---------------------------------------------------------------- pgoutput decoding

  private sealed interface Msg permits Begin, Commit, Relation, Insert, Other {}
  private record Begin(long finalLsn, int xid) implements Msg {}
  private record Commit(long commitLsn, long endLsn) implements Msg {}
  private record Relation(int relId, String namespace, String name, List<String> columns)
      implements Msg {}
  private record Insert(int relId, List<String> values) implements Msg {}
  private record Other(char type) implements Msg {}

  /** Per-subscription state: relation cache and the transaction being assembled. */
  private final class Decoder {
    private final Map<Integer, Relation> relations = new HashMap<>();
    private @Nullable Begin begin;
    private final List<String> batchIds = new ArrayList<>();

    Msg decode(ByteBuf buf) { // runs on the Netty event loop; buf is released after return
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
          return new Relation(relId, ns, name, cols);
        }
        case 'I': {
          int relId = buf.readInt();
          buf.skipBytes(1); // 'N'
          int n = buf.readShort();
          List<String> values = new ArrayList<>(n);
          for (int i = 0; i < n; i++) {
            char kind = (char) buf.readByte();
            if (kind == 't') {
              int len = buf.readInt();
              values.add(buf.readCharSequence(len, StandardCharsets.UTF_8).toString());
            } else {
              values.add(""); // 'n' null, 'u' unchanged toast: batch_id is never either
            }
          }
          return new Insert(relId, values);
        }
        default:
          return new Other(type); // 'O' origin, 'Y' type, 'U', 'D', 'T', 'M'
      }
    }

    void assemble(Msg msg, SynchronousSink<List<WalInsert>> sink) {
      if (msg instanceof Begin b) {
        begin = b;
        batchIds.clear();
      } else if (msg instanceof Relation r) {
        relations.put(r.relId(), r);
      } else if (msg instanceof Insert i) {
        Relation r = relations.get(i.relId());
        if (r == null) {
          sink.error(new IllegalStateException("Insert for unknown relation " + i.relId()));
          return;
        }
        if (r.name().equals(table)) {
          int idx = r.columns().indexOf(column);
          if (idx < 0) {
            sink.error(new IllegalStateException(column + " not published for " + table));
            return;
          }
          batchIds.add(i.values().get(idx).strip()); // CHAR(n) is blank-padded
        }
      } else if (msg instanceof Commit c) {
        if (!batchIds.isEmpty()) {
          LogSequenceNumber commitLsn = LogSequenceNumber.valueOf(c.commitLsn());
          LogSequenceNumber endLsn = LogSequenceNumber.valueOf(c.endLsn());
          List<WalInsert> out = new ArrayList<>(batchIds.size());
          for (String id : batchIds) {
            long xid = begin == null ? 0 : Integer.toUnsignedLong(begin.xid());
            out.add(new WalInsert(id, xid, commitLsn, endLsn));
          }
          synchronized (pending) {
            pending.put(c.endLsn(), new int[] {out.size()});
          }
          batchIds.clear();
          sink.next(out);
        }
        begin = null;
      }
    }
  }

  private static String cstring(ByteBuf buf) {
    int end = buf.indexOf(buf.readerIndex(), buf.writerIndex(), (byte) 0);
    String s = buf.readCharSequence(end - buf.readerIndex(), StandardCharsets.UTF_8).toString();
    buf.skipBytes(1);
    return s;
  }
}
