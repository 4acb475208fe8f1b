package dev.outbox.relay;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Message;
import dev.outbox.testing.Poll;
import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestPostgres;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import java.time.Duration;
import java.util.List;
import org.apache.kafka.common.errors.RecordTooLargeException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

@ExtendWith(PostgresExtension.class)
class RelayMetricsTest {

  @Test
  void metersCountWhatTheRelayDid(TestPostgres postgres) {
    SimpleMeterRegistry registry = new SimpleMeterRegistry();
    try (OutboxFixture outbox = new OutboxFixture(postgres, 6)) {
      outbox.write(20, 5, i -> List.of(
          Message.builder().stream(i == 0 ? "poison" : "fine").data(new byte[] {1}).build(),
          Message.builder().stream("fine").data(new byte[] {2}).build()));
      RecordSink sink = TestSinks.answering(r -> r.topic().equals("poison")
          ? new RecordTooLargeException("too big") : null);
      RelayHandle relay = OutboxRelay.create(outbox.pool, RelayOptions.builder()
          .table(outbox.table).sink(sink).pollInterval(Duration.ofMillis(50))
          .statsInterval(Duration.ofMillis(100))
          .metrics(MicrometerRelayMetrics.create(registry, outbox.table.qualifiedName()))
          .build()).start();
      try {
        Poll.until("the outbox is empty and the gauges caught up", Duration.ofSeconds(20),
            () -> outbox.rows() == 0
                && registry.get("outbox.relay.dead.letters").gauge().value() == 1.0
                && registry.get("outbox.relay.backlog.rows").gauge().value() == 0.0);
      } finally {
        relay.stop(Duration.ofSeconds(5)).block();
      }
      assertThat(registry.get("outbox.relay.records.published").counter().count()).isEqualTo(39);
      assertThat(registry.get("outbox.relay.records.failed").tag("fatal", "true").counter().count())
          .isEqualTo(1);
      assertThat(registry.get("outbox.relay.records.dead.lettered").counter().count()).isEqualTo(2);
      assertThat(registry.get("outbox.relay.publish.latency").timer().count()).isEqualTo(39);
      assertThat(registry.get("outbox.relay.claim.latency").timer().count()).isPositive();
      assertThat(registry.get("outbox.relay.in.flight").gauge().value()).isZero();
      assertThat(registry.get("outbox.relay.backlog.oldest.age").gauge().value()).isZero();
    }
  }
}
