package dev.outbox.relay;

import java.time.Instant;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * The relay's health as last checked, from {@link RelayHandle#health()}: {@link Status#UP} when
 * the relay can publish, {@link Status#DOWN} with one reason per failed check otherwise.
 * Immutable.
 *
 * <p>Checks (each bounded by a timeout, repeated periodically): the outbox table exists (which
 * also proves the database answers); Kafka answers a cluster description with the relay's
 * producer settings (reachable, authenticated); the producer's network thread is alive. Warnings
 * that do not stop the relay but hold publication back (a long-running transaction in ORDERED
 * or WAL mode, a WAL slot that does not exist yet) are in {@link #details()}, not in {@link
 * #reasons()}.
 *
 * <pre>{@code
 * RelayHealth health = handle.health();
 * if (!health.isUp()) log.warn("outbox relay DOWN: {}", health.reasons());
 * }</pre>
 *
 * @param status UP or DOWN
 * @param reasons why it is DOWN, one line per failed check; empty when UP
 * @param details what was checked and found (names to strings, numbers, booleans or nested
 *     maps), in check order; for reports, not for parsing
 * @param checkedAt when the checks finished
 */
public record RelayHealth(Status status, List<String> reasons, Map<String, Object> details,
    Instant checkedAt) {

  /** UP: the relay can publish; DOWN: it cannot (see the reasons). */
  public enum Status { UP, DOWN }

  public RelayHealth {
    Objects.requireNonNull(status, "status");
    Objects.requireNonNull(checkedAt, "checkedAt");
    reasons = List.copyOf(reasons);
    details = Collections.unmodifiableMap(new LinkedHashMap<>(details));
    if ((status == Status.UP) != reasons.isEmpty()) {
      throw new IllegalArgumentException(status == Status.UP
          ? "UP health cannot have reasons: " + reasons : "DOWN health needs a reason");
    }
  }

  /** UP, or DOWN when {@code reasons} is not empty. */
  public static RelayHealth of(List<String> reasons, Map<String, Object> details,
      Instant checkedAt) {
    return new RelayHealth(reasons.isEmpty() ? Status.UP : Status.DOWN, reasons, details,
        checkedAt);
  }

  /** DOWN for one reason, with no details. */
  public static RelayHealth down(String reason) {
    return new RelayHealth(Status.DOWN, List.of(reason), Map.of(), Instant.now());
  }

  public boolean isUp() {
    return status == Status.UP;
  }
}
