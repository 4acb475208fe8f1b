package dev.outbox.r2dbc.internal;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import io.r2dbc.spi.Connection;
import io.r2dbc.spi.R2dbcTimeoutException;
import java.time.Duration;
import java.util.concurrent.TimeoutException;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import reactor.core.publisher.Mono;
import reactor.test.StepVerifier;

/**
 * The statement timeout of {@link Sql} and {@link RelayStore}, against a real server: a
 * statement that does not answer in time fails, and its connection is not handed out again
 * (with a pool of one connection, the next statement would otherwise queue behind the stuck
 * one). {@code pg_sleep} stands in for a server or network that went silent.
 */
@ExtendWith(PostgresExtension.class)
class SqlTimeoutPostgresTest {
  private static final String PID = "SELECT pg_backend_pid() AS pid";
  private static final String STUCK = "SELECT pg_sleep(20) AS slept";

  private final TestPostgres postgres;
  private ConnectionPool pool;

  SqlTimeoutPostgresTest(TestPostgres postgres) {
    this.postgres = postgres;
  }

  @BeforeEach
  void setUp() {
    pool = postgres.newPool(1); // one connection: a reused stuck connection blocks everything
  }

  @AfterEach
  void tearDown() {
    pool.dispose();
  }

  private int pid(Duration within) {
    Integer pid = Sql.query(pool, PID, s -> s, row -> row.get("pid", Integer.class))
        .single().block(within);
    assertThat(pid).isNotNull();
    return pid;
  }

  @Test
  void aStatementPastItsTimeoutFailsAndItsConnectionIsGivenUp() {
    int before = pid(Duration.ofSeconds(10));

    long started = System.nanoTime();
    StepVerifier.create(Sql.query(pool, Duration.ofMillis(300), STUCK, s -> s, row -> 1))
        .expectErrorSatisfies(e -> assertThat(e).isInstanceOf(R2dbcTimeoutException.class)
            .hasMessageContaining("No answer within 300 ms")
            .hasCauseInstanceOf(TimeoutException.class))
        .verify(Duration.ofSeconds(5));
    assertThat(Duration.ofNanos(System.nanoTime() - started)).isLessThan(Duration.ofSeconds(3));

    // Within 3 s, not after the 20 s sleep: a new connection, not the stuck one.
    int after = pid(Duration.ofSeconds(3));
    assertThat(after).isNotEqualTo(before);
    assertThat(pool.getMetrics().orElseThrow().allocatedSize()).isEqualTo(1);
  }

  @Test
  void updatesHaveTheTimeoutToo() {
    int before = pid(Duration.ofSeconds(10));
    StepVerifier.create(Sql.rowsUpdated(pool, Duration.ofMillis(300),
            "DO $$ BEGIN PERFORM pg_sleep(20); END $$", s -> s))
        .expectError(R2dbcTimeoutException.class)
        .verify(Duration.ofSeconds(5));
    assertThat(pid(Duration.ofSeconds(3))).isNotEqualTo(before);
  }

  @Test
  void aStatementCancelledBeforeTheServerAnsweredGivesUpItsConnection() {
    int before = pid(Duration.ofSeconds(10));
    // The caller's own, shorter timeout cancels the statement.
    StepVerifier.create(Sql.query(pool, Duration.ofSeconds(60), STUCK, s -> s, row -> 1)
            .timeout(Duration.ofMillis(300)))
        .expectError(TimeoutException.class)
        .verify(Duration.ofSeconds(5));
    assertThat(pid(Duration.ofSeconds(3))).isNotEqualTo(before);
  }

  @Test
  void aStatementCancelledAfterRowsArrivedKeepsItsConnection() {
    int before = pid(Duration.ofSeconds(10));
    StepVerifier.create(Sql.query(pool, Duration.ofSeconds(10),
            "SELECT generate_series(1, 1000) AS n", s -> s, row -> row.get("n", Integer.class))
            .next())
        .expectNext(1)
        .verifyComplete();
    assertThat(pid(Duration.ofSeconds(10))).isEqualTo(before);
  }

  @Test
  void aStatementWithinItsTimeoutKeepsItsConnection() {
    int before = pid(Duration.ofSeconds(10));
    StepVerifier.create(Sql.query(pool, Duration.ofSeconds(10), "SELECT pg_sleep(0.2) AS slept",
            s -> s, row -> 1))
        .expectNext(1)
        .verifyComplete();
    assertThat(pid(Duration.ofSeconds(10))).isEqualTo(before);
  }

  @Test
  void relayStoreStatementsUseTheStoreTimeout() {
    OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("timeout"));
    OutboxSchema.createIfMissing(pool, table).block(Duration.ofSeconds(30));
    RelayStore store = RelayStore.create(pool, table, Duration.ofMillis(500));
    // Another session holds the table locked: the claim waits for the lock until its timeout.
    Connection locker = Mono.from(postgres.connectionFactory().create()).block();
    try {
      Mono.from(locker.beginTransaction())
          .thenMany(locker.createStatement("LOCK TABLE " + table.qualifiedName()
              + " IN ACCESS EXCLUSIVE MODE").execute())
          .flatMap(result -> result.getRowsUpdated())
          .then().block(Duration.ofSeconds(10));
      StepVerifier.create(store.claim(10, Duration.ofSeconds(30), "relay"))
          .expectError(R2dbcTimeoutException.class)
          .verify(Duration.ofSeconds(5));
      ClaimedBatch held = new ClaimedBatch("heldheldheldheldheldheld000", 1, 1, 0, new byte[0],
          java.time.Instant.EPOCH, java.util.UUID.randomUUID(), java.time.Instant.EPOCH);
      StepVerifier.create(store.releaseAll(java.util.List.of(held)))
          .expectError(R2dbcTimeoutException.class)
          .verify(Duration.ofSeconds(5));
    } finally {
      Mono.from(locker.rollbackTransaction()).then(Mono.from(locker.close()))
          .block(Duration.ofSeconds(10));
    }
    StepVerifier.create(store.claim(10, Duration.ofSeconds(30), "relay"))
        .verifyComplete();
  }

  @Test
  void relayStoreRejectsANonPositiveTimeoutAndKeepsAThirtySecondDefault() {
    OutboxTable table = OutboxTable.of("t");
    assertThatThrownBy(() -> RelayStore.create(pool, table, Duration.ZERO))
        .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("positive");
    assertThatThrownBy(() -> RelayStore.create(pool, table, Duration.ofSeconds(-1)))
        .isInstanceOf(IllegalArgumentException.class);
    assertThat(RelayStore.create(pool, table).statementTimeout())
        .isEqualTo(Duration.ofSeconds(30));
    assertThat(RelayStore.create(pool, table, Duration.ofSeconds(5)).statementTimeout())
        .isEqualTo(Duration.ofSeconds(5));
  }
}
