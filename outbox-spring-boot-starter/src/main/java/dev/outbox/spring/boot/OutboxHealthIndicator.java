package dev.outbox.spring.boot;

import dev.outbox.r2dbc.BacklogStats;
import dev.outbox.relay.RelayHealth;
import dev.outbox.relay.RelayMode;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.springframework.boot.health.contributor.Health;
import org.springframework.boot.health.contributor.HealthIndicator;

/**
 * The {@code outbox} health contributor: the embedded relay's own checks (database and tables,
 * Kafka, the producer thread; {@link RelayHealth}), what it holds (partitions or ORDERED
 * leadership), and the age of the oldest unpublished row against a threshold. Reads only what the
 * relay already measured, so it never blocks or queries.
 */
final class OutboxHealthIndicator implements HealthIndicator {
  private final EmbeddedRelay relay;
  private final Duration backlogAgeThreshold;

  OutboxHealthIndicator(EmbeddedRelay relay, Duration backlogAgeThreshold) {
    this.relay = relay;
    this.backlogAgeThreshold = backlogAgeThreshold;
  }

  @Override
  public Health health() {
    RelayHealth checked = relay.health();
    List<String> reasons = new ArrayList<>(checked.reasons());
    Map<String, Object> details = new LinkedHashMap<>();
    details.put("state", relay.isRunning() ? "running" : "stopped");
    details.put("mode", relay.options().mode().name());
    details.put("table", relay.options().table().qualifiedName());
    RelayObservations seen = relay.observations();
    if (relay.options().mode() == RelayMode.PARTITIONED && seen.partitions() != null) {
      details.put("partitions", seen.partitions());
    }
    @SuppressWarnings("deprecation") // ORDERED is deprecated, and still reported while used
    boolean ordered = relay.options().mode() == RelayMode.ORDERED;
    if (ordered && seen.leader() != null) {
      details.put("leader", seen.leader());
    }
    BacklogStats backlog = seen.backlog();
    if (backlog != null) {
      Map<String, Object> b = new LinkedHashMap<>();
      b.put(backlog.rowsEstimated() ? "rowsEstimated" : "rows", backlog.rows());
      b.put("deadLetters", backlog.deadLetters());
      backlog.oldest().ifPresent(oldest -> {
        Duration age = Duration.between(oldest, Instant.now());
        b.put("oldest", oldest.toString());
        b.put("oldestAgeSeconds", Math.max(0, age.toSeconds()));
        if (!backlogAgeThreshold.isZero() && age.compareTo(backlogAgeThreshold) > 0) {
          reasons.add("the oldest unpublished row is " + age.toSeconds() + " s old, over the"
              + " threshold of " + backlogAgeThreshold.toSeconds()
              + " s (outbox.relay.health.backlog-age-threshold)");
        }
      });
      if (!backlogAgeThreshold.isZero()) {
        b.put("ageThresholdSeconds", backlogAgeThreshold.toSeconds());
      }
      details.put("backlog", b);
    }
    details.put("checks", checked.details());
    details.put("checkedAt", checked.checkedAt().toString());
    Health.Builder health = reasons.isEmpty() ? Health.up() : Health.down();
    if (!reasons.isEmpty()) {
      health.withDetail("reasons", reasons);
    }
    return health.withDetails(details).build();
  }
}
