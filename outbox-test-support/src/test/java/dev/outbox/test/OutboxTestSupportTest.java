package dev.outbox.test;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.r2dbc.UndecodableBatchException;
import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import java.time.Duration;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import reactor.core.publisher.Mono;
import reactor.test.StepVerifier;

/** OutboxTestSupport on a real PostgreSQL, over rows the real writer wrote. */
@ExtendWith(PostgresExtension.class)
class OutboxTestSupportTest {
  private static final Duration WAIT = Duration.ofSeconds(10);
  private final TestPostgres postgres;
  private final OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("support"));
  private final OutboxWriter writer = OutboxWriter.builder().table(table).build();
  private ConnectionPool pool;
  private OutboxTestSupport outbox;

  OutboxTestSupportTest(TestPostgres postgres) {
    this.postgres = postgres;
  }

  @BeforeEach
  void createTable() {
    OutboxSchema.createIfMissing(postgres.connectionFactory(), table).block(Duration.ofSeconds(30));
    pool = postgres.newPool(4);
    outbox = OutboxTestSupport.of(pool, table);
  }

  @AfterEach
  void disposePool() {
    pool.dispose();
  }

  private static Message message(String stream, String key, String json) {
    return Message.builder().stream(stream).key(key).header("type", "OrderPlaced")
        .contentType(Message.JSON_CONTENT_TYPE).data(json).build();
  }

  @Test
  void showsCommittedBatchesDecodedPerTransactionInInsertOrder() {
    Message a = message("orders", "o1", "{\"n\":1}");
    Message b = message("orders", "o2", "{\"n\":2}");
    Message c = message("payments", "p1", "{\"n\":3}");
    OutboxTransactions.inTransaction(pool, conn -> writer.write(a, b).then(writer.write(c)))
        .block(WAIT);
    Message d = message("orders", "o3", "{\"n\":4}");
    OutboxTransactions.inTransaction(pool, conn -> writer.write(d)).block(WAIT);
    // Rolled back: never seen.
    OutboxTransactions.inTransaction(pool, conn -> writer.write(message("orders", "x", "{}"))
        .then(Mono.error(new IllegalStateException("roll back")))).onErrorComplete().block(WAIT);

    List<OutboxBatch> batches = outbox.batches().block(WAIT);
    assertThat(batches).extracting(OutboxBatch::messages)
        .containsExactly(List.of(a, b), List.of(c), List.of(d));
    assertThat(batches.get(0).batchId()).hasSize(27);
    assertThat(batches.get(0).transactionId()).isEqualTo(batches.get(1).transactionId())
        .isNotEqualTo(batches.get(2).transactionId());

    List<OutboxTransaction> transactions = outbox.transactions().block(WAIT);
    assertThat(transactions).hasSize(2);
    assertThat(transactions.get(0).messages()).containsExactly(a, b, c);
    assertThat(transactions.get(1).messages()).containsExactly(d);

    assertThat(outbox.messages().block(WAIT)).containsExactly(a, b, c, d);
    assertThat(outbox.messages("payments").block(WAIT)).containsExactly(c);
    assertThat(OutboxTestSupport.text(d)).isEqualTo("{\"n\":4}");
  }

  @Test
  void anOpenTransactionsRowsAreNotSeenAndClearEmptiesTheTable() {
    OutboxTransactions.inTransaction(pool, conn -> writer.write(message("orders", "o1", "{}")))
        .block(WAIT);
    StepVerifier.create(OutboxTransactions.inTransaction(pool,
            conn -> writer.write(message("orders", "open", "{}"))
                .then(outbox.messages())))
        .assertNext(seen -> assertThat(seen).extracting(m -> m.key().orElseThrow())
            .containsExactly("o1"))
        .verifyComplete();

    assertThat(outbox.clear().block(WAIT)).isEqualTo(2);
    assertThat(outbox.batches().block(WAIT)).isEmpty();
    assertThat(outbox.transactions().block(WAIT)).isEmpty();
    assertThat(outbox.clear().block(WAIT)).isZero();
  }

  @Test
  void aRowTheCodecCannotDecodeFailsWithTheNamedError() {
    postgres.execute("INSERT INTO " + table.qualifiedName()
        + " (batch_id, message_count, raw_data) VALUES ('0ujtsYcgvSTl8PAuAdqWYSMnLOv', 1,"
        + " '\\xdeadbeef')");

    StepVerifier.create(outbox.messages())
        .expectError(UndecodableBatchException.class)
        .verify(WAIT);
    assertThat(outbox.withCodec(new dev.outbox.r2dbc.Codec() {
      @Override
      public byte[] encode(List<Message> batch) {
        throw new UnsupportedOperationException();
      }

      @Override
      public List<Message> decode(byte[] raw) {
        return List.of(Message.builder().stream("raw").data(raw).build());
      }
    }).messages().block(WAIT)).singleElement()
        .satisfies(m -> assertThat(m.dataLength()).isEqualTo(4));
  }
}
