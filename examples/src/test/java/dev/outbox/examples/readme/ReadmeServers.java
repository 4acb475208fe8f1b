package dev.outbox.examples.readme;

import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import io.r2dbc.pool.ConnectionPoolConfiguration;
import io.r2dbc.spi.ConnectionFactories;
import io.r2dbc.spi.ConnectionFactory;
import io.r2dbc.spi.ConnectionFactoryOptions;
import io.r2dbc.spi.Option;
import java.time.Duration;
import org.jspecify.annotations.Nullable;

/**
 * The servers behind the README snippets. The snippets use fixed names ({@code orders},
 * {@code order_outbox}, topic {@code orders}), so they run in a PostgreSQL schema of their own
 * (the connections' {@code search_path}), where they cannot meet the example service's tables.
 */
final class ReadmeServers {
  static final String TOPIC = "orders";
  static final OutboxTable TABLE = OutboxTable.of("order_outbox");

  private static @Nullable ReadmeServers instance;

  final String schema = TestPostgres.uniqueName("readme");
  final ConnectionFactory connectionFactory;

  private ReadmeServers() {
    TestPostgres postgres = TestPostgres.get();
    postgres.execute("CREATE SCHEMA " + schema);
    connectionFactory = ConnectionFactories.get(ConnectionFactoryOptions.parse(postgres.url())
        .mutate().option(Option.valueOf("schema"), schema).build());
    OutboxSchema.createIfMissing(connectionFactory, TABLE).block(Duration.ofSeconds(60));
    postgres.execute("CREATE TABLE " + schema + ".orders (id TEXT PRIMARY KEY)");
    TestKafka.get().createTopic(TOPIC, 1);
  }

  static synchronized ReadmeServers get() {
    if (instance == null) {
      instance = new ReadmeServers();
    }
    return instance;
  }

  /** A pool of at most {@code maxSize} connections that fails an acquisition after 10 s. */
  ConnectionPool newPool(int maxSize) {
    return new ConnectionPool(ConnectionPoolConfiguration.builder(connectionFactory)
        .initialSize(0)
        .maxSize(maxSize)
        .maxAcquireTime(Duration.ofSeconds(10))
        .build());
  }

  long count(String sql) {
    return TestPostgres.get().queryLong(sql.replace("{schema}", schema));
  }
}
