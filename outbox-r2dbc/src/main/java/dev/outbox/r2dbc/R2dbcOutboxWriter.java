package dev.outbox.r2dbc;

import io.r2dbc.spi.Connection;
import io.r2dbc.spi.Statement;
import dev.outbox.r2dbc.internal.LoggedBatch;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.jspecify.annotations.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.util.context.ContextView;

/** {@link OutboxWriter} over an R2DBC connection found in the Reactor Context. */
final class R2dbcOutboxWriter implements OutboxWriter {
  private static final Logger log = LoggerFactory.getLogger(R2dbcOutboxWriter.class);

  private final Codec codec;
  private final @Nullable String notifyChannel;
  private final boolean rowPerKey;
  private final List<ConnectionResolver> resolvers;
  private final List<ContextHeaders> contextHeaders;
  private final String insertSql;
  private final @Nullable OnceLogged onceLogged;
  private final @Nullable String onceLoggedSql;
  private final String qualifiedName;

  R2dbcOutboxWriter(OutboxTable table, Codec codec, @Nullable String notifyChannel,
      boolean rowPerKey, @Nullable OnceLogged onceLogged,
      List<ConnectionResolver> resolvers, List<ContextHeaders> contextHeaders) {
    this.codec = codec;
    this.onceLogged = onceLogged;
    // Written to the log only while the slot is past its consistent point (confirmed_flush_lsn
    // is set then), still keeps its WAL (not lost or about to be), the publication carries the
    // table and bears the mark of a relay that reads messages (LoggedBatch.READER_MARK), and the
    // server's pgoutput can send messages (14+):
    // otherwise nothing would decode the message, and the batch goes into the table for the
    // relay's sweep instead. This transaction is open, so a slot still being created waits for
    // it and is not consistent yet.
    this.onceLoggedSql = onceLogged == null ? null : onceLoggedSql(table, notifyChannel != null);
    this.notifyChannel = notifyChannel;
    this.rowPerKey = rowPerKey;
    this.resolvers = resolvers;
    this.contextHeaders = contextHeaders;
    // The transaction id is taken before insert_seq is drawn (the CTE runs first), so no
    // transaction holds a sequence number from before its id: the PARTITIONED relay relies on
    // that to move its read position only past sequence numbers no open transaction can commit.
    String xid = "xid AS MATERIALIZED (SELECT pg_current_xact_id() AS writer_xid)";
    String insert = "INSERT INTO " + table.qualifiedName()
        + " (batch_id, message_count, raw_data, message_keys, writer_xid)"
        + " SELECT $1, $2, $3, $4, xid.writer_xid FROM xid";
    // One statement either way: the notification costs no extra round trip.
    this.qualifiedName = table.qualifiedName();
    this.insertSql = notifyChannel == null ? "WITH " + xid + " " + insert
        : "WITH " + xid + ", inserted AS (" + insert + " RETURNING batch_id)"
            + " SELECT pg_notify($5, batch_id) FROM inserted";
  }

  @Override
  public Mono<Void> write(@Nullable List<Message> given) {
    return Mono.deferContextual(context -> {
      checkBatch(given);
      List<Message> batch = withContextHeaders(given, context);
      List<List<Message>> rows = rowPerKey ? MessageKeys.rowPerKey(batch) : List.of(batch);
      // Encoded before anything is written: a codec error leaves the transaction untouched.
      List<byte[]> raw = rows.stream().map(codec::encode).toList();
      return connection(context).flatMap(connection -> {
        if (connection.isAutoCommit()) {
          return Mono.error(new NotInTransactionException());
        }
        return Flux.range(0, rows.size())
            .concatMap(i -> insert(connection, Ksuid.generate().toString(),
                rows.get(i).size(), raw.get(i), MessageKeys.of(rows.get(i))))
            .then();
      });
    });
  }

  private static void checkBatch(@Nullable List<Message> batch) {
    if (batch == null) {
      throw new InvalidMessageException("The batch must not be null");
    }
    if (batch.isEmpty()) {
      throw new InvalidMessageException("The batch is empty: write at least one message");
    }
    for (int i = 0; i < batch.size(); i++) {
      if (batch.get(i) == null) {
        throw new InvalidMessageException("Message " + i + " of the batch is null");
      }
    }
  }

  /** The batch with each {@link ContextHeaders}' headers added where they apply. */
  private List<Message> withContextHeaders(List<Message> batch, ContextView context) {
    List<Message> result = batch;
    for (ContextHeaders source : contextHeaders) {
      Map<String, String> added;
      try {
        added = source.headers(context);
      } catch (RuntimeException e) {
        // Headers are a courtesy (tracing): a failing source must not fail, and so roll back,
        // the business transaction. Invalid names it returns are still an error (below).
        log.warn("ContextHeaders {} failed; the batch is written without its headers", source, e);
        continue;
      }
      if (added == null || added.isEmpty()) {
        continue;
      }
      checkContextHeaders(source, added);
      List<Message> next = new ArrayList<>(result.size());
      for (Message message : result) {
        boolean ownsOne = false;
        for (String name : added.keySet()) {
          ownsOne |= message.headers().containsKey(name);
        }
        next.add(ownsOne ? message : message.withAddedHeaders(added));
      }
      result = next;
    }
    return result;
  }

  private static void checkContextHeaders(ContextHeaders source, Map<String, String> added) {
    // Map.copyOf and friends refuse nulls; a HashMap may hold them.
    for (Map.Entry<String, String> header : added.entrySet()) {
      String name = header.getKey();
      if (name == null || header.getValue() == null
          || name.equals(Message.MESSAGE_ID_HEADER) || name.equals(Message.CONTENT_TYPE_HEADER)) {
        throw new InvalidMessageException("ContextHeaders " + source + " returned an invalid"
            + " header " + name + "=" + header.getValue() + ": names and values must not be null,"
            + " and '" + Message.MESSAGE_ID_HEADER + "' and '" + Message.CONTENT_TYPE_HEADER
            + "' are reserved for the relay");
      }
    }
  }

  private Mono<Connection> connection(ContextView context) {
    return OutboxContext.boundConnection(context)
        .map(Mono::just)
        .orElseGet(() -> Flux.fromIterable(resolvers)
            .concatMap(resolver -> resolver.resolve(context))
            .next()
            .switchIfEmpty(Mono.error(MissingConnectionException::new)));
  }

  /** Where a WAL-mode relay finds the rows ({@link OutboxWriter.Builder#deleteOnceLogged}). */
  record OnceLogged(String slot, String publication) {}

  /**
   * One statement per row: a logical decoding message when the relay's slot is ready for it,
   * the row in the table otherwise (see the constructor). Parameters: the row's four as in
   * {@link #insertSql}, the slot, the publication, the table, the message prefix, its content,
   * and the notification channel when there is one.
   */
  private static String onceLoggedSql(OutboxTable table, boolean notify) {
    String ready = "SELECT EXISTS (SELECT 1 FROM pg_replication_slots"
        + " WHERE slot_name = $5 AND plugin = 'pgoutput' AND database = current_database()"
        + " AND confirmed_flush_lsn IS NOT NULL AND wal_status IN ('reserved', 'extended'))"
        + " AND EXISTS (SELECT 1 FROM pg_publication p"
        + " WHERE p.pubname = $6 AND p.pubinsert"
        + " AND obj_description(p.oid, 'pg_publication') = '" + LoggedBatch.READER_MARK + "'"
        + " AND (p.puballtables OR EXISTS"
        + " (SELECT 1 FROM pg_publication_rel r WHERE r.prpubid = p.oid"
        + " AND r.prrelid = to_regclass($7))))"
        + " AND current_setting('server_version_num')::int >= 140000 AS ok";
    return "WITH ready AS MATERIALIZED (" + ready + "),"
        + " xid AS MATERIALIZED (SELECT pg_current_xact_id() AS writer_xid),"
        + " logged AS (SELECT pg_logical_emit_message(true, $8, $9) AS lsn FROM ready WHERE ready.ok),"
        + " inserted AS (INSERT INTO " + table.qualifiedName()
        + " (batch_id, message_count, raw_data, message_keys, writer_xid)"
        + " SELECT $1, $2, $3, $4, xid.writer_xid FROM xid, ready WHERE NOT ready.ok"
        + " RETURNING batch_id)"
        + " SELECT (SELECT count(*) FROM logged) AS logged,"
        + (notify ? " (SELECT count(pg_notify($10, batch_id)) FROM inserted)"
            : " (SELECT count(*) FROM inserted)")
        + " AS inserted";
  }

  private Mono<Void> insert(Connection connection, String batchId, int count, byte[] raw,
      String[] keys) {
    if (onceLogged != null && onceLoggedSql != null) {
      Statement statement = connection.createStatement(onceLoggedSql)
          .bind(0, batchId)
          .bind(1, count)
          .bind(2, raw)
          .bind(3, keys)
          .bind(4, onceLogged.slot())
          .bind(5, onceLogged.publication())
          .bind(6, qualifiedName)
          .bind(7, LoggedBatch.prefix(onceLogged.slot()))
          .bind(8, LoggedBatch.encode(batchId, count, Instant.now(), keys, raw));
      if (notifyChannel != null) {
        statement.bind(9, notifyChannel);
      }
      return Flux.from(statement.execute())
          .concatMap(result -> result.map(row -> 1))
          .then();
    }
    Statement statement = connection.createStatement(insertSql)
        .bind(0, batchId)
        .bind(1, count)
        .bind(2, raw)
        .bind(3, keys);
    if (notifyChannel != null) {
      statement.bind(4, notifyChannel);
    }
    return Flux.from(statement.execute())
        .concatMap(result -> result.getRowsUpdated())
        .then();
  }
}
