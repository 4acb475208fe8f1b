package dev.outbox.relay;

import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.internal.Sql;
import io.r2dbc.spi.ConnectionFactory;
import io.r2dbc.spi.R2dbcException;
import java.util.Set;
import java.util.UUID;
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
 * for good; a relay that stops or crashes before then sweeps again at its next start.
 *
 * <p>The same row carries a second mark, for the check of replayed rows: each start names itself
 * ({@code start_token}) and takes what the previous start left ({@code sent_below}): the end
 * of the newest transaction whose rows it may have sent. Once the slot has confirmed that
 * position, every row the slot replays was never sent, and none needs the backlog check. A start
 * that ends without leaving its mark (a crash), or whose mark a later start has already
 * replaced, leaves none: the next start checks as before. Thread-safe.
 */
final class WalSweeps {
  /**
   * 42P07 duplicate table, 23505 unique violation, 42701 duplicate column: created concurrently
   * by another relay.
   */
  private static final Set<String> CREATED_CONCURRENTLY = Set.of("42P07", "23505", "42701");

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

  /**
   * This start, named {@code token}, takes the mark the previous start on a swept slot left
   * ({@link #stopped}): true when the slot has confirmed the end of everything that start may
   * have sent, so that nothing it replays was sent before. False without a mark, or before the
   * first sweep is remembered (then this start sweeps, and checks nothing anyway).
   */
  Mono<Boolean> started(UUID token) {
    return Sql.query(connections, "UPDATE " + table + " AS s SET start_token = $2, sent_below = NULL"
                + " FROM (SELECT sent_below AS was FROM " + table + " WHERE slot_name = $1) AS old"
                + " WHERE s.slot_name = $1"
                + " RETURNING old.was IS NOT NULL AND old.was <= coalesce((SELECT"
                + " pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint FROM pg_replication_slots"
                + " WHERE slot_name = $1), -1) AS past",
            s -> s.bind(0, slot).bind(1, token),
            row -> Boolean.TRUE.equals(row.get("past", Boolean.class)))
        .next()
        .defaultIfEmpty(false);
  }

  /**
   * The start named {@code token} is over, and every row it may have sent to Kafka came from
   * transactions ending at or before {@code sentBelow} (a WAL position). Written only while no
   * later start has named itself (a hand-over, a restart racing this write): that start took
   * nothing, and checks.
   */
  Mono<Void> stopped(UUID token, long sentBelow) {
    return Sql.rowsUpdated(connections, "UPDATE " + table + " SET sent_below = $3"
        + " WHERE slot_name = $1 AND start_token = $2",
        s -> s.bind(0, slot).bind(1, token).bind(2, sentBelow)).then();
  }

  /**
   * Every row of the sweep of the start named {@code token} is settled for good; that start may
   * leave its mark when it stops ({@link #stopped}).
   */
  Mono<Void> remember(UUID token) {
    return Sql.rowsUpdated(connections, "INSERT INTO " + table + " (slot_name, start_token)"
        + " VALUES ($1, $2) ON CONFLICT (slot_name) DO UPDATE SET swept_at = now()",
        s -> s.bind(0, slot).bind(1, token)).then();
  }

  private Mono<Void> created() {
    if (created) {
      return Mono.empty();
    }
    return Sql.rowsUpdated(connections, "CREATE TABLE IF NOT EXISTS " + table
            + " (slot_name TEXT PRIMARY KEY, swept_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
            + " start_token UUID, sent_below BIGINT)", s -> s)
        .then()
        .onErrorResume(e -> e instanceof R2dbcException r
            && CREATED_CONCURRENTLY.contains(r.getSqlState()), e -> Mono.empty())
        // Created by a version without the start mark.
        .then(Sql.rowsUpdated(connections, "ALTER TABLE " + table
            + " ADD COLUMN IF NOT EXISTS start_token UUID,"
            + " ADD COLUMN IF NOT EXISTS sent_below BIGINT", s -> s))
        .then()
        .onErrorResume(e -> e instanceof R2dbcException r
            && CREATED_CONCURRENTLY.contains(r.getSqlState()), e -> Mono.empty())
        .doOnSuccess(done -> created = true);
  }
}
