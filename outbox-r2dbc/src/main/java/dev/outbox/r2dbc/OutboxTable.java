package dev.outbox.r2dbc;

import java.util.Locale;
import java.util.Optional;
import java.util.regex.Pattern;
import org.jspecify.annotations.Nullable;

/**
 * The name of an outbox table, validated so that it can be put into SQL text safely.
 *
 * <p>Accepted: {@code identifier} or {@code schema.identifier}, where an identifier is an
 * unquoted PostgreSQL identifier ({@code [A-Za-z_][A-Za-z0-9_]*}). Names are folded to lower
 * case as PostgreSQL does. The dead-letter table lives beside it as {@code <name>_dead_letter};
 * every derived name must fit PostgreSQL's 63-character limit.
 *
 * <pre>{@code
 * OutboxTable table = OutboxTable.of("app.order_outbox");   // InvalidTableNameException if not
 * }</pre>
 *
 * <p>Immutable and thread-safe.
 */
public final class OutboxTable {
  /** The table name of the original {@code streams} package. */
  public static final String DEFAULT_NAME = "streams_egress";

  private static final Pattern IDENTIFIER = Pattern.compile("[a-z_][a-z0-9_]*");
  private static final int MAX_IDENTIFIER = 63;
  /** Longest suffix added to the simple name (dead-letter table and index names). */
  private static final int LONGEST_SUFFIX = "_dead_letter_pkey".length();
  private static final OutboxTable DEFAULT = of(DEFAULT_NAME); // after the constants it uses

  private final @Nullable String schema;
  private final String name;

  private OutboxTable(@Nullable String schema, String name) {
    this.schema = schema;
    this.name = name;
  }

  /** {@value #DEFAULT_NAME} in the connection's search path. */
  public static OutboxTable defaultTable() {
    return DEFAULT;
  }

  /**
   * @throws InvalidTableNameException when {@code qualifiedName} is not {@code identifier} or
   *     {@code schema.identifier}
   */
  public static OutboxTable of(@Nullable String qualifiedName) {
    if (qualifiedName == null) {
      throw new InvalidTableNameException("Outbox table name must not be null");
    }
    String folded = qualifiedName.toLowerCase(Locale.ROOT);
    String[] parts = folded.split("\\.", -1);
    if (parts.length > 2) {
      throw invalid(qualifiedName, "more than one '.'");
    }
    for (String part : parts) {
      if (!IDENTIFIER.matcher(part).matches()) {
        throw invalid(qualifiedName, "'" + part + "' is not an unquoted identifier");
      }
      if (part.length() > MAX_IDENTIFIER) {
        throw invalid(qualifiedName, "'" + part + "' is longer than 63 characters");
      }
    }
    String simple = parts[parts.length - 1];
    if (simple.length() + LONGEST_SUFFIX > MAX_IDENTIFIER) {
      throw invalid(qualifiedName, "the table name must leave room for the suffix '_dead_letter_pkey'"
          + " within 63 characters (at most " + (MAX_IDENTIFIER - LONGEST_SUFFIX) + ")");
    }
    return new OutboxTable(parts.length == 2 ? parts[0] : null, simple);
  }

  private static InvalidTableNameException invalid(String given, String why) {
    return new InvalidTableNameException("Outbox table name '" + given + "' is invalid: " + why
        + ". Expected identifier or schema.identifier made of letters, digits and '_',"
        + " not starting with a digit.");
  }

  public Optional<String> schema() {
    return Optional.ofNullable(schema);
  }

  /** The table name without schema. */
  public String name() {
    return name;
  }

  /** The name to use in SQL, schema-qualified when a schema was given. */
  public String qualifiedName() {
    return schema == null ? name : schema + "." + name;
  }

  /**
   * The default LISTEN/NOTIFY channel for this table, {@code <name>_notify}: what {@code
   * OutboxWriter.builder().notifyChannel(table.notifyChannel())} and the relay's {@code
   * listen(...)} agree on.
   */
  public String notifyChannel() {
    return name + "_notify";
  }

  /**
   * The default name of a WAL relay's replication slot and publication for this table, {@code
   * <name>_relay} (without the schema): what {@code RelayOptions} and {@code
   * OutboxWriter.builder().deleteOnceLogged(true)} agree on.
   */
  public String walRelayName() {
    return name + "_relay";
  }

  /**
   * Validates a LISTEN/NOTIFY channel name: an unquoted identifier of at most 63 characters, so
   * it can be put into {@code LISTEN} safely (LISTEN takes no parameters).
   *
   * @throws InvalidConfigurationException when it is not
   */
  public static String checkChannel(@Nullable String channel) {
    if (channel == null || channel.length() > MAX_IDENTIFIER
        || !IDENTIFIER.matcher(channel).matches()) {
      throw new InvalidConfigurationException("Notification channel '" + channel + "' is invalid:"
          + " expected 1 to 63 lower-case letters, digits and '_', not starting with a digit");
    }
    return channel;
  }

  /** The dead-letter table's name to use in SQL. */
  public String deadLetterQualifiedName() {
    return qualifiedName() + "_dead_letter";
  }

  /** The table of partition owners (PARTITIONED relay mode). */
  public String partitionsQualifiedName() {
    return qualifiedName() + "_partitions";
  }

  /** The table of live relays (PARTITIONED relay mode). */
  public String relaysQualifiedName() {
    return qualifiedName() + "_relays";
  }


  @Override
  public boolean equals(@Nullable Object o) {
    return o instanceof OutboxTable && ((OutboxTable) o).qualifiedName().equals(qualifiedName());
  }

  @Override
  public int hashCode() {
    return qualifiedName().hashCode();
  }

  @Override
  public String toString() {
    return qualifiedName();
  }
}
