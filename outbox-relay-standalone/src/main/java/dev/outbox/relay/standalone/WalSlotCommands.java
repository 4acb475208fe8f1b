package dev.outbox.relay.standalone;

import dev.outbox.r2dbc.OutboxTable;
import io.r2dbc.spi.Connection;
import io.r2dbc.spi.ConnectionFactory;
import io.r2dbc.spi.R2dbcException;
import io.r2dbc.spi.Row;
import io.r2dbc.spi.Statement;
import java.io.PrintStream;
import java.time.Duration;
import java.util.List;
import java.util.Locale;
import java.util.function.Function;
import org.jspecify.annotations.Nullable;
import reactor.core.Exceptions;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * The {@code wal-slot show|drop} subcommands of {@link AdminCommands}: the WAL relay's replication
 * slot ({@value StandaloneConfig#WAL_SLOT}) and publication ({@value
 * StandaloneConfig#WAL_PUBLICATION}), both {@code <table>_relay} by default. Blocking (a command,
 * not a Reactor pipeline).
 */
final class WalSlotCommands {
  private static final Duration TIMEOUT = Duration.ofMinutes(1);

  private final ConnectionFactory connections;
  private final OutboxTable table;
  private final String slot;
  private final String publication;

  WalSlotCommands(ConnectionFactory connections, OutboxTable table, String slot,
      String publication) {
    this.connections = connections;
    this.table = table;
    this.slot = slot;
    this.publication = publication;
  }

  /** One row of {@code pg_replication_slots} with the server's current position. */
  private record Slot(String plugin, String type, @Nullable String database, boolean active,
      @Nullable Integer activePid, @Nullable String restartLsn, @Nullable String confirmedLsn,
      String currentLsn, @Nullable Long lagBytes, @Nullable Long retainedBytes,
      @Nullable String walStatus, @Nullable Long safeWalSize, String maxSlotWalKeepSize) {}

  private @Nullable Slot slot() {
    return query("SELECT plugin, slot_type, database, active, active_pid, restart_lsn::text,"
            + " confirmed_flush_lsn::text, pg_current_wal_lsn()::text,"
            + " pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8,"
            + " pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8,"
            + " wal_status, safe_wal_size, current_setting('max_slot_wal_keep_size')"
            + " FROM pg_replication_slots WHERE slot_name = $1",
        statement -> statement.bind("$1", slot),
        row -> new Slot(String.valueOf(row.get(0, String.class)),
            String.valueOf(row.get(1, String.class)), row.get(2, String.class),
            Boolean.TRUE.equals(row.get(3, Boolean.class)), row.get(4, Integer.class),
            row.get(5, String.class), row.get(6, String.class),
            String.valueOf(row.get(7, String.class)), row.get(8, Long.class),
            row.get(9, Long.class), row.get(10, String.class), row.get(11, Long.class),
            String.valueOf(row.get(12, String.class))))
        .stream().findFirst().orElse(null);
  }

  /** Whether the publication exists, and whether it includes the table. */
  private boolean[] publication() {
    return query("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1),"
            + " EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p"
            + " ON p.oid = r.prpubid WHERE p.pubname = $1 AND r.prrelid = to_regclass($2))",
        statement -> statement.bind("$1", publication).bind("$2", table.qualifiedName()),
        row -> new boolean[] {Boolean.TRUE.equals(row.get(0, Boolean.class)),
            Boolean.TRUE.equals(row.get(1, Boolean.class))})
        .get(0);
  }

  int show(PrintStream out, PrintStream err) {
    Slot found = slot();
    if (found == null) {
      err.println("No replication slot " + slot + " on this server (a relay in WAL mode creates"
          + " it at start; " + StandaloneConfig.WAL_SLOT + " names another one)");
      return AdminCommands.EXIT_FAILED;
    }
    out.println("Replication slot " + slot + " (" + found.type() + ", plugin " + found.plugin()
        + (found.database() == null ? "" : ", database " + found.database()) + ")");
    field(out, "active", found.active()
        ? "yes, followed by pid " + found.activePid() : "no (no relay follows it now)");
    field(out, "restart LSN", orNone(found.restartLsn()));
    field(out, "confirmed LSN", orNone(found.confirmedLsn()));
    field(out, "current WAL LSN", found.currentLsn());
    field(out, "lag", found.lagBytes() == null ? "(unknown: no confirmed position yet)"
        : bytes(Math.max(0, found.lagBytes())) + " written after the confirmed position");
    field(out, "WAL retained", found.retainedBytes() == null ? "(none)"
        : bytes(Math.max(0, found.retainedBytes())) + " kept for this slot (from restart LSN)");
    String cap = "-1".equals(found.maxSlotWalKeepSize())
        ? "unlimited (max_slot_wal_keep_size = -1)"
        : found.maxSlotWalKeepSize() + " (max_slot_wal_keep_size)"
            + (found.safeWalSize() == null ? ""
                : "; " + bytes(Math.max(0, found.safeWalSize())) + " more before invalidation");
    field(out, "WAL status", orNone(found.walStatus()) + ", retention cap " + cap);
    boolean[] pub = publication();
    field(out, "publication", publication + (!pub[0] ? ": does not exist"
        : pub[1] ? ": includes " + table.qualifiedName()
        : ": does NOT include " + table.qualifiedName() + " (restart the relay to add it back)"));
    field(out, "oldest row", oldestRow());
    if ("lost".equals(found.walStatus())) {
      out.println("The slot is invalidated (it fell more than max_slot_wal_keep_size behind):"
          + " it can no longer be followed; drop it (wal-slot drop) and start the relay again,"
          + " whose start-up sweep publishes the rows still in the table.");
    }
    return AdminCommands.EXIT_OK;
  }

  /** Age of the oldest row still in the table: how far publication runs behind, in time. */
  private String oldestRow() {
    try {
      List<Double> age = query("SELECT EXTRACT(EPOCH FROM (clock_timestamp() - insert_time))"
              + "::float8 FROM " + table.qualifiedName() + " ORDER BY insert_seq LIMIT 1",
          statement -> statement, row -> row.get(0, Double.class));
      if (age.isEmpty() || age.get(0) == null) {
        return "(none: " + table.qualifiedName() + " is empty)";
      }
      return AdminCommands.age(Duration.ofMillis(Math.round(age.get(0) * 1000)))
          + " waiting in " + table.qualifiedName();
    } catch (RuntimeException e) {
      return "(unknown: " + AdminCommands.oneLine(String.valueOf(Exceptions.unwrap(e)
          .getMessage())) + ")";
    }
  }

  int drop(boolean dropPublication, PrintStream out, PrintStream err) {
    Slot found = slot();
    if (found == null) {
      err.println("No replication slot " + slot + " on this server: nothing to drop");
      if (dropPublication) {
        return dropPublication(out) ? AdminCommands.EXIT_OK : AdminCommands.EXIT_FAILED;
      }
      return AdminCommands.EXIT_FAILED;
    }
    if (found.active()) {
      return refuseActive(found.activePid(), err);
    }
    try {
      query("SELECT pg_drop_replication_slot($1)", statement -> statement.bind("$1", slot),
          row -> "");
    } catch (RuntimeException e) {
      Throwable cause = Exceptions.unwrap(e);
      // A relay started following it between the check and the drop.
      if (cause instanceof R2dbcException r2dbc && "55006".equals(r2dbc.getSqlState())) {
        return refuseActive(null, err);
      }
      throw e;
    }
    out.println("Dropped replication slot " + slot + (found.retainedBytes() == null ? ""
        : " (it retained " + bytes(Math.max(0, found.retainedBytes())) + " of WAL)") + ".");
    out.println("A relay in WAL mode started again creates a new slot; its start-up sweep"
        + " publishes the rows then in " + table.qualifiedName() + ".");
    if (found.lagBytes() != null && found.lagBytes() > 0) {
      // Batches of writers built with deleteOnceLogged were in that WAL only.
      err.println("Warning: the slot had not confirmed the last " + bytes(found.lagBytes())
          + " of WAL. Batches that writers logged only (OutboxWriter deleteOnceLogged) and"
          + " that were written there existed only in that WAL: they are lost.");
    }
    if (dropPublication) {
      dropPublication(out);
    } else {
      out.println("Publication " + publication + " kept (--drop-publication drops it too).");
    }
    return AdminCommands.EXIT_OK;
  }

  private int refuseActive(@Nullable Integer pid, PrintStream err) {
    err.println("Refusing to drop replication slot " + slot + ": it is active (a relay"
        + (pid == null ? "" : ", pid " + pid + ",") + " follows it). Stop the WAL relay first;"
        + " nothing was dropped.");
    return AdminCommands.EXIT_FAILED;
  }

  private boolean dropPublication(PrintStream out) {
    if (!publication()[0]) {
      out.println("No publication " + publication + ": nothing to drop.");
      return false;
    }
    // Validated name (lower-case letters, digits, '_'): safe as an identifier.
    query("DROP PUBLICATION IF EXISTS " + publication, statement -> statement, row -> "");
    out.println("Dropped publication " + publication + ".");
    return true;
  }

  private <T> List<T> query(String sql, Function<Statement, Statement> bind,
      Function<Row, T> mapper) {
    List<T> rows = Mono.usingWhen(connections.create(),
            (Connection connection) -> Flux.from(bind.apply(connection.createStatement(sql))
                    .execute())
                .concatMap(result -> result.map((row, meta) -> mapper.apply(row)))
                .collectList(),
            Connection::close)
        .block(TIMEOUT);
    return rows == null ? List.of() : rows;
  }

  private static void field(PrintStream out, String name, String value) {
    out.println(String.format("  %-17s %s", name, value));
  }

  private static String orNone(@Nullable String value) {
    return value == null ? "(none)" : value;
  }

  /** {@code 123456 bytes (120.6 kB)}: exact, then in binary units. */
  static String bytes(long bytes) {
    if (bytes < 1024) {
      return bytes + " bytes";
    }
    String[] units = {"kB", "MB", "GB", "TB"};
    double value = bytes;
    int unit = -1;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit++;
    }
    return bytes + " bytes (" + String.format(Locale.ROOT, "%.1f %s", value, units[unit]) + ")";
  }
}
