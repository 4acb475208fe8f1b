package dev.outbox.r2dbc;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.testing.Poll;
import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import io.r2dbc.postgresql.api.PostgresqlConnection;
import io.r2dbc.spi.Connection;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import reactor.core.Disposable;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.publisher.Sinks;
import reactor.test.StepVerifier;

@ExtendWith(PostgresExtension.class)
class OutboxWriterPostgresTest {
  private final TestPostgres postgres;
  private final OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("writer"));
  private final String orders = TestPostgres.uniqueName("orders");
  private final OutboxWriter writer = OutboxWriter.builder().table(table).build();
  private ConnectionPool pool;

  OutboxWriterPostgresTest(TestPostgres postgres) {
    this.postgres = postgres;
  }

  @BeforeEach
  void createTables() {
    OutboxSchema.createIfMissing(postgres.connectionFactory(), table).block(Duration.ofSeconds(30));
    postgres.execute("CREATE TABLE " + orders + " (id TEXT PRIMARY KEY)");
    pool = postgres.newPool(8);
  }

  @AfterEach
  void disposePool() {
    pool.dispose();
  }

  private static Message message(String stream, String text) {
    return Message.builder().stream(stream).key("k-" + text).header("h", text)
        .data(text.getBytes(StandardCharsets.UTF_8)).build();
  }

  private Mono<Void> insertOrder(Connection c, String id) {
    return Flux.from(c.createStatement("INSERT INTO " + orders + " (id) VALUES ($1)").bind(0, id)
        .execute()).concatMap(r -> r.getRowsUpdated()).then();
  }

  private long outboxRows() {
    return postgres.queryLong("SELECT count(*) FROM " + table.qualifiedName());
  }

  private long orderRows() {
    return postgres.queryLong("SELECT count(*) FROM " + orders);
  }

  private int acquired() {
    return pool.getMetrics().orElseThrow().acquiredSize();
  }

  /** The pool releases asynchronously after a pipeline ends, so wait briefly for it. */
  private void assertPoolDrained() {
    Poll.until("every connection is back in the pool", Duration.ofSeconds(10), () -> acquired() == 0);
  }

  @Test
  void committedWriteLeavesOneRowThatDecodesToTheSameMessages() {
    List<Message> batch = List.of(message("orders", "a"), message("orders", "a"));

    StepVerifier.create(OutboxTransactions.inTransaction(pool,
            c -> insertOrder(c, "o1").then(writer.write(batch))))
        .verifyComplete();

    assertThat(outboxRows()).isEqualTo(1);
    assertThat(orderRows()).isEqualTo(1);
    String batchId = (String) postgres.queryColumn(
        "SELECT batch_id FROM " + table.qualifiedName()).get(0);
    StoredBatch stored = OutboxStore.create(pool, table).find(batchId).block();
    assertThat(stored).isNotNull();
    assertThat(Ksuid.parse(stored.batchId())).isNotNull();
    assertThat(stored.messageCount()).isEqualTo(2);
    assertThat(stored.inFlight()).isFalse();
    assertThat(stored.writeRetries()).isZero();
    assertThat(Codec.protobuf().decode(stored.rawData())).isEqualTo(batch);
    assertPoolDrained();
  }

  @Test
  void errorRollsBackBusinessRowAndOutboxRow() {
    StepVerifier.create(OutboxTransactions.inTransaction(pool,
            c -> insertOrder(c, "o1").then(writer.write(message("orders", "a")))
                .then(Mono.error(new IllegalStateException("business rule failed")))))
        .verifyErrorMessage("business rule failed");

    assertThat(outboxRows()).isZero();
    assertThat(orderRows()).isZero();
    assertPoolDrained();
  }

  @Test
  void cancelMidTransactionRollsBackAndReturnsTheConnection() {
    Sinks.One<Boolean> written = Sinks.one();
    Disposable running = OutboxTransactions.inTransaction(pool,
            c -> insertOrder(c, "o1").then(writer.write(message("orders", "a")))
                .then(Mono.fromRunnable(() -> written.tryEmitValue(true)))
                .then(Mono.never()))
        .subscribe();
    assertThat(written.asMono().block(Duration.ofSeconds(10))).isTrue();
    assertThat(acquired()).isEqualTo(1);

    running.dispose();

    Poll.until("the connection is back in the pool", Duration.ofSeconds(10), () -> acquired() == 0);
    Poll.until("no session is idle in transaction", Duration.ofSeconds(10), () -> postgres.queryLong(
        "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'") == 0);
    assertThat(outboxRows()).isZero();
    assertThat(orderRows()).isZero();
  }

  @Test
  void twoWritesInOneTransactionGiveTwoRows() {
    StepVerifier.create(OutboxTransactions.inTransaction(pool,
            c -> writer.write(message("s", "1")).then(writer.write(message("s", "2"), message("s", "2")))))
        .verifyComplete();

    assertThat(postgres.queryColumn("SELECT message_count FROM " + table.qualifiedName()
        + " ORDER BY insert_seq")).containsExactly(1, 2);
  }

  @Test
  void aWriteWithSeveralKeysBecomesOneRowPerKeyInItsKeysPartition() {
    OutboxSchema.enablePartitions(postgres.connectionFactory(), table).block(Duration.ofSeconds(30));
    Message a1 = message("orders", "a");
    Message b = message("orders", "b");
    Message a2 = message("orders", "a");
    Message bOtherStream = message("audit", "b");
    Message keyless = Message.builder().stream("orders").data(new byte[] {1}).build();
    List<Message> batch = List.of(a1, b, keyless, a2, bOtherStream);

    OutboxWriter perKey = OutboxWriter.builder().table(table).rowPerKey(true).build();
    StepVerifier.create(OutboxTransactions.inTransaction(pool, c -> perKey.write(batch)))
        .verifyComplete();

    List<Object> ids = postgres.queryColumn("SELECT batch_id FROM " + table.qualifiedName()
        + " ORDER BY insert_seq");
    OutboxStore store = OutboxStore.create(pool, table);
    List<List<Message>> rows = ids.stream()
        .map(id -> Codec.protobuf().decode(store.find((String) id).block().rawData())).toList();
    assertThat(rows).containsExactly(List.of(a1, a2), List.of(b), List.of(bOtherStream),
        List.of(keyless));
    // Rows of one key share a partition whatever else was in the write.
    StepVerifier.create(OutboxTransactions.inTransaction(pool, c -> writer.write(message("orders", "a"))))
        .verifyComplete();
    assertThat(postgres.queryLong("SELECT count(DISTINCT outbox_partition) FROM "
        + table.qualifiedName() + " WHERE message_keys = ARRAY['orders' || chr(31) || 'k-a']"))
        .isEqualTo(1);
    assertThat(postgres.queryLong("SELECT count(*) FROM " + table.qualifiedName()
        + " WHERE cardinality(message_keys) > 1")).isZero();
  }

  @Test
  void byDefaultAWriteIsOneRowWhateverItsKeys() {
    OutboxWriter oneRow = OutboxWriter.builder().table(table).build();
    StepVerifier.create(OutboxTransactions.inTransaction(pool,
            c -> oneRow.write(message("orders", "a"), message("audit", "b"))))
        .verifyComplete();

    assertThat(postgres.queryColumn("SELECT message_count FROM " + table.qualifiedName()))
        .containsExactly(2);
  }

  @Test
  void sixtyFourConcurrentTransactionsGiveSixtyFourRows() {
    Flux<Integer> all = Flux.range(0, 64).flatMap(i -> OutboxTransactions.inTransaction(pool,
        c -> insertOrder(c, "o" + i).then(writer.write(message("s", "m" + i))).thenReturn(i)), 64);

    StepVerifier.create(all.count()).expectNext(64L).verifyComplete();

    assertThat(outboxRows()).isEqualTo(64);
    assertThat(orderRows()).isEqualTo(64);
    assertPoolDrained();
  }

  @Test
  void writeWithoutBoundConnectionFailsWithNamedErrorAndWritesNothing() {
    StepVerifier.create(writer.write(message("s", "a")))
        .expectErrorSatisfies(e -> assertThat(e)
            .isInstanceOf(MissingConnectionException.class)
            .hasMessageContaining("OutboxContext.withConnection"))
        .verify(Duration.ofSeconds(10));
    assertThat(outboxRows()).isZero();
  }

  @Test
  void writeOnAutoCommitConnectionFailsWithNamedErrorAndWritesNothing() {
    Mono<Void> autoCommit = Mono.usingWhen(pool.create(),
        c -> writer.write(message("s", "a")).contextWrite(OutboxContext.withConnection(c)),
        Connection::close);

    StepVerifier.create(autoCommit)
        .expectError(NotInTransactionException.class)
        .verify(Duration.ofSeconds(10));
    assertThat(outboxRows()).isZero();
    assertPoolDrained();
  }

  @Test
  void invalidBatchesFailBeforeTouchingTheDatabase() {
    StepVerifier.create(OutboxTransactions.inTransaction(pool,
            c -> insertOrder(c, "o1").then(writer.write(List.of()))))
        .expectErrorSatisfies(e -> assertThat(e).isInstanceOf(InvalidMessageException.class)
            .hasMessageContaining("empty"))
        .verify(Duration.ofSeconds(10));
    StepVerifier.create(OutboxTransactions.inTransaction(pool,
            c -> writer.write(message("s", "ok"), null)))
        .expectErrorSatisfies(e -> assertThat(e).isInstanceOf(InvalidMessageException.class)
            .hasMessageContaining("Message 1"))
        .verify(Duration.ofSeconds(10));

    assertThat(outboxRows()).isZero();
    assertThat(orderRows()).isZero();
  }

  @Test
  void writeIsLazy() {
    Mono<Void> notSubscribed = writer.write(message("s", "a"));
    assertThat(notSubscribed).isNotNull();
    assertThat(outboxRows()).isZero();
  }

  /** The stored messages of the table's only row. */
  private List<Message> storedMessages() {
    String batchId = (String) postgres.queryColumn(
        "SELECT batch_id FROM " + table.qualifiedName()).get(0);
    StoredBatch stored = OutboxStore.create(pool, table).find(batchId).block(Duration.ofSeconds(10));
    assertThat(stored).isNotNull();
    return Codec.protobuf().decode(stored.rawData());
  }

  /** Headers from the Context key "trace", as a tracing ContextHeaders would take them. */
  private static final ContextHeaders TRACE = context -> context.<String>getOrEmpty("trace")
      .map(trace -> java.util.Map.of("traceparent", trace, "tracestate", "k=v"))
      .orElse(java.util.Map.of());

  @Test
  void contextHeadersAreAddedToEveryMessageThatHasNoneOfThem() {
    OutboxWriter tracing = OutboxWriter.builder().table(table).contextHeaders(TRACE).build();
    Message plain = message("orders", "a");
    Message own = Message.builder().stream("orders").header("traceparent", "mine").data("b")
        .build();

    StepVerifier.create(OutboxTransactions.inTransaction(pool, c -> tracing.write(plain, own))
            .contextWrite(ctx -> ctx.put("trace", "00-abc-def-01")))
        .verifyComplete();

    List<Message> stored = storedMessages();
    assertThat(stored.get(0).headers()).containsOnly(java.util.Map.entry("h", "a"),
        java.util.Map.entry("traceparent", "00-abc-def-01"), java.util.Map.entry("tracestate", "k=v"));
    assertThat(stored.get(0).id()).isEqualTo(plain.id());
    assertThat(stored.get(0).data()).isEqualTo(plain.data());
    // The caller's traceparent stays, and is not paired with the other trace's tracestate.
    assertThat(stored.get(1)).isEqualTo(own);
    assertPoolDrained();
  }

  @Test
  void withoutAnythingInTheContextContextHeadersAddNothing() {
    OutboxWriter tracing = OutboxWriter.builder().table(table).contextHeaders(TRACE).build();
    Message plain = message("orders", "a");

    StepVerifier.create(OutboxTransactions.inTransaction(pool, c -> tracing.write(plain)))
        .verifyComplete();

    assertThat(storedMessages()).containsExactly(plain);
    assertPoolDrained();
  }

  @Test
  void contextHeadersWithAReservedNameFailTheWriteBeforeAnythingIsWritten() {
    OutboxWriter broken = OutboxWriter.builder().table(table)
        .contextHeaders(context -> java.util.Map.of(Message.MESSAGE_ID_HEADER, "x")).build();

    StepVerifier.create(OutboxTransactions.inTransaction(pool,
            c -> broken.write(message("orders", "a"))))
        .expectErrorSatisfies(e -> assertThat(e).isInstanceOf(InvalidMessageException.class)
            .hasMessageContaining("reserved"))
        .verify(Duration.ofSeconds(10));
    assertThat(outboxRows()).isZero();
    assertPoolDrained();
  }

  @Test
  void contextHeadersThatThrowDoNotFailTheWrite() {
    OutboxWriter tolerant = OutboxWriter.builder().table(table)
        .contextHeaders(context -> {
          throw new IllegalStateException("tracer broken");
        }).build();

    StepVerifier.create(OutboxTransactions.inTransaction(pool,
            c -> tolerant.write(message("orders", "a"))))
        .verifyComplete();
    assertThat(outboxRows()).isEqualTo(1);
    assertPoolDrained();
  }

  @Test
  void resolverSuppliesTheConnectionWhenNoneIsBound() {
    Object key = new Object();
    OutboxWriter resolving = OutboxWriter.builder().table(table)
        .connectionResolver(ctx -> Mono.justOrEmpty(ctx.<Connection>getOrEmpty(key)))
        .build();
    Mono<Void> work = Mono.usingWhen(pool.create(),
        c -> Mono.from(c.beginTransaction())
            .then(resolving.write(message("s", "a")).contextWrite(ctx -> ctx.put(key, c)))
            .then(Mono.from(c.commitTransaction())),
        Connection::close);

    StepVerifier.create(work).verifyComplete();
    assertThat(outboxRows()).isEqualTo(1);
  }

  @Test
  void notifyChannelIsSignalledAtCommitAndNeverOnRollback() {
    OutboxWriter notifying = OutboxWriter.builder().table(table).notifyChannel("outbox_test").build();
    PostgresqlConnection listener =
        (PostgresqlConnection) Mono.from(postgres.connectionFactory().create()).block();
    try {
      listener.createStatement("LISTEN outbox_test").execute()
          .flatMap(r -> r.getRowsUpdated()).then().block(Duration.ofSeconds(10));
      AtomicReference<String> notified = new AtomicReference<>();
      Flux<String> payloads = listener.getNotifications().map(n -> String.valueOf(n.getParameter()));

      StepVerifier.create(payloads.take(1))
          .then(() -> OutboxTransactions.inTransaction(pool,
                  c -> notifying.write(message("s", "rolled back")).then(Mono.error(new IllegalStateException("no"))))
              .onErrorResume(IllegalStateException.class, e -> Mono.empty())
              .then(OutboxTransactions.inTransaction(pool, c -> notifying.write(message("s", "kept"))))
              .block(Duration.ofSeconds(10)))
          .consumeNextWith(notified::set)
          .verifyComplete();
      assertThat(postgres.queryColumn("SELECT batch_id FROM " + table.qualifiedName()))
          .containsExactly(notified.get());
    } finally {
      Mono.from(listener.close()).block(Duration.ofSeconds(10));
    }
  }
}
