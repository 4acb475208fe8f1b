package dev.outbox.test;

import dev.outbox.r2dbc.Codec;
import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxTable;
import io.r2dbc.spi.Connection;
import io.r2dbc.spi.ConnectionFactory;
import io.r2dbc.spi.Readable;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * What the code under test wrote to an outbox table, for the application's own tests: the
 * committed rows of the table, decoded, in insert order, per batch ({@link #batches()}), per
 * transaction ({@link #transactions()}) or as one list of messages ({@link #messages()}), without
 * Kafka. Switch the relay off for such a test (with the Spring Boot starter: {@code
 * outbox.relay.enabled=false}), or it publishes and deletes the rows while you look.
 *
 * <pre>{@code
 * OutboxTestSupport outbox = OutboxTestSupport.of(connectionFactory, OutboxTable.of("order_outbox"));
 * outbox.clear().block();                                   // before each test
 * ... call the code under test ...
 * List<Message> written = outbox.messages().block();
 * assertThat(written).singleElement().satisfies(m -> {
 *   assertThat(m.key()).hasValue(orderId);
 *   assertThat(OutboxTestSupport.text(m)).contains("\"customer\":\"alice\"");
 * });
 * }</pre>
 *
 * <p>Each method reads or deletes when subscribed, on a connection of its own from the given
 * {@code ConnectionFactory}, which it closes; so it sees only what was committed. Nothing blocks:
 * call {@code block()} from the test's thread, or verify with {@code StepVerifier}. The values
 * are immutable. Immutable and thread-safe.
 */
public final class OutboxTestSupport {
  private final ConnectionFactory connectionFactory;
  private final OutboxTable table;
  private final Codec codec;

  private OutboxTestSupport(ConnectionFactory connectionFactory, OutboxTable table, Codec codec) {
    this.connectionFactory = Objects.requireNonNull(connectionFactory, "connectionFactory");
    this.table = Objects.requireNonNull(table, "table");
    this.codec = Objects.requireNonNull(codec, "codec");
  }

  /** The outbox {@code table} on {@code connectionFactory}, decoded with {@link Codec#protobuf()}. */
  public static OutboxTestSupport of(ConnectionFactory connectionFactory, OutboxTable table) {
    return new OutboxTestSupport(connectionFactory, table, Codec.protobuf());
  }

  /** The same table decoded with {@code codec} (when the writer was given another). */
  public OutboxTestSupport withCodec(Codec codec) {
    return new OutboxTestSupport(connectionFactory, table, codec);
  }

  /** The table this looks at. */
  public OutboxTable table() {
    return table;
  }

  /**
   * Every committed row, in insert order, decoded.
   *
   * @throws dev.outbox.r2dbc.UndecodableBatchException (as the Mono's error) for a row the codec
   *     cannot decode
   */
  public Mono<List<OutboxBatch>> batches() {
    String sql = "SELECT batch_id, writer_xid::text AS xid, insert_time, raw_data FROM "
        + table.qualifiedName() + " ORDER BY insert_seq";
    return Flux.usingWhen(connectionFactory.create(),
            connection -> Flux.from(connection.createStatement(sql).execute())
                .concatMap(result -> result.map(OutboxTestSupport::row)),
            Connection::close)
        .map(row -> new OutboxBatch(row.batchId(), row.transactionId(), row.insertTime(),
            codec.decode(row.rawData())))
        .collectList()
        .map(List::copyOf);
  }

  /**
   * The committed rows grouped by the transaction that wrote them, in the order of each
   * transaction's first row; one {@code TransactionalOperator}, {@code @Transactional} method or
   * {@code OutboxTransactions.inTransaction} is one element.
   */
  public Mono<List<OutboxTransaction>> transactions() {
    return batches().map(batches -> {
      Map<Long, List<OutboxBatch>> byTransaction = new LinkedHashMap<>();
      for (OutboxBatch batch : batches) {
        byTransaction.computeIfAbsent(batch.transactionId(), id -> new ArrayList<>()).add(batch);
      }
      return byTransaction.entrySet().stream()
          .map(entry -> new OutboxTransaction(entry.getKey(), entry.getValue())).toList();
    });
  }

  /** The messages of every committed row, in the order written. */
  public Mono<List<Message>> messages() {
    return batches().map(batches -> batches.stream()
        .flatMap(batch -> batch.messages().stream()).toList());
  }

  /** The messages for {@code stream} (a Kafka topic), in the order written. */
  public Mono<List<Message>> messages(String stream) {
    Objects.requireNonNull(stream, "stream");
    return messages().map(messages -> messages.stream()
        .filter(message -> message.stream().equals(stream)).toList());
  }

  /**
   * Deletes every row of the table (not its dead letters), whether written by this test or an
   * earlier one; completes with how many there were.
   */
  public Mono<Long> clear() {
    String sql = "DELETE FROM " + table.qualifiedName();
    return Mono.usingWhen(connectionFactory.create(),
        connection -> Flux.from(connection.createStatement(sql).execute())
            .concatMap(result -> result.getRowsUpdated())
            .reduce(0L, Long::sum),
        Connection::close);
  }

  /** A message's payload as UTF-8 text (JSON, plain text), for assertions. */
  public static String text(Message message) {
    return new String(message.data(), StandardCharsets.UTF_8);
  }

  @Override
  public String toString() {
    return "OutboxTestSupport[" + table.qualifiedName() + "]";
  }

  private record Row(String batchId, long transactionId, Instant insertTime, byte[] rawData) {}

  private static Row row(Readable row) {
    String batchId = Objects.requireNonNull(row.get("batch_id", String.class), "batch_id");
    String xid = Objects.requireNonNull(row.get("xid", String.class), "writer_xid");
    OffsetDateTime inserted =
        Objects.requireNonNull(row.get("insert_time", OffsetDateTime.class), "insert_time");
    ByteBuffer raw = Objects.requireNonNull(row.get("raw_data", ByteBuffer.class), "raw_data");
    byte[] bytes = new byte[raw.remaining()];
    raw.get(bytes);
    return new Row(batchId.strip(), Long.parseLong(xid), inserted.toInstant(), bytes);
  }
}
