package dev.outbox.relay.standalone;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxStore;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** The dead-letter and backlog subcommands, in this JVM, against the harness's PostgreSQL. */
@ExtendWith(PostgresExtension.class)
class AdminCommandsTest {
  private final TestPostgres postgres;
  private final OutboxTable table = OutboxTable.of(TestPostgres.uniqueName("admin"));
  private final ConnectionPool pool;
  private final OutboxWriter writer = OutboxWriter.builder().table(table).build();
  private final OutboxStore store;

  AdminCommandsTest(TestPostgres postgres) {
    this.postgres = postgres;
    this.pool = postgres.newPool(4);
    OutboxSchema.createIfMissing(pool, table).block(Duration.ofSeconds(60));
    this.store = OutboxStore.create(pool, table);
  }

  @AfterEach
  void tearDown() {
    pool.dispose();
  }

  /** Exit status and what was printed. */
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

  private Run run(String... args) {
    return run(env(), args);
  }

  private Map<String, String> env() {
    Map<String, String> env = new HashMap<>();
    env.put("OUTBOX_DATABASE_URL", postgres.url());
    env.put("OUTBOX_TABLE", table.qualifiedName());
    return env;
  }

  private String write(Message... messages) {
    OutboxTransactions.inTransaction(pool, c -> writer.write(List.of(messages)))
        .block(Duration.ofSeconds(30));
    return (String) postgres.queryColumn("SELECT batch_id FROM " + table.qualifiedName()
        + " ORDER BY insert_seq DESC LIMIT 1").get(0);
  }

  /** Moves the outbox row {@code batchId} to the dead letters, dead-lettered {@code age} ago. */
  private void deadLetter(String batchId, String reason, String age) {
    postgres.execute("WITH moved AS (DELETE FROM " + table.qualifiedName() + " WHERE batch_id = '"
        + batchId + "' RETURNING batch_id, message_count, raw_data, insert_time, message_keys)"
        + " INSERT INTO " + table.deadLetterQualifiedName() + " (batch_id, message_count,"
        + " write_retries, reason, raw_data, insert_time, message_keys, dead_lettered_at)"
        + " SELECT batch_id, message_count, 3, '" + reason.replace("'", "''") + "', raw_data,"
        + " insert_time, message_keys, now() - interval '" + age + "' FROM moved");
  }

  private static Message message(String stream, String key) {
    return Message.builder().stream(stream).key(key).data(new byte[] {1, 2, 3}).build();
  }

  @Test
  void listShowsDeadLettersOldestFirstWithTheirReasonOnOneLine() {
    String older = write(message("orders", "a"));
    String newer = write(message("orders", "b"), message("orders", "c"));
    deadLetter(older, "RecordTooLargeException: too big\nsecond line", "2 days");
    deadLetter(newer, "InvalidTopicException: bad topic", "1 hour");
    write(message("orders", "d")); // still in the outbox: not listed

    Run all = run("dead-letters", "list");

    assertThat(all.status()).as(all.err()).isZero();
    assertThat(all.out()).contains("oldest first (2 of 2)")
        .contains("RecordTooLargeException: too big second line")
        .contains("InvalidTopicException: bad topic");
    assertThat(all.out().indexOf(older)).as("older first").isPositive()
        .isLessThan(all.out().indexOf(newer));

    Run first = run("dead-letters", "list", "--limit", "1");

    assertThat(first.status()).isZero();
    assertThat(first.out()).contains(older).doesNotContain(newer).contains("(1 of 2)")
        .contains("--limit N shows more");
  }

  @Test
  void listOfAnEmptyDeadLetterTableSaysSo() {
    Run run = run("dead-letters", "list");

    assertThat(run.status()).isZero();
    assertThat(run.out()).contains("No dead letters in " + table.deadLetterQualifiedName());
  }

  @Test
  void showDecodesTheMessagesAndGivesTheReason() {
    Message first = Message.builder().stream("payments").key("customer-7")
        .header("type", "PaymentTaken").header("trace", "abc").contentType("application/json")
        .data("{\"amount\":12}").build();
    Message second = Message.builder().stream("payments").data(new byte[70]).build();
    String id = write(first, second);
    deadLetter(id, "InvalidTopicException: payments is not allowed", "1 minute");

    Run run = run("dead-letters", "show", id);

    assertThat(run.status()).as(run.err()).isZero();
    assertThat(run.out())
        .contains("Dead letter " + id)
        .contains("InvalidTopicException: payments is not allowed")
        .contains("write retries     3")
        .contains("Message 1 of 2").contains("Message 2 of 2")
        .contains(first.id()).contains(second.id())
        .contains("stream            payments")
        .contains("key               customer-7")
        .contains("key               (none)")
        .contains("content type      application/json")
        .contains("content type      application/octet-stream")
        .contains("size              13 bytes")
        .contains("size              70 bytes")
        .contains("header            trace: abc")
        .contains("header            type: PaymentTaken");
  }

  @Test
  void showOfAnUndecodableDeadLetterSaysWhyAndSucceeds() {
    postgres.execute("INSERT INTO " + table.deadLetterQualifiedName() + " (batch_id,"
        + " message_count, write_retries, reason, raw_data, insert_time) VALUES"
        + " ('0ujtsYcgvSTl8PAuAdqWYSMnLOv', 1, 0, 'undecodable raw_data', '\\xffff'::bytea, now())");

    Run run = run("dead-letters", "show", "0ujtsYcgvSTl8PAuAdqWYSMnLOv");

    assertThat(run.status()).as(run.err()).isZero();
    assertThat(run.out()).contains("stored size       2 bytes")
        .contains("The stored batch is undecodable");
  }

  @Test
  void redriveMovesTheBatchBackAndAnUnknownIdExitsOne() {
    String id = write(message("orders", "a"));
    deadLetter(id, "timeout", "1 minute");

    Run run = run("dead-letters", "redrive", id);

    assertThat(run.status()).as(run.err()).isZero();
    assertThat(run.out()).contains("Re-drove " + id);
    assertThat(store.find(id).block()).as("back in the outbox").isNotNull();
    assertThat(store.findDeadLetter(id).blockOptional()).isEmpty();

    Run again = run("dead-letters", "redrive", id);

    assertThat(again.status()).isEqualTo(AdminCommands.EXIT_FAILED);
    assertThat(again.err()).contains("No dead letter " + id);
    assertThat(run("dead-letters", "show", id).status()).isEqualTo(AdminCommands.EXIT_FAILED);
  }

  @Test
  void purgeDeletesOneDeadLetterOrThoseOlderThanADuration() {
    String one = write(message("orders", "a"));
    String old = write(message("orders", "b"));
    String recent = write(message("orders", "c"));
    deadLetter(one, "x", "40 days");
    deadLetter(old, "x", "31 days");
    deadLetter(recent, "x", "29 days");

    Run single = run("dead-letters", "purge", one);

    assertThat(single.status()).as(single.err()).isZero();
    assertThat(single.out()).contains("Deleted dead letter " + one);
    assertThat(store.findDeadLetter(one).blockOptional()).isEmpty();
    assertThat(run("dead-letters", "purge", one).status()).isEqualTo(AdminCommands.EXIT_FAILED);

    Run older = run("dead-letters", "purge", "--older-than", "30d");

    assertThat(older.status()).as(older.err()).isZero();
    assertThat(older.out()).contains("Deleted 1 dead letters");
    assertThat(store.findDeadLetter(old).blockOptional()).isEmpty();
    assertThat(store.findDeadLetter(recent).blockOptional()).isPresent();
  }

  @Test
  void backlogPrintsRowsOldestAgeAndDeadLetters() {
    String dead = write(message("orders", "a"));
    deadLetter(dead, "x", "1 minute");
    write(message("orders", "b"));
    write(message("orders", "c"));
    postgres.execute("UPDATE " + table.qualifiedName()
        + " SET insert_time = now() - interval '2 hours 3 minutes'");

    Run run = run("backlog");

    assertThat(run.status()).as(run.err()).isZero();
    assertThat(run.out()).contains("Outbox " + table.qualifiedName())
        .containsPattern("rows +2 \\(not yet published")
        .containsPattern("oldest row +\\S+ \\(2h 3m \\d+s ago\\)")
        .containsPattern("dead letters +1\n")
        .doesNotContain("about");
  }

  @Test
  void backlogSaysWhenACountIsAnEstimate() {
    postgres.execute("INSERT INTO " + table.qualifiedName() + " (batch_id, message_count,"
        + " raw_data) SELECT lpad(g::text, 27, '0'), 1, '\\x00'::bytea"
        + " FROM generate_series(1, 10100) AS g", "ANALYZE " + table.qualifiedName());

    Run run = run("backlog");

    assertThat(run.status()).as(run.err()).isZero();
    assertThat(run.out()).containsPattern("rows +about \\d+")
        .contains("planner estimates")
        .containsPattern("dead letters +0\n");
  }

  @Test
  void emptyBacklog() {
    Run run = run("backlog");

    assertThat(run.status()).as(run.err()).isZero();
    assertThat(run.out()).containsPattern("rows +0 ").containsPattern("oldest row +\\(none\\)");
  }

  @ParameterizedTest(name = "{0}")
  @CsvSource(delimiter = '|', value = {
      "dead-letters                        | dead-letters needs one of list, show, redrive, purge",
      "dead-letters frob                   | Unknown dead-letters subcommand 'frob'",
      "frobnicate                          | Unknown subcommand 'frobnicate'",
      "dead-letters list --limit 0         | --limit must be a whole number of at least 1, got '0'",
      "dead-letters list --limit many      | --limit must be a whole number of at least 1, got 'many'",
      "dead-letters list 5                 | dead-letters list takes only --limit N",
      "dead-letters show                   | dead-letters show needs exactly one batch id",
      "dead-letters redrive a b            | dead-letters redrive needs exactly one batch id",
      "dead-letters purge                  | dead-letters purge needs exactly one batch id",
      "dead-letters purge --older-than     | dead-letters purge --older-than needs one duration",
      "dead-letters purge --older-than soon | --older-than must be a duration such as 30d",
      "backlog now                         | backlog takes no further arguments",
  })
  void badUsageExitsTwoWithAMessageAndTheUsage(String args, String message) {
    Run run = run(args.trim().split(" +"));

    assertThat(run.status()).isEqualTo(AdminCommands.EXIT_USAGE);
    assertThat(run.err()).contains(message).contains("Usage");
    assertThat(run.out()).isEmpty();
  }

  @Test
  void missingOrInvalidConfigurationExitsTwoNamingTheVariable() {
    Map<String, String> noUrl = new HashMap<>(env());
    noUrl.remove("OUTBOX_DATABASE_URL");
    Map<String, String> badTable = new HashMap<>(env());
    badTable.put("OUTBOX_TABLE", "x; drop table y");

    Run missing = run(noUrl, "backlog");
    Run invalid = run(badTable, "backlog");

    assertThat(missing.status()).isEqualTo(AdminCommands.EXIT_USAGE);
    assertThat(missing.err()).contains("OUTBOX_DATABASE_URL is required but not set");
    assertThat(invalid.status()).isEqualTo(AdminCommands.EXIT_USAGE);
    assertThat(invalid.err()).contains("OUTBOX_TABLE");
  }

  @Test
  void aMissingTableOrAnUnreachableDatabaseExitsOneSayingWhy() throws IOException {
    Map<String, String> noTable = new HashMap<>(env());
    noTable.put("OUTBOX_TABLE", TestPostgres.uniqueName("absent"));
    int closedPort;
    try (ServerSocket socket = new ServerSocket(0)) {
      closedPort = socket.getLocalPort();
    }
    Map<String, String> noDatabase = new HashMap<>(env());
    noDatabase.put("OUTBOX_DATABASE_URL", "r2dbc:postgresql://u:p@127.0.0.1:" + closedPort + "/db");

    Run absent = run(noTable, "dead-letters", "list");
    Run unreachable = run(noDatabase, "backlog");

    assertThat(absent.status()).isEqualTo(AdminCommands.EXIT_FAILED);
    assertThat(absent.err()).contains("Failed:").contains("does not exist")
        .contains("OUTBOX_TABLE=");
    assertThat(unreachable.status()).isEqualTo(AdminCommands.EXIT_FAILED);
    assertThat(unreachable.err()).startsWith("Failed:");
  }

  @Test
  void helpPrintsTheUsage() {
    Run run = run(Map.of(), "help");

    assertThat(run.status()).isZero();
    assertThat(run.out()).contains("dead-letters purge --older-than <duration>");
  }
}
