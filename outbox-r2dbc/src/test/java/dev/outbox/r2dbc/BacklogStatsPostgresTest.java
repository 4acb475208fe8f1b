package dev.outbox.r2dbc;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * {@link OutboxStore#stats()} is read every few seconds by every relay: exact for small tables,
 * an estimate above {@link BacklogStats#EXACT_UP_TO}, and fast with a large backlog (no
 * whole-table scan).
 */
@ExtendWith(PostgresExtension.class)
class BacklogStatsPostgresTest {
  /** Rows for the large-backlog check; {@code -Doutbox.stats.rows=1000000} for the full size. */
  private static final int LARGE = Integer.getInteger("outbox.stats.rows", 300_000);
  private static final Pattern EXECUTION = Pattern.compile("Execution Time: ([0-9.]+) ms");

  private final TestPostgres postgres;
  private final OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("stats"));
  private ConnectionPool pool;
  private OutboxStore store;

  BacklogStatsPostgresTest(TestPostgres postgres) {
    this.postgres = postgres;
  }

  @BeforeEach
  void setUp() {
    pool = postgres.newPool(2);
    OutboxSchema.createIfMissing(pool, table).block(Duration.ofSeconds(30));
    store = OutboxStore.create(pool, table);
  }

  @AfterEach
  void tearDown() {
    postgres.execute("DROP TABLE " + table.qualifiedName(),
        "DROP TABLE " + table.deadLetterQualifiedName());
    pool.dispose();
  }

  /** Inserts rows {@code from..to} directly, with insert times one second apart, oldest first. */
  private void insert(int from, int to) {
    postgres.execute("INSERT INTO " + table.qualifiedName()
        + " (batch_id, message_count, raw_data, insert_time)"
        + " SELECT lpad(i::text, 27, '0'), 1, '\\x00'::bytea,"
        + " timestamptz '2026-01-01 00:00:00Z' + i * INTERVAL '1 second'"
        + " FROM generate_series(" + from + ", " + to + ") AS i");
  }

  @Test
  void exactForSmallTablesWithTheFirstRowInInsertOrder() {
    BacklogStats empty = store.stats().block(Duration.ofSeconds(10));
    assertThat(empty).isEqualTo(new BacklogStats(0, null, 0));

    insert(1, 3);
    postgres.execute("INSERT INTO " + table.deadLetterQualifiedName()
        + " (batch_id, message_count, write_retries, reason, raw_data, insert_time)"
        + " VALUES ('x', 1, 1, 'test', '\\x00'::bytea, now())");
    BacklogStats stats = store.stats().block(Duration.ofSeconds(10));
    assertThat(stats.rows()).isEqualTo(3);
    assertThat(stats.rowsEstimated()).isFalse();
    assertThat(stats.oldestInsertTime()).isEqualTo(Instant.parse("2026-01-01T00:00:01Z"));
    assertThat(stats.deadLetters()).isEqualTo(1);
  }

  @Test
  void anEstimateAboveTheExactLimit() {
    insert(1, 12_000);
    // Never analyzed: no estimate yet, so the bound is all that is known.
    BacklogStats unanalyzed = store.stats().block(Duration.ofSeconds(10));
    assertThat(unanalyzed.rows()).isGreaterThanOrEqualTo(BacklogStats.EXACT_UP_TO + 1);
    assertThat(unanalyzed.rowsEstimated()).isTrue();

    postgres.execute("ANALYZE " + table.qualifiedName());
    insert(12_001, 14_000); // the estimate scales with the table's size since the ANALYZE
    BacklogStats analyzed = store.stats().block(Duration.ofSeconds(10));
    assertThat(analyzed.rows()).isBetween(13_000L, 15_000L);
    assertThat(analyzed.rowsEstimated()).isTrue();
    assertThat(analyzed.oldestInsertTime()).isEqualTo(Instant.parse("2026-01-01T00:00:01Z"));
  }

  @Test
  void staysFastWithALargeBacklogAndAfterItsHeadWasDeleted() {
    insert(1, LARGE);
    postgres.execute("ANALYZE " + table.qualifiedName());
    double full = explain("full table of " + LARGE);
    double before = explain("the statement this replaced, full table of " + LARGE,
        "SELECT (SELECT count(*) FROM " + table.qualifiedName() + ") AS rows,"
            + " (SELECT min(insert_time) FROM " + table.qualifiedName() + ") AS oldest,"
            + " (SELECT count(*) FROM " + table.deadLetterQualifiedName() + ") AS dead_letters");
    BacklogStats stats = store.stats().block(Duration.ofSeconds(10));
    assertThat(stats.rows()).isBetween(LARGE * 9L / 10, LARGE * 11L / 10);
    assertThat(stats.oldestInsertTime()).isEqualTo(Instant.parse("2026-01-01T00:00:01Z"));

    // Relays delete from the head: dead tuples there until VACUUM, which both lookups skip.
    postgres.execute("DELETE FROM " + table.qualifiedName() + " WHERE insert_seq <= "
        + LARGE / 2);
    double headDeleted = explain("first half deleted, not vacuumed");
    double again = explain("first half deleted, second read");
    BacklogStats after = store.stats().block(Duration.ofSeconds(10));
    assertThat(after.oldestInsertTime())
        .isEqualTo(Instant.parse("2026-01-01T00:00:00Z").plusSeconds(LARGE / 2 + 1));

    // A whole-table count(*) + min(insert_time) takes hundreds of ms at these sizes. Compared
    // with it, measured in the same run (absolute limits fail on a loaded machine).
    assertThat(full).as("ms, full table, against %s ms before", before).isLessThan(before / 3);
    assertThat(again).as("ms, after the head was deleted, against %s ms before", before)
        .isLessThan(before / 3);
    assertThat(headDeleted).as("ms, first read after the head was deleted").isLessThan(1_000);
  }

  /** Runs EXPLAIN (ANALYZE, BUFFERS) of the stats statement, prints it, returns its time. */
  private double explain(String what) {
    return explain(what, store.statsSql()
        .replace("$1", "'" + table.qualifiedName() + "'")
        .replace("$2", "'" + table.deadLetterQualifiedName() + "'"));
  }

  private double explain(String what, String sql) {
    List<Object> plan = postgres.queryColumn("EXPLAIN (ANALYZE, BUFFERS) " + sql);
    String text = plan.stream().map(Object::toString).collect(Collectors.joining("\n"));
    System.out.println("STATS PLAN (" + what + "):\n" + text);
    Matcher time = EXECUTION.matcher(text);
    assertThat(time.find()).as(text).isTrue();
    return Double.parseDouble(time.group(1));
  }
}
