package dev.outbox.relay.standalone;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.outbox.r2dbc.InvalidConfigurationException;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.relay.RelayMode;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** Parsing, validation and masking of the environment; no servers needed. */
class StandaloneConfigTest {
  private static final String PASSWORD = "s3cr3t-Pa55";
  private static final String URL = "r2dbc:postgresql://relay:" + PASSWORD + "@db.internal:5432/app";

  private static Map<String, String> env(String... extra) {
    Map<String, String> env = new HashMap<>();
    env.put("OUTBOX_DATABASE_URL", URL);
    env.put("OUTBOX_KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092");
    for (int i = 0; i < extra.length; i += 2) {
      env.put(extra[i], extra[i + 1]);
    }
    return env;
  }

  @Test
  void defaultsApplyWhenOnlyTheRequiredVariablesAreSet() {
    StandaloneConfig config = StandaloneConfig.fromEnvironment(env());

    assertThat(config.databaseUrl()).isEqualTo(URL);
    assertThat(config.kafkaBootstrapServers()).isEqualTo("kafka-1:9092,kafka-2:9092");
    assertThat(config.table()).isEqualTo(OutboxTable.of("streams_egress"));
    assertThat(config.mode()).isEqualTo(RelayMode.PARTITIONED);
    assertThat(config.pollInterval()).isEqualTo(Duration.ofSeconds(1));
    assertThat(config.maxInFlight()).isEqualTo(10_000);
    assertThat(config.claimSize()).isEqualTo(500);
    assertThat(config.lease()).isEqualTo(Duration.ofSeconds(30));
    assertThat(config.drain()).isEqualTo(Duration.ofSeconds(10));
    assertThat(config.httpPort()).isEqualTo(8080);
    assertThat(config.dbPoolSize()).isEqualTo(10);
    assertThat(config.instanceId()).isNull();
    assertThat(config.deadLetterRetention()).isNull();
    assertThat(config.kafkaProperties()).isEmpty();
    assertThat(config.producerProperties())
        .containsExactly(Map.entry("bootstrap.servers", "kafka-1:9092,kafka-2:9092"));
  }

  @Test
  void walModeDefaultsToItsOwnInFlightBudget() {
    assertThat(StandaloneConfig.fromEnvironment(env("OUTBOX_MODE", "wal")).maxInFlight())
        .isEqualTo(2_000);
    assertThat(StandaloneConfig.fromEnvironment(env("OUTBOX_MODE", "wal",
        "OUTBOX_MAX_IN_FLIGHT", "10000")).maxInFlight()).isEqualTo(10_000);
  }

  @Test
  void everyVariableIsRead() {
    StandaloneConfig config = StandaloneConfig.fromEnvironment(env(
        "OUTBOX_TABLE", "outbox.Order_Outbox",
        "OUTBOX_MODE", "ordered",
        "OUTBOX_POLL_INTERVAL", "250ms",
        "OUTBOX_MAX_IN_FLIGHT", "5000",
        "OUTBOX_CLAIM_SIZE", " 500 ",
        "OUTBOX_LEASE", "PT1M",
        "OUTBOX_DRAIN", "2m",
        "OUTBOX_HTTP_PORT", "0",
        "OUTBOX_DB_POOL_SIZE", "4",
        "OUTBOX_INSTANCE_ID", "relay-pod-7"));

    assertThat(config.table()).isEqualTo(OutboxTable.of("outbox.order_outbox"));
    assertThat(config.mode()).isEqualTo(RelayMode.ORDERED);
    assertThat(config.pollInterval()).isEqualTo(Duration.ofMillis(250));
    assertThat(config.maxInFlight()).isEqualTo(5000);
    assertThat(config.claimSize()).isEqualTo(500);
    assertThat(config.lease()).isEqualTo(Duration.ofMinutes(1));
    assertThat(config.drain()).isEqualTo(Duration.ofMinutes(2));
    assertThat(config.httpPort()).isZero();
    assertThat(config.dbPoolSize()).isEqualTo(4);
    assertThat(config.instanceId()).isEqualTo("relay-pod-7");
  }

  @Test
  void blankValuesCountAsUnset() {
    StandaloneConfig config = StandaloneConfig.fromEnvironment(env(
        "OUTBOX_TABLE", "", "OUTBOX_MODE", "  ", "OUTBOX_HTTP_PORT", "", "OUTBOX_KAFKA_ACKS", ""));

    assertThat(config.table()).isEqualTo(OutboxTable.defaultTable());
    assertThat(config.mode()).isEqualTo(RelayMode.PARTITIONED);
    assertThat(config.httpPort()).isEqualTo(8080);
    assertThat(config.kafkaProperties()).isEmpty();
  }

  @Test
  void durationsAcceptUnitsAndIso8601() {
    assertThat(StandaloneConfig.parseDuration("500ms")).isEqualTo(Duration.ofMillis(500));
    assertThat(StandaloneConfig.parseDuration("2s")).isEqualTo(Duration.ofSeconds(2));
    assertThat(StandaloneConfig.parseDuration(" 3 M ")).isEqualTo(Duration.ofMinutes(3));
    assertThat(StandaloneConfig.parseDuration("1h")).isEqualTo(Duration.ofHours(1));
    assertThat(StandaloneConfig.parseDuration("PT1.5S")).isEqualTo(Duration.ofMillis(1500));
    assertThat(StandaloneConfig.parseDuration("pt2m")).isEqualTo(Duration.ofMinutes(2));
    assertThat(StandaloneConfig.parseDuration("1.5s")).isNull();
    assertThat(StandaloneConfig.parseDuration("10")).isNull();
    assertThat(StandaloneConfig.parseDuration("soon")).isNull();
    assertThat(StandaloneConfig.parseDuration("99999999999999999999s")).isNull();
  }

  @Test
  void deadLetterRetentionIsOffUnlessADurationIsGiven() {
    assertThat(StandaloneConfig.fromEnvironment(env("OUTBOX_DEAD_LETTER_RETENTION", "30d"))
        .deadLetterRetention()).isEqualTo(Duration.ofDays(30));
    assertThat(StandaloneConfig.fromEnvironment(env("OUTBOX_DEAD_LETTER_RETENTION", "P7D"))
        .deadLetterRetention()).isEqualTo(Duration.ofDays(7));
    assertThat(StandaloneConfig.fromEnvironment(env("OUTBOX_DEAD_LETTER_RETENTION", "OFF"))
        .deadLetterRetention()).isNull();
    assertThat(StandaloneConfig.fromEnvironment(env("OUTBOX_DEAD_LETTER_RETENTION", "12h"))
        .describe()).contains("OUTBOX_DEAD_LETTER_RETENTION=12h");
    assertThat(StandaloneConfig.fromEnvironment(env()).describe())
        .contains("OUTBOX_DEAD_LETTER_RETENTION=off");
  }

  @ParameterizedTest(name = "{0}={1}")
  @CsvSource(delimiter = '|', value = {
      "OUTBOX_DATABASE_URL            | ''                          | is required",
      "OUTBOX_DATABASE_URL            | postgresql://u:p@h:5432/db  | must be an R2DBC URL",
      "OUTBOX_DATABASE_URL            | r2dbc:postgresql:           | expected r2dbc:postgresql://",
      "OUTBOX_DATABASE_URL            | r2dbc:mysql://u:p@h:3306/db | not on the classpath",
      "OUTBOX_KAFKA_BOOTSTRAP_SERVERS | ''                          | is required",
      "OUTBOX_KAFKA_BOOTSTRAP_SERVERS | kafka                       | host:port",
      "OUTBOX_KAFKA_BOOTSTRAP_SERVERS | kafka:9092,                 | host:port",
      "OUTBOX_KAFKA_BOOTSTRAP_SERVERS | kafka:ninety                | host:port",
      "OUTBOX_TABLE                   | x; drop table y             | is invalid",
      "OUTBOX_TABLE                   | a.b.c                       | is invalid",
      "OUTBOX_MODE                    | SIDEWAYS                    | PARALLEL, ORDERED, WAL, PARTITIONED",
      "OUTBOX_POLL_INTERVAL           | often                       | must be a duration",
      "OUTBOX_POLL_INTERVAL           | 0s                          | must be positive",
      "OUTBOX_MAX_IN_FLIGHT           | lots                        | whole number",
      "OUTBOX_MAX_IN_FLIGHT           | 0                           | must be >= 1",
      "OUTBOX_CLAIM_SIZE              | -5                          | must be >= 1",
      "OUTBOX_CLAIM_SIZE              | 1e3                         | whole number",
      "OUTBOX_LEASE                   | 500ms                       | at least 1",
      "OUTBOX_LEASE                   | 30                          | must be a duration",
      "OUTBOX_DRAIN                   | 0ms                         | must be positive",
      "OUTBOX_DRAIN                   | -PT1S                       | must be positive",
      "OUTBOX_DEAD_LETTER_RETENTION   | a month                     | must be a duration",
      "OUTBOX_DEAD_LETTER_RETENTION   | 0d                          | must be positive",
      "OUTBOX_HTTP_PORT               | 65536                       | 0 to 65535",
      "OUTBOX_HTTP_PORT               | -1                          | 0 to 65535",
      "OUTBOX_HTTP_PORT               | http                        | whole number",
      "OUTBOX_DB_POOL_SIZE            | 0                           | must be >= 1",
      "OUTBOX_DB_POOL_SIZE            | 99999999999                 | whole number",
      "OUTBOX_KAFKA_ACKS              | banana                      | Invalid value banana for configuration acks",
      "OUTBOX_KAFKA_LINGER_MS         | -1                          | Invalid value -1 for configuration linger.ms",
      "OUTBOX_KAFKA_MAX_REQUEST_SIZE  | 1MB                         | Invalid value 1MB for configuration max.request.size",
      "OUTBOX_KAFKA_ENABLE_IDEMPOTENCE | maybe                      | enable.idempotence",
      "OUTBOX_DATABASE_URL            | r2dbc:postgresql://u:p@h:port/db | port from 1 to 65535",
      "OUTBOX_DATABASE_URL            | r2dbc:postgresql://u:p@h:5432/db?connectTimeout=soon | invalid value",
      "OUTBOX_DATABASE_URL            | r2dbc:postgresql://u:p@h:99999/db | port from 1 to 65535",
      "OUTBOX_DATABASE_URL            | r2dbc:postgresql://u:p@h:5432/db?sslMode=banana | OUTBOX_DATABASE_URL",
  })
  void anInvalidValueIsRejectedNamingItsVariable(String variable, String value, String why) {
    Map<String, String> env = env(variable, value);

    assertThatThrownBy(() -> StandaloneConfig.fromEnvironment(env))
        .isInstanceOf(InvalidConfigurationException.class)
        .hasMessageContaining(variable)
        .hasMessageContaining(why)
        .hasMessageNotContaining(PASSWORD);
  }

  @Test
  void instanceIdLongerThan255IsRejected() {
    assertThatThrownBy(() -> StandaloneConfig.fromEnvironment(env("OUTBOX_INSTANCE_ID", "i".repeat(256))))
        .isInstanceOf(InvalidConfigurationException.class)
        .hasMessageContaining("OUTBOX_INSTANCE_ID");
  }

  @Test
  void anUnparsableDatabaseUrlIsNotQuotedInTheError() {
    String bad = "r2dbc:postgresql://relay:" + PASSWORD + "@[broken/app";
    assertThatThrownBy(() -> StandaloneConfig.fromEnvironment(env("OUTBOX_DATABASE_URL", bad)))
        .isInstanceOf(InvalidConfigurationException.class)
        .hasMessageContaining("OUTBOX_DATABASE_URL")
        .hasMessageNotContaining(PASSWORD);
  }

  @Test
  void kafkaVariablesPassThroughAsProducerProperties() {
    StandaloneConfig config = StandaloneConfig.fromEnvironment(env(
        "OUTBOX_KAFKA_LINGER_MS", "20",
        "OUTBOX_KAFKA_COMPRESSION_TYPE", "zstd",
        "OUTBOX_KAFKA_SECURITY_PROTOCOL", "SASL_SSL",
        "OUTBOX_KAFKA_SASL_MECHANISM", "PLAIN"));

    assertThat(config.kafkaProperties()).containsExactly(
        Map.entry("compression.type", "zstd"),
        Map.entry("linger.ms", "20"),
        Map.entry("sasl.mechanism", "PLAIN"),
        Map.entry("security.protocol", "SASL_SSL"));
    assertThat(config.producerProperties())
        .containsEntry("bootstrap.servers", "kafka-1:9092,kafka-2:9092")
        .containsEntry("linger.ms", "20")
        .hasSize(5);
  }

  @Test
  void aPassThroughVariableMustNameAProperty() {
    assertThatThrownBy(() -> StandaloneConfig.fromEnvironment(env("OUTBOX_KAFKA_", "x")))
        .isInstanceOf(InvalidConfigurationException.class)
        .hasMessageContaining("OUTBOX_KAFKA_");
    assertThatThrownBy(() -> StandaloneConfig.fromEnvironment(env("OUTBOX_KAFKA_LINGER__MS", "5")))
        .isInstanceOf(InvalidConfigurationException.class)
        .hasMessageContaining("OUTBOX_KAFKA_LINGER__MS");
  }

  @Test
  void walSlotAndPublicationDefaultToTheTablesRelayNameAndCanBeSet() {
    StandaloneConfig defaults = StandaloneConfig.fromEnvironment(
        env("OUTBOX_TABLE", "app.orders_outbox", "OUTBOX_MODE", "WAL"));
    assertThat(defaults.walSlot()).isEqualTo("orders_outbox_relay");
    assertThat(defaults.walPublication()).isEqualTo("orders_outbox_relay");
    assertThat(defaults.describe()).contains("OUTBOX_WAL_SLOT=orders_outbox_relay");

    StandaloneConfig named = StandaloneConfig.fromEnvironment(env("OUTBOX_WAL_SLOT", "app_slot",
        "OUTBOX_WAL_PUBLICATION", "app_pub"));
    assertThat(named.walSlot()).isEqualTo("app_slot");
    assertThat(named.walPublication()).isEqualTo("app_pub");
    assertThat(StandaloneConfig.unrecognizedVariables(env("OUTBOX_WAL_SLOT", "app_slot",
        "OUTBOX_WAL_PUBLICATION", "app_pub"))).isEmpty();

    assertThatThrownBy(() -> StandaloneConfig.fromEnvironment(env("OUTBOX_WAL_PUBLICATION",
        "drop table x")))
        .isInstanceOf(InvalidConfigurationException.class)
        .hasMessageStartingWith("OUTBOX_WAL_PUBLICATION must be");
  }

  @Test
  void unrecognizedVariablesAreReportedButHarnessAndKnownOnesAreNot() {
    Map<String, String> env = env(
        "OUTBOX_POLL_INTREVAL", "1s",
        "OUTBOX_KAFKA_LINGER_MS", "5",
        "OUTBOX_KAFKA_LINGERMS", "5",
        "OUTBOX_TEST_POSTGRES_URL", "r2dbc:postgresql://x@y/z",
        "OUTBOX_LOG_LEVEL", "DEBUG",
        "PATH", "/usr/bin");

    assertThat(StandaloneConfig.unrecognizedVariables(env))
        .containsExactly("OUTBOX_KAFKA_LINGERMS", "OUTBOX_POLL_INTREVAL");
  }

  @Test
  void describeShowsTheConfigurationWithoutSecrets() {
    StandaloneConfig config = StandaloneConfig.fromEnvironment(env(
        "OUTBOX_DATABASE_URL", URL + "?sslPassword=keystore-pw&applicationName=relay",
        "OUTBOX_KAFKA_LINGER_MS", "20",
        "OUTBOX_KAFKA_SASL_JAAS_CONFIG",
        "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"u\" password=\"jaas-pw\";",
        "OUTBOX_KAFKA_SSL_KEY_PASSWORD", "key-pw",
        "OUTBOX_KAFKA_SSL_KEYSTORE_KEY", "-----BEGIN PRIVATE KEY-----",
        "OUTBOX_KAFKA_SASL_OAUTHBEARER_CLIENT_CREDENTIALS_CLIENT_SECRET", "client-secret-value",
        "OUTBOX_MODE", "ORDERED"));

    String text = config.describe();

    assertThat(text)
        .contains("OUTBOX_DATABASE_URL=r2dbc:postgresql://relay:****@db.internal:5432/app"
            + "?sslPassword=****&applicationName=relay")
        .contains("OUTBOX_KAFKA_BOOTSTRAP_SERVERS=kafka-1:9092,kafka-2:9092")
        .contains("OUTBOX_TABLE=streams_egress")
        .contains("OUTBOX_MODE=ORDERED")
        .contains("OUTBOX_POLL_INTERVAL=1s")
        .contains("OUTBOX_LEASE=30s")
        .contains("linger.ms=20")
        .contains("sasl.jaas.config=****")
        .contains("ssl.key.password=****")
        .contains("ssl.keystore.key=****")
        .contains("sasl.oauthbearer.client.credentials.client.secret=****")
        .doesNotContain(PASSWORD)
        .doesNotContain("keystore-pw")
        .doesNotContain("jaas-pw")
        .doesNotContain("key-pw")
        .doesNotContain("PRIVATE KEY")
        .doesNotContain("client-secret-value");
    assertThat(config.toString()).isEqualTo(text);
  }

  @Test
  void aPasswordThatIsAlsoElsewhereInTheUrlIsStillMasked() {
    StandaloneConfig config = StandaloneConfig.fromEnvironment(env(
        "OUTBOX_DATABASE_URL", "r2dbc:postgresql://app:appdb@localhost:5432/appdb"));

    assertThat(config.describe()).doesNotContain("appdb")
        .contains("r2dbc:postgresql://app:****@localhost:5432/****");
  }

  @Test
  void aUrlWithoutPasswordIsShownAsIs() {
    StandaloneConfig config = StandaloneConfig.fromEnvironment(env(
        "OUTBOX_DATABASE_URL", "r2dbc:postgresql://relay@localhost:5432/app",
        "OUTBOX_HTTP_PORT", "0", "OUTBOX_POLL_INTERVAL", "PT0.25S"));

    assertThat(config.describe())
        .contains("OUTBOX_DATABASE_URL=r2dbc:postgresql://relay@localhost:5432/app")
        .contains("OUTBOX_HTTP_PORT=0 (any free port)")
        .contains("OUTBOX_POLL_INTERVAL=250ms");
  }
}
