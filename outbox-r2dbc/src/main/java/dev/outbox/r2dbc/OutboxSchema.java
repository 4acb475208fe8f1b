package dev.outbox.r2dbc;

import io.r2dbc.spi.Connection;
import io.r2dbc.spi.ConnectionFactory;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.scheduler.Schedulers;

/**
 * The outbox DDL. The versioned SQL files under {@value #RESOURCE_DIR} are the source of truth
 * (use them from Flyway or Liquibase in production); {@link #createIfMissing} applies them with a
 * configured table name, for tests and demos.
 *
 * <pre>{@code
 * OutboxSchema.createIfMissing(connectionFactory, OutboxTable.of("order_outbox")).block();
 * }</pre>
 *
 * <p>Concurrent {@code createIfMissing} calls for the same new table may fail with a
 * duplicate-object error from PostgreSQL; run it once, before the writers and relays start.
 */
public final class OutboxSchema {
  /** Classpath folder of the versioned DDL files. */
  public static final String RESOURCE_DIR = "dev/outbox/r2dbc/schema/";

  // V0_1 adopts a table that exists without our columns (the Go package's, or our version 1)
  // before V1 and V2 run; it does nothing on a new or current table. V3 (partitions, for the
  // default PARTITIONED mode) lives in its own folder, where earlier versions kept it opt-in.
  private static final List<String> MIGRATIONS = List.of(
      "V0_1__adopt_existing_table.sql", "V1__create_outbox.sql", "V2__message_keys.sql",
      "partitions/V3__partitions.sql", "V4__inline_batches.sql");
  /** Version 3 alone, to upgrade an existing table for the PARTITIONED relay mode. */
  private static final List<String> PARTITION_MIGRATIONS = List.of("partitions/V3__partitions.sql");
  /**
   * Opt-in: the deprecated modes' indexes dropped. Outside {@value #RESOURCE_DIR} on purpose:
   * Flyway scans a location's subfolders too, and must not apply this by itself.
   */
  private static final List<String> OLD_MODE_INDEX_DROPS =
      List.of("../schema-optional/V5__drop_old_mode_indexes.sql");
  private static final Pattern NAME = Pattern.compile("\\b" + OutboxTable.DEFAULT_NAME + "(\\w*)");

  private OutboxSchema() {}

  /** Creates the outbox and dead-letter tables and their indexes when missing. */
  public static Mono<Void> createIfMissing(ConnectionFactory connectionFactory, OutboxTable table) {
    return Mono.usingWhen(
        connectionFactory.create(), connection -> createIfMissing(connection, table),
        Connection::close);
  }

  /**
   * Adds what the PARTITIONED relay mode needs to an existing outbox table (version 3:
   * {@code outbox_partition}, its index, the {@code <table>_partitions} and {@code <table>_relays}
   * tables) when missing; existing rows get their partition. {@link #createIfMissing} applies it
   * too.
   */
  public static Mono<Void> enablePartitions(ConnectionFactory connectionFactory, OutboxTable table) {
    return Mono.usingWhen(connectionFactory.create(),
        connection -> apply(connection, () -> statements(table, PARTITION_MIGRATIONS)),
        Connection::close);
  }

  /**
   * Drops the indexes only the deprecated PARALLEL and ORDERED relay modes use (opt-in version 5,
   * {@code dev/outbox/r2dbc/schema-optional/V5__drop_old_mode_indexes.sql}, outside the folder
   * Flyway reads for the default migrations): every insert pays for each
   * index on the outbox table. Apply it once every relay on the table runs PARTITIONED (or WAL).
   *
   * <pre>{@code
   * OutboxSchema.dropOldModeIndexes(connectionFactory, OutboxTable.of("order_outbox")).block();
   * }</pre>
   */
  public static Mono<Void> dropOldModeIndexes(ConnectionFactory connectionFactory, OutboxTable table) {
    return Mono.usingWhen(connectionFactory.create(),
        // An index lives in its table's schema: name it there (the file relies on search_path).
        connection -> apply(connection, () -> statements(table, OLD_MODE_INDEX_DROPS).stream()
            .map(sql -> table.schema().map(schema -> sql.replace("DROP INDEX IF EXISTS ",
                "DROP INDEX IF EXISTS " + schema + ".")).orElse(sql))
            .toList()),
        Connection::close);
  }

  /** As {@link #createIfMissing(ConnectionFactory, OutboxTable)}, on a given connection. */
  public static Mono<Void> createIfMissing(Connection connection, OutboxTable table) {
    return apply(connection, () -> statements(table));
  }

  private static Mono<Void> apply(Connection connection, Callable<List<String>> ddl) {
    // Reading the DDL resource is file I/O: keep it off non-blocking threads.
    return Mono.fromCallable(ddl)
        .subscribeOn(Schedulers.boundedElastic())
        .flatMapIterable(statements -> statements)
        .concatMap(sql -> Flux.from(connection.createStatement(sql).execute())
            .concatMap(result -> result.getRowsUpdated()))
        .then();
  }

  /** The DDL statements for {@code table}, in order. */
  public static List<String> statements(OutboxTable table) {
    return statements(table, MIGRATIONS);
  }

  /** The DDL statements of {@link #enablePartitions}, for {@code table}, in order. */
  public static List<String> partitionStatements(OutboxTable table) {
    return statements(table, PARTITION_MIGRATIONS);
  }

  private static List<String> statements(OutboxTable table, List<String> migrations) {
    List<String> statements = new ArrayList<>();
    for (String migration : migrations) {
      for (String sql : split(withoutComments(read(migration)))) {
        if (!sql.isBlank()) {
          statements.add(rename(sql.strip(), table));
        }
      }
    }
    return statements;
  }

  /** Table references become the (qualified) name; index and constraint names the simple one. */
  private static String rename(String sql, OutboxTable table) {
    Matcher m = NAME.matcher(sql);
    StringBuilder out = new StringBuilder();
    while (m.find()) {
      String suffix = m.group(1);
      boolean tableReference = suffix.isEmpty() || suffix.equals("_dead_letter")
          || suffix.equals("_partitions") || suffix.equals("_relays");
      m.appendReplacement(out, Matcher.quoteReplacement(
          (tableReference ? table.qualifiedName() : table.name()) + suffix));
    }
    m.appendTail(out);
    return out.toString();
  }

  /** Splits at semicolons outside {@code $$} bodies (a DO block is one statement). */
  private static List<String> split(String sql) {
    List<String> parts = new ArrayList<>();
    boolean inBody = false;
    int start = 0;
    for (int i = 0; i < sql.length(); i++) {
      if (sql.startsWith("$$", i)) {
        inBody = !inBody;
        i++;
      } else if (sql.charAt(i) == ';' && !inBody) {
        parts.add(sql.substring(start, i));
        start = i + 1;
      }
    }
    parts.add(sql.substring(start));
    return parts;
  }

  private static String withoutComments(String sql) {
    return sql.replaceAll("--[^\n]*", "");
  }

  private static String read(String migration) {
    String path = migration.startsWith("../")
        ? RESOURCE_DIR.substring(0, RESOURCE_DIR.lastIndexOf('/', RESOURCE_DIR.length() - 2) + 1)
            + migration.substring(3)
        : RESOURCE_DIR + migration;
    try (InputStream in = OutboxSchema.class.getClassLoader().getResourceAsStream(path)) {
      if (in == null) {
        throw new IllegalStateException("Missing schema resource " + path);
      }
      return new String(in.readAllBytes(), StandardCharsets.UTF_8);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }
}
