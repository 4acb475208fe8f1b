package dev.outbox.relay;

import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.internal.Sql;
import io.r2dbc.spi.ConnectionFactory;
import io.r2dbc.spi.R2dbcException;
import java.util.Set;
import reactor.core.publisher.Mono;

/**
 * WAL mode: whether a slot still needs its start-up sweep. A slot delivers only transactions
 * that commit after its consistent point (and while the table is in the publication), so the
 * rows committed before then must be read from the table once; after one sweep has published
 * them all, later starts on the same slot have nothing the slot will not deliver, and skip it.
 *
 * <p>The mark is one row per slot in {@code <table>_wal_sweeps}, which the relay creates when
 * missing (as it creates the publication and the slot). It is removed before the slot is created
 * and before the table joins the publication, and written once every row of a sweep is settled
 * for good; a relay that stops or crashes before then sweeps again at its next start. Thread-safe.
 */
final class WalSweeps {
  /** 42P07 duplicate table, 23505 unique violation: created concurrently by another relay. */
  private static final Set<String> CREATED_CONCURRENTLY = Set.of("42P07", "23505");

  private final ConnectionFactory connections;
  private final String table;
  private final String slot;
  /** The table exists (checked once per instance: each start makes a new one). */
  private volatile boolean created;

  WalSweeps(ConnectionFactory connections, OutboxTable outbox, String slot) {
    this.connections = connections;
    this.table = outbox.qualifiedName() + "_wal_sweeps";
    this.slot = slot;
  }

  /** Whether a sweep finished on this slot since it was created and the table last joined. */
  Mono<Boolean> swept() {
    return created().then(Sql.query(connections, "SELECT EXISTS (SELECT 1 FROM " + table
            + " WHERE slot_name = $1) AS swept", s -> s.bind(0, slot),
            row -> Boolean.TRUE.equals(row.get("swept", Boolean.class)))
        .next());
  }

  /** The slot (or its publication's table) starts over: the next start must sweep. */
  Mono<Void> forget() {
    return created().then(Sql.rowsUpdated(connections, "DELETE FROM " + table
        + " WHERE slot_name = $1", s -> s.bind(0, slot))).then();
  }

  /** Every row of this start's sweep is settled for good. */
  Mono<Void> remember() {
    return Sql.rowsUpdated(connections, "INSERT INTO " + table + " (slot_name) VALUES ($1)"
        + " ON CONFLICT (slot_name) DO UPDATE SET swept_at = now()", s -> s.bind(0, slot)).then();
  }

  private Mono<Void> created() {
    if (created) {
      return Mono.empty();
    }
    return createIfMissing(connections, "CREATE TABLE IF NOT EXISTS " + table
            + " (slot_name TEXT PRIMARY KEY, swept_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        .doOnSuccess(done -> created = true);
  }

  /** Runs {@code createTable} (IF NOT EXISTS); another relay creating it at once is no error. */
  static Mono<Void> createIfMissing(ConnectionFactory connections, String createTable) {
    return Sql.rowsUpdated(connections, createTable, s -> s)
        .then()
        .onErrorResume(e -> e instanceof R2dbcException r
            && CREATED_CONCURRENTLY.contains(r.getSqlState()), e -> Mono.empty());
  }
}
