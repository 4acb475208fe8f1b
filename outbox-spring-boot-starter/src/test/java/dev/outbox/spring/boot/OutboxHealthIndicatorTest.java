package dev.outbox.spring.boot;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.BacklogStats;
import dev.outbox.relay.RelayMetrics;
import dev.outbox.relay.RelayOptions;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.springframework.boot.health.contributor.Health;
import org.springframework.boot.health.contributor.Status;

/** When the health contributor says DOWN, and what it shows. */
class OutboxHealthIndicatorTest {
  private final RelayObservations observations = new RelayObservations(RelayMetrics.none());
  private final EmbeddedRelay relay = new EmbeddedRelay(TestPostgres.get().connectionFactory(),
      RelayOptions.builder().kafka(TestKafka.get().producerProperties()).build(), observations,
      Duration.ofSeconds(1));

  @Test
  void aRelayThatIsNotRunningIsDown() {
    Health health = new OutboxHealthIndicator(relay, Duration.ofMinutes(5)).health();

    assertThat(health.getStatus()).isEqualTo(Status.DOWN);
    assertThat(health.getDetails()).containsEntry("state", "stopped")
        .containsEntry("reasons", List.of("the embedded relay is not running"));
  }

  @Test
  void aBacklogOlderThanTheThresholdIsAReasonAndAYoungerOneIsNot() {
    observations.partitions(7, 7);
    observations.backlog(new BacklogStats(12, Instant.now().minusSeconds(600), 3));

    Health old = new OutboxHealthIndicator(relay, Duration.ofMinutes(5)).health();
    assertThat(old.getStatus()).isEqualTo(Status.DOWN);
    assertThat((List<?>) old.getDetails().get("reasons")).hasSize(2).last().asString()
        .startsWith("the oldest unpublished row is 6").endsWith("over the threshold of 300 s"
            + " (outbox.relay.health.backlog-age-threshold)");
    assertThat(old.getDetails()).containsEntry("partitions", 7);
    @SuppressWarnings("unchecked")
    Map<String, Object> backlog = (Map<String, Object>) old.getDetails().get("backlog");
    assertThat(backlog).containsEntry("rows", 12L).containsEntry("deadLetters", 3L)
        .containsEntry("ageThresholdSeconds", 300L);

    Health young = new OutboxHealthIndicator(relay, Duration.ofMinutes(15)).health();
    assertThat((List<?>) young.getDetails().get("reasons")).hasSize(1);
    Health unchecked = new OutboxHealthIndicator(relay, Duration.ZERO).health();
    assertThat((List<?>) unchecked.getDetails().get("reasons")).hasSize(1);
  }
}
