package dev.outbox.relay.standalone;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.testing.Poll;
import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/** {@code wal-slot show|drop} against the harness's PostgreSQL, with a real WAL relay running. */
@ExtendWith(PostgresExtension.class)
class WalSlotCommandsTest {
  private static final Duration QUICKLY = Duration.ofSeconds(30);

  private final TestPostgres postgres;
  private final OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("walops"));
  private final String defaultName = table.name() + "_relay";
  private final List<String> slots = new ArrayList<>();
  private final List<StandaloneRelay> relays = new ArrayList<>();

  WalSlotCommandsTest(TestPostgres postgres) {
    this.postgres = postgres;
    ConnectionPool pool = postgres.newPool(2);
    OutboxSchema.createIfMissing(pool, table).block(Duration.ofSeconds(60));
    pool.dispose();
  }

  @AfterEach
  void tearDown() {
    relays.forEach(r -> r.stop(Duration.ofSeconds(5)).block(Duration.ofSeconds(20)));
    for (String slot : slots) {
      Poll.until("slot " + slot + " released", QUICKLY, () -> !active(slot));
      if (exists(slot)) {
        postgres.execute("SELECT pg_drop_replication_slot('" + slot + "')");
      }
      postgres.execute("DROP PUBLICATION IF EXISTS " + slot);
    }
  }

  private record Run(int status, String out, String err) {}

  private Run run(Map<String, String> env, String... args) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    int status = AdminCommands.run(List.of(args), env,
        new PrintStream(out, true, StandardCharsets.UTF_8),
        new PrintStream(err, true, StandardCharsets.UTF_8));
    return new Run(status, out.toString(StandardCharsets.UTF_8),
        err.toString(StandardCharsets.UTF_8));
  }

  private Map<String, String> env() {
    Map<String, String> env = new HashMap<>();
    env.put("OUTBOX_DATABASE_URL", postgres.url());
    env.put("OUTBOX_TABLE", table.qualifiedName());
    return env;
  }

  private boolean exists(String slot) {
    return postgres.queryLong("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '"
        + slot + "'") == 1;
  }

  private boolean active(String slot) {
    return postgres.queryLong("SELECT count(*) FROM pg_replication_slots WHERE active AND"
        + " slot_name = '" + slot + "'") == 1;
  }

  /** A walsender streams from the slot (not the backend creating it, which also shows it active). */
  private boolean streamed(String slot) {
    return postgres.queryLong("SELECT count(*) FROM pg_replication_slots s JOIN pg_stat_activity a"
        + " ON a.pid = s.active_pid WHERE a.backend_type = 'walsender' AND s.slot_name = '" + slot
        + "'") == 1;
  }

  private boolean publicationExists(String name) {
    return postgres.queryLong("SELECT count(*) FROM pg_publication WHERE pubname = '" + name
        + "'") == 1;
  }

  /** ~100 kB of WAL, written out (the test server commits asynchronously). */
  private void writeWal() {
    postgres.execute("SET synchronous_commit = on",
        "SELECT pg_logical_emit_message(false, 'wal-ops-test', repeat('x', 100000))",
        "CREATE TEMP TABLE flush_me (x int)", "DROP TABLE flush_me");
  }

  private static long lagBytes(String showOutput) {
    Matcher lag = Pattern.compile("lag\\s+(\\d+) bytes").matcher(showOutput);
    assertThat(lag.find()).as(showOutput).isTrue();
    return Long.parseLong(lag.group(1));
  }

  @Test
  void showAndDropTheSlotOfARunningWalRelayOnlyOnceItStopped() {
    String slot = TestPostgres.uniqueName("ops_slot");
    slots.add(slot);
    slots.add(defaultName); // the publication keeps its default name
    Map<String, String> env = env();
    env.put("OUTBOX_WAL_SLOT", slot);
    Map<String, String> relayEnv = new HashMap<>(env);
    relayEnv.put("OUTBOX_KAFKA_BOOTSTRAP_SERVERS", TestKafka.get().bootstrapServers());
    relayEnv.put("OUTBOX_MODE", "WAL");
    relayEnv.put("OUTBOX_HTTP_PORT", "0");
    relayEnv.put("OUTBOX_DB_POOL_SIZE", "4");
    StandaloneRelay relay = StandaloneRelay.start(StandaloneConfig.fromEnvironment(relayEnv));
    relays.add(relay);
    // The slot is also active for a moment while the relay creates it, before it streams from
    // it: wait for the command itself to see the relay following.
    Run[] last = new Run[1];
    Poll.until("wal-slot show reports the relay following slot " + slot, QUICKLY, () -> {
      last[0] = run(env, "wal-slot", "show");
      // Creating the slot also shows it active, with no confirmed position until it is ready.
      // Between creating it and streaming (start-up checks, the sweep) it is inactive again.
      return streamed(slot) && last[0].status() == 0
          && Pattern.compile("active\\s+yes, followed by pid \\d+").matcher(last[0].out()).find()
          && Pattern.compile("confirmed LSN\\s+[0-9A-F]+/[0-9A-F]+").matcher(last[0].out()).find();
    });
    Run shown = last[0];

    assertThat(shown.status()).as(shown.err()).isZero();
    assertThat(shown.out()).contains("Replication slot " + slot + " (logical, plugin pgoutput")
        .containsPattern("active\\s+yes, followed by pid \\d+")
        .containsPattern("restart LSN\\s+[0-9A-F]+/[0-9A-F]+")
        .containsPattern("confirmed LSN\\s+[0-9A-F]+/[0-9A-F]+")
        .contains("WAL retained")
        .contains("publication       " + defaultName + ": includes " + table.qualifiedName());

    Run refused = run(env, "wal-slot", "drop", "--drop-publication");

    assertThat(refused.status()).isEqualTo(AdminCommands.EXIT_FAILED);
    assertThat(refused.err()).contains("Refusing to drop replication slot " + slot
        + ": it is active").contains("Stop the WAL relay first");
    assertThat(exists(slot)).as("slot kept").isTrue();
    assertThat(publicationExists(defaultName)).as("publication kept").isTrue();

    relay.stop(Duration.ofSeconds(5)).block(Duration.ofSeconds(20));
    Poll.until("the slot is released", QUICKLY, () -> !active(slot));
    writeWal();

    Run idle = run(env, "wal-slot", "show");

    assertThat(idle.status()).as(idle.err()).isZero();
    assertThat(idle.out()).contains("no (no relay follows it now)");
    assertThat(lagBytes(idle.out())).as("behind by the WAL written since").isGreaterThan(100_000);

    Run dropped = run(env, "wal-slot", "drop");

    assertThat(dropped.status()).as(dropped.err()).isZero();
    assertThat(dropped.out()).contains("Dropped replication slot " + slot)
        .contains("Publication " + defaultName + " kept");
    assertThat(dropped.err()).as("batches logged only went with the slot's WAL")
        .contains("Warning: the slot had not confirmed the last").contains("deleteOnceLogged");
    assertThat(exists(slot)).isFalse();
    assertThat(publicationExists(defaultName)).isTrue();

    Run again = run(env, "wal-slot", "show");
    assertThat(again.status()).isEqualTo(AdminCommands.EXIT_FAILED);
    assertThat(again.err()).contains("No replication slot " + slot);

    Run publicationToo = run(env, "wal-slot", "drop", "--drop-publication");
    assertThat(publicationToo.status()).as(publicationToo.err()).isZero();
    assertThat(publicationToo.out()).contains("Dropped publication " + defaultName);
    assertThat(publicationExists(defaultName)).isFalse();
  }

  @Test
  void defaultsToTheTablesRelaySlotAndReadsZeroLagOnceCaughtUp() {
    slots.add(defaultName);
    postgres.execute("SELECT pg_create_logical_replication_slot('" + defaultName
        + "', 'pgoutput')");
    writeWal();
    assertThat(lagBytes(run(env(), "wal-slot", "show").out())).isGreaterThan(100_000);

    postgres.execute("SELECT pg_replication_slot_advance('" + defaultName
        + "', pg_current_wal_lsn())");
    Run caughtUp = run(env(), "wal-slot", "show");

    assertThat(caughtUp.status()).as(caughtUp.err()).isZero();
    assertThat(lagBytes(caughtUp.out())).as("only what the server wrote since").isLessThan(16_384);
    assertThat(caughtUp.out()).contains("publication       " + defaultName + ": does not exist")
        .contains("(none: " + table.qualifiedName() + " is empty)");

    Run dropped = run(env(), "wal-slot", "drop", "--drop-publication");

    assertThat(dropped.status()).as(dropped.err()).isZero();
    assertThat(dropped.out()).contains("Dropped replication slot " + defaultName)
        .contains("No publication " + defaultName + ": nothing to drop");
    assertThat(exists(defaultName)).isFalse();
  }

  @Test
  void badUsageAndBadNamesExitWithTwo() {
    Run unknownFlag = run(env(), "wal-slot", "drop", "--force");
    assertThat(unknownFlag.status()).isEqualTo(AdminCommands.EXIT_USAGE);
    assertThat(unknownFlag.err()).contains("wal-slot drop takes only --drop-publication");

    Run noVerb = run(env(), "wal-slot");
    assertThat(noVerb.status()).isEqualTo(AdminCommands.EXIT_USAGE);

    Map<String, String> env = env();
    env.put("OUTBOX_WAL_SLOT", "Bad-Name");
    Run badName = run(env, "wal-slot", "show");
    assertThat(badName.status()).isEqualTo(AdminCommands.EXIT_USAGE);
    assertThat(badName.err()).contains("OUTBOX_WAL_SLOT must be");
  }

  @Test
  void dropWithoutASlotFails() {
    Run missing = run(env(), "wal-slot", "drop");

    assertThat(missing.status()).isEqualTo(AdminCommands.EXIT_FAILED);
    assertThat(missing.err()).contains("No replication slot " + defaultName);
  }
}
