package dev.outbox.relay;

import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.internal.Sql;
import io.r2dbc.spi.ConnectionFactory;
import java.util.UUID;
import reactor.core.publisher.Mono;

/**
 * WAL mode: whether the rows a slot replays at a start need the backlog check (are they still in
 * the table?). A predecessor on the slot may have published, and deleted, rows it had not yet
 * confirmed; those come again and are checked. After a predecessor that left a mark which the
 * slot has confirmed, nothing replayed was sent before, and nothing is checked.
 *
 * <p>One row per slot in {@code <table>_wal_starts}, created when missing. Each start names
 * itself ({@link #started}: a random token, taking and clearing the previous start's mark). Once
 * it streams, and only if the row still names it, its check bound is final ({@link
 * #checkBelow}). When it ends it leaves its mark ({@link #stopped}): the end of the newest
 * transaction it may have sent, and of all a predecessor may have sent. A start that never
 * streamed, one that crashed, and one whose row a later start renamed leave no mark: the next
 * start checks. Relays of a version without this table do not rename the row: do not let one
 * stream a slot between two starts of this version. Thread-safe.
 */
final class WalStarts {
  private final ConnectionFactory connections;
  private final String table;
  private final String slot;
  /** The table exists (checked once per instance: each start makes a new one). */
  private volatile boolean created;

  WalStarts(ConnectionFactory connections, OutboxTable outbox, String slot) {
    this.connections = connections;
    this.table = outbox.qualifiedName() + "_wal_starts";
    this.slot = slot;
  }

  /**
   * Names this start {@code token} and takes the previous start's mark: true when the slot has
   * confirmed it, so that nothing it replays was sent by a predecessor (if this start is still
   * the named one once it streams: {@link #checkBelow}).
   */
  Mono<Boolean> started(UUID token) {
    // The old mark is read under the row's lock, so two starts at once cannot both take it.
    return created().then(Sql.query(connections, "WITH old AS (SELECT sent_below FROM " + table
                + " WHERE slot_name = $1 FOR UPDATE),"
                + " renamed AS (INSERT INTO " + table + " (slot_name, start_token) VALUES ($1, $2)"
                + " ON CONFLICT (slot_name) DO UPDATE SET start_token = EXCLUDED.start_token,"
                + " sent_below = NULL)"
                + " SELECT coalesce((SELECT sent_below FROM old) <= (SELECT"
                + " pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint FROM pg_replication_slots"
                + " WHERE slot_name = $1), FALSE) AS past",
            s -> s.bind(0, slot).bind(1, token),
            row -> Boolean.TRUE.equals(row.get("past", Boolean.class)))
        .next())
        .defaultIfEmpty(false);
  }

  /**
   * Once this start streams (no other relay streams the slot any more, so everything another
   * relay sent committed before the server's current position): the WAL position below which
   * replayed rows are checked. 0 when {@code past}, otherwise the current position; -1 when the
   * row no longer names this start (another start named itself meanwhile: this one must not
   * send, since that start's mark would not cover it).
   */
  Mono<Long> checkBelow(UUID token, boolean past) {
    return Sql.query(connections, "SELECT EXISTS (SELECT 1 FROM " + table
                + " WHERE slot_name = $1 AND start_token = $2) AS named,"
                + " pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint AS now",
            s -> s.bind(0, slot).bind(1, token),
            row -> !Boolean.TRUE.equals(row.get("named", Boolean.class)) ? -1L : past ? 0L
                : java.util.Objects.requireNonNull(row.get("now", Long.class), "now"))
        .next();
  }

  /**
   * The start named {@code token} is over, and every row it or a predecessor may have sent came
   * from transactions ending at or before {@code sentBelow}. Written only while the row still
   * names it.
   */
  Mono<Void> stopped(UUID token, long sentBelow) {
    return Sql.rowsUpdated(connections, "UPDATE " + table + " SET sent_below = $3"
        + " WHERE slot_name = $1 AND start_token = $2",
        s -> s.bind(0, slot).bind(1, token).bind(2, sentBelow)).then();
  }

  /** The slot starts over: no mark of the old one may be taken. */
  Mono<Void> forget() {
    return created().then(Sql.rowsUpdated(connections, "DELETE FROM " + table
        + " WHERE slot_name = $1", s -> s.bind(0, slot))).then();
  }

  private Mono<Void> created() {
    if (created) {
      return Mono.empty();
    }
    return WalSweeps.createIfMissing(connections, "CREATE TABLE IF NOT EXISTS " + table
            + " (slot_name TEXT PRIMARY KEY, start_token UUID NOT NULL, sent_below BIGINT)")
        .doOnSuccess(done -> created = true);
  }
}
