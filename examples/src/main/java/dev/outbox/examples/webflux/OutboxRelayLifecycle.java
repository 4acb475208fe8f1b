package dev.outbox.examples.webflux;

import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.relay.OutboxRelay;
import dev.outbox.relay.RelayHandle;
import dev.outbox.relay.RelayOptions;
import io.r2dbc.spi.ConnectionFactory;
import java.time.Duration;
import java.util.Map;
import org.jspecify.annotations.Nullable;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.context.SmartLifecycle;
import org.springframework.r2dbc.core.DatabaseClient;
import org.springframework.stereotype.Component;

/**
 * Creates the schema, then runs the relay for as long as the application runs: started when the
 * context starts, stopped (drained for up to 10 s, leases released) when it stops.
 */
@Component
class OutboxRelayLifecycle implements SmartLifecycle {
  private final ConnectionFactory connectionFactory;
  private final DatabaseClient database;
  private final OutboxTable table;
  private final String bootstrapServers;
  private volatile @Nullable RelayHandle running;

  OutboxRelayLifecycle(ConnectionFactory connectionFactory, DatabaseClient database,
      OutboxTable table, @Value("${outbox.kafka.bootstrap-servers}") String bootstrapServers) {
    this.connectionFactory = connectionFactory;
    this.database = database;
    this.table = table;
    this.bootstrapServers = bootstrapServers;
  }

  @Override
  public void start() {
    // Lifecycle callbacks run on the startup thread, so waiting for the DDL here is fine.
    database.sql("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL,"
        + " total_cents BIGINT NOT NULL CHECK (total_cents > 0))").then().block(Duration.ofSeconds(30));
    OutboxSchema.createIfMissing(connectionFactory, table).block(Duration.ofSeconds(30));
    running = OutboxRelay.create(connectionFactory, RelayOptions.builder()
        .table(table)
        .kafka(Map.of("bootstrap.servers", bootstrapServers))
        .pollInterval(Duration.ofMillis(200))
        .build()).start();
  }

  @Override
  public void stop(Runnable callback) {
    RelayHandle relay = running;
    running = null;
    if (relay == null) {
      callback.run();
      return;
    }
    relay.stop(Duration.ofSeconds(10)).doFinally(signal -> callback.run()).subscribe();
  }

  @Override
  public void stop() {
    stop(() -> {});
  }

  @Override
  public boolean isRunning() {
    return running != null;
  }
}
