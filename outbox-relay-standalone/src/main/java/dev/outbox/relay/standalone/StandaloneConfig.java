package dev.outbox.relay.standalone;

import dev.outbox.r2dbc.InvalidConfigurationException;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.relay.OutboundRecord;
import dev.outbox.relay.RecordSink;
import dev.outbox.relay.RelayMode;
import dev.outbox.relay.RelayOptions;
import dev.outbox.relay.SendResult;
import io.r2dbc.spi.ConnectionFactories;
import io.r2dbc.spi.ConnectionFactoryOptions;
import java.time.Duration;
import java.time.format.DateTimeParseException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TreeMap;
import java.util.function.UnaryOperator;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.jspecify.annotations.Nullable;
import org.reactivestreams.Publisher;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * The standalone relay's configuration, read from environment variables by {@link
 * #fromEnvironment(Map)}; immutable. {@link #describe()} renders it for the log with every
 * secret masked; {@link #toString()} does the same, so the record never prints a password.
 *
 * <pre>{@code
 * StandaloneConfig config = StandaloneConfig.fromEnvironment(System.getenv());
 * log.info("{}", config.describe());
 * StandaloneRelay relay = StandaloneRelay.start(config);
 * }</pre>
 *
 * <table>
 *   <caption>Environment variables (a blank value counts as unset)</caption>
 *   <tr><td>{@value #DATABASE_URL}</td><td>required</td><td>R2DBC URL of the database</td></tr>
 *   <tr><td>{@value #KAFKA_BOOTSTRAP_SERVERS}</td><td>required</td><td>{@code host:port,...}</td></tr>
 *   <tr><td>{@value #TABLE}</td><td>{@code streams_egress}</td><td>the outbox table</td></tr>
 *   <tr><td>{@value #MODE}</td><td>{@code PARTITIONED}</td><td>{@code PARTITIONED}, {@code WAL}, or the deprecated {@code PARALLEL} and {@code ORDERED}</td></tr>
 *   <tr><td>{@value #POLL_INTERVAL}</td><td>1s</td><td>how often to look for due batches</td></tr>
 *   <tr><td>{@value #MAX_IN_FLIGHT}</td><td>10000 (WAL: 2000)</td><td>records claimed, not yet settled</td></tr>
 *   <tr><td>{@value #CLAIM_SIZE}</td><td>500</td><td>batches per claim</td></tr>
 *   <tr><td>{@value #LEASE}</td><td>30s</td><td>claim lease, at least 1 s</td></tr>
 *   <tr><td>{@value #DRAIN}</td><td>10s</td><td>how long a stop may wait for in-flight records</td></tr>
 *   <tr><td>{@value #HTTP_PORT}</td><td>8080</td><td>health and metrics port; 0 picks a free one</td></tr>
 *   <tr><td>{@value #DB_POOL_SIZE}</td><td>10</td><td>most pooled database connections</td></tr>
 *   <tr><td>{@value #INSTANCE_ID}</td><td>{@code relay-<pid>-<random>}</td><td>lease owner name</td></tr>
 *   <tr><td>{@value #DEAD_LETTER_RETENTION}</td><td>off</td><td>delete dead letters older than
 *       this ({@code 30d}); {@code off} or unset keeps them</td></tr>
 *   <tr><td>{@value #WAL_SLOT}</td><td>{@code <table>_relay}</td><td>WAL mode: the replication
 *       slot (also what {@code wal-slot show|drop} act on)</td></tr>
 *   <tr><td>{@value #WAL_PUBLICATION}</td><td>{@code <table>_relay}</td><td>WAL mode: the
 *       publication</td></tr>
 *   <tr><td>{@code OUTBOX_KAFKA_<PROP>}</td><td></td><td>producer property {@code <prop>}, lower
 *       case, {@code _} as {@code .}: {@code OUTBOX_KAFKA_LINGER_MS=20} gives {@code linger.ms=20}</td></tr>
 * </table>
 *
 * <p>Durations are ISO-8601 ({@code PT1.5S}) or a whole number with a unit: {@code 500ms},
 * {@code 2s}, {@code 5m}, {@code 1h}, {@code 30d}.
 *
 * @param databaseUrl R2DBC URL; may hold a password, so never log it directly
 * @param kafkaBootstrapServers Kafka {@code bootstrap.servers}
 * @param table the outbox table
 * @param mode how relays share the table
 * @param pollInterval how often the table is polled
 * @param maxInFlight most records claimed and not yet settled
 * @param claimSize most batches per claim statement
 * @param lease how long a claim is exclusive
 * @param drain how long a stop waits for in-flight records
 * @param httpPort port of {@code /health} and {@code /metrics}; 0 for any free port
 * @param dbPoolSize most connections in the database pool
 * @param instanceId lease owner name, or {@code null} for the relay's default
 * @param deadLetterRetention dead letters older than this are deleted by the running relay;
 *     {@code null} (the default) keeps them until an operator acts
 * @param walSlot WAL mode: the replication slot ({@code <table name>_relay} by default)
 * @param walPublication WAL mode: the publication ({@code <table name>_relay} by default)
 * @param kafkaProperties further producer properties (may hold secrets), sorted by name
 */
public record StandaloneConfig(
    String databaseUrl,
    String kafkaBootstrapServers,
    OutboxTable table,
    RelayMode mode,
    Duration pollInterval,
    int maxInFlight,
    int claimSize,
    Duration lease,
    Duration drain,
    int httpPort,
    int dbPoolSize,
    @Nullable String instanceId,
    @Nullable Duration deadLetterRetention,
    String walSlot,
    String walPublication,
    Map<String, String> kafkaProperties) {

  public static final String DATABASE_URL = "OUTBOX_DATABASE_URL";
  public static final String KAFKA_BOOTSTRAP_SERVERS = "OUTBOX_KAFKA_BOOTSTRAP_SERVERS";
  public static final String TABLE = "OUTBOX_TABLE";
  public static final String MODE = "OUTBOX_MODE";
  public static final String POLL_INTERVAL = "OUTBOX_POLL_INTERVAL";
  public static final String MAX_IN_FLIGHT = "OUTBOX_MAX_IN_FLIGHT";
  public static final String CLAIM_SIZE = "OUTBOX_CLAIM_SIZE";
  public static final String LEASE = "OUTBOX_LEASE";
  public static final String DRAIN = "OUTBOX_DRAIN";
  public static final String HTTP_PORT = "OUTBOX_HTTP_PORT";
  public static final String DB_POOL_SIZE = "OUTBOX_DB_POOL_SIZE";
  public static final String INSTANCE_ID = "OUTBOX_INSTANCE_ID";
  public static final String DEAD_LETTER_RETENTION = "OUTBOX_DEAD_LETTER_RETENTION";
  public static final String WAL_SLOT = "OUTBOX_WAL_SLOT";
  public static final String WAL_PUBLICATION = "OUTBOX_WAL_PUBLICATION";
  /** Read by the bundled {@code logback.xml}, not by this class. */
  public static final String LOG_LEVEL = "OUTBOX_LOG_LEVEL";
  /** Prefix of the producer property pass-through variables. */
  public static final String KAFKA_PREFIX = "OUTBOX_KAFKA_";

  /** What a masked secret looks like in {@link #describe()}. */
  public static final String MASK = "****";

  private static final Set<String> KNOWN = Set.of(DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, TABLE,
      MODE, POLL_INTERVAL, MAX_IN_FLIGHT, CLAIM_SIZE, LEASE, DRAIN, HTTP_PORT, DB_POOL_SIZE,
      INSTANCE_ID, DEAD_LETTER_RETENTION, WAL_SLOT, WAL_PUBLICATION, LOG_LEVEL);
  /** Variables of the test harness (outbox-testing), not of the relay: not reported as unknown. */
  private static final Set<String> TEST_HARNESS = Set.of(
      "OUTBOX_TEST_POSTGRES_URL", "OUTBOX_TEST_KAFKA_BOOTSTRAP");
  private static final List<String> SECRET_MARKERS =
      List.of("password", "secret", "sasl.jaas", "keystore.key");
  private static final Pattern SHORT_DURATION = Pattern.compile("(\\d+)\\s*(ms|s|m|h|d)");
  private static final Pattern SECRET_QUERY_PARAMETER =
      Pattern.compile("([?&][^=&]*(?i:password|secret)[^=&]*=)[^&]*");

  /** Checks every value; see {@link #fromEnvironment} for the rules. */
  public StandaloneConfig {
    Objects.requireNonNull(databaseUrl, "databaseUrl");
    Objects.requireNonNull(kafkaBootstrapServers, "kafkaBootstrapServers");
    Objects.requireNonNull(table, "table");
    Objects.requireNonNull(mode, "mode");
    Objects.requireNonNull(pollInterval, "pollInterval");
    Objects.requireNonNull(lease, "lease");
    Objects.requireNonNull(drain, "drain");
    Objects.requireNonNull(kafkaProperties, "kafkaProperties");
    walName(WAL_SLOT, walSlot);
    walName(WAL_PUBLICATION, walPublication);
    // The relay's own options are checked by RelayOptions.builder(), named by their variable.
    validateRelayOption(POLL_INTERVAL, b -> b.pollInterval(pollInterval));
    validateRelayOption(MAX_IN_FLIGHT, b -> b.maxInFlight(maxInFlight));
    validateRelayOption(CLAIM_SIZE, b -> b.claimSize(claimSize));
    validateRelayOption(LEASE, b -> b.leaseDuration(lease));
    if (instanceId != null) {
      String id = instanceId;
      validateRelayOption(INSTANCE_ID, b -> b.instanceId(id));
    }
    positive(DRAIN, drain);
    if (deadLetterRetention != null) {
      positive(DEAD_LETTER_RETENTION, deadLetterRetention);
    }
    atLeast(DB_POOL_SIZE, dbPoolSize, 1);
    if (httpPort < 0 || httpPort > 65_535) {
      throw new InvalidConfigurationException(
          HTTP_PORT + " must be a port from 0 to 65535 (0 = any free port), got " + httpPort);
    }
    validateDatabaseUrl(databaseUrl);
    validateBootstrapServers(kafkaBootstrapServers);
    TreeMap<String, String> sorted = new TreeMap<>(kafkaProperties);
    if (sorted.containsKey(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG)) {
      throw new InvalidConfigurationException(
          "Set the Kafka bootstrap servers with " + KAFKA_BOOTSTRAP_SERVERS + " only");
    }
    validateProducerProperties(sorted, kafkaBootstrapServers);
    kafkaProperties = Collections.unmodifiableMap(sorted);
  }

  /**
   * Reads the configuration from environment variables (usually {@code System.getenv()}).
   *
   * @throws InvalidConfigurationException naming the first variable that is missing or invalid;
   *     the message never repeats the database URL, which may hold a password
   */
  public static StandaloneConfig fromEnvironment(Map<String, String> env) {
    String url = required(env, DATABASE_URL);
    String bootstrap = required(env, KAFKA_BOOTSTRAP_SERVERS);
    OutboxTable table = tableFromEnvironment(env);
    RelayMode mode = mode(env);
    return new StandaloneConfig(url, bootstrap, table, mode,
        duration(env, POLL_INTERVAL, Duration.ofSeconds(1)),
        integer(env, MAX_IN_FLIGHT, RelayOptions.defaultMaxInFlight(mode)),
        integer(env, CLAIM_SIZE, RelayOptions.DEFAULT_CLAIM_SIZE),
        duration(env, LEASE, Duration.ofSeconds(30)),
        duration(env, DRAIN, Duration.ofSeconds(10)),
        integer(env, HTTP_PORT, 8080),
        integer(env, DB_POOL_SIZE, 10),
        optional(env, INSTANCE_ID),
        retention(env),
        walSlotFromEnvironment(env, table),
        walPublicationFromEnvironment(env, table),
        kafkaProperties(env));
  }

  /**
   * The {@code OUTBOX_*} variables in {@code env} that the relay does not read (typing errors,
   * most likely), plus pass-through variables that name no known producer property; sorted. The
   * relay still starts: {@link RelayMain} logs them as a warning.
   */
  public static List<String> unrecognizedVariables(Map<String, String> env) {
    Set<String> producerConfigs = ProducerConfig.configNames();
    List<String> unknown = new ArrayList<>();
    for (String name : new TreeMap<>(env).keySet()) {
      if (!name.startsWith("OUTBOX_") || KNOWN.contains(name) || TEST_HARNESS.contains(name)) {
        continue;
      }
      if (name.startsWith(KAFKA_PREFIX) && producerConfigs.contains(kafkaProperty(name))) {
        continue;
      }
      unknown.add(name);
    }
    return unknown;
  }

  /** Producer properties for the relay's Kafka sink: bootstrap servers plus the pass-through. */
  public Map<String, Object> producerProperties() {
    Map<String, Object> props = new TreeMap<>(kafkaProperties);
    props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, kafkaBootstrapServers);
    return props;
  }

  /**
   * The configuration as lines of {@code VARIABLE=value}, for the log: the database password
   * (in the URL's user info or a query parameter) and every Kafka property whose name contains
   * {@code password}, {@code secret}, {@code sasl.jaas} or {@code keystore.key} are shown as
   * {@value #MASK}.
   */
  public String describe() {
    StringBuilder text = new StringBuilder("Outbox relay configuration:");
    line(text, DATABASE_URL, maskedDatabaseUrl());
    line(text, KAFKA_BOOTSTRAP_SERVERS, kafkaBootstrapServers);
    line(text, TABLE, table.qualifiedName());
    line(text, MODE, mode.name());
    line(text, POLL_INTERVAL, format(pollInterval));
    line(text, MAX_IN_FLIGHT, Integer.toString(maxInFlight));
    line(text, CLAIM_SIZE, Integer.toString(claimSize));
    line(text, LEASE, format(lease));
    line(text, DRAIN, format(drain));
    line(text, HTTP_PORT, httpPort == 0 ? "0 (any free port)" : Integer.toString(httpPort));
    line(text, DB_POOL_SIZE, Integer.toString(dbPoolSize));
    line(text, INSTANCE_ID, instanceId == null ? "(default: relay-<pid>-<random>)" : instanceId);
    if (mode == RelayMode.WAL) {
      line(text, WAL_SLOT, walSlot);
      line(text, WAL_PUBLICATION, walPublication);
    }
    line(text, DEAD_LETTER_RETENTION, deadLetterRetention == null ? "off (dead letters are kept)"
        : format(deadLetterRetention));
    if (kafkaProperties.isEmpty()) {
      text.append("\n  Kafka producer properties: (defaults)");
    } else {
      text.append("\n  Kafka producer properties:");
      kafkaProperties.forEach((name, value) ->
          text.append("\n    ").append(name).append('=').append(isSecret(name) ? MASK : value));
    }
    return text.toString();
  }

  /** Same as {@link #describe()}: no secrets. */
  @Override
  public String toString() {
    return describe();
  }

  /** Whether a producer property holds a secret, judged by its name. */
  static boolean isSecret(String propertyName) {
    String lower = propertyName.toLowerCase(Locale.ROOT);
    return SECRET_MARKERS.stream().anyMatch(lower::contains);
  }

  /** The database URL with its password replaced by {@value #MASK}. */
  String maskedDatabaseUrl() {
    String masked = databaseUrl;
    int scheme = masked.indexOf("://");
    if (scheme >= 0) {
      int query = masked.indexOf('?', scheme);
      int end = query < 0 ? masked.length() : query;
      int at = masked.lastIndexOf('@', end - 1);
      if (at > scheme) {
        int colon = masked.indexOf(':', scheme + 3);
        if (colon >= 0 && colon < at) {
          masked = masked.substring(0, colon + 1) + MASK + masked.substring(at);
        }
      }
    }
    masked = SECRET_QUERY_PARAMETER.matcher(masked).replaceAll("$1" + Matcher.quoteReplacement(MASK));
    // Whatever the URL's shape, the parsed password itself must not appear.
    Object password = ConnectionFactoryOptions.parse(databaseUrl)
        .getValue(ConnectionFactoryOptions.PASSWORD);
    if (password != null && !password.toString().isEmpty()) {
      masked = masked.replace(password.toString(), MASK);
    }
    return masked;
  }

  /**
   * Only what the dead-letter and backlog subcommands need ({@link AdminCommands}): the
   * database URL, checked as for the relay.
   *
   * @throws InvalidConfigurationException naming the variable
   */
  static String databaseUrlFromEnvironment(Map<String, String> env) {
    String url = required(env, DATABASE_URL);
    validateDatabaseUrl(url);
    return url;
  }

  /**
   * The outbox table of {@value #TABLE} (default {@code streams_egress}).
   *
   * @throws InvalidConfigurationException naming the variable
   */
  static OutboxTable tableFromEnvironment(Map<String, String> env) {
    try {
      return OutboxTable.of(value(env, TABLE, OutboxTable.DEFAULT_NAME));
    } catch (InvalidConfigurationException e) {
      throw new InvalidConfigurationException(TABLE + ": " + e.getMessage());
    }
  }

  /**
   * The replication slot of {@value #WAL_SLOT}: by default {@code <table name>_relay}, the
   * relay's own default ({@code RelayOptions.walSlot}).
   *
   * @throws InvalidConfigurationException naming the variable
   */
  static String walSlotFromEnvironment(Map<String, String> env, OutboxTable table) {
    return walName(WAL_SLOT, value(env, WAL_SLOT, table.walRelayName()));
  }

  /** The publication of {@value #WAL_PUBLICATION}: by default {@code <table name>_relay}. */
  static String walPublicationFromEnvironment(Map<String, String> env, OutboxTable table) {
    return walName(WAL_PUBLICATION, value(env, WAL_PUBLICATION, table.walRelayName()));
  }

  private static String walName(String variable, @Nullable String name) {
    if (name == null || name.length() > 63 || !name.matches("[a-z_][a-z0-9_]*")) {
      throw new InvalidConfigurationException(variable + " must be 1 to 63 lower-case letters,"
          + " digits and '_', not starting with a digit, got '" + name + "'");
    }
    return name;
  }

  // ---- parsing helpers ----

  private static @Nullable String optional(Map<String, String> env, String name) {
    String value = env.get(name);
    return value == null || value.isBlank() ? null : value.trim();
  }

  private static String value(Map<String, String> env, String name, String defaultValue) {
    String value = optional(env, name);
    return value == null ? defaultValue : value;
  }

  private static String required(Map<String, String> env, String name) {
    String value = optional(env, name);
    if (value == null) {
      throw new InvalidConfigurationException(name + " is required but not set");
    }
    return value;
  }

  private static RelayMode mode(Map<String, String> env) {
    String value = value(env, MODE, RelayMode.PARTITIONED.name());
    try {
      return RelayMode.valueOf(value.toUpperCase(Locale.ROOT));
    } catch (IllegalArgumentException e) {
      throw new InvalidConfigurationException(MODE + " must be one of "
          + Arrays.stream(RelayMode.values()).map(Enum::name).collect(Collectors.joining(", "))
          + ", got '" + value + "'");
    }
  }

  /** Unset, blank or {@code off}: none. */
  private static @Nullable Duration retention(Map<String, String> env) {
    String value = optional(env, DEAD_LETTER_RETENTION);
    if (value == null || value.equalsIgnoreCase("off")) {
      return null;
    }
    return duration(env, DEAD_LETTER_RETENTION, Duration.ZERO);
  }

  private static int integer(Map<String, String> env, String name, int defaultValue) {
    String value = optional(env, name);
    if (value == null) {
      return defaultValue;
    }
    try {
      return Integer.parseInt(value);
    } catch (NumberFormatException e) {
      throw new InvalidConfigurationException(
          name + " must be a whole number, got '" + value + "'");
    }
  }

  private static Duration duration(Map<String, String> env, String name, Duration defaultValue) {
    String value = optional(env, name);
    if (value == null) {
      return defaultValue;
    }
    Duration parsed = parseDuration(value);
    if (parsed == null) {
      throw new InvalidConfigurationException(name + " must be a duration such as 500ms, 2s, 5m,"
          + " 1h, 30d or ISO-8601 PT1.5S, got '" + value + "'");
    }
    return parsed;
  }

  /** {@code 500ms}, {@code 2s}, {@code 5m}, {@code 1h}, {@code 30d} or ISO-8601; {@code null} if neither. */
  static @Nullable Duration parseDuration(String text) {
    String value = text.trim().toLowerCase(Locale.ROOT);
    Matcher shortForm = SHORT_DURATION.matcher(value);
    try {
      if (shortForm.matches()) {
        long amount = Long.parseLong(shortForm.group(1));
        switch (shortForm.group(2)) {
          case "ms":
            return Duration.ofMillis(amount);
          case "s":
            return Duration.ofSeconds(amount);
          case "m":
            return Duration.ofMinutes(amount);
          case "d":
            return Duration.ofDays(amount);
          default:
            return Duration.ofHours(amount);
        }
      }
      return Duration.parse(value.toUpperCase(Locale.ROOT));
    } catch (DateTimeParseException | ArithmeticException | NumberFormatException e) {
      return null;
    }
  }

  private static Map<String, String> kafkaProperties(Map<String, String> env) {
    Map<String, String> props = new TreeMap<>();
    for (Map.Entry<String, String> entry : new TreeMap<>(env).entrySet()) {
      String name = entry.getKey();
      if (!name.startsWith(KAFKA_PREFIX) || name.equals(KAFKA_BOOTSTRAP_SERVERS)) {
        continue;
      }
      String property = kafkaProperty(name);
      if (property.isEmpty() || property.startsWith(".") || property.endsWith(".")
          || property.contains("..")) {
        throw new InvalidConfigurationException(name + " does not name a Kafka producer property:"
            + " use " + KAFKA_PREFIX + "<PROPERTY>, e.g. OUTBOX_KAFKA_LINGER_MS for linger.ms");
      }
      if (entry.getValue() == null || entry.getValue().isBlank()) {
        continue; // blank counts as unset
      }
      props.put(property, entry.getValue().trim());
    }
    return props;
  }

  /** {@code OUTBOX_KAFKA_LINGER_MS} → {@code linger.ms}. */
  static String kafkaProperty(String variable) {
    return variable.substring(KAFKA_PREFIX.length()).toLowerCase(Locale.ROOT).replace('_', '.');
  }

  private static void validateDatabaseUrl(String url) {
    String expected = " (expected r2dbc:postgresql://user:password@host:5432/database)";
    if (!url.startsWith("r2dbc:")) {
      throw new InvalidConfigurationException(DATABASE_URL + " must be an R2DBC URL" + expected);
    }
    ConnectionFactoryOptions options;
    try {
      options = ConnectionFactoryOptions.parse(url);
    } catch (RuntimeException e) {
      // Not the parser's message: it may quote the URL, password included.
      throw new InvalidConfigurationException(DATABASE_URL + " is not a valid R2DBC URL" + expected);
    }
    if (options.getValue(ConnectionFactoryOptions.HOST) == null) {
      throw new InvalidConfigurationException(DATABASE_URL + " names no host" + expected);
    }
    if (!portsAreNumbers(url)) {
      throw new InvalidConfigurationException(DATABASE_URL
          + " must name a port from 1 to 65535" + expected);
    }
    Object port = options.getValue(ConnectionFactoryOptions.PORT);
    if (port != null) {
      int number;
      try {
        number = Integer.parseInt(port.toString());
      } catch (NumberFormatException e) {
        number = -1;
      }
      if (number < 1 || number > 65_535) {
        throw new InvalidConfigurationException(DATABASE_URL
            + " must name a port from 1 to 65535" + expected);
      }
    }
    if (!ConnectionFactories.supports(options)) {
      throw new InvalidConfigurationException(DATABASE_URL + " names driver '"
          + options.getValue(ConnectionFactoryOptions.DRIVER)
          + "', which is not on the classpath (this relay ships r2dbc-postgresql: r2dbc:postgresql://...)");
    }
    try {
      // Reads every option (port, timeouts, SSL mode...) as the relay will; connects nowhere.
      ConnectionFactories.get(options);
    } catch (RuntimeException e) {
      String why = String.valueOf(e.getMessage());
      Object password = options.getValue(ConnectionFactoryOptions.PASSWORD);
      if (password != null && !password.toString().isEmpty()) {
        why = why.replace(password.toString(), MASK);
      }
      throw new InvalidConfigurationException(DATABASE_URL + " holds an invalid value: "
          + e.getClass().getSimpleName() + ": " + why + expected);
    }
  }

  /** Each {@code host:port} of the URL's authority has a numeric port (the parser keeps others). */
  private static boolean portsAreNumbers(String url) {
    int start = url.indexOf("://");
    if (start < 0) {
      return true;
    }
    String rest = url.substring(start + 3);
    int end = rest.length();
    for (char stop : new char[] {'/', '?'}) {
      int at = rest.indexOf(stop);
      if (at >= 0 && at < end) {
        end = at;
      }
    }
    String authority = rest.substring(0, end);
    authority = authority.substring(authority.lastIndexOf('@') + 1);
    for (String host : authority.split(",", -1)) {
      int bracket = host.lastIndexOf(']');
      int colon = host.lastIndexOf(':');
      if (colon > bracket && !host.substring(colon + 1).matches("\\d{1,5}")) {
        return false;
      }
    }
    return true;
  }

  /** Builds relay options with only {@code option} set; its error names {@code variable}. */
  private static void validateRelayOption(String variable,
      UnaryOperator<RelayOptions.Builder> option) {
    try {
      option.apply(RelayOptions.builder().sink(VALIDATION_SINK)).build();
    } catch (InvalidConfigurationException e) {
      throw new InvalidConfigurationException(variable + ": " + e.getMessage());
    }
  }

  /** Only for {@link #validateRelayOption}: options need a destination, this one is never used. */
  private static final RecordSink VALIDATION_SINK = new RecordSink() {
    @Override
    public <T> Flux<SendResult<T>> send(Publisher<OutboundRecord<T>> records) {
      return Flux.error(new UnsupportedOperationException("validation only"));
    }

    @Override
    public Mono<Void> close() {
      return Mono.empty();
    }
  };

  /**
   * Kafka's own producer validation, one property at a time so that the error names its
   * variable ({@code OUTBOX_KAFKA_ACKS=banana}, {@code OUTBOX_KAFKA_LINGER_MS=-1}, a
   * {@code max.request.size} that is no number), then all together for rules that combine
   * properties (such as idempotence, on by default in the relay, with {@code acks}).
   */
  private static void validateProducerProperties(Map<String, String> properties,
      String bootstrapServers) {
    Map<String, Object> base = new HashMap<>();
    base.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrapServers);
    base.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
    base.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
    ConfigDef definitions = ProducerConfig.configDef();
    for (Map.Entry<String, String> property : properties.entrySet()) {
      Map<String, Object> one = new HashMap<>(base);
      one.put(property.getKey(), property.getValue());
      try {
        definitions.parse(one);
      } catch (ConfigException e) {
        throw new InvalidConfigurationException(variableOf(property.getKey()) + ": "
            + e.getMessage());
      }
    }
    Map<String, Object> all = new HashMap<>(base);
    all.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true"); // the relay's default
    all.putAll(properties);
    try {
      new ProducerConfig(all);
    } catch (ConfigException e) {
      throw new InvalidConfigurationException("Kafka producer properties (" + KAFKA_PREFIX
          + "*): " + e.getMessage());
    }
  }

  /** {@code linger.ms} → {@code OUTBOX_KAFKA_LINGER_MS}. */
  static String variableOf(String producerProperty) {
    return KAFKA_PREFIX + producerProperty.toUpperCase(Locale.ROOT).replace('.', '_');
  }

  private static void validateBootstrapServers(String servers) {
    for (String server : servers.split(",", -1)) {
      String entry = server.trim();
      int colon = entry.lastIndexOf(':');
      boolean valid = colon > 0 && colon < entry.length() - 1;
      if (valid) {
        try {
          int port = Integer.parseInt(entry.substring(colon + 1));
          valid = port > 0 && port <= 65_535;
        } catch (NumberFormatException e) {
          valid = false;
        }
      }
      if (!valid) {
        throw new InvalidConfigurationException(KAFKA_BOOTSTRAP_SERVERS
            + " must be a comma-separated list of host:port, got '" + servers + "'");
      }
    }
  }

  private static void positive(String name, Duration value) {
    if (value.isNegative() || value.isZero()) {
      throw new InvalidConfigurationException(name + " must be positive, got " + format(value));
    }
  }

  private static void atLeast(String name, int value, int min) {
    if (value < min) {
      throw new InvalidConfigurationException(name + " must be >= " + min + ", got " + value);
    }
  }

  private static void line(StringBuilder text, String name, String value) {
    text.append("\n  ").append(name).append('=').append(value);
  }

  /** {@code 500ms}, {@code 30s}, {@code 12h}, {@code 30d}, or ISO-8601 for anything else. */
  static String format(Duration duration) {
    if (!duration.isNegative() && duration.getNano() == 0 && duration.getSeconds() >= 3_600
        && duration.getSeconds() % 3_600 == 0) {
      long hours = duration.toHours();
      return hours % 24 == 0 ? hours / 24 + "d" : hours + "h";
    }
    if (!duration.isNegative() && duration.getNano() % 1_000_000 == 0) {
      long millis = duration.toMillis();
      return millis % 1000 == 0 ? millis / 1000 + "s" : millis + "ms";
    }
    return duration.toString();
  }
}
