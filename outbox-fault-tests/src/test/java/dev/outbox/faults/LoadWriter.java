package dev.outbox.faults;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import io.r2dbc.spi.Connection;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * Writes business rows and outbox messages in the same transactions, as an application would,
 * from a few worker threads until stopped, while the test injects faults.
 *
 * <p>Each message carries a tag {@code key:seq} as its payload and has a row with that tag in
 * the business table written in the same transaction. Each key belongs to one worker, which
 * writes it with ascending {@code seq}, one transaction at a time. Every {@code rollbackEvery}-th
 * transaction is rolled back on purpose; its tags must never be delivered. A transaction that
 * failed because of a fault may or may not have committed: the business table is the truth
 * ({@link #committedTags()}).
 */
final class LoadWriter implements AutoCloseable {
  private static final Duration TX_TIMEOUT = Duration.ofSeconds(20);

  private final TestPostgres db;
  private final OutboxWriter writer;
  private final String topic;
  private final String businessTable;
  private final ConnectionPool pool;
  private final int rollbackEvery;
  private final long pauseNanos;
  private final AtomicBoolean running = new AtomicBoolean(true);
  private final Set<String> rolledBack = ConcurrentHashMap.newKeySet();
  private final AtomicLong transactions = new AtomicLong();
  private final AtomicLong failures = new AtomicLong();
  private final List<Thread> workers = new ArrayList<>();

  private LoadWriter(TestPostgres db, OutboxTable table, String topic, int rollbackEvery,
      Duration pause, int workerCount, boolean deleteOnceLogged) {
    this.db = db;
    this.writer = OutboxWriter.builder().table(table).deleteOnceLogged(deleteOnceLogged).build();
    this.topic = topic;
    this.businessTable = table.qualifiedName() + "_orders";
    this.pool = db.newPool(workerCount);
    this.rollbackEvery = rollbackEvery;
    this.pauseNanos = pause.toNanos();
  }

  /**
   * Creates the business table next to {@code table} and starts {@code workerCount} workers,
   * each owning {@code keysPerWorker} keys and pausing {@code pause} between transactions.
   */
  static LoadWriter start(TestPostgres db, OutboxTable table, String topic, int workerCount,
      int keysPerWorker, int rollbackEvery, Duration pause, boolean deleteOnceLogged) {
    LoadWriter load = new LoadWriter(db, table, topic, rollbackEvery, pause, workerCount,
        deleteOnceLogged);
    db.execute("CREATE TABLE " + load.businessTable
        + " (tag TEXT PRIMARY KEY, message_key TEXT NOT NULL, seq BIGINT NOT NULL)");
    for (int w = 0; w < workerCount; w++) {
      int worker = w;
      Thread thread = new Thread(() -> load.run(worker, keysPerWorker), "load-writer-" + w);
      thread.setDaemon(true);
      load.workers.add(thread);
      thread.start();
    }
    return load;
  }

  private void run(int worker, int keys) {
    long[] nextSeq = new long[keys];
    for (long n = 0; running.get(); n++) {
      int k = (int) (n % keys);
      String key = "w" + worker + "-k" + k;
      int size = 1 + (int) (n % 3); // 1 to 3 messages per transaction
      List<String> tags = new ArrayList<>(size);
      for (int i = 0; i < size; i++) {
        tags.add(key + ":" + nextSeq[k]++);
      }
      boolean rollBack = rollbackEvery > 0 && (n + worker) % rollbackEvery == rollbackEvery - 1;
      try {
        OutboxTransactions.inTransaction(pool, c -> writeAll(c, key, tags)
                .then(rollBack ? Mono.error(new RollbackOnPurpose()) : Mono.<Void>empty()))
            .block(TX_TIMEOUT);
        transactions.incrementAndGet();
      } catch (RollbackOnPurpose e) {
        rolledBack.addAll(tags);
      } catch (RuntimeException e) {
        // A fault: the transaction may or may not have committed. Back off a little.
        failures.incrementAndGet();
        LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(200));
      }
      if (pauseNanos > 0) {
        LockSupport.parkNanos(pauseNanos);
      }
    }
  }

  private Mono<Void> writeAll(Connection c, String key, List<String> tags) {
    List<Message> batch = new ArrayList<>(tags.size());
    Flux<Long> business = Flux.fromIterable(tags).concatMap(tag -> {
      batch.add(Message.builder().stream(topic).key(key)
          .data(tag.getBytes(StandardCharsets.UTF_8)).build());
      return Flux.from(c.createStatement("INSERT INTO " + businessTable
                  + " (tag, message_key, seq) VALUES ($1, $2, $3)")
              .bind("$1", tag).bind("$2", key).bind("$3", seqOf(tag))
              .execute())
          .concatMap(result -> result.getRowsUpdated());
    });
    return business.then(Mono.defer(() -> writer.write(batch)));
  }

  static long seqOf(String tag) {
    return Long.parseLong(tag.substring(tag.lastIndexOf(':') + 1));
  }

  static String keyOf(String tag) {
    return tag.substring(0, tag.lastIndexOf(':'));
  }

  /** Stops the workers after their current transaction. */
  void stop() {
    running.set(false);
    for (Thread worker : workers) {
      try {
        worker.join(TimeUnit.SECONDS.toMillis(60));
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        return;
      }
    }
  }

  long committedTransactions() {
    return transactions.get();
  }

  long failedTransactions() {
    return failures.get();
  }

  Set<String> rolledBackTags() {
    return Set.copyOf(rolledBack);
  }

  /** The tags whose transaction committed, read from the business table. */
  Set<String> committedTags() {
    Set<String> tags = new HashSet<>();
    db.queryColumn("SELECT tag FROM " + businessTable).forEach(tag -> tags.add((String) tag));
    return tags;
  }

  @Override
  public void close() {
    stop();
    pool.dispose();
  }

  /** Thrown inside a transaction to roll it back on purpose. */
  private static final class RollbackOnPurpose extends RuntimeException {
    RollbackOnPurpose() {
      super("rolled back on purpose", null, false, false);
    }
  }
}
