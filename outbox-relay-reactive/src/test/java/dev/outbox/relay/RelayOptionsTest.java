package dev.outbox.relay;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.outbox.r2dbc.InvalidConfigurationException;
import java.time.Duration;
import java.util.Map;
import org.junit.jupiter.api.Test;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

class RelayOptionsTest {
  private static final RecordSink NOWHERE = new RecordSink() {
    @Override
    public <T> Flux<SendResult<T>> send(org.reactivestreams.Publisher<OutboundRecord<T>> records) {
      return Flux.from(records).map(r -> new SendResult<>(r.correlation(), null));
    }

    @Override
    public Mono<Void> close() {
      return Mono.empty();
    }
  };

  @Test
  void defaultsAreApplied() {
    RelayOptions options = RelayOptions.builder().sink(NOWHERE).build();
    assertThat(options.table().qualifiedName()).isEqualTo("streams_egress");
    assertThat(options.claimSize()).isEqualTo(500);
    assertThat(options.maxInFlight()).isEqualTo(10_000);
    assertThat(options.leaseDuration()).isEqualTo(Duration.ofSeconds(30));
    assertThat(options.leaseRenewal()).isEqualTo(Duration.ofSeconds(10));
    assertThat(options.pollInterval()).isEqualTo(Duration.ofSeconds(1));
    assertThat(options.mode()).isEqualTo(RelayMode.PARTITIONED);
    assertThat(options.retryPolicy()).isEqualTo(RetryPolicy.DEFAULT);
    assertThat(options.sink()).isSameAs(NOWHERE);
    assertThat(options.kafka()).isNull();
    assertThat(options.maxInFlightBytes()).isEqualTo(32L << 20);
    assertThat(options.statementTimeout()).isEqualTo(Duration.ofSeconds(30));
    assertThat(options.outcomeBuffer()).isEqualTo(1024);
    assertThat(options.instanceId()).startsWith("relay-");
    assertThat(RelayOptions.builder().sink(NOWHERE).build().instanceId())
        .isNotEqualTo(options.instanceId());
  }

  /** WAL mode queues less by default; a given value wins whatever the order of the calls. */
  @Test
  void walModeHasItsOwnInFlightDefault() {
    assertThat(RelayOptions.builder().sink(NOWHERE).mode(RelayMode.WAL).build().maxInFlight())
        .isEqualTo(2_000).isEqualTo(RelayOptions.defaultMaxInFlight(RelayMode.WAL));
    assertThat(RelayOptions.builder().sink(NOWHERE).maxInFlight(7).mode(RelayMode.WAL).build()
        .maxInFlight()).isEqualTo(7);
    assertThat(RelayOptions.builder().sink(NOWHERE).mode(RelayMode.WAL).maxInFlight(10_000)
        .build().maxInFlight()).isEqualTo(10_000);
    assertThat(RelayOptions.builder().sink(NOWHERE).mode(RelayMode.ORDERED).build().maxInFlight())
        .isEqualTo(RelayOptions.DEFAULT_MAX_IN_FLIGHT);
  }

  @Test
  void invalidOptionsAreNamed() {
    assertThatThrownBy(() -> RelayOptions.builder().build())
        .isInstanceOf(InvalidConfigurationException.class).hasMessageContaining("kafka(");
    assertThatThrownBy(() -> RelayOptions.builder().sink(NOWHERE).maxInFlight(0).build())
        .isInstanceOf(InvalidConfigurationException.class).hasMessageContaining("maxInFlight");
    assertThatThrownBy(() -> RelayOptions.builder().sink(NOWHERE).claimSize(-1).build())
        .isInstanceOf(InvalidConfigurationException.class).hasMessageContaining("claimSize");
    assertThatThrownBy(() -> RelayOptions.builder().sink(NOWHERE).pollInterval(Duration.ZERO).build())
        .isInstanceOf(InvalidConfigurationException.class).hasMessageContaining("pollInterval");
    assertThatThrownBy(() -> RelayOptions.builder().sink(NOWHERE)
            .leaseDuration(Duration.ofMillis(10)).build())
        .isInstanceOf(InvalidConfigurationException.class).hasMessageContaining("leaseDuration");
    assertThatThrownBy(() -> RelayOptions.builder().sink(NOWHERE)
            .leaseRenewal(Duration.ofSeconds(30)).build())
        .isInstanceOf(InvalidConfigurationException.class).hasMessageContaining("leaseRenewal");
    assertThatThrownBy(() -> RelayOptions.builder().sink(NOWHERE)
            .leaseRenewal(Duration.ofSeconds(-1)).build())
        .isInstanceOf(InvalidConfigurationException.class).hasMessageContaining("leaseRenewal");
    assertThat(RelayOptions.builder().sink(NOWHERE).leaseRenewal(Duration.ZERO).build()
        .leaseRenewal()).isZero();
  }

  @Test
  void invalidProducerPropertiesAreNamedWhenBuilt() {
    assertThatThrownBy(() -> RelayOptions.builder()
            .kafka(Map.of("bootstrap.servers", "localhost:9092", "acks", "banana")).build())
        .isInstanceOf(InvalidConfigurationException.class).hasMessageContaining("acks");
    assertThatThrownBy(() -> RelayOptions.builder()
            .kafka(Map.of("bootstrap.servers", "localhost:9092", "linger.ms", "-1")).build())
        .isInstanceOf(InvalidConfigurationException.class).hasMessageContaining("linger.ms");
    assertThatThrownBy(() -> RelayOptions.builder()
            .kafka(Map.of("bootstrap.servers", "localhost:9092", "max.request.size", "lots")).build())
        .isInstanceOf(InvalidConfigurationException.class).hasMessageContaining("max.request.size");
    assertThatThrownBy(() -> RelayOptions.builder()
            .kafka(Map.of("bootstrap.servers", "localhost:9092", "acks", "1")).build())
        .as("the producer's own cross-check: acks=1 with idempotence")
        .isInstanceOf(InvalidConfigurationException.class).hasMessageContaining("acks");
    assertThatThrownBy(() -> RelayOptions.builder().kafka(Map.of("acks", "all")).build())
        .isInstanceOf(InvalidConfigurationException.class).hasMessageContaining("bootstrap.servers");
    assertThatThrownBy(() -> RelayOptions.builder().sink(NOWHERE).maxInFlightBytes(0).build())
        .isInstanceOf(InvalidConfigurationException.class).hasMessageContaining("maxInFlightBytes");
    assertThatThrownBy(() -> RelayOptions.builder().sink(NOWHERE).outcomeBuffer(0).build())
        .isInstanceOf(InvalidConfigurationException.class).hasMessageContaining("outcomeBuffer");
  }

  @Test
  void optionsHoldConfigurationOnly() {
    Map<String, Object> producer = Map.of("bootstrap.servers", "localhost:9092", "linger.ms", 20);
    RelayOptions options = RelayOptions.builder().kafka(producer).build();
    assertThat(options.sink()).isNull();
    assertThat(options.kafka()).isEqualTo(producer);
    assertThat(options.toString()).contains("localhost:9092");
    assertThat(options.forOneRelay().instanceId()).startsWith("relay-")
        .isNotEqualTo(options.instanceId()).isNotEqualTo(options.forOneRelay().instanceId());
    RelayOptions named = RelayOptions.builder().kafka(producer).instanceId("relay-a").build();
    assertThat(named.forOneRelay()).isSameAs(named);
  }
}
