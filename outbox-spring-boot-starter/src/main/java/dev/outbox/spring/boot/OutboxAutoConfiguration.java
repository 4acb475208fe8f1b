package dev.outbox.spring.boot;

import dev.outbox.r2dbc.Codec;
import dev.outbox.r2dbc.OutboxSchema;
import dev.outbox.r2dbc.OutboxStore;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.relay.MicrometerRelayMetrics;
import dev.outbox.relay.RelayMetrics;
import dev.outbox.relay.RelayMode;
import dev.outbox.relay.RelayOptions;
import dev.outbox.relay.RetryPolicy;
import dev.outbox.spring.SpringTransactionConnectionResolver;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.tracing.Tracer;
import io.micrometer.tracing.propagation.Propagator;
import io.r2dbc.spi.ConnectionFactory;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.jspecify.annotations.Nullable;
import org.springframework.beans.factory.InitializingBean;
import org.springframework.beans.factory.ObjectProvider;
import org.springframework.boot.actuate.autoconfigure.endpoint.condition.ConditionalOnAvailableEndpoint;
import org.springframework.boot.actuate.endpoint.annotation.Endpoint;
import org.springframework.boot.autoconfigure.AutoConfiguration;
import org.springframework.boot.autoconfigure.condition.ConditionalOnClass;
import org.springframework.boot.autoconfigure.condition.ConditionalOnMissingBean;
import org.springframework.boot.autoconfigure.condition.ConditionalOnProperty;
import org.springframework.boot.context.properties.EnableConfigurationProperties;
import org.springframework.boot.context.properties.bind.Bindable;
import org.springframework.boot.context.properties.bind.Binder;
import org.springframework.boot.health.autoconfigure.contributor.ConditionalOnEnabledHealthIndicator;
import org.springframework.boot.health.contributor.HealthIndicator;
import org.springframework.boot.r2dbc.autoconfigure.R2dbcAutoConfiguration;
import org.springframework.boot.r2dbc.autoconfigure.R2dbcTransactionManagerAutoConfiguration;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.core.env.Environment;

/**
 * Auto-configuration of Reactive Outbox for a Spring Boot application on R2DBC:
 *
 * <ul>
 *   <li>{@link OutboxTable} from {@code outbox.table};
 *   <li>an {@link OutboxWriter} that joins the Spring-managed transaction
 *       ({@code TransactionalOperator} or {@code @Transactional}) on the application's {@link
 *       ConnectionFactory} (with {@code outbox.delete-once-logged=true}, deleting its rows once
 *       the WAL relay's slot carries them), and an {@link OutboxStore} over the same table;
 *   <li>with {@code outbox.schema.create-if-missing=true}, the tables created at startup;
 *   <li>unless {@code outbox.relay.enabled=false}, the relay embedded as a lifecycle bean (started
 *       with the context, drained on shutdown), with its meters in the application's {@code
 *       MeterRegistry} and an {@code outbox} health contributor when Actuator is present;
 *   <li>the Actuator endpoint {@code outboxdeadletters} ({@link OutboxDeadLettersEndpoint});
 *   <li>with Micrometer Tracing (a {@code Tracer} and a {@code Propagator} bean), trace
 *       propagation: the writer stores the active trace context with each message and the relay
 *       publishes it inside a producer span that continues it; off with {@code
 *       outbox.tracing.enabled=false}.
 * </ul>
 *
 * <p>Each bean backs off when the application defines its own of that type. Startup fails with a
 * message saying what to set when there is no {@code ConnectionFactory}, or the relay is enabled
 * without Kafka bootstrap servers.
 */
@AutoConfiguration(after = {R2dbcAutoConfiguration.class,
    R2dbcTransactionManagerAutoConfiguration.class})
@ConditionalOnClass({OutboxWriter.class, ConnectionFactory.class})
@EnableConfigurationProperties(OutboxProperties.class)
public final class OutboxAutoConfiguration {

  /** Creates the tables at startup with {@code outbox.schema.create-if-missing=true}. */
  static final class SchemaInitializer implements InitializingBean {
    private final ConnectionFactory connectionFactory;
    private final OutboxTable table;
    private final OutboxProperties.Schema schema;

    SchemaInitializer(ConnectionFactory connectionFactory, OutboxTable table,
        OutboxProperties.Schema schema) {
      this.connectionFactory = connectionFactory;
      this.table = table;
      this.schema = schema;
    }

    @Override
    public void afterPropertiesSet() {
      // Runs on the thread refreshing the context (never an event loop), and nothing may use
      // the table before it exists, so waiting here is right.
      OutboxSchema.createIfMissing(connectionFactory, table).block(schema.timeout());
    }
  }

  @Bean
  @ConditionalOnMissingBean
  OutboxTable outboxTable(OutboxProperties properties) {
    return OutboxTable.of(properties.table());
  }

  @Bean
  @ConditionalOnMissingBean
  OutboxWriter outboxWriter(ObjectProvider<ConnectionFactory> connectionFactory, OutboxTable table,
      OutboxProperties properties, ObjectProvider<TracingBinding> tracing) {
    OutboxWriter.Builder writer = OutboxWriter.builder()
        .table(table)
        // The ConnectionFactory bean is the very instance Boot's R2dbcTransactionManager binds
        // its connections under, which is what the resolver looks up.
        .connectionResolver(SpringTransactionConnectionResolver.create(
            requireConnectionFactory(connectionFactory)));
    if (properties.notifyOnWrite()) {
      writer.notifyChannel(table.notifyChannel());
    }
    if (properties.deleteOnceLogged()) { // the slot and publication the WAL relay follows
      writer.deleteOnceLogged(walSlot(properties, table), walPublication(properties, table));
    }
    MicrometerTracePropagation propagation = propagation(tracing);
    if (propagation != null) {
      writer.contextHeaders(propagation);
    }
    return writer.build();
  }

  @Bean
  @ConditionalOnMissingBean
  OutboxStore outboxStore(ObjectProvider<ConnectionFactory> connectionFactory, OutboxTable table) {
    return OutboxStore.create(requireConnectionFactory(connectionFactory), table);
  }

  @Bean
  @ConditionalOnProperty(prefix = "outbox.schema", name = "create-if-missing", havingValue = "true")
  SchemaInitializer outboxSchemaInitializer(ObjectProvider<ConnectionFactory> connectionFactory,
      OutboxTable table, OutboxProperties properties) {
    return new SchemaInitializer(requireConnectionFactory(connectionFactory), table,
        properties.schema());
  }

  /** The embedded relay, unless {@code outbox.relay.enabled=false}. */
  @Configuration(proxyBeanMethods = false)
  @ConditionalOnProperty(prefix = "outbox.relay", name = "enabled", havingValue = "true",
      matchIfMissing = true)
  static class RelayConfiguration {

    @Bean
    EmbeddedRelay outboxRelay(ObjectProvider<ConnectionFactory> connectionFactory,
        OutboxTable table, OutboxProperties properties, Environment environment,
        ObjectProvider<RelayOptionsCustomizer> customizers,
        ObjectProvider<MicrometerBinding> micrometer,
        ObjectProvider<SchemaInitializer> schema, ObjectProvider<TracingBinding> tracing) {
      ConnectionFactory connections = requireConnectionFactory(connectionFactory);
      schema.ifAvailable(created -> {}); // the tables exist before the relay starts
      RelayMetrics meters = micrometer.getIfAvailable(() -> t -> RelayMetrics.none())
          .metrics(table);
      RelayObservations observations = new RelayObservations(meters);
      RelayOptions.Builder options = relayOptions(properties, table, environment)
          .metrics(observations)
          .recordInterceptor(propagation(tracing));
      customizers.orderedStream().forEach(customizer -> customizer.customize(options));
      RelayOptions built = options.build();
      checkDeleteOnceLogged(properties, table, built);
      return new EmbeddedRelay(connections, built, observations,
          properties.relay().shutdownTimeout());
    }

    /** Nested here: there is a relay to report on exactly when this configuration applies. */
    @Configuration(proxyBeanMethods = false)
    @ConditionalOnClass(HealthIndicator.class)
    @ConditionalOnEnabledHealthIndicator("outbox")
    static class HealthConfiguration {

      @Bean
      @ConditionalOnMissingBean(name = "outboxHealthIndicator")
      HealthIndicator outboxHealthIndicator(EmbeddedRelay relay, OutboxProperties properties) {
        return new OutboxHealthIndicator(relay,
            properties.relay().health().backlogAgeThreshold());
      }
    }
  }

  /** The relay's meters go to the application's registry when there is one. */
  @FunctionalInterface
  interface MicrometerBinding {
    RelayMetrics metrics(OutboxTable table);
  }

  @Configuration(proxyBeanMethods = false)
  @ConditionalOnClass(MeterRegistry.class)
  static class MicrometerConfiguration {

    @Bean
    MicrometerBinding outboxMicrometerBinding(ObjectProvider<MeterRegistry> registry) {
      // Looked up when the relay bean is created, so the order of auto-configurations (and
      // whether Boot's metrics auto-configuration runs at all) does not matter.
      return table -> {
        MeterRegistry found = registry.getIfUnique();
        return found == null ? RelayMetrics.none()
            : MicrometerRelayMetrics.create(found, table.qualifiedName());
      };
    }
  }

  /** Trace propagation when Micrometer Tracing is present; see {@link MicrometerTracePropagation}. */
  @FunctionalInterface
  interface TracingBinding {
    @Nullable MicrometerTracePropagation propagation();
  }

  static @Nullable MicrometerTracePropagation propagation(ObjectProvider<TracingBinding> tracing) {
    TracingBinding binding = tracing.getIfAvailable();
    return binding == null ? null : binding.propagation();
  }

  @Configuration(proxyBeanMethods = false)
  @ConditionalOnClass({Tracer.class, Propagator.class})
  @ConditionalOnProperty(prefix = "outbox.tracing", name = "enabled", havingValue = "true",
      matchIfMissing = true)
  static class TracingConfiguration {

    @Bean
    TracingBinding outboxTracingBinding(ObjectProvider<Tracer> tracer,
        ObjectProvider<Propagator> propagator) {
      // Looked up when the writer and the relay are created, as the registry above: the order
      // of auto-configurations does not matter. Boot's no-op tracer (Micrometer Tracing without
      // a bridge) propagates nothing, so it counts as none.
      return () -> {
        Tracer found = tracer.getIfUnique();
        Propagator propagation = propagator.getIfUnique();
        return found == null || found == Tracer.NOOP || propagation == null
            || propagation == Propagator.NOOP ? null
            : new MicrometerTracePropagation(found, propagation);
      };
    }
  }

  @Configuration(proxyBeanMethods = false)
  @ConditionalOnClass({Endpoint.class, ConditionalOnAvailableEndpoint.class})
  static class EndpointConfiguration {

    @Bean
    @ConditionalOnMissingBean
    @ConditionalOnAvailableEndpoint
    OutboxDeadLettersEndpoint outboxDeadLettersEndpoint(OutboxStore store,
        ObjectProvider<EmbeddedRelay> relay) {
      // Decode with the relay's codec when a customizer changed it.
      EmbeddedRelay embedded = relay.getIfAvailable();
      return new OutboxDeadLettersEndpoint(store,
          embedded == null ? Codec.protobuf() : embedded.options().codec());
    }
  }

  private static String walSlot(OutboxProperties properties, OutboxTable table) {
    String slot = properties.relay().walSlot();
    return slot != null ? slot : table.walRelayName();
  }

  private static String walPublication(OutboxProperties properties, OutboxTable table) {
    String publication = properties.relay().walPublication();
    return publication != null ? publication : table.walRelayName();
  }

  /**
   * With {@code outbox.delete-once-logged}, the embedded relay (as customizers left it) must be a
   * WAL relay on the table, slot and publication the starter's writer deletes for: any other
   * relay never reads the rows only that slot's WAL holds.
   */
  static void checkDeleteOnceLogged(OutboxProperties properties, OutboxTable table,
      RelayOptions relay) {
    if (!properties.deleteOnceLogged()) {
      return;
    }
    if (relay.mode() != RelayMode.WAL) {
      throw new OutboxStartupException("outbox.delete-once-logged=true needs a WAL relay, and"
          + " the embedded relay runs in " + relay.mode() + " mode.", "Set"
          + " outbox.relay.mode=wal, or turn outbox.delete-once-logged off: rows the writer"
          + " deletes once logged are only in the slot's WAL, which a polling relay never reads.");
    }
    if (!relay.table().equals(table) || !relay.walSlot().equals(walSlot(properties, table))
        || !relay.walPublication().equals(walPublication(properties, table))) {
      throw new OutboxStartupException("outbox.delete-once-logged=true: the writer deletes for"
          + " table " + table.qualifiedName() + ", slot " + walSlot(properties, table)
          + " and publication " + walPublication(properties, table) + ", but the embedded relay"
          + " follows " + relay.table().qualifiedName() + ", " + relay.walSlot() + " and "
          + relay.walPublication() + ".", "Set the names with outbox.table,"
          + " outbox.relay.wal-slot and outbox.relay.wal-publication, not in a"
          + " RelayOptionsCustomizer.");
    }
  }

  /** The properties as a builder, before customizers; package-private for the tests. */
  static RelayOptions.Builder relayOptions(OutboxProperties properties, OutboxTable table,
      Environment environment) {
    OutboxProperties.Relay relay = properties.relay();
    OutboxProperties.Retry retry = relay.retry();
    RelayOptions.Builder options = RelayOptions.builder()
        .table(table)
        .mode(relay.mode())
        .pollInterval(relay.pollInterval())
        .maxInFlightBytes(relay.maxInFlightBytes().toBytes())
        .claimSize(relay.claimSize())
        .leaseDuration(relay.leaseDuration())
        .settleConcurrency(relay.settleConcurrency())
        .rowsPerKeyInFlight(relay.rowsPerKeyInFlight())
        .statementTimeout(relay.statementTimeout())
        .statsInterval(relay.statsInterval())
        .retryPolicy(new RetryPolicy(retry.maxAttempts(), retry.initialBackoff(),
            retry.maxBackoff(), retry.jitter()))
        .kafka(kafkaProperties(relay, environment));
    if (relay.maxInFlight() != null) { // unset: the mode's default
      options.maxInFlight(relay.maxInFlight());
    }
    if (relay.leaseRenewal() != null) {
      options.leaseRenewal(relay.leaseRenewal());
    }
    if (relay.instanceId() != null) {
      options.instanceId(relay.instanceId());
    }
    if (relay.walSlot() != null) {
      options.walSlot(relay.walSlot());
    }
    if (relay.walPublication() != null) {
      options.walPublication(relay.walPublication());
    }
    if (properties.notifyOnWrite()) {
      options.listen(table.notifyChannel());
    }
    return options;
  }

  /**
   * Producer properties: Spring Boot's {@code spring.kafka.*} where set (read from the
   * Environment, so spring-kafka need not be on the classpath), then {@code outbox.relay.kafka.*}
   * over them.
   */
  static Map<String, Object> kafkaProperties(OutboxProperties.Relay relay, Environment environment) {
    Binder binder = Binder.get(environment);
    Bindable<Map<String, String>> map = Bindable.mapOf(String.class, String.class);
    Map<String, Object> producer = new LinkedHashMap<>();
    binder.bind("spring.kafka.properties", map).ifBound(producer::putAll);
    binder.bind("spring.kafka.security.protocol", String.class)
        .ifBound(protocol -> producer.put("security.protocol", protocol));
    binder.bind("spring.kafka.producer.properties", map).ifBound(producer::putAll);
    Bindable<List<String>> list = Bindable.listOf(String.class);
    List<String> bootstrap = binder.bind("spring.kafka.producer.bootstrap-servers", list)
        .orElseGet(() -> binder.bind("spring.kafka.bootstrap-servers", list).orElse(List.of()));
    if (!bootstrap.isEmpty()) {
      producer.put("bootstrap.servers", String.join(",", bootstrap));
    }
    producer.putAll(relay.kafka());
    Object servers = producer.get("bootstrap.servers");
    if (servers == null || servers.toString().isBlank()) {
      throw new OutboxStartupException("The embedded outbox relay has no Kafka bootstrap servers.",
          "Set spring.kafka.bootstrap-servers (or outbox.relay.kafka.bootstrap.servers) to the"
              + " brokers, e.g. localhost:9092, or set outbox.relay.enabled=false if another"
              + " process relays this table.");
    }
    return producer;
  }

  static ConnectionFactory requireConnectionFactory(ObjectProvider<ConnectionFactory> provider) {
    ConnectionFactory found = provider.getIfAvailable();
    if (found == null) {
      throw new OutboxStartupException("The outbox needs an R2DBC ConnectionFactory bean and"
          + " there is none.", "Set spring.r2dbc.url (with an R2DBC driver such as"
          + " org.postgresql:r2dbc-postgresql on the classpath), or define a ConnectionFactory"
          + " bean.");
    }
    return found;
  }
}
