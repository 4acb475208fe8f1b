package dev.outbox.spring;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatNullPointerException;

import dev.outbox.r2dbc.Codec;
import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.MissingConnectionException;
import dev.outbox.r2dbc.OutboxContext;
import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxStore;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.r2dbc.StoredBatch;
import dev.outbox.testing.Poll;
import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import io.r2dbc.spi.Connection;
import io.r2dbc.spi.ConnectionFactory;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.springframework.r2dbc.connection.ConnectionFactoryUtils;
import org.springframework.r2dbc.connection.R2dbcTransactionManager;
import org.springframework.r2dbc.core.DatabaseClient;
import org.springframework.transaction.TransactionDefinition;
import org.springframework.transaction.reactive.TransactionalOperator;
import org.springframework.transaction.support.DefaultTransactionDefinition;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.test.StepVerifier;
import reactor.util.context.Context;

/**
 * The writer joins transactions managed by Spring's {@link R2dbcTransactionManager} through
 * {@link SpringTransactionConnectionResolver}, against a real PostgreSQL. The business rows are
 * written with Spring's {@link DatabaseClient}, as a Spring application would.
 */
@ExtendWith(PostgresExtension.class)
class SpringTransactionConnectionResolverPostgresTest {
  private static final Duration TIMEOUT = Duration.ofSeconds(30);

  private final TestPostgres postgres;
  private final OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("spring_outbox"));
  private final String orders = TestPostgres.uniqueName("spring_orders");
  private ConnectionPool pool;
  private R2dbcTransactionManager transactionManager;
  private TransactionalOperator transactional;
  private DatabaseClient databaseClient;
  private SpringTransactionConnectionResolver resolver;
  private OutboxWriter writer;

  SpringTransactionConnectionResolverPostgresTest(TestPostgres postgres) {
    this.postgres = postgres;
  }

  @BeforeEach
  void setUp() {
    pool = postgres.newPool(4);
    OutboxSchema.createIfMissing(pool, table).block(TIMEOUT);
    postgres.execute("CREATE TABLE " + orders
        + " (id TEXT PRIMARY KEY, xid TEXT NOT NULL, backend_pid INTEGER NOT NULL)");
    transactionManager = new R2dbcTransactionManager(pool);
    transactional = TransactionalOperator.create(transactionManager);
    databaseClient = DatabaseClient.create(pool);
    resolver = SpringTransactionConnectionResolver.create(pool);
    writer = OutboxWriter.builder().table(table).connectionResolver(resolver).build();
  }

  @AfterEach
  void disposePool() {
    pool.dispose();
  }

  private static Message message(String text) {
    return Message.builder().stream("orders").key("k-" + text).header("type", "OrderPlaced")
        .data(text.getBytes(StandardCharsets.UTF_8)).build();
  }

  /** The business insert, through Spring: it runs on the transaction's connection. */
  private Mono<Void> insertOrder(String id) {
    return databaseClient.sql("INSERT INTO " + orders + " (id, xid, backend_pid)"
            + " VALUES (:id, CAST(pg_current_xact_id() AS TEXT), pg_backend_pid())")
        .bind("id", id)
        .fetch().rowsUpdated()
        .then();
  }

  /** Outbox rows as seen from inside the current Spring transaction. */
  private Mono<Long> outboxRowsInTransaction() {
    return databaseClient.sql("SELECT count(*) FROM " + table.qualifiedName())
        .map(row -> row.get(0, Long.class))
        .one();
  }

  private static Mono<String> single(Connection connection, String sql) {
    return Flux.from(connection.createStatement(sql).execute())
        .concatMap(result -> result.map((row, meta) -> String.valueOf(row.get(0))))
        .single();
  }

  private long outboxRows() {
    return postgres.queryLong("SELECT count(*) FROM " + table.qualifiedName());
  }

  private long orderRows() {
    return postgres.queryLong("SELECT count(*) FROM " + orders);
  }

  private void assertPoolDrained() {
    Poll.until("every connection is back in the pool", Duration.ofSeconds(10),
        () -> pool.getMetrics().orElseThrow().acquiredSize() == 0);
  }

  @Test
  void committedSpringTransactionCommitsBusinessRowAndOutboxRow() {
    Message placed = message("o1");

    // No contextWrite and no OutboxContext: the writer finds Spring's connection by itself.
    StepVerifier.create(transactional.transactional(insertOrder("o1").then(writer.write(placed))))
        .verifyComplete();

    assertThat(orderRows()).isEqualTo(1);
    assertThat(outboxRows()).isEqualTo(1);
    String batchId = (String) postgres.queryColumn(
        "SELECT batch_id FROM " + table.qualifiedName()).get(0);
    StoredBatch stored = OutboxStore.create(pool, table).find(batchId).block(TIMEOUT);
    assertThat(stored).isNotNull();
    assertThat(Codec.protobuf().decode(stored.rawData())).containsExactly(placed);
    assertPoolDrained();
  }

  @Test
  void errorInsideSpringTransactionRollsBackBusinessRowAndOutboxRow() {
    AtomicReference<Long> seenInside = new AtomicReference<>();

    StepVerifier.create(transactional.transactional(insertOrder("o1")
            .then(writer.write(message("o1")))
            .then(outboxRowsInTransaction())
            .doOnNext(seenInside::set)
            .then(Mono.error(new IllegalStateException("business rule failed")))))
        .verifyErrorMessage("business rule failed");

    assertThat(seenInside.get()).as("the row was written inside the transaction").isEqualTo(1);
    assertThat(outboxRows()).isZero();
    assertThat(orderRows()).isZero();
    assertPoolDrained();
  }

  @Test
  void rollbackOnlySpringTransactionLeavesNoOutboxRow() {
    StepVerifier.create(transactional.execute(status -> {
          status.setRollbackOnly();
          return insertOrder("o1").then(writer.write(message("o1")));
        }))
        .verifyComplete();

    assertThat(outboxRows()).isZero();
    assertThat(orderRows()).isZero();
    assertPoolDrained();
  }

  @Test
  void outboxRowIsWrittenOnSpringsConnectionInSpringsTransaction() {
    AtomicReference<Connection> springConnection = new AtomicReference<>();
    AtomicReference<Connection> resolvedConnection = new AtomicReference<>();
    AtomicReference<String> resolvedBackendPid = new AtomicReference<>();

    Mono<Void> work = insertOrder("o1")
        .then(writer.write(message("o1")))
        // The connection Spring holds for this transaction (what DatabaseClient used). Not
        // released, like DatabaseClient: releasing the last reference clears Spring's holder...
        .then(ConnectionFactoryUtils.getConnection(pool).doOnNext(springConnection::set))
        // ...and the one the resolver hands to the writer.
        .then(Mono.deferContextual(resolver::resolve))
        .doOnNext(resolvedConnection::set)
        .flatMap(c -> single(c, "SELECT pg_backend_pid()"))
        .doOnNext(resolvedBackendPid::set)
        .then();
    StepVerifier.create(transactional.transactional(work)).verifyComplete();

    assertThat(resolvedConnection.get()).isNotNull().isSameAs(springConnection.get());
    List<Object> businessXid = postgres.queryColumn("SELECT xid FROM " + orders);
    List<Object> businessPid = postgres.queryColumn("SELECT backend_pid FROM " + orders);
    List<Object> outboxXid = postgres.queryColumn(
        "SELECT CAST(writer_xid AS TEXT) FROM " + table.qualifiedName());
    assertThat(businessXid).hasSize(1);
    assertThat(outboxXid).as("writer_xid of the outbox row").isEqualTo(businessXid);
    assertThat(String.valueOf(businessPid.get(0))).isEqualTo(resolvedBackendPid.get());
    assertPoolDrained();
  }

  @Test
  void resolveLooksInTheContextItIsGivenNotTheSubscribersOne() {
    AtomicReference<Connection> springConnection = new AtomicReference<>();
    AtomicReference<Connection> resolved = new AtomicReference<>();

    // toFuture() subscribes with an empty Context: only the ContextView passed to resolve(...)
    // carries Spring's transaction there.
    Mono<Void> work = ConnectionFactoryUtils.getConnection(pool)
        .doOnNext(springConnection::set)
        .then(Mono.deferContextual(Mono::just))
        .flatMap(context -> Mono.fromFuture(resolver.resolve(context).toFuture()))
        .doOnNext(resolved::set)
        .then();
    StepVerifier.create(transactional.transactional(work)).verifyComplete();

    assertThat(resolved.get()).isNotNull().isSameAs(springConnection.get());
    assertPoolDrained();
  }

  @Test
  void outsideAnySpringTransactionTheResolverIsEmptyAndTheWriteFails() {
    StepVerifier.create(resolver.resolve(Context.empty())).verifyComplete();

    StepVerifier.create(writer.write(message("o1")))
        .expectError(MissingConnectionException.class)
        .verify(TIMEOUT);

    assertThat(outboxRows()).isZero();
    assertThat(pool.getMetrics().orElseThrow().acquiredSize())
        .as("the resolver never opens a connection").isZero();
  }

  @Test
  void springScopeWithoutARealTransactionIsNotJoined() {
    // PROPAGATION_SUPPORTS without an outer transaction: Spring binds an auto-commit connection
    // for DatabaseClient, which is no transaction for the outbox row to join.
    TransactionalOperator supports = TransactionalOperator.create(transactionManager,
        new DefaultTransactionDefinition(TransactionDefinition.PROPAGATION_SUPPORTS));
    AtomicReference<Connection> resolved = new AtomicReference<>();

    StepVerifier.create(supports.transactional(insertOrder("o1")
            .then(Mono.deferContextual(resolver::resolve))
            .doOnNext(resolved::set)
            .then(writer.write(message("o1")))))
        .expectError(MissingConnectionException.class)
        .verify(TIMEOUT);

    assertThat(resolved.get()).isNull();
    assertThat(orderRows()).as("auto-commit business insert").isEqualTo(1);
    assertThat(outboxRows()).isZero();
    assertPoolDrained();
  }

  @Test
  void connectionBoundWithOutboxContextWinsOverSpringsTransaction() {
    AtomicReference<String> boundXid = new AtomicReference<>();
    // A separate transaction on its own connection, bound with OutboxContext inside the Spring
    // transaction: the writer must use it, so the outbox row commits with it even though the
    // Spring transaction rolls back.
    Mono<String> ownTransaction = OutboxTransactions.inTransaction(postgres.connectionFactory(),
        c -> single(c, "SELECT CAST(pg_current_xact_id() AS TEXT)")
            .flatMap(xid -> writer.write(message("o1")).thenReturn(xid)));

    StepVerifier.create(transactional.transactional(insertOrder("o1")
            .then(ownTransaction)
            .doOnNext(boundXid::set)
            .then(Mono.error(new IllegalStateException("spring transaction fails")))))
        .verifyErrorMessage("spring transaction fails");

    assertThat(orderRows()).as("Spring's transaction rolled back").isZero();
    assertThat(boundXid.get()).isNotNull();
    assertThat(postgres.queryColumn(
            "SELECT CAST(writer_xid AS TEXT) FROM " + table.qualifiedName()))
        .as("the outbox row was written in the bound connection's transaction")
        .containsExactly(boundXid.get());
    assertPoolDrained();
  }

  @Test
  void explicitContextWriteOfTheBoundConnectionAlsoWinsForOneWrite() {
    AtomicReference<String> boundXid = new AtomicReference<>();
    Mono<Void> boundWrite = Mono.usingWhen(postgres.connectionFactory().create(),
        c -> Mono.from(c.beginTransaction())
            .then(single(c, "SELECT CAST(pg_current_xact_id() AS TEXT)"))
            .doOnNext(boundXid::set)
            .then(writer.write(message("bound")).contextWrite(OutboxContext.withConnection(c)))
            .then(Mono.from(c.commitTransaction())),
        Connection::close,
        (c, error) -> c.rollbackTransaction(),
        Connection::rollbackTransaction);

    StepVerifier.create(transactional.transactional(insertOrder("o1")
            .then(boundWrite)
            .then(writer.write(message("spring")))))
        .verifyComplete();

    List<Object> xids = postgres.queryColumn("SELECT CAST(writer_xid AS TEXT) FROM "
        + table.qualifiedName() + " ORDER BY insert_seq");
    assertThat(xids).hasSize(2);
    assertThat(xids.get(0)).isEqualTo(boundXid.get());
    assertThat(xids.get(1)).isEqualTo(postgres.queryColumn("SELECT xid FROM " + orders).get(0))
        .isNotEqualTo(boundXid.get());
    assertPoolDrained();
  }

  @Test
  void resolverOverAnotherFactoryInstanceFindsNothing() {
    ConnectionFactory other = postgres.connectionFactory(); // same database, not the tx's factory
    OutboxWriter misconfigured = OutboxWriter.builder().table(table)
        .connectionResolver(SpringTransactionConnectionResolver.create(other)).build();

    StepVerifier.create(transactional.transactional(
            insertOrder("o1").then(misconfigured.write(message("o1")))))
        .expectError(MissingConnectionException.class)
        .verify(TIMEOUT);

    assertThat(orderRows()).isZero();
    assertThat(outboxRows()).isZero();
    assertPoolDrained();
  }

  @Test
  void createRejectsNull() {
    assertThatNullPointerException()
        .isThrownBy(() -> SpringTransactionConnectionResolver.create(null))
        .withMessageContaining("connectionFactory");
  }
}
