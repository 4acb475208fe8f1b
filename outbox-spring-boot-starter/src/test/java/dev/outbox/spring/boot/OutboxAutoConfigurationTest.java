package dev.outbox.spring.boot;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxStore;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.relay.RelayMode;
import dev.outbox.relay.RelayOptions;
import dev.outbox.relay.RetryPolicy;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.springframework.boot.diagnostics.FailureAnalysis;
import org.springframework.boot.health.contributor.HealthIndicator;
import org.springframework.boot.test.context.runner.ApplicationContextRunner;
import org.springframework.boot.test.context.runner.ReactiveWebApplicationContextRunner;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.util.unit.DataSize;

/** What the auto-configuration creates, from which properties, and when it backs off or fails. */
class OutboxAutoConfigurationTest {
  private final String table = TestPostgres.uniqueName("starter_outbox");
  private final ApplicationContextRunner runner = StarterTests.runner(table);

  @Test
  void createsTableWriterStoreAndRelayFromTheDefaults() {
    new ApplicationContextRunner()
        .withConfiguration(org.springframework.boot.autoconfigure.AutoConfigurations.of(
            org.springframework.boot.r2dbc.autoconfigure.R2dbcAutoConfiguration.class,
            OutboxAutoConfiguration.class))
        .withPropertyValues("spring.r2dbc.url=" + TestPostgres.get().url(),
            "spring.kafka.bootstrap-servers=" + TestKafka.get().bootstrapServers())
        .run(context -> {
          assertThat(context).hasNotFailed();
          assertThat(context.getBean(OutboxTable.class)).isEqualTo(OutboxTable.defaultTable());
          assertThat(context).hasSingleBean(OutboxWriter.class).hasSingleBean(OutboxStore.class);
          RelayOptions options = context.getBean(EmbeddedRelay.class).options();
          RelayOptions defaults = RelayOptions.builder().kafka(TestKafka.get().producerProperties())
              .build();
          assertThat(options.mode()).isEqualTo(RelayMode.PARTITIONED);
          assertThat(options.pollInterval()).isEqualTo(defaults.pollInterval());
          assertThat(options.maxInFlight()).isEqualTo(defaults.maxInFlight());
          assertThat(options.maxInFlightBytes()).isEqualTo(defaults.maxInFlightBytes());
          assertThat(options.claimSize()).isEqualTo(defaults.claimSize());
          assertThat(options.leaseDuration()).isEqualTo(defaults.leaseDuration());
          assertThat(options.leaseRenewal()).isEqualTo(defaults.leaseRenewal());
          assertThat(options.settleConcurrency()).isEqualTo(defaults.settleConcurrency());
          assertThat(options.rowsPerKeyInFlight()).isEqualTo(defaults.rowsPerKeyInFlight());
          assertThat(options.statementTimeout()).isEqualTo(defaults.statementTimeout());
          assertThat(options.statsInterval()).isEqualTo(defaults.statsInterval());
          assertThat(options.retryPolicy()).isEqualTo(RetryPolicy.DEFAULT);
          assertThat(options.triggers().listenChannel()).isNull();
          assertThat(options.kafka()).containsEntry("bootstrap.servers",
              TestKafka.get().bootstrapServers());
          // No schema creation unless asked for.
          assertThat(context).doesNotHaveBean(OutboxAutoConfiguration.SchemaInitializer.class);
        });
  }

  @Test
  void bindsEveryRelayProperty() {
    runner.withPropertyValues(
            "outbox.notify-on-write=true",
            "outbox.relay.mode=parallel",
            "outbox.relay.poll-interval=250ms",
            "outbox.relay.max-in-flight=77",
            "outbox.relay.max-in-flight-bytes=2MB",
            "outbox.relay.claim-size=9",
            "outbox.relay.lease-duration=12s",
            "outbox.relay.lease-renewal=3s",
            "outbox.relay.settle-concurrency=3",
            "outbox.relay.rows-per-key-in-flight=1",
            "outbox.relay.statement-timeout=7s",
            "outbox.relay.instance-id=relay-under-test",
            "outbox.relay.retry.max-attempts=4",
            "outbox.relay.retry.initial-backoff=50ms",
            "outbox.relay.retry.max-backoff=2s",
            "outbox.relay.retry.jitter=0",
            "outbox.relay.shutdown-timeout=3s",
            "outbox.relay.health.backlog-age-threshold=90s",
            "outbox.relay.kafka.linger.ms=20",
            "spring.kafka.properties.client.rack=rack-1")
        .run(context -> {
          assertThat(context).hasNotFailed();
          OutboxProperties properties = context.getBean(OutboxProperties.class);
          assertThat(properties.relay().shutdownTimeout()).isEqualTo(Duration.ofSeconds(3));
          assertThat(properties.relay().health().backlogAgeThreshold())
              .isEqualTo(Duration.ofSeconds(90));
          RelayOptions options = context.getBean(EmbeddedRelay.class).options();
          assertThat(options.table()).isEqualTo(OutboxTable.of(table));
          @SuppressWarnings("deprecation")
          RelayMode parallel = RelayMode.PARALLEL;
          assertThat(options.mode()).isEqualTo(parallel);
          assertThat(options.pollInterval()).isEqualTo(Duration.ofMillis(250));
          assertThat(options.maxInFlight()).isEqualTo(77);
          assertThat(options.maxInFlightBytes()).isEqualTo(DataSize.ofMegabytes(2).toBytes());
          assertThat(options.claimSize()).isEqualTo(9);
          assertThat(options.leaseDuration()).isEqualTo(Duration.ofSeconds(12));
          assertThat(options.leaseRenewal()).isEqualTo(Duration.ofSeconds(3));
          assertThat(options.settleConcurrency()).isEqualTo(3);
          assertThat(options.rowsPerKeyInFlight()).isEqualTo(1);
          assertThat(options.statementTimeout()).isEqualTo(Duration.ofSeconds(7));
          assertThat(options.statsInterval()).isEqualTo(Duration.ofMillis(200));
          assertThat(options.instanceId()).isEqualTo("relay-under-test");
          assertThat(options.retryPolicy())
              .isEqualTo(new RetryPolicy(4, Duration.ofMillis(50), Duration.ofSeconds(2), 0));
          assertThat(options.triggers().listenChannel())
              .isEqualTo(OutboxTable.of(table).notifyChannel());
          assertThat(options.kafka())
              .containsEntry("bootstrap.servers", TestKafka.get().bootstrapServers())
              .containsEntry("linger.ms", "20")
              .containsEntry("client.rack", "rack-1");
        });
  }

  @Test
  void outboxKafkaPropertiesWinOverSpringKafkaOnes() {
    runner.withPropertyValues("spring.kafka.bootstrap-servers=elsewhere:1",
            "spring.kafka.producer.bootstrap-servers=producer-elsewhere:1",
            "outbox.relay.kafka.bootstrap.servers=" + TestKafka.get().bootstrapServers())
        .run(context -> assertThat(context.getBean(EmbeddedRelay.class).options().kafka())
            .containsEntry("bootstrap.servers", TestKafka.get().bootstrapServers()));
    // A list is joined; the relay stays off here (there is no broker "elsewhere").
    runner.withPropertyValues("spring.kafka.bootstrap-servers=elsewhere:1,elsewhere:2",
            "outbox.relay.enabled=false")
        .run(context -> assertThat(
            OutboxAutoConfiguration.kafkaProperties(
                context.getBean(OutboxProperties.class).relay(), context.getEnvironment()))
            .containsEntry("bootstrap.servers", "elsewhere:1,elsewhere:2"));
  }

  @Test
  void userBeansWin() {
    OutboxWriter own = OutboxWriter.builder().build();
    runner.withPropertyValues("outbox.relay.enabled=false")
        .withBean("myTable", OutboxTable.class, () -> OutboxTable.of("public." + table))
        .withBean("myWriter", OutboxWriter.class, () -> own)
        .run(context -> {
          assertThat(context).hasNotFailed();
          assertThat(context).hasSingleBean(OutboxTable.class).hasSingleBean(OutboxWriter.class);
          assertThat(context.getBean(OutboxWriter.class)).isSameAs(own);
          assertThat(context.getBean(OutboxStore.class).table())
              .isEqualTo(OutboxTable.of("public." + table));
        });
    runner.withUserConfiguration(OwnStore.class)
        .run(context -> {
          assertThat(context).hasSingleBean(OutboxStore.class);
          assertThat(context.getBean(OutboxStore.class).table()).isEqualTo(OutboxStore.create(
              TestPostgres.get().connectionFactory(), OutboxTable.of("their_outbox")).table());
          // The relay still uses the property's table: a user store is no reason to change it.
          assertThat(context.getBean(EmbeddedRelay.class).options().table())
              .isEqualTo(OutboxTable.of(table));
        });
  }

  @Configuration(proxyBeanMethods = false)
  static class OwnStore {
    @Bean
    OutboxStore theirStore() {
      return OutboxStore.create(TestPostgres.get().connectionFactory(), OutboxTable.of("their_outbox"));
    }
  }

  @Test
  void customizersAdjustTheRelayOptions() {
    runner.withBean(RelayOptionsCustomizer.class,
            () -> builder -> builder.instanceId("customized").maxInFlight(5))
        .run(context -> {
          RelayOptions options = context.getBean(EmbeddedRelay.class).options();
          assertThat(options.instanceId()).isEqualTo("customized");
          assertThat(options.maxInFlight()).isEqualTo(5);
        });
  }

  @Test
  void relayOffLeavesTheWriterAndNeedsNoKafka() {
    runner.withPropertyValues("outbox.relay.enabled=false", "spring.kafka.bootstrap-servers=")
        .run(context -> {
          assertThat(context).hasNotFailed();
          assertThat(context).doesNotHaveBean(EmbeddedRelay.class)
              .doesNotHaveBean(HealthIndicator.class)
              .hasSingleBean(OutboxWriter.class)
              .hasSingleBean(OutboxStore.class);
          // The schema was still created: a writer-only service writes to it.
          assertThat(TestPostgres.get().queryLong("SELECT count(*) FROM " + table)).isZero();
          // The writer writes (in the transaction Boot's TransactionalOperator runs).
          context.getBean(org.springframework.transaction.reactive.TransactionalOperator.class)
              .transactional(context.getBean(OutboxWriter.class)
                  .write(Message.builder().stream("nowhere").data("x").build()))
              .block(Duration.ofSeconds(10));
          assertThat(TestPostgres.get().queryLong("SELECT count(*) FROM " + table)).isEqualTo(1);
        });
  }

  @Test
  void relayMetersGoToTheApplicationsRegistry() {
    runner.withBean(MeterRegistry.class, SimpleMeterRegistry::new)
        .run(context -> {
          MeterRegistry registry = context.getBean(MeterRegistry.class);
          assertThat(registry.find("outbox.relay.in.flight").tag("table", table).gauge())
              .isNotNull();
          assertThat(registry.find("outbox.relay.health").tag("table", table).gauge())
              .isNotNull();
        });
    // Without a registry the relay runs all the same.
    runner.run(context -> assertThat(context).hasNotFailed().hasSingleBean(EmbeddedRelay.class));
  }

  @Test
  void relayStartsWithTheContextAndStopsWithIt() {
    EmbeddedRelay[] relay = new EmbeddedRelay[1];
    runner.run(context -> {
      relay[0] = context.getBean(EmbeddedRelay.class);
      assertThat(relay[0].isRunning()).isTrue();
    });
    assertThat(relay[0].isRunning()).isFalse();
    assertThat(relay[0].health().reasons()).containsExactly("the embedded relay is not running");
  }

  @Test
  void noConnectionFactoryFailsStartupSayingWhatToSet() {
    new ApplicationContextRunner()
        .withConfiguration(org.springframework.boot.autoconfigure.AutoConfigurations.of(
            OutboxAutoConfiguration.class))
        .withPropertyValues("spring.kafka.bootstrap-servers=" + TestKafka.get().bootstrapServers())
        .run(context -> {
          assertThat(context).hasFailed();
          FailureAnalysis analysis = StarterTests.analyze(context.getStartupFailure());
          assertThat(analysis.getDescription())
              .isEqualTo("The outbox needs an R2DBC ConnectionFactory bean and there is none.");
          assertThat(analysis.getAction()).contains("spring.r2dbc.url")
              .contains("define a ConnectionFactory bean");
        });
  }

  @Test
  void anEnabledRelayWithoutKafkaBootstrapFailsStartupSayingWhatToSet() {
    runner.withPropertyValues("spring.kafka.bootstrap-servers=")
        .run(context -> {
          assertThat(context).hasFailed();
          FailureAnalysis analysis = StarterTests.analyze(context.getStartupFailure());
          assertThat(analysis.getDescription())
              .isEqualTo("The embedded outbox relay has no Kafka bootstrap servers.");
          assertThat(analysis.getAction()).contains("spring.kafka.bootstrap-servers")
              .contains("outbox.relay.kafka.bootstrap.servers")
              .contains("outbox.relay.enabled=false");
        });
  }

  @Test
  void anUnknownModeFailsStartupListingTheModes() {
    runner.withPropertyValues("outbox.relay.mode=banana")
        .run(context -> {
          assertThat(context).hasFailed();
          FailureAnalysis analysis = StarterTests.analyze(context.getStartupFailure());
          assertThat(analysis.getDescription()).contains("outbox.relay.mode").contains("banana");
          assertThat(analysis.getAction()).contains("PARTITIONED").contains("WAL");
        });
  }

  @Test
  void anInvalidOptionFailsStartupNamingIt() {
    runner.withPropertyValues("outbox.relay.max-in-flight=0")
        .run(context -> {
          assertThat(context).hasFailed();
          FailureAnalysis analysis = StarterTests.analyze(context.getStartupFailure());
          assertThat(analysis.getDescription())
              .isEqualTo("Invalid outbox configuration: maxInFlight must be >= 1, got 0");
          assertThat(analysis.getAction()).contains("outbox.relay.max-in-flight");
        });
    runner.withPropertyValues("outbox.table=x; drop table y")
        .run(context -> assertThat(StarterTests.analyze(context.getStartupFailure())
            .getDescription()).startsWith("Invalid outbox configuration: ").contains("x; drop table y"));
  }

  @Test
  void theDeadLetterEndpointExistsOnlyWhereActuatorExposesIt() {
    ReactiveWebApplicationContextRunner web = new ReactiveWebApplicationContextRunner()
        .withConfiguration(StarterTests.configurations())
        .withConfiguration(org.springframework.boot.autoconfigure.AutoConfigurations.of(
            org.springframework.boot.actuate.autoconfigure.endpoint.EndpointAutoConfiguration.class))
        .withPropertyValues(StarterTests.properties(table))
        .withPropertyValues("outbox.relay.enabled=false");
    // Not over HTTP (nor JMX) unless asked for, like every endpoint but health.
    web.run(context -> assertThat(context).hasNotFailed()
        .doesNotHaveBean(OutboxDeadLettersEndpoint.class));
    web.withPropertyValues("management.endpoints.web.exposure.include=outboxdeadletters")
        .run(context -> assertThat(context).hasSingleBean(OutboxDeadLettersEndpoint.class));
    web.withPropertyValues("management.endpoints.web.exposure.include=outboxdeadletters",
            "management.endpoint.outboxdeadletters.access=NONE")
        .run(context -> assertThat(context).doesNotHaveBean(OutboxDeadLettersEndpoint.class));
  }

  @Test
  void withoutActuatorOrMicrometerTheRestStillWorks() {
    runner.withClassLoader(new org.springframework.boot.test.context.FilteredClassLoader(
            org.springframework.boot.actuate.endpoint.annotation.Endpoint.class,
            HealthIndicator.class, MeterRegistry.class))
        .withPropertyValues("management.endpoints.web.exposure.include=*")
        .run(context -> {
          assertThat(context).hasNotFailed()
              .hasSingleBean(EmbeddedRelay.class)
              .hasSingleBean(OutboxWriter.class)
              .doesNotHaveBean(OutboxDeadLettersEndpoint.class)
              .doesNotHaveBean("outboxHealthIndicator");
          assertThat(context.getBean(EmbeddedRelay.class).isRunning()).isTrue();
        });
  }

  /** Ours with Boot's OpenTelemetry tracing (a Tracer and a Propagator bean). */
  private ApplicationContextRunner withTracing() {
    return runner.withConfiguration(org.springframework.boot.autoconfigure.AutoConfigurations.of(
        org.springframework.boot.micrometer.observation.autoconfigure.ObservationAutoConfiguration.class,
        org.springframework.boot.micrometer.tracing.autoconfigure.MicrometerTracingAutoConfiguration.class,
        org.springframework.boot.opentelemetry.autoconfigure.OpenTelemetrySdkAutoConfiguration.class,
        org.springframework.boot.micrometer.tracing.opentelemetry.autoconfigure.OpenTelemetryTracingAutoConfiguration.class));
  }

  @Test
  void withMicrometerTracingTheRelayPropagatesTraces() {
    withTracing().run(context -> {
      assertThat(context).hasNotFailed().hasSingleBean(io.micrometer.tracing.Tracer.class);
      assertThat(context.getBean(EmbeddedRelay.class).options().recordInterceptor())
          .isInstanceOf(MicrometerTracePropagation.class);
    });
  }

  @Test
  void tracePropagationIsOffWithoutATracerWithoutTheClassesOrWhenSwitchedOff() {
    runner.run(context -> assertThat(
        context.getBean(EmbeddedRelay.class).options().recordInterceptor()).isNull());
    withTracing().withPropertyValues("outbox.tracing.enabled=false").run(context -> {
      assertThat(context).hasNotFailed().hasSingleBean(io.micrometer.tracing.Tracer.class);
      assertThat(context.getBean(EmbeddedRelay.class).options().recordInterceptor()).isNull();
    });
    runner.withClassLoader(new org.springframework.boot.test.context.FilteredClassLoader(
            io.micrometer.tracing.Tracer.class))
        .run(context -> {
          assertThat(context).hasNotFailed().hasSingleBean(OutboxWriter.class);
          assertThat(context).doesNotHaveBean(OutboxAutoConfiguration.TracingBinding.class);
          assertThat(context.getBean(EmbeddedRelay.class).options().recordInterceptor()).isNull();
        });
  }

  @Test
  void theHealthContributorCanBeSwitchedOff() {
    runner.run(context -> assertThat(context).hasBean("outboxHealthIndicator"));
    runner.withPropertyValues("management.health.outbox.enabled=false")
        .run(context -> assertThat(context).doesNotHaveBean("outboxHealthIndicator"));
  }

  @Test
  void configurationMetadataIsGenerated() throws IOException {
    try (InputStream in = OutboxAutoConfiguration.class.getResourceAsStream(
        "/META-INF/spring-configuration-metadata.json")) {
      assertThat(in).as("META-INF/spring-configuration-metadata.json").isNotNull();
      String json = new String(in.readAllBytes(), StandardCharsets.UTF_8);
      for (String property : List.of("outbox.table", "outbox.relay.enabled", "outbox.relay.mode",
          "outbox.relay.poll-interval", "outbox.relay.max-in-flight", "outbox.relay.kafka",
          "outbox.relay.shutdown-timeout", "outbox.schema.create-if-missing",
          "outbox.relay.health.backlog-age-threshold")) {
        assertThat(json).contains("\"name\": \"" + property + "\"");
      }
      assertThat(json).contains("\"defaultValue\": \"streams_egress\"");
    }
  }
}
