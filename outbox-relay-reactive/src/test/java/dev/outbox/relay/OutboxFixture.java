package dev.outbox.relay;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxStore;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.function.IntFunction;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/** A fresh outbox table with a pool, a writer and a store; blocking helpers for test threads. */
final class OutboxFixture implements AutoCloseable {
  final TestPostgres postgres;
  final OutboxTable table;
  final ConnectionPool pool;
  final OutboxWriter writer;
  final OutboxStore store;

  OutboxFixture(TestPostgres postgres, int poolSize) {
    this.postgres = postgres;
    this.table = OutboxTable.of(TestPostgres.uniqueName("relay"));
    this.pool = postgres.newPool(poolSize);
    OutboxSchema.createIfMissing(pool, table).block(Duration.ofSeconds(30));
    this.writer = OutboxWriter.builder().table(table).build();
    this.store = OutboxStore.create(pool, table);
  }

  /**
   * Writes {@code batches} batches, {@code batchesPerTransaction} per transaction; batch {@code
   * i} holds {@code messages.apply(i)}. Returns every message written, in order.
   */
  List<Message> write(int batches, int batchesPerTransaction, IntFunction<List<Message>> messages) {
    List<List<Message>> all = new ArrayList<>();
    for (int i = 0; i < batches; i++) {
      all.add(messages.apply(i));
    }
    Flux.fromIterable(all)
        .buffer(batchesPerTransaction)
        .flatMap(group -> OutboxTransactions.inTransaction(pool,
            c -> Flux.fromIterable(group).concatMap(writer::write).then()), 4)
        .blockLast(Duration.ofMinutes(2));
    return all.stream().flatMap(List::stream).toList();
  }

  /** Writes messages in a transaction that is rolled back. */
  void writeRolledBack(List<Message> batch) {
    OutboxTransactions.inTransaction(pool,
            c -> writer.write(batch).then(Mono.error(new IllegalStateException("roll back"))))
        .onErrorResume(IllegalStateException.class, e -> Mono.empty())
        .block(Duration.ofSeconds(30));
  }

  long rows() {
    return postgres.queryLong("SELECT count(*) FROM " + table.qualifiedName());
  }

  long leasedRows() {
    return postgres.queryLong("SELECT count(*) FROM " + table.qualifiedName()
        + " WHERE lease_token IS NOT NULL");
  }

  /** Partitions some relay owns (PARTITIONED, the default mode); 0 after graceful stops. */
  long ownedPartitions() {
    return postgres.queryLong("SELECT count(*) FROM " + table.partitionsQualifiedName()
        + " WHERE owner IS NOT NULL");
  }

  @Override
  public void close() {
    pool.dispose();
  }
}
