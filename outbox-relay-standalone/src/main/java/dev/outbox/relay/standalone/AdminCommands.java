package dev.outbox.relay.standalone;

import dev.outbox.r2dbc.BacklogStats;
import dev.outbox.r2dbc.Codec;
import dev.outbox.r2dbc.DeadLetter;
import dev.outbox.r2dbc.InvalidConfigurationException;
import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxStore;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.UndecodableBatchException;
import io.r2dbc.pool.ConnectionPool;
import io.r2dbc.pool.ConnectionPoolConfiguration;
import io.r2dbc.spi.ConnectionFactories;
import io.r2dbc.spi.ConnectionFactoryOptions;
import io.r2dbc.spi.R2dbcBadGrammarException;
import java.io.PrintStream;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import org.jspecify.annotations.Nullable;
import reactor.core.Exceptions;

/**
 * Dead-letter, backlog and WAL slot operations from the command line, without SQL: the
 * subcommands of {@link RelayMain}. They read the relay's own variables ({@value
 * StandaloneConfig#DATABASE_URL}, {@value StandaloneConfig#TABLE}, and for {@code wal-slot}
 * {@value StandaloneConfig#WAL_SLOT} and {@value StandaloneConfig#WAL_PUBLICATION}), work through {@link OutboxStore}, print plain text and
 * return an exit status: {@value #EXIT_OK} done, {@value #EXIT_FAILED} not found or the database
 * failed, {@value #EXIT_USAGE} bad usage or configuration (with a message saying what to fix).
 *
 * <pre>{@code
 * java -cp ... dev.outbox.relay.standalone.RelayMain dead-letters list --limit 20
 * java -cp ... dev.outbox.relay.standalone.RelayMain dead-letters show 2Ym2LqZ5c0H7p0sCk0bXgYQ1xwI
 * java -cp ... dev.outbox.relay.standalone.RelayMain dead-letters purge --older-than 30d
 * java -cp ... dev.outbox.relay.standalone.RelayMain backlog
 * java -cp ... dev.outbox.relay.standalone.RelayMain wal-slot show
 * java -cp ... dev.outbox.relay.standalone.RelayMain wal-slot drop --drop-publication
 * }</pre>
 *
 * <p>In code: {@code int status = AdminCommands.run(List.of("backlog"), System.getenv(),
 * System.out, System.err);}. Each call blocks its thread until the command is done (it is a
 * command, not a Reactor pipeline: do not call it on a Reactor thread).
 */
public final class AdminCommands {
  public static final int EXIT_OK = 0;
  public static final int EXIT_FAILED = 1;
  public static final int EXIT_USAGE = 2;

  /** Dead letters {@code list} prints without {@code --limit}. */
  static final int DEFAULT_LIST_LIMIT = 50;
  /** Longest reason {@code list} prints on its one line ({@code show} prints it whole). */
  private static final int REASON_IN_LIST = 100;
  /** Bounds each command but {@code purge --older-than} (whose statements are bounded each). */
  private static final Duration COMMAND_TIMEOUT = Duration.ofMinutes(2);
  private static final Duration PURGE_TIMEOUT = Duration.ofHours(1);

  static final String USAGE = String.join("\n",
      "Usage (configured by OUTBOX_DATABASE_URL and OUTBOX_TABLE, as the relay):",
      "  dead-letters list [--limit N]               dead letters, oldest first ("
          + DEFAULT_LIST_LIMIT + " by default)",
      "  dead-letters show <batchId>                 one dead letter: reason and decoded messages",
      "  dead-letters redrive <batchId>              move it back into the outbox, due at once",
      "  dead-letters purge <batchId>                delete it for good",
      "  dead-letters purge --older-than <duration>  delete those dead-lettered longer ago (30d, 12h)",
      "  backlog                                     rows waiting, the oldest row's age, dead letters",
      "  wal-slot show                               the WAL relay's replication slot: active,"
          + " positions, lag, WAL retained",
      "  wal-slot drop [--drop-publication]          drop the slot (refused while a relay follows"
          + " it); the publication too only with the flag",
      "  (wal-slot reads OUTBOX_WAL_SLOT and OUTBOX_WAL_PUBLICATION, default <table>_relay)",
      "Without a subcommand the relay runs. Exit status: 0 done, 1 not found or failed,"
          + " 2 bad usage or configuration.");

  private AdminCommands() {}

  /**
   * Runs the subcommand in {@code args} (for example {@code [dead-letters, list, --limit, 5]})
   * against the database and table named in {@code env}; prints results to {@code out}, errors
   * to {@code err}; returns the exit status.
   */
  public static int run(List<String> args, Map<String, String> env, PrintStream out,
      PrintStream err) {
    Objects.requireNonNull(args, "args");
    Objects.requireNonNull(env, "env");
    Command command;
    try {
      command = parse(args);
    } catch (UsageException e) {
      err.println(e.getMessage());
      err.println(USAGE);
      return EXIT_USAGE;
    }
    if (command.name.equals("help")) {
      out.println(USAGE);
      return EXIT_OK;
    }
    String url;
    OutboxTable table;
    try {
      url = StandaloneConfig.databaseUrlFromEnvironment(env);
      table = StandaloneConfig.tableFromEnvironment(env);
    } catch (InvalidConfigurationException e) {
      err.println("Invalid outbox configuration: " + e.getMessage());
      return EXIT_USAGE;
    }
    String walSlot;
    String walPublication;
    try {
      walSlot = StandaloneConfig.walSlotFromEnvironment(env, table);
      walPublication = StandaloneConfig.walPublicationFromEnvironment(env, table);
    } catch (InvalidConfigurationException e) {
      err.println("Invalid outbox configuration: " + e.getMessage());
      return EXIT_USAGE;
    }
    ConnectionPool pool = pool(url);
    try {
      if (command.walAction != null) {
        return command.walAction.run(new WalSlotCommands(pool, table, walSlot, walPublication),
            out, err);
      }
      return command.run(OutboxStore.create(pool, table), out, err);
    } catch (RuntimeException e) {
      err.println("Failed: " + describe(e, table));
      return EXIT_FAILED;
    } finally {
      pool.dispose();
    }
  }

  /** Small and bounded: a command must end with an answer, also when the database is away. */
  private static ConnectionPool pool(String url) {
    return new ConnectionPool(ConnectionPoolConfiguration.builder(
            ConnectionFactories.get(ConnectionFactoryOptions.parse(url)))
        .name("outbox-admin")
        .initialSize(0)
        .maxSize(2)
        .maxAcquireTime(Duration.ofSeconds(30))
        .maxCreateConnectionTime(Duration.ofSeconds(10))
        .build());
  }

  private static String describe(RuntimeException e, OutboxTable table) {
    Throwable cause = Exceptions.unwrap(e); // block() wraps checked exceptions
    String text = cause.getClass().getSimpleName() + ": " + oneLine(String.valueOf(cause.getMessage()));
    if (cause instanceof R2dbcBadGrammarException && text.contains("does not exist")) {
      text += " (is " + StandaloneConfig.TABLE + "=" + table.qualifiedName()
          + " right, and its schema applied?)";
    }
    return text;
  }

  // ---- parsing ----

  private static final class UsageException extends Exception {
    private static final long serialVersionUID = 1L;

    UsageException(String message) {
      super(message);
    }
  }

  @FunctionalInterface
  private interface Action {
    int run(OutboxStore store, PrintStream out, PrintStream err);
  }

  @FunctionalInterface
  private interface WalAction {
    int run(WalSlotCommands wal, PrintStream out, PrintStream err);
  }

  private static final class Command {
    final String name;
    final Action action;
    final @Nullable WalAction walAction;

    Command(String name, Action action) {
      this.name = name;
      this.action = action;
      this.walAction = null;
    }

    private Command(String name, Action action, @Nullable WalAction walAction) {
      this.name = name;
      this.action = action;
      this.walAction = walAction;
    }

    static Command wal(String name, WalAction walAction) {
      return new Command(name, (store, out, err) -> EXIT_FAILED, walAction);
    }

    int run(OutboxStore store, PrintStream out, PrintStream err) {
      return action.run(store, out, err);
    }
  }

  private static Command parse(List<String> args) throws UsageException {
    if (args.isEmpty()) {
      throw new UsageException("No subcommand given");
    }
    String first = args.get(0);
    switch (first) {
      case "help", "--help", "-h" -> {
        return new Command("help", (store, out, err) -> EXIT_OK);
      }
      case "backlog" -> {
        noMore(args, 1);
        return new Command("backlog", AdminCommands::backlog);
      }
      case "dead-letters" -> {
        return parseDeadLetters(args);
      }
      case "wal-slot" -> {
        return parseWalSlot(args);
      }
      default -> throw new UsageException("Unknown subcommand '" + first + "'");
    }
  }

  private static Command parseDeadLetters(List<String> args) throws UsageException {
    if (args.size() < 2) {
      throw new UsageException("dead-letters needs one of list, show, redrive, purge");
    }
    String verb = args.get(1);
    switch (verb) {
      case "list" -> {
        int limit = DEFAULT_LIST_LIMIT;
        if (args.size() > 2) {
          if (!args.get(2).equals("--limit") || args.size() != 4) {
            throw new UsageException("dead-letters list takes only --limit N");
          }
          limit = positiveInt("--limit", args.get(3));
        }
        int chosen = limit;
        return new Command("list", (store, out, err) -> list(store, chosen, out));
      }
      case "show", "redrive" -> {
        String batchId = batchId(args, verb);
        return verb.equals("show")
            ? new Command("show", (store, out, err) -> show(store, batchId, out, err))
            : new Command("redrive", (store, out, err) -> redrive(store, batchId, out, err));
      }
      case "purge" -> {
        if (args.size() >= 3 && args.get(2).equals("--older-than")) {
          if (args.size() != 4) {
            throw new UsageException("dead-letters purge --older-than needs one duration, e.g. 30d");
          }
          Duration age = StandaloneConfig.parseDuration(args.get(3));
          if (age == null || age.isNegative()) {
            throw new UsageException("--older-than must be a duration such as 30d, 12h, 90m or"
                + " ISO-8601 P30D, got '" + args.get(3) + "'");
          }
          return new Command("purge", (store, out, err) -> purgeOlderThan(store, age, out));
        }
        String batchId = batchId(args, verb);
        return new Command("purge", (store, out, err) -> purge(store, batchId, out, err));
      }
      default -> throw new UsageException("Unknown dead-letters subcommand '" + verb
          + "' (expected list, show, redrive or purge)");
    }
  }

  private static Command parseWalSlot(List<String> args) throws UsageException {
    if (args.size() < 2) {
      throw new UsageException("wal-slot needs one of show, drop");
    }
    String verb = args.get(1);
    switch (verb) {
      case "show" -> {
        noMore(args, 2);
        return Command.wal("wal-slot show", WalSlotCommands::show);
      }
      case "drop" -> {
        boolean publicationToo = false;
        if (args.size() > 2) {
          if (args.size() != 3 || !args.get(2).equals("--drop-publication")) {
            throw new UsageException("wal-slot drop takes only --drop-publication, got "
                + args.subList(2, args.size()));
          }
          publicationToo = true;
        }
        boolean dropPublication = publicationToo;
        return Command.wal("wal-slot drop",
            (wal, out, err) -> wal.drop(dropPublication, out, err));
      }
      default -> throw new UsageException("Unknown wal-slot subcommand '" + verb
          + "' (expected show or drop)");
    }
  }

  private static String batchId(List<String> args, String verb) throws UsageException {
    if (args.size() != 3 || args.get(2).startsWith("-")) {
      throw new UsageException("dead-letters " + verb + " needs exactly one batch id");
    }
    String id = args.get(2).trim();
    if (id.isEmpty()) {
      throw new UsageException("dead-letters " + verb + " needs exactly one batch id");
    }
    return id;
  }

  private static int positiveInt(String option, String value) throws UsageException {
    try {
      int number = Integer.parseInt(value);
      if (number >= 1) {
        return number;
      }
    } catch (NumberFormatException e) {
      // reported below
    }
    throw new UsageException(option + " must be a whole number of at least 1, got '" + value + "'");
  }

  private static void noMore(List<String> args, int size) throws UsageException {
    if (args.size() > size) {
      throw new UsageException(String.join(" ", args.subList(0, size))
          + " takes no further arguments, got " + args.subList(size, args.size()));
    }
  }

  // ---- commands ----

  private static int list(OutboxStore store, int limit, PrintStream out) {
    List<DeadLetter> letters = store.deadLetters(limit).collectList().block(COMMAND_TIMEOUT);
    BacklogStats stats = store.stats().block(COMMAND_TIMEOUT);
    String where = store.table().deadLetterQualifiedName();
    if (letters == null || letters.isEmpty()) {
      out.println("No dead letters in " + where + ".");
      return EXIT_OK;
    }
    out.println("Dead letters in " + where + ", oldest first (" + letters.size() + " of "
        + count(stats == null ? letters.size() : stats.deadLetters(),
            stats != null && stats.deadLettersEstimated()) + "):");
    out.println(String.format("%-27s  %-27s  %8s  %7s  %s", "BATCH ID", "DEAD-LETTERED AT",
        "MESSAGES", "RETRIES", "REASON"));
    for (DeadLetter letter : letters) {
      out.println(String.format("%-27s  %-27s  %8d  %7d  %s", letter.batchId().trim(),
          letter.deadLetteredAt(), letter.messageCount(), letter.writeRetries(),
          shortened(oneLine(letter.reason()), REASON_IN_LIST)));
    }
    if (stats != null && stats.deadLetters() > letters.size()) {
      out.println("(more exist: --limit N shows more)");
    }
    return EXIT_OK;
  }

  private static int show(OutboxStore store, String batchId, PrintStream out, PrintStream err) {
    Optional<DeadLetter> found = store.findDeadLetter(batchId).blockOptional(COMMAND_TIMEOUT);
    if (found.isEmpty()) {
      return notFound(store, batchId, err);
    }
    DeadLetter letter = found.get();
    out.println("Dead letter " + letter.batchId().trim() + " in "
        + store.table().deadLetterQualifiedName());
    field(out, "reason", oneLine(letter.reason()));
    field(out, "dead-lettered at", letter.deadLetteredAt().toString());
    field(out, "written at", letter.insertTime().toString());
    field(out, "write retries", Integer.toString(letter.writeRetries()));
    field(out, "messages", Integer.toString(letter.messageCount()));
    field(out, "stored size", letter.rawData().length + " bytes");
    List<Message> messages;
    try {
      messages = Codec.protobuf().decode(letter.rawData());
    } catch (UndecodableBatchException e) {
      // Still a dead letter worth seeing (and purging): say why its bytes do not decode.
      out.println("The stored batch is undecodable: " + oneLine(String.valueOf(e.getMessage())));
      return EXIT_OK;
    }
    int index = 0;
    for (Message message : messages) {
      index++;
      out.println("Message " + index + " of " + messages.size());
      field(out, "id", message.id());
      field(out, "stream", message.stream());
      field(out, "key", message.key().map(AdminCommands::oneLine).orElse("(none)"));
      field(out, "content type", message.contentType());
      field(out, "time", message.time().toString());
      field(out, "size", message.data().length + " bytes");
      if (message.headers().isEmpty()) {
        field(out, "headers", "(none)");
      } else {
        message.headers().entrySet().stream().sorted(Map.Entry.comparingByKey())
            .forEach(h -> field(out, "header", oneLine(h.getKey()) + ": " + oneLine(h.getValue())));
      }
    }
    return EXIT_OK;
  }

  private static int redrive(OutboxStore store, String batchId, PrintStream out,
      PrintStream err) {
    Boolean moved = store.redrive(batchId).block(COMMAND_TIMEOUT);
    if (!Boolean.TRUE.equals(moved)) {
      return notFound(store, batchId, err);
    }
    out.println("Re-drove " + batchId + ": back in " + store.table().qualifiedName()
        + ", due at once (at the end of the insert order).");
    return EXIT_OK;
  }

  private static int purge(OutboxStore store, String batchId, PrintStream out, PrintStream err) {
    Boolean deleted = store.deleteDeadLetter(batchId).block(COMMAND_TIMEOUT);
    if (!Boolean.TRUE.equals(deleted)) {
      return notFound(store, batchId, err);
    }
    out.println("Deleted dead letter " + batchId + " from "
        + store.table().deadLetterQualifiedName() + "; its messages will not be published.");
    return EXIT_OK;
  }

  private static int purgeOlderThan(OutboxStore store, Duration age, PrintStream out) {
    Long deleted = store.deleteDeadLettersOlderThan(age).block(PURGE_TIMEOUT);
    out.println("Deleted " + (deleted == null ? 0 : deleted) + " dead letters dead-lettered more"
        + " than " + StandaloneConfig.format(age) + " ago from "
        + store.table().deadLetterQualifiedName() + ".");
    return EXIT_OK;
  }

  private static int backlog(OutboxStore store, PrintStream out, PrintStream err) {
    BacklogStats stats = Objects.requireNonNull(store.stats().block(COMMAND_TIMEOUT), "stats");
    out.println("Outbox " + store.table().qualifiedName());
    field(out, "rows", count(stats.rows(), stats.rowsEstimated())
        + " (not yet published, claimed or not)");
    @Nullable Instant oldest = stats.oldestInsertTime();
    field(out, "oldest row", oldest == null ? "(none)"
        : oldest + " (" + age(Duration.between(oldest, Instant.now())) + " ago)");
    field(out, "dead letters", count(stats.deadLetters(), stats.deadLettersEstimated()));
    if (stats.rowsEstimated() || stats.deadLettersEstimated()) {
      out.println("Counts marked 'about' are PostgreSQL's planner estimates (exact up to "
          + BacklogStats.EXACT_UP_TO + "), as fresh as the table's last ANALYZE.");
    }
    return EXIT_OK;
  }

  private static int notFound(OutboxStore store, String batchId, PrintStream err) {
    err.println("No dead letter " + batchId + " in " + store.table().deadLetterQualifiedName()
        + " (dead-letters list shows those there are)");
    return EXIT_FAILED;
  }

  // ---- text ----

  private static void field(PrintStream out, String name, String value) {
    out.println(String.format("  %-17s %s", name, value));
  }

  private static String count(long count, boolean estimated) {
    return estimated ? "about " + count : Long.toString(count);
  }

  /** {@code 3d 4h 5m 6s}, whole seconds; {@code 0s} for a clock slightly ahead of ours. */
  static String age(Duration age) {
    long seconds = Math.max(0, age.getSeconds());
    long days = seconds / 86_400;
    long hours = seconds % 86_400 / 3_600;
    long minutes = seconds % 3_600 / 60;
    StringBuilder text = new StringBuilder();
    if (days > 0) {
      text.append(days).append("d ");
    }
    if (days > 0 || hours > 0) {
      text.append(hours).append("h ");
    }
    if (days > 0 || hours > 0 || minutes > 0) {
      text.append(minutes).append("m ");
    }
    return text.append(seconds % 60).append('s').toString();
  }

  /** Control characters (line breaks in a reason or header) would break the layout. */
  static String oneLine(String text) {
    StringBuilder out = new StringBuilder(text.length());
    for (int i = 0; i < text.length(); i++) {
      char c = text.charAt(i);
      out.append(Character.isISOControl(c) ? ' ' : c);
    }
    return out.toString();
  }

  private static String shortened(String text, int max) {
    return text.length() <= max ? text : text.substring(0, max - 3) + "...";
  }
}
